/**
 * The text frontend: validate, clean, split and convert text to phone ids, as upstream GPT-SoVITS
 * `TextPreprocessor.preprocess` (target text) and `TTS.run` (prompt text) do.
 *
 * Languages: zh (chinese.ts), en (english.ts), ja (japanese.ts), ko (korean.ts), yue (cantonese.ts);
 * mixed text is cut into language runs by the mode (langseg.ts, upstream LangSegmenter and
 * get_phones_and_bert). docs/frontend.md lists the differences from upstream.
 */
import { GsvError } from "../../shared/errors.js";
import { cleanCantonese } from "./cantonese.js";
import { cleanChinese } from "./chinese.js";
import { g2pEnglish } from "./english.js";
import { g2pJapanese, normalizeJapanese } from "./japanese.js";
import { g2pKorean } from "./korean.js";
import { segmentLanguages } from "./langseg.js";
import { SPLIT_MARKS, cpLength, isSplitMethod, splitText, type SplitMethod } from "./split.js";
import { hasSymbol, phonesToIds } from "./symbols.js";

export type { SplitMethod } from "./split.js";

/** The language modes upstream accepts for v2 and later (`TTS_Config.v2_languages`). */
export const LANGUAGE_MODES = ["auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko"] as const;
export type LanguageMode = (typeof LANGUAGE_MODES)[number];

/** Default maximum text length, in characters (code points). */
export const DEFAULT_MAX_CHARS = 5000;

/** One unit of synthesis: a segment of the target text, or the prompt text. */
export interface Segment {
  /** The segment as split from the input (before normalisation). */
  text: string;
  /** Languages whose G2P produced the phones, joined by "+" ("zh", "zh+en"). */
  lang: string;
  /** Normalised text (upstream `norm_text`). */
  normText: string;
  /** Phone symbols. */
  phones: string[];
  /** Phone ids in the v2 symbol table (same length as phones). */
  ids: number[];
  /** Phones per character of normText when every run is zh or yue; null otherwise (see runs). */
  word2ph: number[] | null;
  /** The language runs, in order (their phones concatenate to `phones`). */
  runs: Run[];
}

export interface TextOptions {
  /** Longest accepted text, in characters; default DEFAULT_MAX_CHARS. */
  maxChars?: number;
}

/** Lower-cased mode, or UNKNOWN_LANGUAGE. */
export function checkLanguageMode(lang: unknown): LanguageMode {
  const mode = typeof lang === "string" ? lang.toLowerCase() : "";
  if ((LANGUAGE_MODES as readonly string[]).includes(mode)) return mode as LanguageMode;
  const shown = typeof lang === "string" ? JSON.stringify(lang) : String(lang);
  throw new GsvError("UNKNOWN_LANGUAGE", `unknown language ${shown}; expected one of ${LANGUAGE_MODES.join(", ")}`);
}

// ---------------------------------------------------------------------------------------------------
// Cleaning: control characters, format characters and emoji never reach the splitter.

/** A character that starts an emoji: pictographs, skin-tone modifiers, regional indicators (flags). */
const EMOJI = /[\p{Extended_Pictographic}\p{Emoji_Modifier}\u{1F1E6}-\u{1F1FF}]/u;
/** Characters that continue an emoji sequence: joiner, variation selectors, keycap, tag characters. */
const EMOJI_JOINERS = /[\u200D\uFE0E\uFE0F\u20E3\u{E0020}-\u{E007F}]/u;
/**
 * Characters dropped without a trace: control characters (line breaks and tabs are handled first),
 * format characters such as the soft hyphen, lone surrogates, private use, unassigned code points.
 */
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\uFE0E\uFE0F\u20E3]/u;
const ALNUM = /[\p{L}\p{N}]/u;
const SPACE = /\s/u;

/**
 * Remove what cannot be spoken and could upset the splitter: control characters, format characters,
 * emoji. Line breaks become "\n", tabs become spaces. An emoji (or zero-width space) between two
 * letters or digits leaves a space; before punctuation or at the end it also takes the spaces in front
 * of it ("Great 😀." -> "Great."). Linear in the text length.
 */
export function cleanText(text: string): string {
  const out: string[] = [];
  const cps = Array.from(text.replace(/\r\n?|[\u0085\u2028\u2029]/g, "\n").replace(/[\t\v\f]/g, " "));
  for (let i = 0; i < cps.length; i++) {
    const ch = cps[i];
    if (ch === "\n") {
      out.push(ch);
      continue;
    }
    if (EMOJI.test(ch) || ch === "\u200B") {
      // Consume the whole run of removable characters.
      let j = i + 1;
      while (j < cps.length && cps[j] !== "\n" && (EMOJI.test(cps[j]) || EMOJI_JOINERS.test(cps[j]) || INVISIBLE.test(cps[j]))) j++;
      const after = j < cps.length ? cps[j] : "";
      const before = out.length > 0 ? out[out.length - 1] : "";
      if (ALNUM.test(before) && ALNUM.test(after)) out.push(" ");
      else if (after === "" || (!ALNUM.test(after) && !SPACE.test(after))) {
        while (out.length > 0 && out[out.length - 1] !== "\n" && SPACE.test(out[out.length - 1])) out.pop();
      }
      i = j - 1;
      continue;
    }
    if (INVISIBLE.test(ch)) continue;
    out.push(ch);
  }
  return out.join("");
}

// ---------------------------------------------------------------------------------------------------
// Scripts no language of the frontend reads

/** Letters of scripts other than Latin, Han, kana, hangul and bopomofo (and Greek, read by zh). */
const FOREIGN_LETTER = /(?![\p{Script=Latin}\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}\p{Script=Bopomofo}\p{Script=Greek}])\p{L}/u;

function scriptName(ch: string): string {
  for (const s of ["Cyrillic", "Arabic", "Hebrew", "Thai", "Devanagari", "Armenian", "Georgian", "Ethiopic", "Tamil", "Bengali", "Khmer", "Lao", "Tibetan", "Mongolian"]) {
    if (new RegExp(`\\p{Script=${s}}`, "u").test(ch)) return s;
  }
  return "a script no language mode reads";
}

// ---------------------------------------------------------------------------------------------------
// Segments

const isWordPhone = (p: string) => !NON_WORD_PHONES.has(p);
/** Phones that are not speech: punctuation, pauses, prosody marks, Korean space/unknown, UNK. */
const NON_WORD_PHONES: ReadonlySet<string> = new Set(["!", "?", "…", ",", ".", "-", "SP", "SP2", "SP3", "UNK", "_", "[", "]", "#", "空", "停"]);

/** One language run of a segment after cleaning (upstream clean_text_inf). */
export interface Run {
  lang: string;
  text: string;
  normText: string;
  phones: string[];
  /** Phones per character of normText for zh and yue (upstream computes it for those); else null. */
  word2ph: number[] | null;
}

/** Upstream clean_text for one run: G2P of the run's language, phones outside the table become "UNK". */
export function cleanRun(text: string, lang: string): Run {
  const r = cleanRunRaw(text, lang);
  r.phones = r.phones.map((p) => (hasSymbol(p) ? p : "UNK"));
  return r;
}

function cleanRunRaw(text: string, lang: string): Run {
  switch (lang) {
    case "zh": {
      const r = cleanChinese(text);
      return { lang, text, normText: r.normText, phones: r.phones, word2ph: r.word2ph };
    }
    case "yue": {
      const r = cleanCantonese(text);
      return { lang, text, normText: r.normText, phones: r.phones, word2ph: r.word2ph };
    }
    case "ja": {
      const normText = normalizeJapanese(text);
      return { lang, text, normText, phones: g2pJapanese(normText), word2ph: null };
    }
    case "ko":
      return { lang, text, normText: text, phones: g2pKorean(text), word2ph: null };
    default: {
      const r = g2pEnglish(text);
      return { lang: "en", text, normText: r.normText, phones: r.phones, word2ph: null };
    }
  }
}

/**
 * Phones of one piece of text (upstream `get_phones_and_bert`): runs of spaces collapsed, language
 * runs found by the mode, each run cleaned, everything concatenated; when fewer than 6 phones result the
 * piece is read again with "." in front. Null when nothing speakable is left.
 */
function segmentFor(text: string, mode: LanguageMode): Segment | null {
  const t = text.replace(/ {2,}/g, " ");
  const read = (s: string) => segmentLanguages(s, mode).map((r) => cleanRun(r.text, r.lang));
  let runs = read(t);
  if (runs.reduce((n, r) => n + r.phones.length, 0) < 6) runs = read("." + t);
  runs = runs.filter((r) => r.phones.length > 0);
  const phones = runs.flatMap((r) => r.phones);
  if (!phones.some(isWordPhone)) return null;
  const normText = runs.map((r) => r.normText).join("");
  const langs = [...new Set(runs.map((r) => r.lang))];
  const word2ph = runs.every((r) => r.word2ph !== null) ? runs.flatMap((r) => r.word2ph!) : null;
  return { text, lang: langs.join("+"), normText, phones, ids: phonesToIds(phones), word2ph, runs };
}

/** Refuse text whose only letters are of scripts no mode reads (Cyrillic, Arabic, Thai, ...). */
function checkReadable(text: string): void {
  const m = FOREIGN_LETTER.exec(text);
  if (!m) return;
  if (/[\p{Script=Latin}\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}\p{N}]/u.test(text)) return;
  throw new GsvError(
    "UNSUPPORTED_LANGUAGE",
    `the text is written in ${scriptName(m[0])} (first letter ${JSON.stringify(m[0])}); only Chinese, Japanese, Korean, Cantonese and English can be read`,
  );
}

function checkText(text: unknown, maxChars: number): string {
  if (typeof text !== "string" || /^\s*$/u.test(text)) throw new GsvError("MISSING_TEXT", "text is empty");
  const len = cpLength(text);
  if (len > maxChars) throw new GsvError("TEXT_TOO_LONG", `text has ${len} characters; the maximum is ${maxChars}`);
  return text;
}

/**
 * Target text to segments: clean, refuse text only in scripts no mode reads, split (upstream pre_seg_text with the given
 * cut method), G2P each segment. Throws GsvError: UNKNOWN_LANGUAGE, BAD_PARAMETER, MISSING_TEXT,
 * TEXT_TOO_LONG, UNSUPPORTED_LANGUAGE, NO_SPEAKABLE_TEXT.
 */
export function textToSegments(text: string, lang: string, method: SplitMethod, opts?: TextOptions): Segment[] {
  const mode = checkLanguageMode(lang);
  if (!isSplitMethod(method)) throw new GsvError("BAD_PARAMETER", `unknown text split method ${JSON.stringify(method)}; expected cut0..cut5`);
  const maxChars = opts?.maxChars ?? DEFAULT_MAX_CHARS;
  if (!Number.isInteger(maxChars) || maxChars < 1) throw new GsvError("BAD_PARAMETER", `maxChars must be a positive integer, got ${maxChars}`);
  checkText(text, maxChars);
  const cleaned = cleanText(text);
  checkReadable(cleaned);
  const segments: Segment[] = [];
  for (const piece of splitText(cleaned, method, mode)) {
    const seg = segmentFor(piece, mode);
    if (seg) segments.push(seg);
  }
  if (segments.length === 0) throw new GsvError("NO_SPEAKABLE_TEXT", "the text has no words that can be spoken");
  return segments;
}

/**
 * Prompt (reference) text to phones, as upstream TTS.run prepares it: newlines stripped (inner ones
 * become spaces), "." (en) or "。" appended when it does not end with a split mark, no cutting.
 */
export function promptToPhones(text: string, lang: string): Segment {
  const mode = checkLanguageMode(lang);
  checkText(text, DEFAULT_MAX_CHARS);
  const cleaned = cleanText(text);
  checkReadable(cleaned);
  let t = cleaned.replace(/^\n+|\n+$/g, "").replace(/\n+/g, " ");
  if (t.length === 0) throw new GsvError("NO_SPEAKABLE_TEXT", "the prompt text has nothing that can be spoken");
  const last = Array.from(t.slice(-2)).pop() ?? "";
  if (!SPLIT_MARKS.has(last)) t += mode === "en" ? "." : "。";
  const seg = segmentFor(t, mode);
  if (!seg) throw new GsvError("NO_SPEAKABLE_TEXT", "the prompt text has no words that can be spoken");
  return seg;
}
