/**
 * Accuracy of the English out-of-vocabulary fallback (services/text-frontend/english.ts).
 *
 * Holds out a seeded random sample of dictionary words (letters only, 4+ letters, since shorter
 * unknown words are spelled letter by letter), hides them from the dictionary, and runs only the
 * fallback on them:
 *   - "rules":    the letter-to-sound rules alone;
 *   - "fallback": the whole out-of-vocabulary path (compound split into dictionary words, then rules).
 * Reports phone error rate (edit distance / reference phones) and word accuracy against the first
 * dictionary pronunciation, with and without stress digits, and word accuracy against any variant.
 *
 * Usage (after `npm run build`): node dist/tools/g2p-fallback-accuracy.js [--n 2000] [--seed 20240501] [--show 20]
 */
import { dictionary } from "cmu-pronouncing-dictionary";
import { letterToSound, lookupWord, oovFallback } from "../services/text-frontend/english.js";
import { prng as rng } from "./loadgen.js"; // mulberry32, seeded

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number`);
  return v;
}


function editDistance(a: readonly string[], b: readonly string[]): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

const noStress = (p: readonly string[]) => p.map((x) => x.replace(/[012]$/, ""));
const parse = (v: string) => v.split("#")[0].trim().split(/\s+/);

interface Score {
  edits: number;
  editsNoStress: number;
  refPhones: number;
  exact: number;
  exactNoStress: number;
  exactAnyVariant: number;
}

function main(): void {
  const n = arg("n", 2000);
  const seed = arg("seed", 20240501);
  const show = arg("show", 0);
  const words = Object.keys(dictionary)
    .filter((w) => /^[a-z]{4,}$/.test(w) && lookupWord(w) !== undefined)
    .sort();
  const random = rng(seed);
  // Partial Fisher-Yates: the first n entries become the sample.
  for (let i = 0; i < Math.min(n, words.length); i++) {
    const j = i + Math.floor(random() * (words.length - i));
    [words[i], words[j]] = [words[j], words[i]];
  }
  const sample = words.slice(0, Math.min(n, words.length));
  const heldOut = new Set(sample);
  const variants = (w: string): string[][] => {
    const out = [parse(dictionary[w])];
    for (let k = 2; Object.hasOwn(dictionary, `${w}(${k})`); k++) out.push(parse(dictionary[`${w}(${k})`]));
    return out;
  };
  const systems: Record<string, (w: string) => string[]> = {
    rules: (w) => letterToSound(w),
    fallback: (w) => oovFallback(w, { exclude: heldOut }),
  };
  const report: Record<string, unknown> = { sample: sample.length, seed, minLetters: 4 };
  for (const [name, predict] of Object.entries(systems)) {
    const s: Score = { edits: 0, editsNoStress: 0, refPhones: 0, exact: 0, exactNoStress: 0, exactAnyVariant: 0 };
    const errors: string[] = [];
    for (const w of sample) {
      const refs = variants(w);
      const ref = refs[0];
      const hyp = predict(w);
      const d = editDistance(hyp, ref);
      s.edits += d;
      s.editsNoStress += editDistance(noStress(hyp), noStress(ref));
      s.refPhones += ref.length;
      if (d === 0) s.exact++;
      if (editDistance(noStress(hyp), noStress(ref)) === 0) s.exactNoStress++;
      if (refs.some((r) => editDistance(hyp, r) === 0)) s.exactAnyVariant++;
      else if (errors.length < show) errors.push(`${w}: got ${hyp.join(" ")} | want ${ref.join(" ")}`);
    }
    report[name] = {
      phoneErrorRate: +(s.edits / s.refPhones).toFixed(4),
      phoneErrorRateNoStress: +(s.editsNoStress / s.refPhones).toFixed(4),
      wordAccuracy: +(s.exact / sample.length).toFixed(4),
      wordAccuracyNoStress: +(s.exactNoStress / sample.length).toFixed(4),
      wordAccuracyAnyVariant: +(s.exactAnyVariant / sample.length).toFixed(4),
    };
    if (show > 0) report[`${name}Errors`] = errors;
  }
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
}

main();
