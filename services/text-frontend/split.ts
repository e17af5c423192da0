/**
 * Text splitting as upstream GPT-SoVITS does it before G2P (`TextPreprocessor.preprocess` /
 * `pre_seg_text` and the cut methods of `TTS_infer_pack/text_segmentation_method.py`).
 *
 * Lengths are counted in Unicode code points, as Python's len() does. Every step is a single pass over
 * the text (or over the list of pieces), so the whole split is linear in the input length.
 *
 * One addition to upstream: a segment that is still longer than MAX_SEGMENT_CHARS after upstream's
 * split_big_text (text with no punctuation at all) is cut at the last whitespace before the limit, or
 * hard at the limit when there is none. Upstream leaves such a segment whole.
 */

export const SPLIT_METHODS = ["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"] as const;
export type SplitMethod = (typeof SPLIT_METHODS)[number];

export function isSplitMethod(s: unknown): s is SplitMethod {
  return typeof s === "string" && (SPLIT_METHODS as readonly string[]).includes(s);
}

/** Upstream `splits`: the marks a segment may end with, and where split_big_text may cut. */
export const SPLIT_MARKS: ReadonlySet<string> = new Set(["，", "。", "？", "！", ",", ".", "?", "!", "~", ":", "：", "—", "…"]);

/** Pieces made only of these are dropped by cut0..cut4 (upstream's `punctuation` in the cut module). */
const CUT_PUNCTUATION: ReadonlySet<string> = new Set(["!", "?", "…", ",", ".", "-", " "]);

/** The marks cut5 cuts after (upstream lists ";" twice; both are ASCII). */
const CUT5_MARKS: ReadonlySet<string> = new Set([",", ".", ";", "?", "!", "、", "，", "。", "？", "！", "：", "…"]);

/** Segments longer than this are cut again (the BERT limit upstream guards against). */
export const MAX_SEGMENT_CHARS = 510;

/** Segments shorter than this are merged with the next one (upstream threshold). */
export const MERGE_THRESHOLD = 5;

/** Python's str.isspace() set, for an exact str.strip(). */
const PY_SPACE = /[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;

/** Python's str.isdigit(): decimal digits plus the superscript, circled and similar digits. */
const PY_DIGIT =
  /[\p{Nd}\u00B2\u00B3\u00B9\u1369-\u1371\u19DA\u2070\u2074-\u2079\u2080-\u2089\u2460-\u2468\u2474-\u247C\u2488-\u2490\u24EA\u24F5-\u24FD\u24FF\u2776-\u277E\u2780-\u2788\u278A-\u2792\u{10A40}-\u{10A43}\u{10E60}-\u{10E68}\u{11052}-\u{1105A}\u{1F100}-\u{1F10A}]/u;

/** Python's \w (str.isalnum() or "_"), which equals letters, numbers and underscore. */
const PY_WORD = /[\p{L}\p{N}_]/u;

/** Number of code points. */
export function cpLength(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** Python str.strip(chars): remove leading and trailing code points that are in `chars`. */
function stripChars(s: string, chars: ReadonlySet<string>): string {
  const cps = Array.from(s);
  let a = 0;
  let b = cps.length;
  while (a < b && chars.has(cps[a])) a++;
  while (b > a && chars.has(cps[b - 1])) b--;
  return a === 0 && b === cps.length ? s : cps.slice(a, b).join("");
}

const NEWLINE = new Set(["\n"]);

/** Python str.strip() with no argument (Unicode whitespace). */
export function pyStrip(s: string): string {
  const cps = Array.from(s);
  let a = 0;
  let b = cps.length;
  while (a < b && PY_SPACE.test(cps[a])) a++;
  while (b > a && PY_SPACE.test(cps[b - 1])) b--;
  return a === 0 && b === cps.length ? s : cps.slice(a, b).join("");
}

function allIn(s: string, set: ReadonlySet<string>): boolean {
  for (const ch of s) if (!set.has(ch)) return false;
  return true;
}

function hasWordChar(s: string): boolean {
  for (const ch of s) if (PY_WORD.test(ch)) return true;
  return false;
}

function lastChar(s: string): string {
  if (s.length === 0) return "";
  const c = s.charCodeAt(s.length - 1);
  if (c >= 0xdc00 && c <= 0xdfff && s.length >= 2) {
    const h = s.charCodeAt(s.length - 2);
    if (h >= 0xd800 && h <= 0xdbff) return s.slice(-2);
  }
  return s[s.length - 1];
}

function firstChar(s: string): string {
  const cp = s.codePointAt(0);
  return cp === undefined ? "" : String.fromCodePoint(cp);
}

/**
 * Upstream `replace_consecutive_punctuation` (TextPreprocessor): a run of two or more of ! ? … , . -
 * becomes its first character.
 */
export function collapsePunctuation(text: string): string {
  return text.replace(/([!?…,.\-])[!?…,.\-]+/g, "$1");
}

/** Upstream `get_first`: the text before the first split mark, stripped. */
function firstSentence(text: string): string {
  let end = text.length;
  for (let i = 0; i < text.length; i++) {
    if (SPLIT_MARKS.has(text[i])) {
      end = i;
      break;
    }
  }
  return pyStrip(text.slice(0, end));
}

/** Upstream `split` helper of cut1/cut2: pieces that each end with a split mark. */
function splitSentences(input: string): string[] {
  let text = input.replaceAll("……", "。").replaceAll("——", "，");
  if (text.length === 0 || !SPLIT_MARKS.has(lastChar(text))) text += "。";
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (SPLIT_MARKS.has(text[i])) {
      out.push(text.slice(start, i + 1));
      start = i + 1;
    }
  }
  return out;
}

function dropPunctuationOnly(items: string[]): string[] {
  return items.filter((item) => !allIn(item, CUT_PUNCTUATION));
}

/** cut0: no cut; a text made only of punctuation becomes an empty line. */
export function cut0(inp: string): string {
  return allIn(inp, CUT_PUNCTUATION) ? "\n" : inp;
}

/** cut1: groups of four sentences (the last group takes the remainder, up to seven). */
export function cut1(input: string): string {
  const inp = stripChars(input, NEWLINE);
  const sentences = splitSentences(inp);
  const starts: (number | undefined)[] = [];
  for (let i = 0; i < sentences.length; i += 4) starts.push(i);
  let opts: string[];
  if (starts.length > 1) {
    starts[starts.length - 1] = undefined;
    opts = [];
    for (let k = 0; k < starts.length - 1; k++) opts.push(sentences.slice(starts[k], starts[k + 1]).join(""));
  } else {
    opts = [inp];
  }
  return dropPunctuationOnly(opts).join("\n");
}

/** cut2: sentences accumulated until a piece is over 50 characters; a short tail joins the previous piece. */
export function cut2(input: string): string {
  const inp = stripChars(input, NEWLINE);
  const sentences = splitSentences(inp);
  if (sentences.length < 2) return inp;
  let opts: string[] = [];
  let sum = 0;
  let tmp = "";
  for (const s of sentences) {
    sum += cpLength(s);
    tmp += s;
    if (sum > 50) {
      sum = 0;
      opts.push(tmp);
      tmp = "";
    }
  }
  if (tmp !== "") opts.push(tmp);
  if (opts.length > 1 && cpLength(opts[opts.length - 1]) < 50) {
    opts[opts.length - 2] += opts[opts.length - 1];
    opts = opts.slice(0, -1);
  }
  return dropPunctuationOnly(opts).join("\n");
}

/** cut3: split on "。" (the marks are removed). */
export function cut3(input: string): string {
  const inp = stripChars(input, NEWLINE);
  const opts = stripChars(inp, new Set(["。"])).split("。");
  return dropPunctuationOnly(opts).join("\n");
}

/** cut4: split on "." that is not between digits (the dots are removed). */
export function cut4(input: string): string {
  const inp = stripChars(input, NEWLINE);
  const opts = stripChars(inp, new Set(["."])).split(/(?<!\p{Nd})\.(?!\p{Nd})/u);
  return dropPunctuationOnly(opts).join("\n");
}

/** cut5: cut after every mark of , . ; ? ! 、 ， 。 ？ ！ ： … except a "." between two digits. */
export function cut5(input: string): string {
  const cps = Array.from(stripChars(input, NEWLINE));
  const pieces: string[] = [];
  let start = 0;
  for (let i = 0; i < cps.length; i++) {
    const ch = cps[i];
    if (!CUT5_MARKS.has(ch)) continue;
    if (ch === "." && i > 0 && i < cps.length - 1 && PY_DIGIT.test(cps[i - 1]) && PY_DIGIT.test(cps[i + 1])) continue;
    pieces.push(cps.slice(start, i + 1).join(""));
    start = i + 1;
  }
  if (start < cps.length) pieces.push(cps.slice(start).join(""));
  return pieces.filter((p) => !allIn(p, CUT5_MARKS)).join("\n");
}

const CUTS: Record<SplitMethod, (s: string) => string> = { cut0, cut1, cut2, cut3, cut4, cut5 };

/** Upstream `merge_short_text_in_array`: pieces shorter than `threshold` are joined with what follows. */
export function mergeShort(texts: string[], threshold: number): string[] {
  if (texts.length < 2) return texts;
  const result: string[] = [];
  let text = "";
  let len = 0;
  for (const t of texts) {
    text += t;
    len += cpLength(t);
    if (len >= threshold) {
      result.push(text);
      text = "";
      len = 0;
    }
  }
  if (text.length > 0) {
    if (result.length === 0) result.push(text);
    else result[result.length - 1] += text;
  }
  return result;
}

/**
 * Upstream `split_big_text`: cut a long segment into pieces of at most `maxLen` characters at split
 * marks (a mark may start the next piece). Upstream can emit an empty first piece; it is dropped here.
 * A piece with no mark inside stays longer than `maxLen`; cutLongPiece handles those.
 */
export function splitBigText(text: string, maxLen = MAX_SEGMENT_CHARS): string[] {
  // re.split with a capturing group: text runs and single marks alternate.
  const parts: string[] = [];
  let run = "";
  for (const ch of text) {
    if (SPLIT_MARKS.has(ch)) {
      parts.push(run, ch);
      run = "";
    } else run += ch;
  }
  parts.push(run);
  const result: string[] = [];
  let current = "";
  let currentLen = 0;
  for (const part of parts) {
    const partLen = cpLength(part);
    if (currentLen + partLen > maxLen) {
      result.push(current);
      current = part;
      currentLen = partLen;
    } else {
      current += part;
      currentLen += partLen;
    }
  }
  if (current) result.push(current);
  return result.filter((s) => s.length > 0);
}

/** Cut a piece over `maxLen` at the last whitespace before the limit, or hard at the limit. */
export function cutLongPiece(text: string, maxLen = MAX_SEGMENT_CHARS): string[] {
  const cps = Array.from(text);
  if (cps.length <= maxLen) return [text];
  const out: string[] = [];
  let start = 0;
  while (cps.length - start > maxLen) {
    let cut = -1;
    for (let i = start + maxLen; i > start; i--) {
      if (PY_SPACE.test(cps[i])) {
        cut = i;
        break;
      }
    }
    if (cut <= start) {
      out.push(cps.slice(start, start + maxLen).join(""));
      start += maxLen;
    } else {
      out.push(cps.slice(start, cut).join(""));
      start = cut; // the space starts the next piece, as upstream keeps spaces
    }
  }
  if (start < cps.length) out.push(cps.slice(start).join(""));
  return out;
}

/**
 * Upstream `pre_seg_text` (preceded by `replace_consecutive_punctuation`, as `preprocess` does):
 * returns the segments to synthesise, in order. An empty list means nothing speakable was found
 * (upstream raises "请输入有效文本" in that case, or returns nothing for an empty text).
 */
export function splitText(text: string, method: SplitMethod, lang: string): string[] {
  const cut = CUTS[method];
  if (!cut) throw new TypeError(`unknown split method ${String(method)}`);
  const mark = lang === "en" ? "." : "。";
  let t = stripChars(collapsePunctuation(text), NEWLINE);
  if (t.length === 0) return [];
  if (!SPLIT_MARKS.has(firstChar(t)) && cpLength(firstSentence(t)) < 4) t = mark + t;
  t = cut(t).replace(/\n{2,}/g, "\n");
  const lines = t.split("\n");
  // filter_text: all blank -> nothing; otherwise drop " " and "" lines.
  if (lines.every((l) => l === " " || l === "\n" || l === "")) return [];
  const kept = mergeShort(
    lines.filter((l) => l !== " " && l !== ""),
    MERGE_THRESHOLD,
  );
  const out: string[] = [];
  for (let seg of kept) {
    if (pyStrip(seg).length === 0) continue;
    if (!hasWordChar(seg)) continue; // symbol-only
    if (!SPLIT_MARKS.has(lastChar(seg))) seg += mark;
    if (cpLength(seg) > MAX_SEGMENT_CHARS) {
      for (const piece of splitBigText(seg)) out.push(...cutLongPiece(piece));
    } else out.push(seg);
  }
  return out;
}
