/**
 * Japanese G2P after upstream GPT-SoVITS `text/japanese.py` (`g2p(norm_text, with_prosody=True)`):
 * the text is cut at every character that is not Japanese/alphanumeric; each piece goes through
 * OpenJTalk and `pyopenjtalk_g2p_prosody` (phones plus `[` pitch rise, `]` pitch fall, `#` accent
 * phrase border, the `^`/`$`/`?` ends dropped); the marks between pieces are kept (spaces dropped),
 * with 。、！？ mapped to . , ! ?.
 *
 * OpenJTalk is not available to Node, so the reading comes from kuromoji (Apache-2.0) and the IPADIC
 * dictionary it ships: the pronunciation of each morpheme, converted from katakana to OpenJTalk's
 * phone set here. IPADIC has no accent information, so every accent phrase is given the flat (heiban)
 * pattern: a `[` after its first mora, no `]`. Accent phrases are formed from the morphemes (content
 * word plus following particles, auxiliaries and suffixes; compound nouns joined). docs/frontend.md
 * states these gaps.
 *
 * The dictionary (about 40 MB unpacked, 300 MB resident once loaded) is loaded synchronously on first
 * use, so the other languages never pay for it.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";

interface KToken {
  surface_form: string;
  pos: string;
  pos_detail_1: string;
  reading?: string;
  pronunciation?: string;
  word_type: string;
}
interface KTokenizer {
  tokenize(text: string): KToken[];
}

const require = createRequire(import.meta.url);
let TOKENIZER: KTokenizer | undefined;

/** kuromoji's tokenizer, built synchronously from its packaged IPADIC files. */
export function japaneseTokenizer(): KTokenizer {
  if (TOKENIZER) return TOKENIZER;
  const Dyn = require("kuromoji/src/dict/DynamicDictionaries") as new () => {
    loadTrie(a: Int32Array, b: Int32Array): void;
    loadTokenInfoDictionaries(a: Uint8Array, b: Uint8Array, c: Uint8Array): void;
    loadConnectionCosts(a: Int16Array): void;
    loadUnknownDictionaries(a: Uint8Array, b: Uint8Array, c: Uint8Array, d: Uint8Array, e: Uint32Array, f: Uint8Array): void;
  };
  const Tokenizer = require("kuromoji/src/Tokenizer") as new (dic: unknown) => KTokenizer;
  const dir = join(dirname(require.resolve("kuromoji/package.json")), "dict");
  const load = (f: string) => new Uint8Array(gunzipSync(readFileSync(join(dir, f)))).buffer;
  const dic = new Dyn();
  dic.loadTrie(new Int32Array(load("base.dat.gz")), new Int32Array(load("check.dat.gz")));
  dic.loadTokenInfoDictionaries(new Uint8Array(load("tid.dat.gz")), new Uint8Array(load("tid_pos.dat.gz")), new Uint8Array(load("tid_map.dat.gz")));
  dic.loadConnectionCosts(new Int16Array(load("cc.dat.gz")));
  dic.loadUnknownDictionaries(
    new Uint8Array(load("unk.dat.gz")),
    new Uint8Array(load("unk_pos.dat.gz")),
    new Uint8Array(load("unk_map.dat.gz")),
    new Uint8Array(load("unk_char.dat.gz")),
    new Uint32Array(load("unk_compat.dat.gz")),
    new Uint8Array(load("unk_invoke.dat.gz")),
  );
  return (TOKENIZER = new Tokenizer(dic));
}

// ---------------------------------------------------------------------------------------------------
// Katakana -> OpenJTalk phones

/** Two-character (yōon and extended) kana first, then single kana. Values are phones, space-separated. */
const KANA2: Record<string, string> = {
  キャ: "ky a", キュ: "ky u", キェ: "ky e", キョ: "ky o", ギャ: "gy a", ギュ: "gy u", ギェ: "gy e", ギョ: "gy o",
  シャ: "sh a", シュ: "sh u", シェ: "sh e", ショ: "sh o", ジャ: "j a", ジュ: "j u", ジェ: "j e", ジョ: "j o",
  チャ: "ch a", チュ: "ch u", チェ: "ch e", チョ: "ch o", ヂャ: "j a", ヂュ: "j u", ヂェ: "j e", ヂョ: "j o",
  ニャ: "ny a", ニュ: "ny u", ニェ: "ny e", ニョ: "ny o", ヒャ: "hy a", ヒュ: "hy u", ヒェ: "hy e", ヒョ: "hy o",
  ビャ: "by a", ビュ: "by u", ビェ: "by e", ビョ: "by o", ピャ: "py a", ピュ: "py u", ピェ: "py e", ピョ: "py o",
  ミャ: "my a", ミュ: "my u", ミェ: "my e", ミョ: "my o", リャ: "ry a", リュ: "ry u", リェ: "ry e", リョ: "ry o",
  ティ: "t i", トゥ: "t u", テュ: "ty u", ディ: "d i", ドゥ: "d u", デュ: "dy u",
  ファ: "f a", フィ: "f i", フェ: "f e", フォ: "f o", フュ: "fy u",
  ウィ: "w i", ウェ: "w e", ウォ: "w o", ヴァ: "v a", ヴィ: "v i", ヴェ: "v e", ヴォ: "v o", ヴュ: "by u",
  ツァ: "ts a", ツィ: "ts i", ツェ: "ts e", ツォ: "ts o", スィ: "s i", ズィ: "z i", イェ: "y e",
  クァ: "k u a", クィ: "k u i", クェ: "k u e", クォ: "k u o", グァ: "g u a",
};
const KANA1: Record<string, string> = {
  ア: "a", イ: "i", ウ: "u", エ: "e", オ: "o", ァ: "a", ィ: "i", ゥ: "u", ェ: "e", ォ: "o",
  カ: "k a", キ: "k i", ク: "k u", ケ: "k e", コ: "k o", ヵ: "k a", ヶ: "k e", ガ: "g a", ギ: "g i", グ: "g u", ゲ: "g e", ゴ: "g o",
  サ: "s a", シ: "sh i", ス: "s u", セ: "s e", ソ: "s o", ザ: "z a", ジ: "j i", ズ: "z u", ゼ: "z e", ゾ: "z o",
  タ: "t a", チ: "ch i", ツ: "ts u", テ: "t e", ト: "t o", ダ: "d a", ヂ: "j i", ヅ: "z u", デ: "d e", ド: "d o",
  ナ: "n a", ニ: "n i", ヌ: "n u", ネ: "n e", ノ: "n o", ハ: "h a", ヒ: "h i", フ: "f u", ヘ: "h e", ホ: "h o",
  バ: "b a", ビ: "b i", ブ: "b u", ベ: "b e", ボ: "b o", パ: "p a", ピ: "p i", プ: "p u", ペ: "p e", ポ: "p o",
  マ: "m a", ミ: "m i", ム: "m u", メ: "m e", モ: "m o", ヤ: "y a", ユ: "y u", ヨ: "y o", ャ: "y a", ュ: "y u", ョ: "y o",
  ラ: "r a", リ: "r i", ル: "r u", レ: "r e", ロ: "r o", ワ: "w a", ヮ: "w a", ヰ: "i", ヱ: "e", ヲ: "o", ン: "N", ッ: "cl", ヴ: "v u",
};

const VOWELS = new Set(["a", "i", "u", "e", "o"]);

/** Hiragana to katakana (U+3041..U+3096 -> U+30A1..U+30F6). */
export function toKatakana(s: string): string {
  return s.replace(/[\u3041-\u3096]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 0x60));
}

/** Katakana pronunciation -> morae, each a list of phones ("ー" repeats the previous vowel). */
export function kanaToMorae(kana: string): string[][] {
  const k = toKatakana(kana);
  const morae: string[][] = [];
  const cs = Array.from(k);
  for (let i = 0; i < cs.length; i++) {
    const two = cs[i] + (cs[i + 1] ?? "");
    if (KANA2[two]) {
      morae.push(KANA2[two].split(" "));
      i++;
      continue;
    }
    const c = cs[i];
    if (c === "ー" || c === "〜") {
      const prev = morae.length > 0 ? morae[morae.length - 1] : undefined;
      const v = prev ? prev[prev.length - 1] : undefined;
      if (v && VOWELS.has(v)) morae.push([v]);
      continue;
    }
    if (KANA1[c]) morae.push(KANA1[c].split(" "));
  }
  return morae;
}

// ---------------------------------------------------------------------------------------------------
// Numbers and Latin letters (OpenJTalk reads both itself)

const JA_DIGITS = "〇一二三四五六七八九";

/** An integer as kanji numerals with 十 百 千 万 億 兆 (what OpenJTalk's number reader says). */
export function jaNumberToKanji(digits: string): string {
  const d = digits.replace(/^0+(?=\d)/, "");
  if (d.length > 16) return Array.from(d, (c) => JA_DIGITS[Number(c)]).join("");
  if (d === "0") return "零";
  const big = ["", "万", "億", "兆"];
  let out = "";
  const groups: string[] = [];
  for (let end = d.length; end > 0; end -= 4) groups.unshift(d.slice(Math.max(0, end - 4), end));
  groups.forEach((g, gi) => {
    const n = Number(g);
    if (n === 0) return;
    const p = g.padStart(4, "0");
    let s = "";
    const units = ["千", "百", "十", ""];
    for (let k = 0; k < 4; k++) {
      const v = Number(p[k]);
      if (v === 0) continue;
      s += (v === 1 && k < 3 ? "" : JA_DIGITS[v]) + units[k];
    }
    out += s + big[groups.length - 1 - gi];
  });
  return out;
}

function digitsToKanji(text: string): string {
  return text.replace(/(\d+)\.(\d+)/g, (_m, a: string, b: string) => jaNumberToKanji(a) + "点" + Array.from(b, (c) => JA_DIGITS[Number(c)]).join("")).replace(/\d+/g, (m) => jaNumberToKanji(m));
}

const LETTER_KANA: Record<string, string> = {
  a: "エー", b: "ビー", c: "シー", d: "ディー", e: "イー", f: "エフ", g: "ジー", h: "エイチ", i: "アイ", j: "ジェー", k: "ケー", l: "エル", m: "エム",
  n: "エヌ", o: "オー", p: "ピー", q: "キュー", r: "アール", s: "エス", t: "ティー", u: "ユー", v: "ブイ", w: "ダブリュー", x: "エックス", y: "ワイ", z: "ゼット",
};

// ---------------------------------------------------------------------------------------------------
// Accent phrases and prosody marks

/** Morphemes that attach to the accent phrase before them. */
function attaches(t: KToken, prev: KToken | undefined): boolean {
  if (!prev) return false;
  if (t.pos === "助詞" || t.pos === "助動詞") return true;
  if (t.pos_detail_1 === "接尾" || t.pos_detail_1 === "非自立") return true;
  if (prev.pos === "接頭詞") return true;
  if (t.pos === "名詞" && prev.pos === "名詞" && t.pos_detail_1 !== "代名詞" && prev.pos_detail_1 !== "代名詞") return true;
  if (t.pos === "動詞" && t.pos_detail_1 === "非自立") return true;
  return false;
}

const HAS_KANJI = /[\u4e00-\u9fff\u3005]/;

/** The katakana pronunciation of one morpheme. */
function pronunciationOf(t: KToken): string {
  let p = t.pronunciation && t.pronunciation !== "*" ? t.pronunciation : t.reading && t.reading !== "*" ? t.reading : "";
  if (!p) {
    const s = toKatakana(t.surface_form.toLowerCase());
    if (/^[\u30A1-\u30FC]+$/.test(s)) p = s;
    else if (/^[a-z]+$/.test(s)) p = Array.from(s, (c) => LETTER_KANA[c]).join("");
    else {
      // Unknown kanji: read each character on its own.
      p = Array.from(t.surface_form, (c) => {
        const r = japaneseTokenizer().tokenize(c)[0];
        return r && r.pronunciation && r.pronunciation !== "*" && r.surface_form === c ? r.pronunciation : "";
      }).join("");
    }
  }
  // OpenJTalk's dictionary writes the Sino-Japanese long e (学生 ガクセー); IPADIC writes エイ.
  if (HAS_KANJI.test(t.surface_form)) p = p.replace(/([ケセテネヘメレゲゼデベペ])イ/g, "$1ー");
  return p;
}

/** pyopenjtalk_g2p_prosody(text)[1:-1] for one piece of Japanese text (no marks inside). */
export function prosodyPhones(text: string): string[] {
  const tokens = japaneseTokenizer().tokenize(digitsToKanji(text));
  const phrases: string[][][] = [];
  let prev: KToken | undefined;
  for (const t of tokens) {
    let morae = kanaToMorae(pronunciationOf(t));
    // The volitional auxiliary う after an o-row mora is a long vowel (ましょう m a sh o o), as OpenJTalk reads it.
    const lastPhrase = phrases.length > 0 ? phrases[phrases.length - 1] : undefined;
    const lastMora = lastPhrase && lastPhrase.length > 0 ? lastPhrase[lastPhrase.length - 1] : undefined;
    if (t.pos === "助動詞" && t.surface_form === "う" && lastMora && lastMora[lastMora.length - 1] === "o") morae = [["o"]];
    if (morae.length === 0) continue;
    if (phrases.length === 0 || !attaches(t, prev)) phrases.push([]);
    phrases[phrases.length - 1].push(...morae);
    prev = t;
  }
  const out: string[] = [];
  phrases.forEach((morae, pi) => {
    morae.forEach((mora, mi) => {
      out.push(...mora);
      const lastOfPhrase = mi === morae.length - 1;
      if (lastOfPhrase && pi < phrases.length - 1) out.push("#");
      else if (mi === 0 && morae.length >= 2) out.push("["); // heiban: rise after the first mora
    });
  });
  return out;
}

const JA_CHAR = /[A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d]/;
const JA_PUNCT: Record<string, string> = { "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",", "...": "…" };

/** Half-width katakana and full-width alphanumerics to the forms the tokenizer knows. */
function foldWidth(s: string): string {
  return s.normalize("NFKC");
}

/** japanese.text_normalize: repeated punctuation collapsed. */
export function normalizeJapanese(text: string): string {
  return text.replace(/([!?…,.\-])[!?…,.\-]+/g, "$1");
}

/** japanese.g2p(norm_text, with_prosody=True). */
export function g2pJapanese(normText: string): string[] {
  const text = normText.replaceAll("％", "パーセント").toLowerCase();
  const phones: string[] = [];
  let piece = "";
  const flush = () => {
    if (piece) phones.push(...prosodyPhones(foldWidth(piece)));
    piece = "";
  };
  for (const ch of text) {
    if (JA_CHAR.test(ch)) {
      piece += ch;
      continue;
    }
    flush();
    if (ch === " ") continue;
    phones.push(JA_PUNCT[ch] ?? ch);
  }
  flush();
  return phones;
}
