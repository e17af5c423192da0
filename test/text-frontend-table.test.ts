/**
 * The frontend against a table of hand-derived cases (test/fixtures/frontend-cases.json; its "about"
 * field says how each kind of expectation was worked out), plus properties over random mixed-language
 * input and bad input in every language.
 */
import { readFileSync } from "node:fs";
import t from "tap";
import { dictionary } from "cmu-pronouncing-dictionary";
import { GsvError } from "../shared/errors.js";
import { fromRoot } from "../shared/paths.js";
import { normalizeChinese } from "../services/text-frontend/chinese.js";
import { normalizeCantonese } from "../services/text-frontend/cantonese.js";
import { LANGUAGE_MODES, cleanRun, promptToPhones, textToSegments } from "../services/text-frontend/frontend.js";
import { segmentLanguages } from "../services/text-frontend/langseg.js";
import { SPLIT_METHODS, splitText } from "../services/text-frontend/split.js";
import { SYMBOLS, hasSymbol } from "../services/text-frontend/symbols.js";
import { prng as rng } from "../tools/loadgen.js"; // mulberry32, seeded

interface Case {
  lang: string;
  text: string;
  pinyin?: string;
  norm?: string;
  phones?: string;
  prosody?: string;
  jamo?: string;
  jyutping?: string;
  words?: string;
  mode?: string;
  runs?: [string, string][];
}

const CASES = (JSON.parse(readFileSync(fromRoot("test", "fixtures", "frontend-cases.json"), "utf8")) as { cases: Case[] }).cases;

// Upstream's opencpop-strict.txt, read here on its own: pinyin (toneless) -> "initial final".
const OPENCPOP = new Map(
  readFileSync(fromRoot("services", "text-frontend", "data", "opencpop-strict.txt"), "utf8")
    .split("\n")
    .filter((l) => l.includes("\t"))
    .map((l) => l.trim().split("\t") as [string, string]),
);
const PUNCT = new Set(["!", "?", "…", ",", ".", "-"]);

/** "ni2 hao3 ," -> ["n","i2","h","ao3",","] through the opencpop table. */
function pinyinToPhones(pinyin: string): string[] {
  return pinyin.split(" ").flatMap((s) => {
    if (PUNCT.has(s)) return [s];
    const row = OPENCPOP.get(s.slice(0, -1));
    if (!row) throw new Error(`test data: ${s} is not in opencpop-strict.txt`);
    const [c, v] = row.split(" ");
    return [c, v + s.slice(-1)];
  });
}

/** Upstream cantonese.py's rule, written out here: the first INITIALS prefix, final + tone, "Y" in front. */
const YUE_INITIALS = "aa aai aak aap aat aau ai au ap at ak a p b e ts t dz d kw k gw g f h l m ng n s y w c z j ong on ou oi ok o uk ung".split(" ");
function jyutpingToPhones(jp: string): string[] {
  return jp.split(" ").flatMap((s) => {
    if (PUNCT.has(s)) return [s];
    const tone = s.slice(-1);
    const body = s.slice(0, -1);
    const ini = YUE_INITIALS.find((i) => body.startsWith(i))!;
    const fin = body.slice(ini.length) || ini[ini.length - 1];
    return ["Y" + ini, "Y" + fin + tone];
  });
}

function cmu(word: string): string[] {
  const v = dictionary[word];
  if (v === undefined) throw new Error(`test word ${word} is not in the dictionary`);
  return v.split("#")[0].trim().split(" ");
}

const stripProsody = (p: string[]) => p.filter((x) => x !== "[" && x !== "]" && x !== "#" && x !== "UNK");

t.test("table - at least 150 hand-derived cases", async (t) => {
  t.ok(CASES.length >= 150, `${CASES.length} cases`);
  const langs = new Set(CASES.map((c) => c.lang));
  for (const l of ["zh", "ja", "ko", "yue", "en", "seg"]) t.ok(langs.has(l), `has ${l} cases`);
});

t.test("table - zh pinyin (tone sandhi, polyphones) to opencpop phones, word2ph", async (t) => {
  for (const c of CASES.filter((c) => c.lang === "zh" && c.pinyin)) {
    const r = cleanRun(c.text, "zh");
    t.same(r.phones, pinyinToPhones(c.pinyin!), `${c.text} -> ${c.pinyin}`);
    const expectW2p = c.pinyin!.split(" ").map((s) => (PUNCT.has(s) ? 1 : 2));
    t.same(r.word2ph, expectW2p, `${c.text} word2ph`);
  }
});

t.test("table - zh normalisation", async (t) => {
  for (const c of CASES.filter((c) => c.lang === "zh" && c.norm !== undefined)) t.equal(normalizeChinese(c.text), c.norm, c.text);
});

t.test("table - ja phones and prosody marks", async (t) => {
  for (const c of CASES.filter((c) => c.lang === "ja")) {
    const r = cleanRun(c.text, "ja");
    if (c.phones) t.same(stripProsody(r.phones), c.phones.split(" "), `${c.text} -> ${c.phones}`);
    // Upstream's clean_text maps "#" (not in symbols2) to UNK.
    if (c.prosody) t.same(r.phones, c.prosody.split(" ").map((p) => (p === "#" ? "UNK" : p)), `${c.text} -> ${c.prosody}`);
  }
});

t.test("table - ko jamo", async (t) => {
  for (const c of CASES.filter((c) => c.lang === "ko")) {
    const expected = Array.from(c.jamo!);
    t.same(cleanRun(c.text, "ko").phones, expected, `${c.text} -> ${c.jamo}`);
  }
});

t.test("table - yue jyutping to upstream's Y-symbols, word2ph", async (t) => {
  for (const c of CASES.filter((c) => c.lang === "yue")) {
    const r = cleanRun(c.text, "yue");
    t.same(r.phones, jyutpingToPhones(c.jyutping!), `${c.text} -> ${c.jyutping}`);
    t.equal(r.word2ph!.length, Array.from(normalizeCantonese(c.text)).length, `${c.text}: one word2ph entry per character`);
  }
});

t.test("table - en from CMU entries", async (t) => {
  for (const c of CASES.filter((c) => c.lang === "en")) {
    const expected = c.words!.split(" ").flatMap((w) => (PUNCT.has(w) ? [w] : cmu(w)));
    t.same(cleanRun(c.text, "en").phones, expected, c.text);
  }
});

t.test("table - language segmentation per mode", async (t) => {
  for (const c of CASES.filter((c) => c.lang === "seg")) {
    t.same(
      segmentLanguages(c.text, c.mode!).map((r) => [r.lang, r.text]),
      c.runs,
      `${c.mode}: ${c.text}`,
    );
  }
});

// ---------------------------------------------------------------------------------------------------
// Properties


const POOLS = [
  Array.from("的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黑"),
  Array.from("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだでどばびぶべぼぱぴぷぺぽアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモラリルレロワンーッャュョ"),
  Array.from("가나다라마바사아자차카타파하각난닫랄맘밥삿앙잦찿캌탙팦핳한국어안녕하세요감사합니다좋아요읽다닭값앉많"),
  Array.from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
  Array.from("0123456789"),
  Array.from(" ，。！？、：；,.!?…~-—“”《》()（）%/:+=°"),
  ["😀", "🇺🇸", "\u0000", "\u200b", "\t", "\n", "é", "Ж", "ก", "\ud800"],
];

function randomText(r: () => number): string {
  const len = 1 + Math.floor(r() * 40);
  let s = "";
  const main = Math.floor(r() * 4);
  for (let i = 0; i < len; i++) {
    const k = r() < 0.6 ? main : Math.floor(r() * POOLS.length);
    const pool = POOLS[k];
    s += pool[Math.floor(r() * pool.length)];
  }
  return s;
}

const lettersDigits = (s: string) => Array.from(s.matchAll(/[\p{L}\p{N}]/gu), (m) => m[0]).join("");
const SYMBOL_SET = new Set(SYMBOLS);

t.test("properties - random mixed text in every mode: symbols, word2ph, ids, never a crash", async (t) => {
  const r = rng(20261125);
  let segmentsSeen = 0;
  let failures = 0;
  for (let n = 0; n < 400; n++) {
    const text = randomText(r);
    const mode = LANGUAGE_MODES[Math.floor(r() * LANGUAGE_MODES.length)];
    const method = SPLIT_METHODS[Math.floor(r() * SPLIT_METHODS.length)];
    let segs;
    try {
      segs = textToSegments(text, mode, method);
    } catch (e) {
      if (!(e instanceof GsvError) || !["NO_SPEAKABLE_TEXT", "MISSING_TEXT", "UNSUPPORTED_LANGUAGE"].includes(e.code)) {
        failures++;
        t.fail(`${JSON.stringify(text)} (${mode}, ${method}): ${String(e)}`);
      }
      continue;
    }
    for (const s of segs) {
      segmentsSeen++;
      if (!s.phones.every((p) => SYMBOL_SET.has(p))) t.fail(`${JSON.stringify(text)}: phone outside symbols2: ${s.phones.filter((p) => !hasSymbol(p))}`);
      if (s.ids.length !== s.phones.length || !s.ids.every((id, i) => SYMBOLS[id] === s.phones[i])) t.fail(`${JSON.stringify(text)}: ids do not match phones`);
      if (s.runs.map((x) => x.phones.length).reduce((a, b) => a + b, 0) !== s.phones.length) t.fail(`${JSON.stringify(text)}: runs do not add up`);
      for (const run of s.runs) {
        if (run.word2ph === null) continue;
        const sum = run.word2ph.reduce((a, b) => a + b, 0);
        if (sum !== run.phones.length) t.fail(`${JSON.stringify(run.text)} (${run.lang}): word2ph sums to ${sum}, ${run.phones.length} phones`);
        if (run.word2ph.length !== Array.from(run.normText).length) t.fail(`${JSON.stringify(run.text)} (${run.lang}): word2ph has ${run.word2ph.length} entries for ${Array.from(run.normText).length} characters`);
      }
    }
  }
  t.equal(failures, 0, "no unexpected error");
  t.ok(segmentsSeen > 200, `${segmentsSeen} segments checked`);
});

t.test("properties - the splitter loses no text in any language and method", async (t) => {
  const r = rng(7);
  let checked = 0;
  for (let n = 0; n < 600; n++) {
    const text = randomText(r).replace(/[\u0000\u200b\ud800]/g, "");
    const method = SPLIT_METHODS[Math.floor(r() * SPLIT_METHODS.length)];
    const lang = r() < 0.5 ? "zh" : "en";
    const pieces = splitText(text, method, lang);
    const joined = lettersDigits(pieces.join(""));
    if (joined !== lettersDigits(text)) t.fail(`${JSON.stringify(text)} (${method}): ${JSON.stringify(pieces)}`);
    checked++;
  }
  t.equal(checked, 600);
});

// ---------------------------------------------------------------------------------------------------
// Bad input

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof GsvError ? e.code : `not a GsvError: ${String(e)}`;
  }
  return undefined;
}

t.test("bad input - every mode: empty, whitespace, emoji, control characters, other scripts", async (t) => {
  for (const mode of LANGUAGE_MODES) {
    t.equal(codeOf(() => textToSegments("", mode, "cut5")), "MISSING_TEXT", `${mode}: empty`);
    t.equal(codeOf(() => textToSegments(" \u3000\n\t", mode, "cut5")), "MISSING_TEXT", `${mode}: whitespace`);
    t.equal(codeOf(() => textToSegments("😀🎉👍🏽", mode, "cut5")), "NO_SPEAKABLE_TEXT", `${mode}: emoji only`);
    t.equal(codeOf(() => textToSegments("\u0001\u0002\u0007", mode, "cut5")), "NO_SPEAKABLE_TEXT", `${mode}: control characters only`);
    t.equal(codeOf(() => textToSegments("Здравствуйте", mode, "cut5")), "UNSUPPORTED_LANGUAGE", `${mode}: Cyrillic only`);
    t.equal(codeOf(() => textToSegments("。，！？", mode, "cut5")), "NO_SPEAKABLE_TEXT", `${mode}: punctuation only`);
  }
  // Emoji and control characters inside text are dropped, the text is read.
  t.same(textToSegments("你好😀\u0007世界", "zh", "cut5")[0].phones, textToSegments("你好世界", "zh", "cut5")[0].phones);
  t.same(textToSegments("こんにちは🎉", "ja", "cut5")[0].phones, textToSegments("こんにちは", "ja", "cut5")[0].phones);
  t.same(textToSegments("안녕\u0000하세요", "ko", "cut5")[0].phones, textToSegments("안녕하세요", "ko", "cut5")[0].phones);
  t.equal(codeOf(() => promptToPhones("😀", "zh")), "NO_SPEAKABLE_TEXT");
});

t.test("bad input - 50,000 characters without punctuation: refused by default, split when allowed", async (t) => {
  const r = rng(3);
  const han = POOLS[0];
  let zh = "";
  for (let i = 0; i < 50_000; i++) zh += han[Math.floor(r() * han.length)];
  t.equal(codeOf(() => textToSegments(zh, "zh", "cut5")), "TEXT_TOO_LONG");
  const segs = textToSegments(zh, "zh", "cut5", { maxChars: 50_000 });
  t.ok(segs.length >= 98, `${segs.length} segments`);
  t.ok(
    segs.every((s) => Array.from(s.text).length <= 511),
    "no segment over the 510-character limit (plus its terminator)",
  );
  t.equal(segs.map((s) => s.normText.replace(/[.,]/g, "")).join(""), zh, "every character is read once");
  const kana = "あいうえおかきくけこ".repeat(500);
  t.ok(textToSegments(kana, "ja", "cut5", { maxChars: 50_000 }).length >= 9, "5,000 kana");
  const hangul = "가나다라마바사아자차".repeat(500);
  t.ok(textToSegments(hangul, "ko", "cut5", { maxChars: 50_000 }).length >= 9, "5,000 hangul");
  const yue = "你好我哋去食飯".repeat(700);
  t.ok(textToSegments(yue, "yue", "cut0", { maxChars: 50_000 }).length >= 9, "4,900 Cantonese characters");
});
