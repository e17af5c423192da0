/**
 * Mandarin G2P after upstream GPT-SoVITS `text/chinese2.py` (the v2/v3 path):
 *
 *   text_normalize: TextNormalizer (zh-normalize.ts), punctuation mapped to , . ! ? … -, everything that
 *   is not U+4E00..U+9FA5 or punctuation deleted, repeated punctuation collapsed.
 *   g2p: sentences split after punctuation; per sentence jieba POS segmentation (jieba-wasm, the same
 *   dictionary as jieba_fast), pre_merge_for_modify, the sentence's pinyin read in context, upstream's
 *   polyphone dictionary (polyphonic.rep + polyphonic-fix.rep, `correct_pronunciation`), tone sandhi,
 *   erhua tones, then pinyin -> (initial, final+tone) through opencpop-strict.txt; word2ph is 2 per
 *   syllable and 1 per punctuation mark.
 *
 * Upstream reads the sentence's pinyin with the g2pW neural model; here pinyin-pro (MIT, bundled
 * dictionaries with word-level polyphone handling) stands in for it. docs/frontend.md says what follows.
 */
import { readFileSync } from "node:fs";
import { fromRoot } from "../../shared/paths.js";
import { jiebaWasm, pinyinProModule } from "./lazy.js";
import { modifiedTone, preMergeForModify, type Word } from "./tone-sandhi.js";
import { normalizeZhSentences } from "./zh-normalize.js";

/** Upstream `punctuation` (symbols.py): the only non-syllable phones of zh. */
export const ZH_PUNCTUATION = ["!", "?", "…", ",", ".", "-"] as const;
const PUNCT_SET: ReadonlySet<string> = new Set(ZH_PUNCTUATION);

// ---------------------------------------------------------------------------------------------------
// Data

function dataFile(name: string): string {
  return readFileSync(fromRoot("services", "text-frontend", "data", name), "utf8");
}

let OPENCPOP: Map<string, [string, string]> | undefined;
/** opencpop-strict.txt: toneless pinyin -> [initial symbol, final symbol]. */
export function opencpopTable(): Map<string, [string, string]> {
  if (OPENCPOP) return OPENCPOP;
  const m = new Map<string, [string, string]>();
  for (const line of dataFile("opencpop-strict.txt").split("\n")) {
    const cols = line.trim().split("\t");
    if (cols.length !== 2) continue;
    const [c, v] = cols[1].split(" ");
    m.set(cols[0], [c, v]);
  }
  return (OPENCPOP = m);
}

let POLY: Map<string, string[]> | undefined;
/** Upstream's polyphone dictionary: polyphonic.rep, then polyphonic-fix.rep (later entries win). */
function polyphonic(): Map<string, string[]> {
  if (POLY) return POLY;
  const m = new Map<string, string[]>();
  for (const file of ["polyphonic.rep", "polyphonic-fix.rep"]) {
    for (const line of dataFile(file).split("\n")) {
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      const key = line.slice(0, colon).trim();
      const values = Array.from(line.slice(colon + 1).matchAll(/'([a-z]+[1-5])'/g), (x) => x[1]);
      if (key && values.length > 0) m.set(key, values);
    }
  }
  return (POLY = m);
}

// ---------------------------------------------------------------------------------------------------
// Normalisation (text_normalize)

const REP_MAP: [string, string][] = [
  ["：", ","], ["；", ","], ["，", ","], ["。", "."], ["！", "!"], ["？", "?"], ["\n", "."], ["·", ","], ["、", ","],
  ["...", "…"], ["$", "."], ["/", ","], ["—", "-"], ["~", "…"], ["～", "…"],
];
const REP_RE = new RegExp(REP_MAP.map(([k]) => k.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|"), "g");
const REP: Record<string, string> = Object.fromEntries(REP_MAP);

/** chinese2.replace_punctuation. */
export function replaceZhPunctuation(text: string): string {
  const t = text.replaceAll("嗯", "恩").replaceAll("呣", "母").replace(REP_RE, (m) => REP[m]);
  return t.replace(/[^\u4e00-\u9fa5!?…,.\-]+/g, "");
}

/** Upstream replace_consecutive_punctuation over , . ! ? … - */
export function collapseZhPunctuation(text: string): string {
  return text.replace(/([!?…,.\-])[!?…,.\-]+/g, "$1");
}

/** chinese2.text_normalize. */
export function normalizeChinese(text: string): string {
  let dest = "";
  for (const s of normalizeZhSentences(text)) dest += replaceZhPunctuation(s);
  return collapseZhPunctuation(dest);
}

// ---------------------------------------------------------------------------------------------------
// Pinyin

const chars = (s: string) => Array.from(s);
const HAN = /^[\u4e00-\u9fa5]$/;

/** pinyin-pro syllables ("zhong1", "lv4", neutral "de5") of a Han-only string, one per character. */
function pinyinOfHan(run: string): string[] {
  const { pinyin } = pinyinProModule();
  // Base tones, as g2pW gives them: pinyin-pro's own 一/不 sandhi is off, upstream's tone_sandhi decides.
  const opts = { toneType: "num", type: "array", v: true, toneSandhi: false } as const;
  const out = pinyin(run, opts);
  const cs = chars(run);
  if (out.length !== cs.length) return cs.map((c) => toSyllable(pinyin(c, opts)[0] ?? ""));
  return out.map(toSyllable);
}

function toSyllable(p: string): string {
  const m = /^([a-zü]+)([0-5])?$/.exec(p.trim().toLowerCase());
  if (!m) return "UNK5";
  const body = m[1].replaceAll("ü", "v");
  const t = m[2] === undefined || m[2] === "0" ? "5" : m[2];
  return body + t;
}

/** Syllables for a string of Han characters and punctuation: punctuation stands for itself. */
function readSentence(text: string): string[] {
  const out: string[] = [];
  let run = "";
  const flush = () => {
    if (run) out.push(...pinyinOfHan(run));
    run = "";
  };
  for (const c of text) {
    if (HAN.test(c)) run += c;
    else {
      flush();
      out.push(c);
    }
  }
  flush();
  return out;
}

/** A word's syllables read on its own (upstream: pypinyin lazy_pinyin, used by the 3-3 merges). */
function wordSyllables(word: string): string[] {
  return readSentence(word);
}

/** g2pw.correct_pronunciation: the whole word from the dictionary, else single-character entries. */
function correctPronunciation(word: string, syllables: string[]): string[] {
  const dict = polyphonic();
  const whole = dict.get(word);
  if (whole) return [...whole];
  const cs = chars(word);
  for (let i = 0; i < cs.length; i++) {
    const single = dict.get(cs[i]);
    if (single) syllables[i] = single[0];
  }
  return syllables;
}

const MUST_ERHUA = new Set(["小院儿", "胡同儿", "范儿", "老汉儿", "撒欢儿", "寻老礼儿", "妥妥儿", "媳妇儿"]);
const NOT_ERHUA = new Set(
  "虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 婴儿 婴幼儿 连体儿 脑瘫儿 流浪儿 体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 孙儿 侄孙儿 女儿 男儿 红孩儿 花儿 虫儿 马儿 鸟儿 猪儿 猫儿 狗儿 少儿".split(
    " ",
  ),
);

/** chinese2._merge_erhua (tones only: 儿 keeps its own syllable, as upstream's v2 code does). */
function mergeErhua(finals: string[], word: string, pos: string): string[] {
  const cs = chars(word);
  for (let i = 0; i < finals.length; i++) {
    if (i === finals.length - 1 && cs[i] === "儿" && finals[i] === "er1") finals[i] = "er2";
  }
  if (!MUST_ERHUA.has(word) && (NOT_ERHUA.has(word) || ["a", "j", "nr"].includes(pos))) return finals;
  if (finals.length !== cs.length) return finals;
  const out: string[] = [];
  for (let i = 0; i < finals.length; i++) {
    let phn = finals[i];
    if (i === finals.length - 1 && cs[i] === "儿" && (phn === "er2" || phn === "er5") && !NOT_ERHUA.has(cs.slice(-2).join("")) && out.length > 0) {
      const prev = out[out.length - 1];
      phn = "er" + prev[prev.length - 1];
    }
    out.push(phn);
  }
  return out;
}

/**
 * Syllables upstream's table has no row for (interjections read m, n, ng, hm, hng, ê): upstream's
 * assertion fails on them; here they take the nearest syllable of the table.
 */
const SYLLABLE_FALLBACK: Record<string, string> = { m: "mu", n: "en", ng: "en", hm: "hen", hng: "heng", ê: "ei", e: "e", r: "er", UNK: "en" };

/** A syllable with tone ("jue2") -> [initial, final+tone] symbols. */
export function syllableToPhones(syllable: string): [string, string] {
  const toneDigit = syllable[syllable.length - 1];
  let body = syllable.slice(0, -1);
  const table = opencpopTable();
  let row = table.get(body);
  if (!row) {
    body = SYLLABLE_FALLBACK[body] ?? body;
    row = table.get(body) ?? table.get("en")!;
  }
  return [row[0], row[1] + toneDigit];
}

export interface ZhG2P {
  phones: string[];
  word2ph: number[];
}

/** chinese2.g2p over normalised text (Han characters and , . ! ? … - only). */
export function g2pChinese(normText: string): ZhG2P {
  // Sentences: split after each punctuation mark (and the spaces after it), empty ones dropped.
  const sentences = normText.split(/(?<=[!?…,.\-])\s*/).filter((s) => s.trim() !== "");
  const phones: string[] = [];
  const word2ph: number[] = [];
  for (const sentence of sentences) {
    const seg = sentence.replace(/[a-zA-Z]+/g, "");
    if (!seg) continue;
    const sentencePinyin = readSentence(seg);
    const words: Word[] = jiebaWasm().tag(seg, true).map((t) => [t.word, t.tag]);
    const merged = preMergeForModify(words, wordSyllables);
    let cursor = 0;
    for (const [word, pos] of merged) {
      const n = chars(word).length;
      const wordPinyin = sentencePinyin.slice(cursor, cursor + n);
      cursor += n;
      if (pos === "eng") continue;
      let finals = correctPronunciation(word, wordPinyin);
      finals = modifiedTone(word, pos, finals);
      finals = mergeErhua(finals, word, pos);
      for (const f of finals) {
        if (PUNCT_SET.has(f)) {
          phones.push(f);
          word2ph.push(1);
        } else if (!/^[a-z]/.test(f)) {
          // A character jieba/pinyin could not read and that is not a phone: upstream cannot reach this.
          phones.push("UNK");
          word2ph.push(1);
        } else {
          const [c, v] = syllableToPhones(f);
          phones.push(c, v);
          word2ph.push(2);
        }
      }
    }
  }
  return { phones, word2ph };
}

/**
 * Upstream clean_text for zh, including clean_special: a "￥" becomes SP2 and a "^" SP3 (the mark is
 * read as "," and every "," phone of the text becomes the special symbol, as upstream does).
 */
export function cleanChinese(text: string): { normText: string; phones: string[]; word2ph: number[] } {
  for (const [mark, symbol] of [
    ["￥", "SP2"],
    ["^", "SP3"],
  ] as const) {
    if (text.includes(mark)) {
      const normText = normalizeChinese(text.replaceAll(mark, ","));
      const r = g2pChinese(normText);
      return { normText, phones: r.phones.map((p) => (p === "," ? symbol : p)), word2ph: r.word2ph };
    }
  }
  const normText = normalizeChinese(text);
  const r = g2pChinese(normText);
  return { normText, ...r };
}
