/**
 * English text normalisation and grapheme-to-phoneme conversion, after upstream GPT-SoVITS
 * `text/english.py` (with `text/en_normalization/expend.py`). Output phones are ARPAbet with stress
 * digits plus the punctuation symbols of the v2 table. docs/frontend.md lists where this differs from
 * upstream (dictionary version, no POS tagger, no neural predictor, a few normalisation fixes).
 *
 * Everything here runs in time linear in the input: regexes are anchored so that no pattern is retried
 * from every position of a long run, and the letter-to-sound rules look at bounded windows.
 */
import { dictionary as CMU } from "cmu-pronouncing-dictionary";
import { hasSymbol } from "./symbols.js";

// ---------------------------------------------------------------------------------------------------
// Dictionary

/** Entries upstream deletes from its dictionary because the dictionary reading is wrong for them. */
const DELETED = new Set(["ae", "ai", "ar", "ios", "hud", "os"]);

/** Upstream's hot dictionary (`engdict-hot.rep`): these override the CMU entry. */
const HOT: Record<string, string> = {
  chatgpt: "CH AE1 T JH IY1 P IY1 T IY1",
  json: "JH EY1 S AH0 N",
  conda: "K AA1 N D AH0",
};

const cache = new Map<string, readonly string[]>();

function parseEntry(v: string): readonly string[] {
  const hash = v.indexOf("#");
  const body = (hash >= 0 ? v.slice(0, hash) : v).trim();
  return body.length === 0 ? [] : body.split(/\s+/);
}

/** Words that lookups must not see (used to measure the out-of-vocabulary fallback on held-out words). */
export interface LookupOptions {
  exclude?: ReadonlySet<string>;
}

/** First dictionary pronunciation of a lower-case word, or undefined. */
export function lookupWord(word: string, opts?: LookupOptions): readonly string[] | undefined {
  if (opts?.exclude?.has(word)) return undefined;
  const hit = cache.get(word);
  if (hit) return hit;
  let pron: readonly string[] | undefined;
  if (Object.hasOwn(HOT, word)) pron = HOT[word].split(" ");
  else if (!DELETED.has(word) && Object.hasOwn(CMU, word)) {
    const parsed = parseEntry(CMU[word]);
    if (parsed.length > 0) pron = parsed;
  }
  if (pron) {
    if (cache.size > 50_000) cache.clear();
    cache.set(word, pron);
  }
  return pron;
}

/** Letter names, from the dictionary ("b" -> B IY1). */
function letterName(letter: string): readonly string[] {
  return lookupWord(letter) ?? [];
}

// ---------------------------------------------------------------------------------------------------
// Numbers to words (the output of Python's inflect, as upstream calls it)

const UNIT = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
const TEEN = ["ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"];
const TEN = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
const MILL = ["", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion", " sextillion", " septillion", " octillion", " nonillion", " decillion"];

/** Longest integer (in digits) read as a number; longer digit strings are read digit by digit. */
const MAX_NUMBER_DIGITS = MILL.length * 3;

function tensWords(t: number, u: number): string {
  if (t === 1) return TEEN[u];
  return TEN[t] + (t && u ? "-" : "") + UNIT[u];
}

function groupWords(h: number, t: number, u: number, andword: string): string {
  if (!h) return tensWords(t, u);
  const rest = t || u ? ` ${andword} ${tensWords(t, u)}` : "";
  return `${UNIT[h]} hundred${rest}`.replace(/\s+/g, " ");
}

function spellDigits(digits: string): string {
  return Array.from(digits, (d) => (d === "0" ? "zero" : UNIT[Number(d)])).join(" ");
}

/**
 * A non-negative integer given as decimal digits, in words, as inflect's number_to_words(n, andword=…)
 * writes it: 3-digit groups joined by ", ", except that a last group that is one word joins with
 * " and " (or " " when andword is empty).
 */
export function numberToWords(digitsIn: string, andword = "and"): string {
  const digits = digitsIn.replace(/^0+(?=\d)/, "");
  if (digits === "0") return "zero";
  if (digits === "1") return "one";
  if (digits.length > MAX_NUMBER_DIGITS) return spellDigits(digits);
  const groups: { text: string; index: number }[] = [];
  const n = digits.length;
  for (let end = n, index = 0; end > 0; end -= 3, index++) {
    const g = digits.slice(Math.max(0, end - 3), end).padStart(3, "0");
    const h = Number(g[0]);
    const t = Number(g[1]);
    const u = Number(g[2]);
    if (h || t || u) groups.unshift({ text: groupWords(h, t, u, andword) + MILL[index], index });
  }
  let out = groups[0].text;
  for (let i = 1; i < groups.length; i++) {
    const g = groups[i];
    const lastSingleWord = i === groups.length - 1 && g.index === 0 && !g.text.includes(" ");
    out += lastSingleWord ? ` ${andword} ${g.text}` : `, ${g.text}`;
  }
  return out.replace(/\s+/g, " ").trim();
}

const ORDINAL_ENDINGS: [string, string][] = [
  ["ty", "tieth"],
  ["one", "first"],
  ["two", "second"],
  ["three", "third"],
  ["five", "fifth"],
  ["eight", "eighth"],
  ["nine", "ninth"],
  ["twelve", "twelfth"],
];

/** inflect's ordinal of a word ("twenty-one" -> "twenty-first", "four" -> "fourth"). */
export function ordinalOfWords(words: string): string {
  for (const [end, rep] of ORDINAL_ENDINGS) if (words.endsWith(end)) return words.slice(0, -end.length) + rep;
  return words + "th";
}

/** inflect's ordinal suffix of a digit string ("1" -> "1st", "11" -> "11th"). */
function ordinalSuffix(digits: string): string {
  const last2 = Number(digits.slice(-2));
  const special: Record<number, string> = { 1: "st", 2: "nd", 3: "rd", 11: "th", 12: "th", 13: "th" };
  if (last2 in special) return special[last2];
  return special[last2 % 10] ?? "th";
}

/** inflect's number_to_words("21st"): the number in words with its last group made ordinal. */
function ordinalNumberWords(digits: string): string {
  const words = numberToWords(digits, "and");
  const cut = words.lastIndexOf(", ");
  return cut < 0 ? ordinalOfWords(words) : words.slice(0, cut + 2) + ordinalOfWords(words.slice(cut + 2));
}

/** Upstream `_expand_number`: numbers 1001..2999 are read as years; others plainly, without "and". */
function expandNumber(digitsIn: string): string {
  const digits = digitsIn.replace(/^0+(?=\d)/, "");
  if (digits.length > MAX_NUMBER_DIGITS) return spellDigits(digits);
  const num = Number(digits);
  if (digits.length === 4 && num > 1000 && num < 3000) {
    if (num === 2000) return "two thousand";
    if (num > 2000 && num < 2010) return "two thousand " + numberToWords(String(num % 100), "and");
    if (num % 100 === 0) return numberToWords(String(num / 100), "and") + " hundred";
    const hi = Math.floor(num / 100);
    const lo = num % 100;
    const loWords = lo >= 10 ? tensWords(Math.floor(lo / 10), lo % 10) : `oh ${UNIT[lo]}`;
    return `${tensWords(Math.floor(hi / 10), hi % 10)} ${loWords}`;
  }
  return numberToWords(digits, "");
}

function pluralizeLastWord(words: string): string {
  return words.endsWith("y") ? words.slice(0, -1) + "ies" : words + "s";
}

// ---------------------------------------------------------------------------------------------------
// Normalisation

/** A Unicode word character (Python's \w), for word-boundary lookarounds. */
const W = "[\\p{L}\\p{N}_]";
const NOT_AFTER_WORD = `(?<!${W})`;
const NOT_BEFORE_WORD = `(?!${W})`;

/** Letters NFD does not decompose, transliterated instead of being dropped. */
const LETTER_FOLD: Record<string, string> = {
  ß: "ss", æ: "ae", Æ: "AE", ø: "o", Ø: "O", œ: "oe", Œ: "OE", đ: "d", Đ: "D", ł: "l", Ł: "L", þ: "th", Þ: "Th", ð: "dh", Ð: "Dh", ı: "i",
};

function foldCharacters(text: string): string {
  let out = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xff01 && cp <= 0xff5e) out += String.fromCodePoint(cp - 0xfee0); // fullwidth ASCII
    else if (cp === 0x3000) out += " ";
    else if (LETTER_FOLD[ch] !== undefined) out += LETTER_FOLD[ch];
    else if (/\p{Nd}/u.test(ch) && !(cp >= 0x30 && cp <= 0x39)) {
      // Any decimal digit reads as its ASCII digit (upstream deletes non-ASCII digits).
      const zero = findDigitZero(cp);
      out += zero === undefined ? ch : String(cp - zero);
    } else out += ch;
  }
  return out;
}

function findDigitZero(cp: number): number | undefined {
  for (let z = cp; z > cp - 10 && z >= 0; z--) {
    if (!/\p{Nd}/u.test(String.fromCodePoint(z))) return z + 1;
  }
  return undefined;
}

/**
 * The punctuation map of upstream `text_normalize` as it was meant (and as it worked until upstream
 * commit c17dd64 made the bracketed keys literal): ; : ： ， ； -> ","  and  " ’ -> "'"  and the
 * Chinese sentence marks to ASCII. A ":" between digits is kept for the time reading.
 */
function mapPunctuation(text: string): string {
  return text
    .replace(/(?<![0-9]):|:(?![0-9])|[;：，；]/g, ",")
    .replace(/["’]/g, "'")
    .replaceAll("。", ".")
    .replaceAll("！", "!")
    .replaceAll("？", "?");
}

interface Abbrev {
  re: RegExp;
  expand: (m: RegExpExecArray, text: string) => string;
  /** Extra condition on the text before the match (bounded look back, so no quadratic lookbehind). */
  when?: (before: string) => boolean;
}

function simpleAbbrev(abbr: string, word: string, caseInsensitive = false): Abbrev {
  const escaped = abbr.replace(/\./g, "\\.");
  return { re: new RegExp(`${NOT_AFTER_WORD}${escaped}`, caseInsensitive ? "giu" : "gu"), expand: () => word };
}

/**
 * "St." is Saint before a capitalised word (unless a capitalised word precedes it: "Main St. Then"),
 * Street otherwise; "Dr." is Doctor unless it ends a street name ("Elm Dr.").
 */
const ABBREVIATIONS: Abbrev[] = [
  {
    re: new RegExp(`${NOT_AFTER_WORD}St\\.(?=\\s+\\p{Lu})`, "gu"),
    expand: () => "Saint",
    when: (before) => !/\p{Lu}\p{Ll}*\s+$/u.test(before),
  },
  simpleAbbrev("St.", "Street"),
  {
    re: new RegExp(`(\\p{Lu}\\p{Ll}+\\s+)Dr\\.(?!\\s+\\p{Lu})`, "gu"),
    expand: (m) => m[1] + "Drive",
  },
  simpleAbbrev("Dr.", "Doctor"),
  simpleAbbrev("Mr.", "Mister"),
  simpleAbbrev("Mrs.", "Missus"),
  simpleAbbrev("Ms.", "Ms"),
  simpleAbbrev("Prof.", "Professor"),
  simpleAbbrev("Jr.", "Junior"),
  simpleAbbrev("Sr.", "Senior"),
  simpleAbbrev("Capt.", "Captain"),
  simpleAbbrev("Lt.", "Lieutenant"),
  simpleAbbrev("Col.", "Colonel"),
  simpleAbbrev("Gen.", "General"),
  simpleAbbrev("Sgt.", "Sergeant"),
  simpleAbbrev("Gov.", "Governor"),
  simpleAbbrev("Sen.", "Senator"),
  simpleAbbrev("Rep.", "Representative"),
  simpleAbbrev("Rev.", "Reverend"),
  simpleAbbrev("Hon.", "Honorable"),
  simpleAbbrev("Mt.", "Mount"),
  simpleAbbrev("Ft.", "Fort"),
  simpleAbbrev("Ave.", "Avenue"),
  simpleAbbrev("Blvd.", "Boulevard"),
  simpleAbbrev("Rd.", "Road"),
  simpleAbbrev("Dept.", "Department"),
  simpleAbbrev("Univ.", "University"),
  simpleAbbrev("Inc.", "Incorporated"),
  simpleAbbrev("Ltd.", "Limited"),
  simpleAbbrev("Corp.", "Corporation"),
  simpleAbbrev("Co.", "Company"),
  simpleAbbrev("Bros.", "Brothers"),
  simpleAbbrev("vs.", "versus", true),
  simpleAbbrev("etc.", "et cetera", true),
  simpleAbbrev("approx.", "approximately", true),
  simpleAbbrev("Jan.", "January"),
  simpleAbbrev("Feb.", "February"),
  simpleAbbrev("Mar.", "March"),
  simpleAbbrev("Apr.", "April"),
  simpleAbbrev("Aug.", "August"),
  simpleAbbrev("Sep.", "September"),
  simpleAbbrev("Sept.", "September"),
  simpleAbbrev("Oct.", "October"),
  simpleAbbrev("Nov.", "November"),
  simpleAbbrev("Dec.", "December"),
  {
    re: new RegExp(`${NOT_AFTER_WORD}(No|no|NO)\\.(?=\\s*[0-9])`, "gu"),
    expand: () => "number",
  },
];

/** Index just past the last non-space character of `s` (so "does a match end the text?" is O(1)). */
function contentEnd(s: string): number {
  let i = s.length;
  while (i > 0 && /\s/.test(s[i - 1])) i--;
  return i;
}

/**
 * Expand abbreviations. The period of an abbreviation is dropped, unless the abbreviation ends the
 * text: then it also ends the sentence, and a "." is kept.
 */
function expandAbbreviations(text: string): string {
  if (!text.includes(".")) return text;
  let t = text;
  for (const a of ABBREVIATIONS) {
    const textEnd = contentEnd(t);
    t = t.replace(a.re, (...args: unknown[]) => {
      const m = args.slice(0, -2) as unknown as RegExpExecArray;
      const offset = args[args.length - 2] as number;
      const whole = args[args.length - 1] as string;
      const end = offset + (m[0] as string).length;
      if (a.when && !a.when(whole.slice(Math.max(0, offset - 40), offset))) return m[0] as string;
      return a.expand(m, whole) + (end >= textEnd ? "." : "");
    });
  }
  return t;
}

const MEASUREMENT_UNITS: Record<string, [string, string]> = {
  m: ["meter", "meters"],
  km: ["kilometer", "kilometers"],
  "km/h": ["kilometer per hour", "kilometers per hour"],
  ft: ["feet", "feet"],
  L: ["liter", "liters"],
  tbsp: ["tablespoon", "tablespoons"],
  tsp: ["teaspoon", "teaspoons"],
  h: ["hour", "hours"],
  min: ["minute", "minutes"],
  s: ["second", "seconds"],
  "°C": ["degree celsius", "degrees celsius"],
  "°F": ["degree fahrenheit", "degrees fahrenheit"],
};

const SUP = "[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]";
const OPERATOR_WORDS: Record<string, string> = { "+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals " };

/**
 * Upstream `_expand_time`: 24-hour time to "H MM a.m./p.m." (hours over 12 lose 12). When the text
 * already says am/pm after the time, that marker is used instead of being read twice.
 */
function expandTime(hStr: string, mStr: string, marker?: string): string {
  let hours = Number(hStr);
  const minutes = Number(mStr);
  const period = marker ? (marker.toLowerCase() === "a" ? "a.m." : "p.m.") : hours < 12 ? "a.m." : "p.m.";
  if (hours > 12) hours -= 12;
  const hourWord = numberToWords(String(hours));
  if (minutes === 0) return `${hourWord} o'clock ${period}`;
  const minuteWords = minutes < 10 ? `oh ${UNIT[minutes]}` : numberToWords(String(minutes));
  return `${hourWord} ${minuteWords} ${period}`;
}

function moneyWords(match: string, major: [string, string], minor: [string, string]): string {
  const parts = match.split(".");
  if (parts.length > 2) return `${match} ${major[1]}`;
  const clean = (d: string) => d.replace(/[^0-9]/g, "").replace(/^0+(?=[0-9])/, "");
  const a = clean(parts[0]) || "0";
  const bRaw = parts.length > 1 ? parts[1].replace(/[^0-9]/g, "") : "";
  const b = bRaw ? clean(bRaw.padEnd(2, "0")) : "0";
  const majorUnit = a === "1" ? major[0] : major[1];
  const minorUnit = b === "1" ? minor[0] : minor[1];
  if (a !== "0" && b !== "0") return `${a} ${majorUnit} and ${b} ${minorUnit}`;
  if (a !== "0") return `${a} ${majorUnit}`;
  if (b !== "0") return `${b} ${minorUnit}`;
  return `zero ${major[1]}`;
}

const DOLLARS: [string, string] = ["dollar", "dollars"];
const CENTS: [string, string] = ["cent", "cents"];
const POUNDS: [string, string] = ["pound", "pounds"];
const PENCE: [string, string] = ["penny", "pence"];

/** Upstream `_expend_fraction`: "3/4" -> "three fourths", "1/2" -> "one half". */
function expandFraction(numStr: string, denStr: string): string {
  const numerator = numStr.replace(/^0+(?=\d)/, "");
  const denominator = denStr.replace(/^0+(?=\d)/, "");
  const numWords = numberToWords(numerator);
  const numIsMany = numerator.length > 1 || Number(numerator) > 1;
  if (denominator === "2") return `${numWords} ${numIsMany ? "halves" : "half"}`;
  if (denominator === "1") return numWords;
  return `${numWords} ${ordinalOfWords(numberToWords(denominator))}${numIsMany ? "s" : ""}`;
}

const RE = {
  listOrdinal: /^(\s*)([0-9]+)\. /u,
  asmd: new RegExp(
    `\\s(?<=(?:[0-9]|${NOT_AFTER_WORD}[A-Za-z])${SUP}*\\s)\\s*([+\\-×÷=])\\s+(?=-?[0-9]|-?\\.[0-9]|[A-Za-z]${SUP}*${NOT_BEFORE_WORD})`,
    "gu",
  ),
  negative: /(^|\s)-([0-9])/g,
  decade: new RegExp(`${NOT_AFTER_WORD}(?:([12][0-9]{2}0)|'([0-9]0))s${NOT_BEFORE_WORD}`, "gu"),
  commaNumber: /([0-9][0-9,]+[0-9])/g,
  time: new RegExp(
    `${NOT_AFTER_WORD}([01]?[0-9]|2[0-3]):([0-5][0-9])(?:\\s*([AaPp])\\.?\\s?[Mm]\\.?(?![A-Za-z])|\\s+([AaPp])\\.$)?${NOT_BEFORE_WORD}`,
    "gu",
  ),
  measurement: new RegExp(`${NOT_AFTER_WORD}([0-9]+(\\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))${NOT_BEFORE_WORD}`, "gu"),
  // Upstream writes [0-9.,]*[0-9]+, which matches the same text but backtracks quadratically.
  poundsStart: /£([0-9.,]*[0-9])/g,
  poundsEnd: /(?<![0-9.,])([0-9.,]*[0-9])£/g,
  dollarsStart: /\$([0-9.,]*[0-9])/g,
  dollarsEnd: /(?<![0-9.,])([0-9.,]*[0-9])\$/g,
  decimal: /(?<![0-9])([0-9]+)\.([0-9]+)/g,
  fraction: /(?<![0-9])([0-9]+)\/([0-9]+)/g,
  ordinal: /(?<![0-9])([0-9]+)(?:st|nd|rd|th)(?![A-Za-z])/g,
  number: /[0-9]+/g,
  amPm: /(?<![A-Za-z])([ap])\.m\./gi,
};

/**
 * The number and symbol steps of upstream `en_normalization/expend.py::normalize`, in its order.
 * Differences (all listed in docs/frontend.md): "N. " becomes an ordinal only at the start of the text,
 * operators are read only between numbers or single letters, "-N" keeps the space before it, decades
 * ("1990s", "'80s") are read as decades, a decimal needs digits right after the point, numbers longer
 * than 36 digits are read digit by digit (upstream raises).
 */
function expandNumbersAndSymbols(input: string): string {
  let t = input.replace(RE.listOrdinal, (_m, sp: string, d: string) => `${sp}${d}${ordinalSuffix(d)}, `);
  t = t.replace(RE.asmd, (_m, op: string) => OPERATOR_WORDS[op]);
  t = t.replace(RE.negative, (_m, pre: string, d: string) => `${pre}negative ${d}`);
  t = t.replace(RE.decade, (_m, year: string | undefined, short: string | undefined) =>
    year ? pluralizeLastWord(expandNumber(year)) : pluralizeLastWord(numberToWords(short!)),
  );
  t = t.replace(RE.commaNumber, (m) => m.replace(/,/g, ""));
  t = t.replace(RE.time, (_m, h: string, mm: string, marker?: string, cutMarker?: string) => expandTime(h, mm, marker ?? cutMarker));
  t = t.replace(RE.measurement, (_m, whole: string, dec: string | undefined, sign: string) => {
    const num = Number(whole.replace(sign, "").replace(".", ""));
    const plural = dec !== undefined || num !== 1;
    return whole.replace(sign, " " + MEASUREMENT_UNITS[sign][plural ? 1 : 0]);
  });
  if (t.includes("£")) {
    t = t.replace(RE.poundsStart, (_m, v: string) => moneyWords(v, POUNDS, PENCE));
    t = t.replace(RE.poundsEnd, (_m, v: string) => moneyWords(v, POUNDS, PENCE));
  }
  if (t.includes("$")) {
    t = t.replace(RE.dollarsStart, (_m, v: string) => moneyWords(v, DOLLARS, CENTS));
    t = t.replace(RE.dollarsEnd, (_m, v: string) => moneyWords(v, DOLLARS, CENTS));
  }
  t = t.replace(RE.decimal, (_m, a: string, b: string) => `${a} point ${Array.from(b).join(" ")}`);
  t = t.replace(RE.fraction, (_m, a: string, b: string) => expandFraction(a, b));
  t = t.replace(RE.ordinal, (_m, d: string) => ordinalNumberWords(d));
  // Numbers glued to letters ("G2P", "mp3") get spaces, so the words stay apart.
  t = t.replace(RE.number, (d: string, offset: number, whole: string) => {
    const before = isLetter(whole[offset - 1]) ? " " : "";
    const after = isLetter(whole[offset + d.length]) ? " " : "";
    return before + expandNumber(d) + after;
  });
  return t;
}

/**
 * English text normalisation (upstream `english.text_normalize`): punctuation map, abbreviations,
 * numbers, accents stripped, everything but letters, space and ' . , ? ! - removed, "i.e."/"e.g."
 * expanded, a space put before every capital that follows a non-space (so acronyms are spelled),
 * repeated punctuation collapsed. Runs of spaces are collapsed and the ends trimmed.
 */
export function normalizeEnglish(text: string): string {
  let t = foldCharacters(text);
  t = mapPunctuation(t);
  t = t.replace(/&/g, " and ");
  t = expandAbbreviations(t);
  t = expandNumbersAndSymbols(t);
  // "a.m." / "p.m." (also from the time reading) are spelled as letters; upstream reads them as "uh. em."
  const textEnd = contentEnd(t);
  t = t.replace(RE.amPm, (m: string, l: string, offset: number) => `${l.toUpperCase()} M${offset + m.length >= textEnd ? "." : ""}`);
  t = t.normalize("NFD").replace(/\p{Mn}/gu, "");
  t = t.replace(/%/g, " percent");
  // Removed characters between two letters leave a space, so words are not glued together.
  t = t.replace(/(?<=[A-Za-z])[^ A-Za-z'.,?!\-]+(?=[A-Za-z])/g, " ");
  t = t.replace(/[^ A-Za-z'.,?!\-]/g, "");
  t = t.replace(/(?<![A-Za-z])i\.e\./gi, "that is");
  t = t.replace(/(?<![A-Za-z])e\.g\./gi, "for example");
  t = t.replace(/(?<!^)(?<!\s)([A-Z])/g, " $1");
  t = t.replace(/([!?…,.\-\s])[!?…,.\-]+/g, "$1");
  return t.replace(/ {2,}/g, " ").trim();
}

// ---------------------------------------------------------------------------------------------------
// Tokenizer (NLTK TweetTokenizer restricted to what normalisation leaves: letters, space, ' . , ? ! -)

const isLetter = (c: string | undefined): boolean => c !== undefined && ((c >= "a" && c <= "z") || (c >= "A" && c <= "Z"));

/**
 * Split normalised text into tokens the way TweetTokenizer does on this alphabet: domain-like runs
 * ("hello.world"), words with inner apostrophes or hyphens ("don't", "well-known"), plain words, and
 * single punctuation characters.
 */
export function tokenizeEnglish(text: string): string[] {
  const tokens: string[] = [];
  const n = text.length;
  // A chain is a sequence of letter runs joined by single "." or "-". A domain-like token starting at
  // a run of the chain ends at the chain's last run that follows a "." and has 2..13 letters (the
  // longest match of TweetTokenizer's URL pattern). Computed once per chain, so scanning stays linear.
  let chainLimit = -1;
  let chainRunStarts = new Map<number, number>();
  let bestRun = -1;
  let bestEnd = -1;
  let i = 0;
  while (i < n) {
    const c = text[i];
    if (c === " ") {
      i++;
      continue;
    }
    if (isLetter(c)) {
      if (i >= chainLimit) {
        chainRunStarts = new Map();
        bestRun = -1;
        bestEnd = -1;
        let j = i;
        let sep = "";
        for (let r = 0; ; r++) {
          const start = j;
          while (j < n && isLetter(text[j])) j++;
          chainRunStarts.set(start, r);
          const len = j - start;
          if (r > 0 && sep === "." && len >= 2 && len <= 13) {
            bestRun = r;
            bestEnd = j;
          }
          if (j + 1 < n && (text[j] === "." || text[j] === "-") && isLetter(text[j + 1])) {
            sep = text[j];
            j++;
          } else break;
        }
        chainLimit = j;
      }
      const run = chainRunStarts.get(i);
      if (run !== undefined && bestRun > run) {
        tokens.push(text.slice(i, bestEnd));
        i = bestEnd;
        continue;
      }
      // Word with apostrophes or hyphens: letter, (letter|'|-)+, letter.
      let j = i + 1;
      while (j < n && (isLetter(text[j]) || text[j] === "'" || text[j] === "-")) j++;
      while (j > i + 1 && !isLetter(text[j - 1])) j--;
      if (j - i >= 3) {
        tokens.push(text.slice(i, j));
        i = j;
        continue;
      }
      j = i;
      while (j < n && isLetter(text[j])) j++;
      tokens.push(text.slice(i, j));
      i = j;
      continue;
    }
    if (c === ".") {
      // Ellipsis dots (". ." with spaces): one token, which is not a symbol and is dropped later.
      let j = i + 1;
      let dots = 1;
      for (;;) {
        let k = j;
        while (k < n && text[k] === " ") k++;
        if (k < n && text[k] === ".") {
          dots++;
          j = k + 1;
        } else break;
      }
      tokens.push(dots > 1 ? text.slice(i, j) : ".");
      i = j;
      continue;
    }
    tokens.push(c);
    i++;
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------------
// Letter-to-sound rules for words the dictionary lacks

/**
 * A rule rewrites the letters `g` at the current position, when the text before matches `left` and
 * the text after matches `right`, into phones. Contexts are small regexes over the word padded with "#"
 * at both ends, with macros V (vowel letter), C (consonant letter), E (e, i, y).
 * Vowel phones: a bare vowel ("AE") may take stress; its unstressed form comes from REDUCED unless the
 * rule gives one ("IY/IH0"); a trailing "!" means avoid stressing it; a digit fixes the stress.
 * The phone "<" marks that primary stress falls on the nearest stressable vowel before it.
 */
type RuleSpec = [left: string, g: string, right: string, phones: string];

const R: RuleSpec[] = [
  // suffixes that fix stress on the syllable before them
  ["s", "tion", "s?#", "< CH AH0 N"],
  ["", "tion", "s?#", "< SH AH0 N"],
  ["", "tional", "(ly)?#", "< SH AH0 N AH0 L"],
  ["", "sion", "s?#", "< ZH AH0 N"],
  ["", "ssion", "s?#", "< SH AH0 N"],
  ["", "cian", "s?#", "< SH AH0 N"],
  ["", "cial", "(ly)?#", "< SH AH0 L"],
  ["", "tial", "(ly)?#", "< SH AH0 L"],
  ["", "cious", "(ly|ness)?#", "< SH AH0 S"],
  ["", "tious", "(ly|ness)?#", "< SH AH0 S"],
  ["", "cient", "(ly|s)?#", "< SH AH0 N T"],
  ["", "tient", "(ly|s)?#", "< SH AH0 N T"],
  ["", "ically", "#", "< IH0 K L IY0"],
  ["", "ical", "s?#", "< IH0 K AH0 L"],
  ["", "ics", "#", "< IH0 K S"],
  ["C", "ic", "#", "< IH0 K"],
  ["", "ity", "#", "< AH0 T IY0"],
  ["", "ities", "#", "< AH0 T IY0 Z"],
  ["", "ify", "#", "< AH0 F AY2"],
  ["", "ified", "#", "< AH0 F AY2 D"],
  ["", "ial", "s?#", "< IY0 AH0 L"],
  ["", "ian", "s?#", "< IY0 AH0 N"],
  ["", "ious", "#", "< IY0 AH0 S"],
  ["", "eous", "#", "< IY0 AH0 S"],
  ["", "ium", "#", "< IY0 AH0 M"],
  ["C", "ia", "#", "< IY0 AH0"],
  ["C", "io", "#", "< IY0 OW0"],
  ["", "ology", "#", "AA1 L AH0 JH IY0"],
  ["", "ologist", "s?#", "AA1 L AH0 JH IH0 S T"],
  ["", "ography", "#", "AA1 G R AH0 F IY0"],
  ["", "ee", "s?#", "IY1"],
  ["", "eer", "s?#", "IH1 R"],
  ["", "ese", "#", "IY1 Z"],
  ["", "ette", "s?#", "EH1 T"],
  ["", "ique", "s?#", "IY1 K"],
  ["", "esque", "#", "EH1 S K"],
  // stress-neutral suffixes
  ["", "ness", "#", "N AH0 S"],
  ["", "less", "#", "L AH0 S"],
  ["", "ment", "s?#", "M AH0 N T"],
  ["", "ful", "(ly)?#", "F AH0 L"],
  ["", "able", "#", "AH0 B AH0 L"],
  ["", "ible", "#", "AH0 B AH0 L"],
  ["", "ably", "#", "AH0 B L IY0"],
  ["", "ism", "s?#", "IH2 Z AH0 M"],
  ["", "ist", "s?#", "IH0 S T"],
  ["", "ize", "#", "AY2 Z"],
  ["", "izes", "#", "AY2 Z IH0 Z"],
  ["", "ized", "#", "AY2 Z D"],
  ["", "ise", "#", "AY2 Z"],
  ["", "ises", "#", "AY2 Z IH0 Z"],
  ["", "ised", "#", "AY2 Z D"],
  ["", "izing", "#", "AY2 Z IH0 NG"],
  ["", "ate", "#", "EY2 T"],
  ["", "ates", "#", "EY2 T S"],
  ["", "ated", "#", "EY2 T IH0 D"],
  ["", "ating", "#", "EY2 T IH0 NG"],
  ["", "ation", "s?#", "< EY1 SH AH0 N"],
  ["", "ture", "#", "CH ER0"],
  ["", "tures", "#", "CH ER0 Z"],
  ["", "tured", "#", "CH ER0 D"],
  ["", "sure", "#", "ZH ER0"],
  ["", "ssure", "#", "SH ER0"],
  ["", "ous", "(ly)?#", "AH0 S"],
  ["", "ing", "s?#", "IH0 NG"],
  ["", "ingly", "#", "IH0 NG L IY0"],
  ["V.*", "ly", "#", "L IY0"],
  ["", "berg", "#", "B ER0 G"],
  ["", "burg", "#", "B ER0 G"],
  ["", "ville", "#", "V IH2 L"],
  ["", "son", "#", "S AH0 N"],
  ["", "ton", "#", "T AH0 N"],
  ["", "man", "#", "M AH0 N"],
  ["", "men", "#", "M AH0 N"],
  ["", "stein", "#", "S T AY2 N"],
  ["", "field", "s?#", "F IY2 L D"],
  ["", "ford", "#", "F ER0 D"],
  ["", "wood", "#", "W UH2 D"],
  ["", "land", "#", "L AH0 N D"],
  ["", "ley", "#", "L IY0"],
  ["", "ski", "#", "< S K IY0"],
  ["", "sky", "#", "< S K IY0"],
  ["", "ini", "#", "IY1 N IY0"],
  ["", "ino", "#", "IY1 N OW0"],
  ["", "ina", "#", "IY1 N AH0"],
  ["", "ello", "#", "EH1 L OW0"],
  ["", "elli", "#", "EH1 L IY0"],
  ["", "etti", "#", "EH1 T IY0"],
  ["", "etto", "#", "EH1 T OW0"],
  ["", "ies", "#", "IY0 Z"],
  ["C", "les", "#", "AH0 L Z"],
  ["", "ering", "s?#", "ER0 IH0 NG"],
  ["", "ered", "#", "ER0 D"],

  // consonants
  ["m", "b", "(#|s#|ed#|ing|er|est)", ""],
  ["", "bb", "", "B"],
  ["", "b", "", "B"],
  ["#", "chr", "", "K R"],
  ["#", "ch", "l", "K"],
  ["", "sch", "C", "SH"],
  ["", "sch", "", "S K"],
  ["", "tch", "", "CH"],
  ["", "ch", "", "CH"],
  ["", "ck", "", "K"],
  ["", "cch", "", "K"],
  ["", "cc", "E", "K S"],
  ["", "cc", "", "K"],
  ["", "ci", "[aou]", "SH"],
  ["", "c", "E", "S"],
  ["", "c", "", "K"],
  ["", "dge", "", "JH"],
  ["", "dd", "", "D"],
  ["", "d", "", "D"],
  ["", "fford", "#", "F ER0 D"],
  ["", "ff", "", "F"],
  ["", "f", "", "F"],
  ["#", "gh", "", "G"],
  ["", "gh", "", ""],
  ["#", "gn", "", "N"],
  ["", "gn", "#", "N"],
  ["", "gg", "", "G"],
  ["", "gu", "V", "G"],
  ["", "ge", "#", "JH"],
  ["", "g", "E", "JH"],
  ["", "g", "", "G"],
  ["#", "h", "", "HH"],
  ["", "h", "V", "HH"],
  ["", "h", "", ""],
  ["", "j", "", "JH"],
  ["#", "kn", "", "N"],
  ["", "k", "", "K"],
  ["C", "le", "s?#", "AH0 L"],
  ["", "ll", "", "L"],
  ["", "l", "", "L"],
  ["#", "mc", "", "M AH0 K"],
  ["", "mm", "", "M"],
  ["", "m", "", "M"],
  ["", "nn", "", "N"],
  ["", "ng", "(#|s#|C)", "NG"],
  ["", "ng", "E", "N JH"],
  ["", "ng", "", "NG G"],
  ["", "nk", "", "NG K"],
  ["", "n", "", "N"],
  ["", "ph", "", "F"],
  ["#", "ps", "", "S"],
  ["#", "pn", "", "N"],
  ["", "pp", "", "P"],
  ["", "p", "", "P"],
  ["", "que", "#", "K"],
  ["", "qu", "", "K W"],
  ["", "q", "", "K"],
  ["", "rr", "", "R"],
  ["", "r", "", "R"],
  ["", "sh", "", "SH"],
  ["", "sc", "E", "S"],
  ["", "ss", "", "S"],
  ["V", "s", "V", "Z"],
  ["[bdglmnrvwy]", "s", "#", "Z"],
  ["", "s", "", "S"],
  ["", "th", "", "TH"],
  ["", "tt", "", "T"],
  ["", "t", "", "T"],
  ["", "v", "", "V"],
  ["#", "wr", "", "R"],
  ["", "wh", "", "W"],
  ["", "w", "", "W"],
  ["#", "x", "", "Z"],
  ["", "x", "", "K S"],
  ["#", "y", "V", "Y"],
  ["", "zz", "", "Z"],
  ["", "z", "", "Z"],

  // vowels: a
  ["", "aa", "", "AA"],
  ["", "air", "", "EH R"],
  ["", "ai", "", "EY"],
  ["", "ay", "", "EY"],
  ["", "augh", "", "AO"],
  ["", "au", "", "AO"],
  ["", "aw", "", "AO"],
  ["w", "ar", "", "AO R"],
  ["", "are", "#", "EH R"],
  ["", "arr", "", "EH R"],
  ["", "ar", "V", "EH R"],
  ["V.*C", "ar", "s?#", "ER0"],
  ["", "ar", "", "AA R"],
  ["", "all", "s?#", "AO L"],
  ["", "alk", "", "AO K"],
  ["", "alt", "", "AO L T"],
  ["", "a", "nge", "EY"],
  ["", "a", "C(e|es|ed|er|ers|ing|ings|ely|ement|eful|eless)#", "EY"],
  ["", "a", "[tscg]i[aou]", "EY"],
  ["w", "a", "C", "AA"],
  ["qu", "a", "", "AA"],
  ["C", "a", "#", "AH0"],
  ["", "a", "", "AE"],

  // e
  ["#C+", "ed", "#", "EH D"],
  ["[td]", "ed", "#", "IH0 D"],
  ["([pkfx]|ch|sh|ss|c)", "ed", "#", "T"],
  ["V.*C", "ed", "#", "D"],
  ["(s|z|x|ch|sh|c|g)", "es", "#", "IH0 Z"],
  ["V.*[ptkf]", "es", "#", "S"],
  ["V.*C", "es", "#", "Z"],
  ["", "eer", "", "IH R"],
  ["", "ee", "", "IY"],
  ["", "ear", "(#|s#|V)", "IH R"],
  ["", "ear", "", "ER"],
  ["", "ea", "", "IY"],
  ["c", "ei", "", "IY"],
  ["", "ei", "", "AY"],
  ["C", "ey", "s?#", "IY"],
  ["", "ey", "", "EY"],
  ["", "eau", "", "OW"],
  ["(#|[fkmpvbhc])", "ew", "", "Y UW"],
  ["#", "eu", "", "Y UW"],
  ["", "ew", "", "UW"],
  ["", "eu", "", "UW"],
  ["", "ere", "#", "IH R"],
  ["", "err", "", "EH R"],
  ["", "er", "V", "EH R"],
  ["", "er", "", "ER"],
  ["V.*C", "e", "#", ""],
  ["V.*C", "e", "s#", ""],
  ["", "e", "#", "IY"],
  ["#([bdr]|pr)", "e", "C[aeiouy]", "IY/IH0!"],
  ["", "e", "C(e|es|ed)#", "IY"],
  ["", "e", "[aou]", "IY"],
  ["", "e", "", "EH"],

  // i
  ["", "igh", "", "AY"],
  ["", "ign", "#", "AY N"],
  ["V.*C", "ie", "s?#", "IY0"],
  ["V.*C", "ied", "#", "IY0 D"],
  ["", "ie", "(s|d)?#", "AY"],
  ["", "ie", "", "IY"],
  ["", "ir", "(C|#)", "ER"],
  ["", "ire", "#", "AY ER0"],
  ["", "irr", "", "IH R"],
  ["", "i", "(nd|ld)", "AY"],
  ["", "i", "C(e|es|ed|ely|ement)#", "AY"],
  ["", "i", "#", "IY"],
  ["", "i", "[aeou]", "IY"],
  ["", "i", "", "IH"],

  // o
  ["", "ook", "", "UH K"],
  ["", "oor", "", "AO R"],
  ["", "oo", "", "UW"],
  ["", "oar", "", "AO R"],
  ["", "oa", "", "OW"],
  ["", "oi", "", "OY"],
  ["", "oy", "", "OY"],
  ["", "ought", "", "AO T"],
  ["", "ough", "", "AO"],
  ["", "our", "#", "AW ER0"],
  ["", "our", "", "AO R"],
  ["", "ou", "", "AW"],
  ["", "ow", "(n#|d|l)", "AW"],
  ["", "ow", "", "OW"],
  ["", "oes", "#", "OW Z"],
  ["", "oe", "", "OW"],
  ["V.*C", "or", "s?#", "ER0"],
  ["", "ore", "#", "AO R"],
  ["", "orr", "", "AO R"],
  ["", "or", "", "AO R"],
  ["", "o", "l[dt]", "OW"],
  ["", "o", "C(e|es|ed|er|ers|ing|ely|ement)#", "OW"],
  ["", "o", "#", "OW"],
  ["", "o", "C[aeiouy]", "OW/AH0"],
  ["", "o", "", "AA"],

  // u
  ["", "ur", "(C|#)", "ER"],
  ["[rljsdtnz]", "ure", "(s|d)?#", "UH R"],
  ["", "ure", "(s|d)?#", "Y UH R"],
  ["", "urr", "", "ER"],
  ["[rlj]", "ue", "", "UW"],
  ["", "ue", "#", "Y UW"],
  ["", "ui", "", "UW"],
  ["[pbf]", "u", "(ll|sh)", "UH"],
  ["(#|[rljsdtnz]|ch|sh)", "u", "C(e|es|ed|er|ers|ing|ely)#", "UW"],
  ["", "u", "C(e|es|ed|er|ers|ing|ely)#", "Y UW"],
  ["#", "uni", "", "Y UW N IY!"],
  ["", "u", "C[aeiouy]", "UW/AH0"],
  ["", "u", "", "AH"],

  // y as a vowel
  ["V.*C", "y", "#", "IY0"],
  ["", "y", "#", "AY"],
  ["", "y", "C(e|es|ed)#", "AY"],
  ["", "y", "", "IH"],
];

interface CompiledRule {
  g: string;
  left: RegExp | null;
  right: RegExp | null;
  phones: string[];
}

function expandMacros(ctx: string): string {
  return ctx.replace(/V/g, "[aeiouy]").replace(/C/g, "[bcdfghjklmnpqrstvwxz]").replace(/E/g, "[eiy]");
}

const RULES_BY_LETTER: Map<string, CompiledRule[]> = (() => {
  const byLetter = new Map<string, CompiledRule[]>();
  for (const [left, g, right, phones] of R) {
    const rule: CompiledRule = {
      g,
      left: left ? new RegExp(`(?:${expandMacros(left)})$`) : null,
      right: right ? new RegExp(`^(?:${expandMacros(right)})`) : null,
      phones: phones === "" ? [] : phones.split(" "),
    };
    const list = byLetter.get(g[0]) ?? [];
    list.push(rule);
    byLetter.set(g[0], list);
  }
  return byLetter;
})();

/** How far the left and right contexts may look. */
const LEFT_WINDOW = 8;
const RIGHT_WINDOW = 10;

const REDUCED: Record<string, string> = {
  AE: "AH0", AA: "AH0", AO: "AH0", AH: "AH0", EH: "AH0", UH: "AH0",
  IH: "IH0", IY: "IY0", EY: "EY0", AY: "AY0", OW: "OW0", UW: "UW0", AW: "AW0", OY: "OY0", ER: "ER0",
};
const R_COLOURED = new Set(["AO", "AA", "EH", "AE", "AH"]);
const VOWEL_BASES = new Set(Object.keys(REDUCED));

interface Nucleus {
  out: number; // index in the phone output
  base: string;
  reduced: string;
  avoid: boolean;
  fixed?: "0" | "1" | "2"; // stress given by the rule
}

const PHONE_SPEC = /^([A-Z]+)([012])?(?:\/([A-Z]+[012]))?(!)?$/;

/**
 * Rule-based letter-to-sound for one word: greedy grapheme rules left to right, then stress.
 * Non-letters are ignored. Returns ARPAbet phones with stress digits.
 */
export function letterToSound(wordIn: string): string[] {
  const word = wordIn.toLowerCase().replace(/[^a-z]/g, "");
  if (word.length === 0) return [];
  const padded = `#${word}#`;
  const out: string[] = [];
  const nuclei: Nucleus[] = [];
  let stressMark = -1; // number of nuclei before the first "<"
  let pos = 1;
  const end = padded.length - 1;
  while (pos < end) {
    const rules = RULES_BY_LETTER.get(padded[pos]);
    let matched: CompiledRule | undefined;
    if (rules) {
      for (const rule of rules) {
        if (pos + rule.g.length > end || !padded.startsWith(rule.g, pos)) continue;
        if (rule.left && !rule.left.test(padded.slice(Math.max(0, pos - LEFT_WINDOW), pos))) continue;
        if (rule.right && !rule.right.test(padded.slice(pos + rule.g.length, pos + rule.g.length + RIGHT_WINDOW))) continue;
        matched = rule;
        break;
      }
    }
    if (!matched) {
      pos++;
      continue;
    }
    for (const p of matched.phones) {
      if (p === "<") {
        if (stressMark < 0) stressMark = nuclei.length;
        continue;
      }
      const m = PHONE_SPEC.exec(p);
      if (!m) continue;
      const [, base, digit, reduced, avoid] = m;
      if (!VOWEL_BASES.has(base)) {
        out.push(base);
        continue;
      }
      nuclei.push({
        out: out.length,
        base,
        reduced: reduced ?? REDUCED[base],
        avoid: avoid !== undefined,
        fixed: digit as Nucleus["fixed"],
      });
      out.push(base);
    }
    pos += matched.g.length;
  }
  assignStress(out, nuclei, stressMark);
  return out.filter((p) => p.length > 0);
}

/** Choose the primary stress, give the first syllable secondary stress when the primary is third or later, reduce the rest. */
function assignStress(out: string[], nuclei: Nucleus[], stressMark: number): void {
  if (nuclei.length === 0) return;
  let primary = nuclei.findIndex((n) => n.fixed === "1");
  if (primary < 0) {
    const free = nuclei.map((_, i) => i).filter((i) => nuclei[i].fixed === undefined);
    if (stressMark > 0 && free.some((i) => i < stressMark)) {
      primary = Math.max(...free.filter((i) => i < stressMark));
    } else if (free.length > 0) {
      const preferred = free.filter((i) => !nuclei[i].avoid);
      const cand = preferred.length > 0 ? preferred : free;
      if (cand.length <= 2) primary = cand[0];
      else {
        primary = cand[cand.length - 3];
      }
    } else {
      // Only rule-fixed vowels: the first secondary or unstressed one becomes primary.
      primary = nuclei.findIndex((n) => n.fixed === "2");
      if (primary < 0) primary = 0;
    }
  }
  // An unstressed short vowel before "R" that closes the syllable becomes ER0 ("forward" -> F AO1 R W ER0 D).
  const closedR = (k: number) => out[k + 1] === "R" && (k + 2 >= out.length || !VOWEL_BASES.has(out[k + 2]));
  for (let i = 0; i < nuclei.length; i++) {
    const nu = nuclei[i];
    const secondary = primary >= 2 && i === 0 && !nu.avoid;
    if (i !== primary && nu.fixed === undefined && !secondary && R_COLOURED.has(nu.base) && closedR(nu.out)) {
      out[nu.out] = "ER0";
      out[nu.out + 1] = "";
      continue;
    }
    if (i === primary) out[nu.out] = nu.base + "1";
    else if (nu.fixed === "1") out[nu.out] = nu.base + "2";
    else if (nu.fixed !== undefined) out[nu.out] = nu.base + nu.fixed;
    else if (secondary) out[nu.out] = nu.base + "2";
    else out[nu.out] = nu.reduced;
  }
}

// ---------------------------------------------------------------------------------------------------
// Word lookup with upstream's out-of-vocabulary rules

const VOICELESS_END = new Set(["P", "T", "K", "F", "TH", "HH"]);
const SIBILANT_END = new Set(["S", "Z", "SH", "ZH", "CH", "JH"]);
const CLITICS: Record<string, string[]> = { "'ll": ["L"], "'ve": ["V"], "'re": ["R"], "'d": ["D"], "'m": ["M"] };

/** Options of the out-of-vocabulary path. */
export interface OovOptions extends LookupOptions {
  /** Split unknown words into dictionary words ("chatbots" -> chat + bots), as upstream's wordsegment does. */
  compounds?: boolean;
}

function isVowelPhone(p: string): boolean {
  return /[012]$/.test(p);
}

/** Compound parts must have at least this many letters (shorter parts split too eagerly: "shag-ging"). */
const COMPOUND_MIN_PART = 4;
const COMPOUND_MAX_PART = 20;
const COMPOUND_MAX_PARTS = 2;

/**
 * Split a letters-only word into dictionary words (fewest parts, each of COMPOUND_MIN_PART to
 * COMPOUND_MAX_PART letters, at most COMPOUND_MAX_PARTS), or null. This stands in for upstream's
 * wordsegment; parts of 4+ letters and at most two parts measured best on held-out dictionary words.
 */
function splitCompound(word: string, opts: OovOptions): string[] | null {
  const n = word.length;
  if (n < 2 * COMPOUND_MIN_PART || n > COMPOUND_MAX_PARTS * COMPOUND_MAX_PART) return null;
  const best = new Array<number>(n + 1).fill(Infinity);
  const next = new Array<number>(n + 1).fill(-1);
  best[n] = 0;
  for (let i = n - COMPOUND_MIN_PART; i >= 0; i--) {
    for (let j = Math.min(n, i + COMPOUND_MAX_PART); j >= i + COMPOUND_MIN_PART; j--) {
      if (best[j] === Infinity || best[j] + 1 >= best[i]) continue;
      if (i === 0 && j === n) continue; // the whole word is not a split
      if (lookupWord(word.slice(i, j), opts)) {
        best[i] = best[j] + 1;
        next[i] = j;
      }
    }
  }
  if (best[0] === Infinity || best[0] > COMPOUND_MAX_PARTS) return null;
  const parts: string[] = [];
  for (let i = 0; i < n; i = next[i]) parts.push(word.slice(i, next[i]));
  return parts;
}

/** Join the pronunciations of compound parts: the first part keeps its primary stress, later ones get secondary. */
function joinCompound(parts: string[][]): string[] {
  return parts.flatMap((p, k) => (k === 0 ? p : p.map((ph) => (ph.endsWith("1") ? ph.slice(0, -1) + "2" : ph))));
}

/** Spell a short word letter by letter ("a" is "EY1"; other characters pass through). */
function spell(word: string): string[] {
  const phones: string[] = [];
  for (const ch of word) {
    if (ch === "a") phones.push("EY1");
    else if (ch >= "a" && ch <= "z") phones.push(...letterName(ch));
    else phones.push(ch);
  }
  return phones;
}

/**
 * Upstream `qryword`: dictionary, then (out of vocabulary) words of up to 3 letters spelled, "'s"
 * possessives, then the fallback (compound split, letter-to-sound) in place of wordsegment and the
 * neural predictor.
 */
export function lookupOrPredict(oWord: string, opts: OovOptions = {}): string[] {
  const word = oWord.toLowerCase();
  if (word.length > 1) {
    const hit = lookupWord(word, opts);
    if (hit) return [...hit];
  }
  if (word.length <= 3) return spell(word);
  return oovFallback(word, opts);
}

/** The out-of-vocabulary path for a lower-case word of more than 3 characters. */
export function oovFallback(word: string, opts: OovOptions = {}): string[] {
  const poss = /^([a-z]+)'s$/.exec(word);
  if (poss) {
    const phones = lookupOrPredict(poss[1], opts);
    const last = phones[phones.length - 1] ?? "";
    if (VOICELESS_END.has(last)) phones.push("S");
    else if (SIBILANT_END.has(last)) phones.push("AH0", "Z");
    else phones.push("Z");
    return phones;
  }
  const clitic = /^([a-z]+)('ll|'ve|'re|'d|'m)$/.exec(word);
  if (clitic) return [...lookupOrPredict(clitic[1], opts), ...CLITICS[clitic[2]]];
  const negation = /^([a-z]+)n't$/.exec(word);
  if (negation) {
    const stem = lookupOrPredict(negation[1], opts);
    const last = stem[stem.length - 1] ?? "";
    return [...stem, ...(isVowelPhone(last) ? ["N", "T"] : ["AH0", "N", "T"])];
  }
  const parts = word.split(/[^a-z]+/).filter((p) => p.length > 0);
  if (parts.length > 1) return parts.flatMap((p) => lookupOrPredict(p, opts));
  if (parts.length === 0) return [];
  const letters = parts[0];
  if (letters !== word) return lookupOrPredict(letters, opts);
  if (opts.compounds !== false) {
    const split = splitCompound(letters, opts);
    if (split) return joinCompound(split.map((p) => lookupOrPredict(p, opts)));
  }
  return letterToSound(letters);
}

// ---------------------------------------------------------------------------------------------------
// G2P

/** Punctuation a token may be: kept as a phone if it is in the symbol table; "'" becomes "-". */
function punctuationPhone(token: string): string | undefined {
  if (token === "'") return "-";
  return hasSymbol(token) ? token : undefined;
}

/** G2P of already normalised English text (upstream `english.g2p`), without the "," padding. */
export function g2pNormalized(norm: string, opts: OovOptions = {}): string[] {
  const phones: string[] = [];
  for (const token of tokenizeEnglish(norm)) {
    const lower = token.toLowerCase();
    if (!/[a-z]/.test(lower)) {
      const p = punctuationPhone(lower);
      if (p !== undefined) phones.push(p);
      continue;
    }
    let pron: readonly string[];
    if (lower.length === 1) pron = token === "A" ? ["EY1"] : letterName(lower);
    else pron = lookupOrPredict(token, opts);
    for (const p of pron) {
      if (hasSymbol(p)) phones.push(p);
      else if (p === "'") phones.push("-");
    }
  }
  return phones;
}

export interface EnglishG2P {
  normText: string;
  phones: string[];
  word2ph: null;
}

/**
 * Normalise and convert English text (upstream `clean_text(text, "en")`): ARPAbet phones with stress
 * and punctuation symbols; a "," is prepended when fewer than 4 phones result.
 */
export function g2pEnglish(text: string): EnglishG2P {
  const normText = normalizeEnglish(text);
  const phones = g2pNormalized(normText);
  if (phones.length < 4) phones.unshift(",");
  return { normText, phones, word2ph: null };
}
