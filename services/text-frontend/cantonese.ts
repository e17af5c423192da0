/**
 * Cantonese G2P after upstream GPT-SoVITS `text/cantonese.py`: the zh TextNormalizer, its own
 * punctuation map (brackets and quotes become "'", which the symbol table then maps to UNK as upstream),
 * everything but U+4E00..U+9FA5 and punctuation deleted; jyutping per character from `to-jyutping`
 * (BSD-2-Clause, the npm port of the ToJyutping data upstream uses), split into initial and final by
 * upstream's ordered INITIALS list, tone appended to the final, "Y" in front of each; word2ph 2 per
 * character and 1 per punctuation mark.
 */
import { toJyutpingModule } from "./lazy.js";
import { normalizeZhSentences } from "./zh-normalize.js";

const PUNCTUATION = new Set(["!", "?", "…", ",", ".", "-"]);

const REP_MAP: [string, string][] = [
  ["：", ","], ["；", ","], ["，", ","], ["。", "."], ["！", "!"], ["？", "?"], ["\n", "."], ["·", ","], ["、", ","], ["...", "…"], ["$", "."],
  ["“", "'"], ["”", "'"], ['"', "'"], ["‘", "'"], ["’", "'"], ["（", "'"], ["）", "'"], ["(", "'"], [")", "'"], ["《", "'"], ["》", "'"],
  ["【", "'"], ["】", "'"], ["[", "'"], ["]", "'"], ["—", "-"], ["～", "-"], ["~", "-"], ["「", "'"], ["」", "'"],
];
const REP_RE = new RegExp(REP_MAP.map(([k]) => k.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")).join("|"), "g");
const REP: Record<string, string> = Object.fromEntries(REP_MAP);

function replacePunctuation(text: string): string {
  return text.replace(REP_RE, (m) => REP[m]).replace(/[^\u4e00-\u9fa5!?…,.\-]+/g, "");
}

/** cantonese.text_normalize (no collapsing of repeated punctuation, unlike zh). */
export function normalizeCantonese(text: string): string {
  return normalizeZhSentences(text).map(replacePunctuation).join("");
}

/** Upstream's INITIALS, in its order: the first prefix that matches is the initial. */
const INITIALS = [
  "aa", "aai", "aak", "aap", "aat", "aau", "ai", "au", "ap", "at", "ak", "a", "p", "b", "e", "ts", "t", "dz", "d", "kw", "k", "gw", "g", "f", "h", "l", "m",
  "ng", "n", "s", "y", "w", "c", "z", "j", "ong", "on", "ou", "oi", "ok", "o", "uk", "ung", "sp", "spl", "spn", "sil",
];

/** One jyutping syllable ("gwong2") -> upstream's two phones, or [] when no initial matches. */
export function jyutpingToPhones(syllable: string): string[] {
  const last = syllable[syllable.length - 1];
  const hasTone = /[0-9]/.test(last);
  const tone = hasTone ? Number(last) : 0;
  const body = hasTone ? syllable.slice(0, -1) : syllable;
  for (const initial of INITIALS) {
    if (!body.startsWith(initial)) continue;
    let parts: [string, string];
    if (body.startsWith("nga")) parts = [body.slice(0, 2), body.slice(2) || body[body.length - 1]];
    else parts = [initial, body.slice(initial.length) || initial[initial.length - 1]];
    const fin = tone !== 0 ? `${parts[1]}${tone}` : parts[1];
    return ["Y" + parts[0], PUNCTUATION.has(fin) ? fin : "Y" + fin];
  }
  return [];
}

/** cantonese.g2p over normalised text. */
export function g2pCantonese(normText: string): { phones: string[]; word2ph: number[] } {
  const phones: string[] = [];
  const word2ph: number[] = [];
  for (const [ch, jp] of toJyutpingModule().getJyutpingList(normText)) {
    for (const c of Array.from(ch)) {
      if (PUNCTUATION.has(c)) {
        phones.push(c);
        word2ph.push(1);
      }
    }
    if (PUNCTUATION.has(ch) || Array.from(ch).every((c) => PUNCTUATION.has(c))) continue;
    // Characters without a reading (or with one upstream's INITIALS cannot split) get UNK so that
    // word2ph keeps one entry per character; upstream fails its assertion on them instead.
    const syllables = jp ? jp.split(" ") : [];
    const ph = syllables.length === 1 ? jyutpingToPhones(syllables[0]) : [];
    if (ph.length === 2) {
      phones.push(...ph);
      word2ph.push(2);
    } else {
      phones.push("UNK");
      word2ph.push(1);
    }
  }
  return { phones, word2ph };
}

/** Upstream clean_text for yue. */
export function cleanCantonese(text: string): { normText: string; phones: string[]; word2ph: number[] } {
  const normText = normalizeCantonese(text);
  return { normText, ...g2pCantonese(normText) };
}
