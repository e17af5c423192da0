/**
 * Korean G2P after upstream GPT-SoVITS `text/korean.py` (`g2p`): Latin letters to their Korean names,
 * g2pk2 (pronunciation rules on hangul), decomposition into compatibility jamo with the compound vowels
 * split (ㅘ -> ㅗㅏ, ㅑ -> ㅣㅏ, ...), a "." after a final jamo, space -> 空, anything outside the
 * symbol table -> 停.
 *
 * g2pk2 needs MeCab and a large rule table; here its main rules are implemented directly on syllables:
 * numbers (native numerals before classifiers, Sino-Korean otherwise), 의/ㅖ/져 simplifications,
 * ㅎ deletion and aspiration, liaison (연음) with compound finals split, palatalisation (ㄷ/ㅌ + 이),
 * coda neutralisation, cluster rules (읽기 -> 일끼, 넓다 -> 널따), nasalisation, ㄹ assimilation and
 * post-obstruent tensing. Rules that need
 * morphology (tensing after a modifier ending, 의 as a particle, n-insertion, idioms) are not applied;
 * docs/frontend.md lists them.
 */
import { hasSymbol } from "./symbols.js";

const CHO = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ";
const JUNG = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ";
const JONG = ["", "ㄱ", "ㄲ", "ㄳ", "ㄴ", "ㄵ", "ㄶ", "ㄷ", "ㄹ", "ㄺ", "ㄻ", "ㄼ", "ㄽ", "ㄾ", "ㄿ", "ㅀ", "ㅁ", "ㅂ", "ㅄ", "ㅅ", "ㅆ", "ㅇ", "ㅈ", "ㅊ", "ㅋ", "ㅌ", "ㅍ", "ㅎ"];

interface Syl {
  i: string;
  v: string;
  f: string;
}

export function decomposeSyllable(ch: string): Syl | undefined {
  const c = ch.charCodeAt(0) - 0xac00;
  if (c < 0 || c > 11171) return undefined;
  return { i: CHO[Math.floor(c / 588)], v: JUNG[Math.floor((c % 588) / 28)], f: JONG[c % 28] };
}

export function composeSyllable(s: Syl): string {
  return String.fromCharCode(0xac00 + CHO.indexOf(s.i) * 588 + JUNG.indexOf(s.v) * 28 + JONG.indexOf(s.f));
}

// ---------------------------------------------------------------------------------------------------
// Latin letters and numbers

const LATIN: Record<string, string> = {
  a: "에이", b: "비", c: "시", d: "디", e: "이", f: "에프", g: "지", h: "에이치", i: "아이", j: "제이", k: "케이", l: "엘", m: "엠",
  n: "엔", o: "오", p: "피", q: "큐", r: "아르", s: "에스", t: "티", u: "유", v: "브이", w: "더블유", x: "엑스", y: "와이", z: "제트",
};

/** korean.latin_to_hangul: every Latin letter by its name. */
export function latinToHangul(text: string): string {
  return text.replace(/[a-z]/gi, (c) => LATIN[c.toLowerCase()]);
}

const CLASSIFIERS = "군데 권 개 그루 닢 대 두 마리 모 모금 뭇 발 발짝 방 번 벌 보루 살 수 술 시 쌈 움큼 정 짝 채 척 첩 축 켤레 톨 통".split(" ");

/** korean.hangul_number (from g2pK): Sino-Korean or native reading of a digit string. */
export function hangulNumber(numIn: string, sino = true): string {
  const num = numIn.replaceAll(",", "");
  if (num === "0") return "영";
  if (!sino && num === "20") return "스무";
  const names = "일이삼사오육칠팔구";
  const mods = "한 두 세 네 다섯 여섯 일곱 여덟 아홉".split(" ");
  const decs = "열 스물 서른 마흔 쉰 예순 일흔 여든 아흔".split(" ");
  const nameOf = (d: string) => (d >= "1" && d <= "9" ? names[Number(d) - 1] : "");
  const spelled: string[] = [];
  const digits = Array.from(num);
  digits.forEach((digit, idx) => {
    const i = digits.length - idx - 1;
    let name = "";
    if (sino) {
      if (i === 0) name = nameOf(digit);
      else if (i === 1) name = (nameOf(digit) + "십").replace("일십", "십");
    } else {
      if (i === 0) name = digit >= "1" && digit <= "9" ? mods[Number(digit) - 1] : "";
      else if (i === 1) name = digit >= "1" && digit <= "9" ? decs[Number(digit) - 1] : "";
    }
    if (digit === "0") {
      if (i % 4 === 0) {
        const lastThree = spelled.slice(-Math.min(3, spelled.length));
        if (lastThree.join("") === "") {
          spelled.push("");
          return;
        }
      } else {
        spelled.push("");
        return;
      }
    }
    const unit: Record<number, [string, string | null]> = {
      2: ["백", "일백"], 3: ["천", "일천"], 4: ["만", "일만"], 5: ["십", "일십"], 6: ["백", "일백"], 7: ["천", "일천"], 8: ["억", null],
      9: ["십", null], 10: ["백", null], 11: ["천", null], 12: ["조", null], 13: ["십", null], 14: ["백", null], 15: ["천", null],
    };
    const u = unit[i];
    if (u) {
      name = nameOf(digit) + u[0];
      if (u[1]) name = name.replace(u[1], u[0]);
    }
    spelled.push(name);
  });
  return spelled.join("");
}

/** Numbers as g2pk reads them: native numerals before a classifier, Sino-Korean otherwise. */
export function koreanNumbers(text: string): string {
  return text
    .replace(/(\d[\d,]*)([\uac00-\ud71f]+)?/g, (m, num: string, cls: string | undefined) => {
      const digits = num.replace(/,+$/, "");
      const rest = num.slice(digits.length) + (cls ?? "");
      if (digits.replaceAll(",", "").length > 16) return Array.from(digits.replaceAll(",", ""), (d) => "영일이삼사오육칠팔구"[Number(d)]).join("") + rest;
      const native = cls !== undefined && (CLASSIFIERS.includes(cls.slice(0, 2)) || CLASSIFIERS.includes(cls[0])) && Number(digits.replaceAll(",", "")) < 100;
      return hangulNumber(digits, !native) + rest;
    })
    .replace(/[0-9]/g, (d) => "영일이삼사오육칠팔구"[Number(d)]);
}

// ---------------------------------------------------------------------------------------------------
// Pronunciation rules

const NEUTRAL: Record<string, string> = {
  ㄲ: "ㄱ", ㅋ: "ㄱ", ㄳ: "ㄱ", ㄺ: "ㄱ", ㅅ: "ㄷ", ㅆ: "ㄷ", ㅈ: "ㄷ", ㅊ: "ㄷ", ㅌ: "ㄷ", ㅎ: "ㄷ", ㅍ: "ㅂ", ㄼ: "ㄹ", ㄿ: "ㅂ", ㅄ: "ㅂ",
  ㄵ: "ㄴ", ㄶ: "ㄴ", ㄽ: "ㄹ", ㄾ: "ㄹ", ㅀ: "ㄹ", ㄻ: "ㅁ",
};
/** Compound finals: [stays, moves to the next syllable before a vowel]. */
const SPLIT: Record<string, [string, string]> = {
  ㄳ: ["ㄱ", "ㅆ"], ㄵ: ["ㄴ", "ㅈ"], ㄶ: ["ㄴ", "ㅎ"], ㄺ: ["ㄹ", "ㄱ"], ㄻ: ["ㄹ", "ㅁ"], ㄼ: ["ㄹ", "ㅂ"], ㄽ: ["ㄹ", "ㅆ"], ㄾ: ["ㄹ", "ㅌ"],
  ㄿ: ["ㄹ", "ㅍ"], ㅀ: ["ㄹ", "ㅎ"], ㅄ: ["ㅂ", "ㅆ"],
};
const ASPIRATE: Record<string, string> = { ㄱ: "ㅋ", ㄷ: "ㅌ", ㅂ: "ㅍ", ㅈ: "ㅊ" };
const TENSE: Record<string, string> = { ㄱ: "ㄲ", ㄷ: "ㄸ", ㅂ: "ㅃ", ㅅ: "ㅆ", ㅈ: "ㅉ" };

function neutral(f: string): string {
  return NEUTRAL[f] ?? f;
}

/** Apply the rules across the syllable boundaries of one word (no spaces inside). */
function pronounceWord(syls: Syl[]): Syl[] {
  const s = syls.map((x) => ({ ...x }));
  // Vowel simplifications (g2pk jyeo, ye, consonant_ui).
  s.forEach((x, k) => {
    if ("ㅈㅉㅊ".includes(x.i) && x.v === "ㅕ") x.v = "ㅓ";
    if (x.v === "ㅖ" && !"ㅇㄹ".includes(x.i)) x.v = "ㅔ";
    if (x.v === "ㅢ" && (x.i !== "ㅇ" || k > 0)) x.v = "ㅣ";
  });
  for (let k = 0; k + 1 < s.length; k++) {
    const a = s[k];
    const b = s[k + 1];
    if (!a.f) continue;
    if (b.i === "ㅇ") {
      // Before a vowel: ㅎ is silent, palatalisation, otherwise the final moves over (liaison).
      if (a.f === "ㅇ") continue;
      if (a.f === "ㅎ") a.f = "";
      else if (b.v === "ㅣ" && (a.f === "ㄷ" || a.f === "ㅌ" || a.f === "ㄾ")) {
        b.i = a.f === "ㄷ" ? "ㅈ" : "ㅊ";
        a.f = a.f === "ㄾ" ? "ㄹ" : "";
      } else if (SPLIT[a.f]) {
        const [stay, move] = SPLIT[a.f];
        a.f = stay;
        b.i = move === "ㅎ" ? "ㅇ" : move;
      } else {
        b.i = a.f;
        a.f = "";
      }
      continue;
    }
    if (b.i === "ㅎ" && (ASPIRATE[neutral(a.f)] || a.f === "ㄺ" || a.f === "ㄼ" || a.f === "ㄵ")) {
      // Aspiration: 축하 -> 추카, 맏형 -> 마텽, 옷하고 -> 오타고.
      const base = SPLIT[a.f] ? SPLIT[a.f][1] : neutral(a.f);
      if (SPLIT[a.f]) a.f = SPLIT[a.f][0];
      else a.f = "";
      b.i = ASPIRATE[base] ?? ASPIRATE[neutral(base)] ?? b.i;
      continue;
    }
    if (a.f === "ㅎ" || a.f === "ㄶ" || a.f === "ㅀ") {
      const rest = a.f === "ㅎ" ? "" : a.f === "ㄶ" ? "ㄴ" : "ㄹ";
      if (ASPIRATE[b.i]) {
        b.i = ASPIRATE[b.i];
        a.f = rest;
        continue;
      }
      if (b.i === "ㅅ") {
        b.i = "ㅆ";
        a.f = rest;
        continue;
      }
      if (b.i === "ㄴ") a.f = rest === "ㄹ" ? "ㄹ" : "ㄴ";
    }
    // Consonant clusters before a consonant, in verb stems (standard pronunciation §11, §25, §24):
    // ㄺ before ㄱ is ㄹ (읽기 -> 일끼); after ㄺ ㄼ ㄾ ㄻ the next plain obstruent is tense (넓다 -> 널따, 젊다 -> 점따).
    if ((a.f === "ㄺ" || a.f === "ㄼ" || a.f === "ㄾ" || a.f === "ㄻ") && TENSE[b.i]) {
      a.f = a.f === "ㄺ" ? (b.i === "ㄱ" ? "ㄹ" : "ㄱ") : a.f === "ㄻ" ? "ㅁ" : "ㄹ";
      b.i = TENSE[b.i];
      continue;
    }
    a.f = neutral(a.f);
    // Nasalisation and ㄹ assimilation.
    if (b.i === "ㄹ") {
      if (a.f === "ㄴ") a.f = "ㄹ";
      else if (a.f === "ㅁ" || a.f === "ㅇ") b.i = "ㄴ";
      else if (a.f === "ㄱ" || a.f === "ㅂ" || a.f === "ㄷ") {
        b.i = "ㄴ";
        a.f = a.f === "ㄱ" ? "ㅇ" : a.f === "ㅂ" ? "ㅁ" : "ㄴ";
      }
    } else if (b.i === "ㄴ" || b.i === "ㅁ") {
      if (a.f === "ㄱ") a.f = "ㅇ";
      else if (a.f === "ㄷ") a.f = "ㄴ";
      else if (a.f === "ㅂ") a.f = "ㅁ";
      else if (a.f === "ㄹ" && b.i === "ㄴ") b.i = "ㄹ";
    } else if ((a.f === "ㄱ" || a.f === "ㄷ" || a.f === "ㅂ") && TENSE[b.i]) {
      b.i = TENSE[b.i];
    }
  }
  for (const x of s) x.f = neutral(x.f);
  return s;
}

/** g2pk-like pronunciation of hangul text (returns hangul). */
export function pronounceKorean(text: string): string {
  return text.replace(/[\uac00-\ud7a3]+/g, (word) => pronounceWord(Array.from(word, (c) => decomposeSyllable(c)!)).map(composeSyllable).join(""));
}

// ---------------------------------------------------------------------------------------------------
// Jamo

const DIVIDED: Record<string, string> = {
  ㅘ: "ㅗㅏ", ㅙ: "ㅗㅐ", ㅚ: "ㅗㅣ", ㅝ: "ㅜㅓ", ㅞ: "ㅜㅔ", ㅟ: "ㅜㅣ", ㅢ: "ㅡㅣ", ㅑ: "ㅣㅏ", ㅒ: "ㅣㅐ", ㅕ: "ㅣㅓ", ㅖ: "ㅣㅔ", ㅛ: "ㅣㅗ", ㅠ: "ㅣㅜ",
};

/** korean.divide_hangul: syllables to compatibility jamo (initial ㅇ kept), compound vowels split. */
export function divideHangul(text: string): string {
  let out = "";
  for (const ch of text) {
    const s = decomposeSyllable(ch);
    const jamo = s ? s.i + s.v + s.f : ch;
    for (const j of jamo) out += DIVIDED[j] ?? j;
  }
  return out;
}

/** korean.fix_g2pk2_error: ㅇㅡㄹ/ㄹㅡㄹ + " " + ㄹ -> ... ㄴ. */
function fixG2pk2(text: string): string {
  return text.replace(/([ㅇㄹ]ㅡㄹ) ㄹ/g, "$1 ㄴ");
}

const KO_PUNCT: Record<string, string> = { "：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ",", " ": "空" };

/** korean.g2p. */
export function g2pKorean(text: string): string[] {
  let t = latinToHangul(text);
  t = pronounceKorean(koreanNumbers(t));
  t = fixG2pk2(divideHangul(t));
  t = t.replace(/([\u3131-\u3163])$/, "$1.");
  const phones: string[] = [];
  for (const ch of t) {
    const p = KO_PUNCT[ch] ?? ch;
    phones.push(hasSymbol(p) ? p : "停");
  }
  return phones;
}
