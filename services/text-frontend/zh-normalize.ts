/**
 * Chinese text normalisation, a port of upstream GPT-SoVITS `text/zh_normalization` (itself from
 * PaddleSpeech, Apache-2.0): traditional -> simplified, full-width -> half-width, dates, times, ranges,
 * temperatures, units, arithmetic, powers, fractions, percentages, phone numbers, decimals, numbers with
 * measure words, digit strings, Greek letters. The rules, their order and their quirks are upstream's
 * (for example "12-3" reads as a subtraction, 3+ digit numbers without a measure word are read digit by
 * digit, "mm" becomes 米米); docs/frontend.md lists the few places where this port differs.
 *
 * Every regex here is either anchored by a literal or runs over bounded repetitions, so each pass is
 * linear in the sentence length.
 */
import { readFileSync } from "node:fs";
import { fromRoot } from "../../shared/paths.js";

// ---------------------------------------------------------------------------------------------------
// Traditional -> simplified (char_convert.py's table, copied into data/char_convert.json)

let T2S: Map<string, string> | undefined;

function t2sTable(): Map<string, string> {
  if (T2S) return T2S;
  const data = JSON.parse(readFileSync(fromRoot("services", "text-frontend", "data", "char_convert.json"), "utf8")) as {
    simplified: string;
    traditional: string;
  };
  const s = Array.from(data.simplified);
  const t = Array.from(data.traditional);
  if (s.length !== t.length) throw new Error("char_convert.json: the two strings differ in length");
  const m = new Map<string, string>();
  // As upstream's dict comprehension: a later pair overrides an earlier one.
  for (let i = 0; i < s.length; i++) m.set(t[i], s[i]);
  return (T2S = m);
}

export function traditionalToSimplified(text: string): string {
  const m = t2sTable();
  let out = "";
  for (const ch of text) out += m.get(ch) ?? ch;
  return out;
}

/** Full-width ASCII letters and digits to half-width, U+3000 to a space (constants.py F2H_*). */
function fullToHalf(text: string): string {
  return text.replace(/[\uFF10-\uFF19\uFF21-\uFF3A\uFF41-\uFF5A\u3000]/g, (c) =>
    c === "\u3000" ? " " : String.fromCharCode(c.charCodeAt(0) - 0xfee0),
  );
}

// ---------------------------------------------------------------------------------------------------
// num.py

const DIGITS = "零一二三四五六七八九";
const UNITS: [number, string][] = [
  [8, "亿"],
  [4, "万"],
  [3, "千"],
  [2, "百"],
  [1, "十"],
];
const UNIT_NAME: Record<number, string> = { 1: "十", 2: "百", 3: "千", 4: "万", 8: "亿" };

function digitName(d: string): string {
  return DIGITS[d.charCodeAt(0) - 48];
}

function lstrip0(s: string): string {
  return s.replace(/^0+/, "");
}

function getValue(valueString: string, useZero = true): string[] {
  const stripped = lstrip0(valueString);
  if (stripped.length === 0) return [];
  if (stripped.length === 1) {
    if (useZero && stripped.length < valueString.length) return [DIGITS[0], digitName(stripped)];
    return [digitName(stripped)];
  }
  const largest = UNITS.find(([p]) => p < stripped.length)![0];
  const first = valueString.slice(0, -largest);
  const second = valueString.slice(-largest);
  return [...getValue(first), UNIT_NAME[largest], ...getValue(second)];
}

/** num.py verbalize_cardinal: "105" -> 一百零五, "12" -> 十二. */
export function verbalizeCardinal(valueString: string): string {
  if (!valueString) return "";
  const v = lstrip0(valueString);
  if (v.length === 0) return DIGITS[0];
  let symbols = getValue(v);
  if (symbols.length >= 2 && symbols[0] === DIGITS[1] && symbols[1] === UNIT_NAME[1]) symbols = symbols.slice(1);
  return symbols.join("");
}

/** num.py verbalize_digit: digit by digit, 一 as 幺 when altOne. */
export function verbalizeDigit(valueString: string, altOne = false): string {
  let r = "";
  for (const d of valueString) r += /[0-9]/.test(d) ? digitName(d) : "";
  return altOne ? r.replaceAll("一", "幺") : r;
}

/** num.py num2str: integer part as a cardinal, decimals digit by digit after 点. */
export function num2str(valueString: string): string {
  const parts = valueString.split(".");
  if (parts.length > 2) return parts.map((p) => verbalizeDigit(p)).join("点"); // upstream raises ValueError
  const integer = parts[0];
  let decimal = parts.length === 2 ? parts[1] : "";
  let result = verbalizeCardinal(integer);
  decimal = decimal.endsWith("0") ? decimal.replace(/0+$/, "") + "0" : decimal.replace(/0+$/, "");
  if (decimal) {
    result = result ? result : "零";
    result += "点" + verbalizeDigit(decimal);
  }
  return result;
}

const COM_QUANTIFIERS =
  "(处|台|架|枚|趟|幅|平|方|堵|间|床|株|批|项|例|列|篇|栋|注|亩|封|艘|把|目|套|段|人|所|朵|匹|张|座|回|场|尾|条|个|首|阙|阵|网|炮|顶|丘|棵|只|支|袭|辆|挑|担|颗|壳|窠|曲|墙|群|腔|砣|座|客|贯|扎|捆|刀|令|打|手|罗|坡|山|岭|江|溪|钟|队|单|双|对|出|口|头|脚|板|跳|枝|件|贴|针|线|管|名|位|身|堂|课|本|页|家|户|层|丝|毫|厘|分|钱|两|斤|担|铢|石|钧|锱|忽|(千|毫|微)克|毫|厘|(公)分|分|寸|尺|丈|里|寻|常|铺|程|(千|分|厘|毫|微)米|米|撮|勺|合|升|斗|石|盘|碗|碟|叠|桶|笼|盆|盒|杯|钟|斛|锅|簋|篮|盘|桶|罐|瓶|壶|卮|盏|箩|箱|煲|啖|袋|钵|年|月|日|季|刻|时|周|天|秒|分|小时|旬|纪|岁|世|更|夜|春|夏|秋|冬|代|伏|辈|丸|泡|粒|颗|幢|堆|条|根|支|道|面|片|张|颗|块|元|(亿|千万|百万|万|千|百)|(亿|千万|百万|万|千|百|美|)元|(亿|千万|百万|万|千|百|十|)吨|(亿|千万|百万|万|千|百|)块|角|毛|分)";

const SUP = "[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]";
const OPERAND = `((-?)((\\d+)(\\.\\d+)?${SUP}*)|(\\.\\d+${SUP}*)|([A-Za-z]${SUP}*))`;
const RE_ASMD = new RegExp(`${OPERAND}([\\+\\-\\×÷=])${OPERAND}`);
const RE_ASMD_G = new RegExp(RE_ASMD.source, "g");
const ASMD: Record<string, string> = { "+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于" };
const RE_POWER = new RegExp(`${SUP}+`, "g");
const POWER: Record<string, string> = { "⁰": "0", "¹": "1", "²": "2", "³": "3", "⁴": "4", "⁵": "5", "⁶": "6", "⁷": "7", "⁸": "8", "⁹": "9", ˣ: "x", ʸ: "y", ⁿ: "n" };
const RE_FRAC = /(-?)(\d+)\/(\d+)/g;
const RE_PERCENTAGE = /(-?)(\d+(\.\d+)?)%/g;
const RE_INTEGER = /(-)(\d+)/g;
const RE_DEFAULT_NUM = /\d{3}\d*/g;
const RE_DECIMAL_NUM = /(-?)((\d+)(\.\d+))|(\.(\d+))/g;
const RE_POSITIVE_QUANTIFIERS = new RegExp(`(\\d+)([多余几\\+])?${COM_QUANTIFIERS}`, "g");
const RE_NUMBER = /(-?)((\d+)(\.\d+)?)|(\.(\d+))/g;
const RE_RANGE = /(?<![\d+\-×÷=])((-?)((\d+)(\.\d+)?))[-~]((-?)((\d+)(\.\d+)?))(?![\d+\-×÷=])/g;
const UNIT_ALT = "(%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s)";
const RE_TO_RANGE = new RegExp(`((-?)((\\d+)(\\.\\d+)?)|(\\.(\\d+)))${UNIT_ALT}[~]((-?)((\\d+)(\\.\\d+)?)|(\\.(\\d+)))${UNIT_ALT}`, "g");
const RE_VERSION_NUM = /((\d+)(\.\d+)(\.\d+)?(\.\d+)+)/g;

function replaceNumber(_m: string, sign: string | undefined, number: string | undefined, _g3: unknown, _g4: unknown, pureDecimal: string | undefined): string {
  if (pureDecimal) return num2str(pureDecimal);
  return (sign ? "负" : "") + num2str(number ?? "");
}

function numberSub(s: string): string {
  return s.replace(RE_NUMBER, replaceNumber as (...a: string[]) => string);
}

// ---------------------------------------------------------------------------------------------------
// chronology.py

const RE_TIME = /([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?/g;
const RE_TIME_RANGE = /([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?(~|-)([0-1]?[0-9]|2[0-3]):([0-5][0-9])(:([0-5][0-9]))?/g;
const RE_DATE = /(\d{4}|\d{2})年((0?[1-9]|1[0-2])月)?(((0?[1-9])|((1|2)[0-9])|30|31)([日号]))?/g;
const RE_DATE2 = /(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])/g;

function timeNum2str(s: string): string {
  let r = num2str(lstrip0(s));
  if (s.startsWith("0")) r = DIGITS[0] + r;
  return r;
}

function timeText(hour: string, minute: string, second: string | undefined, halfFromMinute: string): string {
  let r = `${num2str(hour)}点`;
  if (lstrip0(minute)) r += Number(halfFromMinute) === 30 ? "半" : `${timeNum2str(minute)}分`;
  if (second && lstrip0(second)) r += `${timeNum2str(second)}秒`;
  return r;
}

// ---------------------------------------------------------------------------------------------------
// phonecode.py and quantifier.py

const RE_MOBILE_PHONE = /(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)/g;
const RE_TELEPHONE = /(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)/g;
const RE_NATIONAL_UNIFORM_NUMBER = /(400)(-)?\d{3}(-)?\d{4}/g;

function phone2str(s: string, mobile: boolean): string {
  const parts = mobile ? s.replace(/^\++|\++$/g, "").split(/\s+/).filter((p) => p) : s.split("-");
  return parts.map((p) => verbalizeDigit(p, true)).join("，");
}

const RE_TEMPERATURE = /(-?)(\d+(\.\d+)?)(°C|℃|度|摄氏度)/g;
/** Upstream's measure_dict, in its (insertion) order: plain string replacement, "mm" is reached after "m". */
const MEASURES: [string, string][] = [
  ["cm2", "平方厘米"],
  ["cm²", "平方厘米"],
  ["cm3", "立方厘米"],
  ["cm³", "立方厘米"],
  ["cm", "厘米"],
  ["db", "分贝"],
  ["ds", "毫秒"],
  ["kg", "千克"],
  ["km", "千米"],
  ["m2", "平方米"],
  ["m²", "平方米"],
  ["m³", "立方米"],
  ["m3", "立方米"],
  ["ml", "毫升"],
  ["m", "米"],
  ["mm", "毫米"],
  ["s", "秒"],
];

// ---------------------------------------------------------------------------------------------------
// text_normlization.py

const GREEK: [string, string][] = [
  ["α", "阿尔法"], ["β", "贝塔"], ["γ", "伽玛"], ["Γ", "伽玛"], ["δ", "德尔塔"], ["Δ", "德尔塔"], ["ε", "艾普西龙"], ["ζ", "捷塔"],
  ["η", "依塔"], ["θ", "西塔"], ["Θ", "西塔"], ["ι", "艾欧塔"], ["κ", "喀帕"], ["λ", "拉姆达"], ["Λ", "拉姆达"], ["μ", "缪"], ["ν", "拗"],
  ["ξ", "克西"], ["Ξ", "克西"], ["ο", "欧米克伦"], ["π", "派"], ["Π", "派"], ["ρ", "肉"], ["ς", "西格玛"], ["Σ", "西格玛"], ["σ", "西格玛"],
  ["τ", "套"], ["υ", "宇普西龙"], ["φ", "服艾"], ["Φ", "服艾"], ["χ", "器"], ["ψ", "普赛"], ["Ψ", "普赛"], ["ω", "欧米伽"], ["Ω", "欧米伽"],
];
const CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩";

function postReplace(sentence: string): string {
  let s = sentence.replaceAll("/", "每");
  for (let i = 0; i < CIRCLED.length; i++) s = s.replaceAll(CIRCLED[i], i === 9 ? "十" : DIGITS[i + 1]);
  for (const [g, r] of GREEK) s = s.replaceAll(g, r);
  s = s.replaceAll("+", "加").replaceAll("-", "减").replaceAll("×", "乘").replaceAll("÷", "除").replaceAll("=", "等");
  return s.replace(/[-—《》【】<=>{}()（）#&@“”^_|\\]/g, "");
}

/** One sentence through upstream's normalize_sentence. */
export function normalizeZhSentence(input: string): string {
  let s = fullToHalf(traditionalToSimplified(input));
  s = s.replace(RE_DATE, (_m, year: string, _g2, month: string | undefined, _g4, day: string | undefined, _g6, _g7, _g8, suffix: string | undefined) => {
    let r = "";
    if (year) r += `${verbalizeDigit(year)}年`;
    if (month) r += `${verbalizeCardinal(month)}月`;
    if (day) r += `${verbalizeCardinal(day)}${suffix ?? ""}`;
    return r;
  });
  s = s.replace(RE_DATE2, (_m, year: string, _sep, month: string, day: string) => `${verbalizeDigit(year)}年${verbalizeCardinal(month)}月${verbalizeCardinal(day)}日`);
  s = s.replace(RE_TIME_RANGE, (_m, h1: string, m1: string, _g3, s1: string | undefined, _sep, h2: string, m2: string, _g8, s2: string | undefined) =>
    // Upstream tests the first minute for 半 in the second time too; kept.
    timeText(h1, m1, s1, m1) + "至" + timeText(h2, m2, s2, m1),
  );
  s = s.replace(RE_TIME, (_m, h: string, m: string, _g3, sec: string | undefined) => timeText(h, m, sec, m));
  s = s.replace(RE_TO_RANGE, (m: string) => m.replaceAll("~", "至"));
  s = s.replace(RE_TEMPERATURE, (_m, sign: string, t: string, _g3, unit: string) => `${sign ? "零下" : ""}${num2str(t)}${unit === "摄氏度" ? "摄氏度" : "度"}`);
  for (const [k, v] of MEASURES) if (s.includes(k)) s = s.replaceAll(k, v);
  // Each round removes one operator, so this ends.
  while (RE_ASMD.test(s)) {
    s = s.replace(RE_ASMD_G, (...g: (string | undefined)[]) => `${g[1] ?? ""}${ASMD[g[8] ?? ""]}${g[9] ?? ""}`);
  }
  s = s.replace(RE_POWER, (m: string) => "的" + Array.from(m, (c) => POWER[c]).join("") + "次方");
  s = s.replace(RE_FRAC, (_m, sign: string, nom: string, den: string) => `${sign ? "负" : ""}${num2str(den)}分之${num2str(nom)}`);
  s = s.replace(RE_PERCENTAGE, (_m, sign: string, p: string) => `${sign ? "负" : ""}百分之${num2str(p)}`);
  s = s.replace(RE_MOBILE_PHONE, (m: string) => phone2str(m, true));
  s = s.replace(RE_TELEPHONE, (m: string) => phone2str(m, false));
  s = s.replace(RE_NATIONAL_UNIFORM_NUMBER, (m: string) => phone2str(m, false));
  s = s.replace(RE_RANGE, (_m, first: string, _g2, _g3, _g4, _g5, second: string) => `${numberSub(first)}到${numberSub(second)}`);
  s = s.replace(RE_INTEGER, (_m, sign: string, n: string) => `${sign ? "负" : ""}${num2str(n)}`);
  s = s.replace(RE_VERSION_NUM, (m: string) => Array.from(m, (c) => (c === "." ? "点" : num2str(c))).join(""));
  s = s.replace(RE_DECIMAL_NUM, replaceNumber as (...a: string[]) => string);
  s = s.replace(RE_POSITIVE_QUANTIFIERS, (_m, n: string, more: string | undefined, q: string) => {
    let num = num2str(n);
    if (num === "二") num = "两";
    return `${num}${more === "+" ? "多" : (more ?? "")}${q}`;
  });
  s = s.replace(RE_DEFAULT_NUM, (m: string) => verbalizeDigit(m, true));
  s = numberSub(s);
  return postReplace(s);
}

/** TextNormalizer._split for zh: spaces and brackets removed, one sentence per clause-final mark. */
function splitSentences(text: string): string[] {
  let t = text.replaceAll(" ", "").replace(/[—《》【】<>{}()（）#&@“”^_|\\]/g, "");
  t = t.replace(/([：、，；。？！,;?!][”’]?)/g, "$1\n").trim();
  return t.split(/\n+/).map((s) => s.trim());
}

/** Upstream TextNormalizer.normalize: the normalised sentences. */
export function normalizeZhSentences(text: string): string[] {
  return splitSentences(text).map(normalizeZhSentence);
}
