/**
 * The text frontend: validate, clean, split and convert text to phone ids, as upstream GPT-SoVITS
 * `TextPreprocessor.preprocess` (target text) and `TTS.run` (prompt text) do.
 *
 * Only English G2P exists so far. Text in every language mode is treated as English (upstream keeps
 * English runs English in every mode); text with Chinese, Japanese or Korean characters is refused with
 * UNSUPPORTED_LANGUAGE in every mode but "en" (where upstream's English cleaner drops such characters,
 * as it does here). docs/frontend.md lists the differences from upstream.
 */
import { GsvError } from "../../shared/errors.js";
import { g2pEnglish } from "./english.js";
import { SPLIT_MARKS, cpLength, isSplitMethod, splitText, type SplitMethod } from "./split.js";
import { phonesToIds } from "./symbols.js";

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
  /** Language whose G2P produced the phones ("en" for now). */
  lang: string;
  /** Normalised text (upstream `norm_text`). */
  normText: string;
  /** Phone symbols. */
  phones: string[];
  /** Phone ids in the v2 symbol table (same length as phones). */
  ids: number[];
  /** Phones per character of normText (zh only upstream); null for English. */
  word2ph: number[] | null;
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
// Scripts we cannot read yet

const SCRIPTS: { name: string; language: string; re: RegExp }[] = [
  { name: "Han characters", language: "Chinese", re: /\p{Script=Han}/u },
  { name: "Japanese kana", language: "Japanese", re: /[\p{Script=Hiragana}\p{Script=Katakana}]/u },
  { name: "Korean hangul", language: "Korean", re: /\p{Script=Hangul}/u },
  { name: "Bopomofo", language: "Chinese", re: /\p{Script=Bopomofo}/u },
];

const MODE_LANGUAGE: Partial<Record<LanguageMode, string>> = {
  zh: "Chinese",
  all_zh: "Chinese",
  ja: "Japanese",
  all_ja: "Japanese",
  ko: "Korean",
  all_ko: "Korean",
  yue: "Cantonese",
  all_yue: "Cantonese",
  auto_yue: "Cantonese",
};

/** Throw UNSUPPORTED_LANGUAGE when a mode other than "en" meets Chinese, Japanese or Korean script. */
function checkScripts(text: string, mode: LanguageMode): void {
  if (mode === "en") return;
  const found = new Map<number, { first: number; chars: string[] }>();
  let index = 0;
  for (const ch of text) {
    for (let k = 0; k < SCRIPTS.length; k++) {
      if (!SCRIPTS[k].re.test(ch)) continue;
      const entry = found.get(k) ?? { first: index, chars: [] };
      if (entry.chars.length < 5 && !entry.chars.includes(ch)) entry.chars.push(ch);
      found.set(k, entry);
      break;
    }
    index++;
  }
  if (found.size === 0) return;
  const parts = [...found.entries()].map(
    ([k, e]) => `${SCRIPTS[k].name} (${e.chars.map((c) => JSON.stringify(c)).join(", ")}, first at character ${e.first + 1})`,
  );
  const languages = MODE_LANGUAGE[mode] ?? [...new Set([...found.keys()].map((k) => SCRIPTS[k].language))].join("/");
  throw new GsvError(
    "UNSUPPORTED_LANGUAGE",
    `language mode "${mode}": the text contains ${parts.join(" and ")}; ${languages} G2P is not implemented yet, only English text can be synthesised`,
  );
}

// ---------------------------------------------------------------------------------------------------
// Segments

const isWordPhone = (p: string) => /^[A-Z]/.test(p);

/**
 * Phones of one piece of text (upstream `get_phones_and_bert` with an English run): runs of spaces
 * collapsed, G2P, and a second pass with "." in front when fewer than 6 phones result. Null when nothing
 * speakable is left.
 */
function segmentFor(text: string): Segment | null {
  const t = text.replace(/ {2,}/g, " ");
  let r = g2pEnglish(t);
  if (r.phones.length < 6) r = g2pEnglish("." + t);
  if (r.normText === "" || !r.phones.some(isWordPhone)) return null;
  return { text, lang: "en", normText: r.normText, phones: r.phones, ids: phonesToIds(r.phones), word2ph: null };
}

function checkText(text: unknown, maxChars: number): string {
  if (typeof text !== "string" || /^\s*$/u.test(text)) throw new GsvError("MISSING_TEXT", "text is empty");
  const len = cpLength(text);
  if (len > maxChars) throw new GsvError("TEXT_TOO_LONG", `text has ${len} characters; the maximum is ${maxChars}`);
  return text;
}

/**
 * Target text to segments: clean, refuse unreadable scripts, split (upstream pre_seg_text with the given
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
  checkScripts(cleaned, mode);
  const segments: Segment[] = [];
  for (const piece of splitText(cleaned, method, mode)) {
    const seg = segmentFor(piece);
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
  checkScripts(cleaned, mode);
  let t = cleaned.replace(/^\n+|\n+$/g, "").replace(/\n+/g, " ");
  if (t.length === 0) throw new GsvError("NO_SPEAKABLE_TEXT", "the prompt text has nothing that can be spoken");
  const last = Array.from(t.slice(-2)).pop() ?? "";
  if (!SPLIT_MARKS.has(last)) t += mode === "en" ? "." : "。";
  const seg = segmentFor(t);
  if (!seg) throw new GsvError("NO_SPEAKABLE_TEXT", "the prompt text has no words that can be spoken");
  return seg;
}
