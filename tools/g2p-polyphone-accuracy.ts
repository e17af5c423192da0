/**
 * node dist/tools/g2p-polyphone-accuracy.js [--n 5000] [--seed 1] [--show 20]
 *
 * How well pinyin-pro (which stands in for upstream's g2pW) reads polyphonic characters, measured on
 * upstream's own polyphone dictionary (data/polyphonic.rep + polyphonic-fix.rep: words whose reading
 * upstream fixed by hand). For a seeded sample of its entries, each word is read by pinyin-pro alone
 * (no dictionary), and the syllables are compared with the dictionary's, tone included (neutral = 5).
 * The frontend itself applies the dictionary to every word jieba finds in it, so these words are read
 * right in the frontend; the figure says how pinyin-pro does on polyphones the dictionary does not list.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { fromRoot } from "../shared/paths.js";
import { pinyinProModule } from "../services/text-frontend/lazy.js";

const { values } = parseArgs({ options: { n: { type: "string", default: "5000" }, seed: { type: "string", default: "1" }, show: { type: "string", default: "15" } } });

const entries: [string, string[]][] = [];
for (const file of ["polyphonic.rep", "polyphonic-fix.rep"]) {
  for (const line of readFileSync(fromRoot("services", "text-frontend", "data", file), "utf8").split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const word = line.slice(0, colon).trim();
    const syl = Array.from(line.slice(colon + 1).matchAll(/'([a-z]+[1-5])'/g), (m) => m[1]);
    if (Array.from(word).length === syl.length && syl.length > 1) entries.push([word, syl]);
  }
}

let a = Number(values.seed) >>> 0;
const rnd = () => {
  a = (a + 0x6d2b79f5) >>> 0;
  let x = a;
  x = Math.imul(x ^ (x >>> 15), x | 1);
  x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
};
for (let i = entries.length - 1; i > 0; i--) {
  const j = Math.floor(rnd() * (i + 1));
  [entries[i], entries[j]] = [entries[j], entries[i]];
}
const sample = entries.slice(0, Math.min(Number(values.n), entries.length));

const { pinyin } = pinyinProModule();
const norm = (p: string) => {
  const m = /^([a-zü]+)([0-5])?$/.exec(p);
  if (!m) return p;
  return m[1].replaceAll("ü", "v") + (m[2] === undefined || m[2] === "0" ? "5" : m[2]);
};
let syllables = 0;
let sylOk = 0;
let sylOkNoTone = 0;
let words = 0;
let wordOk = 0;
const wrong: string[] = [];
for (const [word, ref] of sample) {
  const got = (pinyin(word, { toneType: "num", type: "array", v: true, toneSandhi: false }) as string[]).map(norm);
  words++;
  let all = true;
  ref.forEach((r, i) => {
    syllables++;
    if (got[i] === r) sylOk++;
    else all = false;
    if (got[i]?.slice(0, -1) === r.slice(0, -1)) sylOkNoTone++;
  });
  if (all) wordOk++;
  else if (wrong.length < Number(values.show)) wrong.push(`${word}: ${got.join(" ")} (dictionary ${ref.join(" ")})`);
}
const pct = (x: number, n: number) => ((100 * x) / n).toFixed(1) + " %";
console.log(`${sample.length} of ${entries.length} multi-character entries of upstream's polyphone dictionary (seed ${values.seed})`);
console.log(`syllables agreeing: ${pct(sylOk, syllables)} (without tone ${pct(sylOkNoTone, syllables)}); whole words: ${pct(wordOk, words)}`);
for (const w of wrong) console.log("  " + w);
