import t from "tap";
import { GsvError } from "../shared/errors.js";
import {
  DEFAULT_MIN_STEPS,
  Rng,
  processLogits,
  resolveSeed,
  sampleToken,
  validateSamplingParams,
  type SamplingParams,
} from "../shared/sampling.js";

type TT = Parameters<Parameters<typeof t.test>[0]>[0];

const plain: SamplingParams = { topK: 1000, topP: 1, temperature: 1, repetitionPenalty: 1 };
const NO_EOS = -1;

function softmax(xs: number[]): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => (x === -Infinity ? 0 : Math.exp(x - m)));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function probsOf(
  logits: number[],
  p: Partial<SamplingParams>,
  history: number[] = [],
  step = 100,
  eos = NO_EOS,
  minSteps = DEFAULT_MIN_STEPS,
): { probs: number[]; argmax: number } {
  const out = new Float64Array(logits.length);
  const argmax = processLogits(Float32Array.from(logits), history, step, { ...plain, ...p }, eos, minSteps, out);
  return { probs: Array.from(out), argmax };
}

function near(tt: TT, got: number[], want: number[], msg: string, tol = 1e-6): void {
  tt.equal(got.length, want.length, `${msg}: length`);
  const worst = Math.max(...got.map((g, i) => Math.abs(g - want[i])));
  tt.ok(worst < tol, msg, { got, want });
}

function throwsCode(tt: TT, fn: () => unknown, code: string, msg: string): void {
  let err: unknown = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  tt.ok(err instanceof GsvError && err.code === code, `${msg}: ${code}`, { got: String(err) });
}

t.test("repetition penalty: negative ×, positive ÷, once per unique token", async (tt) => {
  // penalty 2, history has 0 twice, 1 twice, 3 once; 2 and 4 untouched.
  // [3, −1, 0.5, −3, 2] → [1.5, −2, 0.5, −6, 2]
  const { probs, argmax } = probsOf([3, -1, 0.5, -3, 2], { repetitionPenalty: 2 }, [0, 0, 1, 1, 3]);
  near(tt, probs, softmax([1.5, -2, 0.5, -6, 2]), "penalised softmax");
  tt.equal(argmax, 4, "stop-rule argmax is taken after the penalty (token 0 was the raw maximum)");
  // A penalty below 1 boosts instead.
  near(tt, probsOf([1, -1, 0], { repetitionPenalty: 0.5 }, [0, 1]).probs, softmax([2, -0.5, 0]), "penalty 0.5");
  // Penalty 1 is a no-op.
  near(tt, probsOf([1, -1, 0], {}, [0, 1, 2]).probs, softmax([1, -1, 0]), "penalty 1");
  // Out-of-range history is a bug, not silently ignored.
  tt.throws(() => probsOf([1, 2], { repetitionPenalty: 1.35 }, [5]), RangeError);
});

t.test("top-p on untempered logits, no shift: the crossing token is dropped", async (tt) => {
  // logits [0, 2, −2, 1, −1]; sorted: 2 (id 1), 1 (id 3), 0 (id 0), −1 (id 4), −2 (id 2)
  // softmax of the sorted values: .636409 .234122 .086129 .031685 .011656
  // cumulative:                   .636409 .870531 .956660 .988345 1
  const logits = [0, 2, -2, 1, -1];
  const e2 = Math.exp(2);
  const e1 = Math.exp(1);
  // top_p 0.9: ids 1 and 3 stay (cum .8705 ≤ .9); id 0 crosses (.9567 > .9) and is removed
  // (HF's shifted rule would have kept it).
  near(tt, probsOf(logits, { topP: 0.9 }).probs, [0, e2 / (e2 + e1), 0, e1 / (e2 + e1), 0], "top_p 0.9");
  // top_p 0.87: id 3's cumulative .8705 > .87 → removed, only id 1 is left.
  near(tt, probsOf(logits, { topP: 0.87 }).probs, [0, 1, 0, 0, 0], "top_p 0.87");
  // top_p 0.5: even the first is above, but the first is always kept.
  near(tt, probsOf(logits, { topP: 0.5 }).probs, [0, 1, 0, 0, 0], "top_p 0.5 keeps the first");
  // top_p 0.99: only the last (cum 1) is dropped.
  const kept = [0, 2, -Infinity, 1, -1];
  near(tt, probsOf(logits, { topP: 0.99 }).probs, softmax(kept), "top_p 0.99");
  // Ties at the boundary: lower token ids first (torch.sort is not stable; we pick a fixed rule).
  near(tt, probsOf([1, 1, 1, 1], { topP: 0.5 }).probs, [0.5, 0.5, 0, 0], "4-way tie, top_p 0.5");
  // [0.5, 1, 1, 1]: cum over the 1s = .2773, .5546, .8319 → with 0.6 ids 1 and 2 stay, with 0.5 only id 1.
  near(tt, probsOf([0.5, 1, 1, 1], { topP: 0.6 }).probs, [0, 0.5, 0.5, 0], "3-way tie, top_p 0.6");
  near(tt, probsOf([0.5, 1, 1, 1], { topP: 0.5 }).probs, [0, 1, 0, 0], "3-way tie, top_p 0.5");
  // top_p 1: off.
  near(tt, probsOf(logits, { topP: 1 }).probs, softmax(logits), "top_p 1");
});

t.test("temperature divides after top-p", async (tt) => {
  near(tt, probsOf([1, 2, 3], { temperature: 0.5 }).probs, softmax([2, 4, 6]), "T 0.5");
  near(tt, probsOf([1, 2, 3], { temperature: 2 }).probs, softmax([0.5, 1, 1.5]), "T 2");
  // Order check: with T = 0.25, top-p 0.9 on the UNtempered logits [2, 1, 0, −1, −2] keeps ids 0 and 1
  // (cum .6364, .8705); applied after the temperature it would keep id 0 only (p = .98).
  const { probs } = probsOf([2, 1, 0, -1, -2], { temperature: 0.25, topP: 0.9 });
  near(tt, probs, [...softmax([8, 4]), 0, 0, 0], "top-p before temperature");
  // Tiny temperatures are clamped to 1e-5 (no division by zero, still a distribution).
  const cold = probsOf([1, 2, 3], { temperature: 1e-9 }).probs;
  near(tt, cold, [0, 0, 1], "T → 0 is greedy");
});

t.test("top-k keeps ties with the k-th value", async (tt) => {
  const logits = [1, 3, 3, 2, 3, 0];
  // k = 2: the 2nd largest is 3, so all three 3s survive.
  near(tt, probsOf(logits, { topK: 2 }).probs, [0, 1 / 3, 1 / 3, 0, 1 / 3, 0], "k 2 with a 3-way tie");
  near(tt, probsOf(logits, { topK: 1 }).probs, [0, 1 / 3, 1 / 3, 0, 1 / 3, 0], "k 1 with a 3-way tie");
  near(tt, probsOf(logits, { topK: 4 }).probs, softmax([-Infinity, 3, 3, 2, 3, -Infinity]), "k 4");
  near(tt, probsOf(logits, { topK: 6 }).probs, softmax(logits), "k = vocab");
  near(tt, probsOf(logits, { topK: 100 }).probs, softmax(logits), "k > vocab is clamped");
  // k applies after the temperature and after top-p's −∞.
  near(tt, probsOf([5, 4, 3, 2], { topK: 3, temperature: 2 }).probs, softmax([2.5, 2, 1.5, -Infinity]), "k 3, T 2");
});

t.test("EOS is masked before step 11 and allowed from step 11", async (tt) => {
  const eos = 3;
  const logits = Float32Array.from([0, 1, 0.5, 10]);
  const p: SamplingParams = { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35 };
  const rng = new Rng(1);
  for (let step = 0; step < 11; step++) {
    const out = new Float64Array(4);
    const argmax = processLogits(logits, [0, 1], step, p, eos, DEFAULT_MIN_STEPS, out);
    tt.equal(out[eos], 0, `step ${step}: EOS probability 0`);
    tt.not(argmax, eos, `step ${step}: argmax is not EOS`);
    // The rest is the softmax over the non-EOS logits, as if the column were removed.
    near(tt, Array.from(out.subarray(0, 3)), softmax([0 / 1.35, 1 / 1.35, 0.5]), `step ${step}: renormalised`);
    for (let i = 0; i < 50; i++) tt.not(sampleToken(logits, [0, 1], step, p, rng, eos).token, eos);
  }
  const out = new Float64Array(4);
  tt.equal(processLogits(logits, [0, 1], 11, p, eos, DEFAULT_MIN_STEPS, out), eos, "step 11: argmax EOS");
  tt.ok(out[eos] > 0.99, "step 11: EOS dominant");
  const r = sampleToken(logits, [0, 1], 11, p, rng, eos);
  tt.equal(r.argmax, eos);
  // A custom minimum.
  tt.equal(processLogits(logits, [], 3, p, eos, 3, out), eos, "minSteps 3: allowed at step 3");
  tt.not(processLogits(logits, [], 2, p, eos, 3, out), eos, "minSteps 3: masked at step 2");
  // EOS masked and top_k 1: the best non-EOS token.
  const greedy = { ...p, topK: 1, repetitionPenalty: 1 };
  tt.equal(sampleToken(logits, [], 0, greedy, rng, eos).token, 1);
});

t.test("sampleToken returns the upstream stop-rule argmax", async (tt) => {
  const rng = new Rng(5);
  // Penalised logits [1.5, −2, 0.5, −6, 2] → argmax 4, whatever is drawn.
  const r = sampleToken(Float32Array.from([3, -1, 0.5, -3, 2]), [0, 0, 1, 1, 3], 20, { ...plain, repetitionPenalty: 2 }, rng, NO_EOS);
  tt.equal(r.argmax, 4);
  tt.ok(r.token >= 0 && r.token < 5);
  // Ties: first index.
  tt.equal(sampleToken(Float32Array.from([1, 5, 5]), [], 20, plain, rng, NO_EOS).argmax, 1);
});

t.test("determinism: same seed, same tokens; other seed, other tokens", async (tt) => {
  function run(seed: number): number[] {
    const rng = new Rng(seed);
    const history = [7, 8, 9];
    const logits = new Float32Array(1025);
    const p: SamplingParams = { topK: 15, topP: 0.95, temperature: 1, repetitionPenalty: 1.35 };
    const toks: number[] = [];
    for (let step = 0; step < 200; step++) {
      for (let i = 0; i < logits.length; i++) logits[i] = Math.sin(i * 0.37 + step) * 3 + ((i * 7919) % 13) * 0.1;
      const { token } = sampleToken(logits, history, step, p, rng, 1024);
      toks.push(token);
      history.push(token);
    }
    return toks;
  }
  const a = run(1234);
  tt.same(run(1234), a, "same seed");
  const b = run(1235);
  tt.not(JSON.stringify(b), JSON.stringify(a), "different seed");
  tt.ok(a.filter((x, i) => x !== b[i]).length > 50, "different seeds diverge substantially");
});

t.test("empirical frequencies match the softmax (top_k = vocab, top_p 1, T 1, penalty 1)", async (tt) => {
  const logits = Float32Array.from([1.2, -0.5, 0.3, 2.0, 0, -1.5, 0.8, 1.0]);
  const want = softmax(Array.from(logits));
  const n = 20000;
  const counts = new Array<number>(logits.length).fill(0);
  const rng = new Rng(2024);
  const p: SamplingParams = { topK: logits.length, topP: 1, temperature: 1, repetitionPenalty: 1 };
  for (let i = 0; i < n; i++) counts[sampleToken(logits, [], 50, p, rng, NO_EOS).token]++;
  let chi2 = 0;
  for (let i = 0; i < logits.length; i++) {
    const f = counts[i] / n;
    const sd = Math.sqrt((want[i] * (1 - want[i])) / n);
    tt.ok(Math.abs(f - want[i]) < 4 * sd, `token ${i}: ${f.toFixed(4)} vs ${want[i].toFixed(4)}`);
    chi2 += (counts[i] - n * want[i]) ** 2 / (n * want[i]);
  }
  // 7 degrees of freedom: P(χ² > 24.3) ≈ 0.001.
  tt.ok(chi2 < 24.3, `χ² = ${chi2.toFixed(2)}`);
});

t.test("Rng", async (tt) => {
  const r = new Rng(0);
  let sum = 0;
  let sumE = 0;
  let sumN = 0;
  let sumN2 = 0;
  const n = 100000;
  for (let i = 0; i < n; i++) {
    const u = r.next();
    if (!(u >= 0 && u < 1)) tt.fail(`next() out of range: ${u}`);
    sum += u;
    const e = r.exponential();
    if (!(e >= 0 && Number.isFinite(e))) tt.fail(`exponential() bad: ${e}`);
    sumE += e;
    const z = r.normal();
    sumN += z;
    sumN2 += z * z;
  }
  tt.ok(Math.abs(sum / n - 0.5) < 0.005, "uniform mean");
  tt.ok(Math.abs(sumE / n - 1) < 0.015, "exponential mean");
  tt.ok(Math.abs(sumN / n) < 0.015 && Math.abs(sumN2 / n - 1) < 0.02, "normal mean and variance");
  tt.equal(new Rng(42).nextUint32(), new Rng(42).nextUint32(), "seeded");
  tt.not(new Rng(42).nextUint32(), new Rng(43).nextUint32());
  tt.throws(() => new Rng(-1), RangeError);
  tt.throws(() => new Rng(2 ** 32), RangeError);
});

t.test("resolveSeed", async (tt) => {
  for (let i = 0; i < 20; i++) {
    const s = resolveSeed(-1);
    tt.ok(Number.isInteger(s) && s >= 0 && s <= 0xffffffff);
  }
  tt.equal(resolveSeed(0), 0);
  tt.equal(resolveSeed(5), 5);
  tt.equal(resolveSeed(0xffffffff), 0xffffffff);
  for (const bad of [2 ** 32, -2, 1.5, NaN, Infinity]) throwsCode(tt, () => resolveSeed(bad), "BAD_PARAMETER", `seed ${bad}`);
});

t.test("validateSamplingParams", async (tt) => {
  const ok: SamplingParams = { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35 };
  tt.doesNotThrow(() => validateSamplingParams(ok));
  tt.doesNotThrow(() => validateSamplingParams({ ...ok, topK: 1, topP: 0.01, temperature: 1e-6, repetitionPenalty: 0.5 }));
  const bad: [Partial<SamplingParams>, string][] = [
    [{ topK: 0 }, "top_k 0"],
    [{ topK: 1.5 }, "top_k 1.5"],
    [{ topP: 0 }, "top_p 0"],
    [{ topP: 1.01 }, "top_p 1.01"],
    [{ topP: NaN }, "top_p NaN"],
    [{ temperature: 0 }, "T 0"],
    [{ temperature: -1 }, "T −1"],
    [{ temperature: Infinity }, "T ∞"],
    [{ repetitionPenalty: 0 }, "penalty 0"],
    [{ repetitionPenalty: -1 }, "penalty −1"],
    [{ repetitionPenalty: NaN }, "penalty NaN"],
  ];
  for (const [p, name] of bad) throwsCode(tt, () => validateSamplingParams({ ...ok, ...p }), "BAD_PARAMETER", name);
});

t.test("non-finite logits", async (tt) => {
  throwsCode(tt, () => sampleToken(Float32Array.from([0, NaN]), [], 20, plain, new Rng(1), NO_EOS), "MODEL_ERROR", "NaN");
  throwsCode(tt, () => sampleToken(Float32Array.from([0, Infinity]), [], 20, plain, new Rng(1), NO_EOS), "MODEL_ERROR", "+inf");
  throwsCode(tt, () => sampleToken(Float32Array.from([-Infinity, -Infinity]), [], 20, plain, new Rng(1), NO_EOS), "MODEL_ERROR", "all -inf");
  // −∞ logits are allowed (masked tokens) as long as one is finite.
  tt.equal(sampleToken(Float32Array.from([-Infinity, 0, -Infinity]), [], 20, plain, new Rng(1), NO_EOS).token, 1);
});

/**
 * Straight transcription of upstream's tensor steps on plain arrays: the EOS column really removed,
 * top-p by sorting (value desc, id asc), top-k by a full sort, float32 rounding where torch stores.
 */
function referenceProbs(
  logits: number[],
  history: number[],
  step: number,
  p: SamplingParams,
  eos: number,
  minSteps: number,
): { probs: number[]; argmax: number } {
  const f = Math.fround;
  const removeEos = step < minSteps && eos === logits.length - 1;
  let l = logits.map(f);
  if (removeEos) l = l.slice(0, -1);
  if (p.repetitionPenalty !== 1) {
    const pen = f(p.repetitionPenalty);
    for (const tk of new Set(history)) l[tk] = l[tk] < 0 ? f(l[tk] * pen) : f(l[tk] / pen);
  }
  let argmax = 0;
  l.forEach((v, i) => {
    if (v > l[argmax]) argmax = i;
  });
  if (p.topP < 1) {
    const ids = l.map((_, i) => i).sort((a, b) => (l[b] !== l[a] ? l[b] - l[a] : a - b));
    const sm = softmax(ids.map((i) => l[i]));
    let cum = 0;
    const drop: number[] = [];
    sm.forEach((q, r) => {
      cum += q;
      if (r > 0 && cum > p.topP) drop.push(ids[r]);
    });
    for (const i of drop) l[i] = -Infinity;
  }
  const temp = f(Math.max(p.temperature, 1e-5));
  l = l.map((v) => f(v / temp));
  const sorted = [...l].sort((a, b) => b - a);
  const pivot = sorted[Math.min(p.topK, l.length) - 1];
  l = l.map((v) => (v < pivot ? -Infinity : v));
  const probs = softmax(l);
  if (removeEos) probs.push(0);
  return { probs, argmax };
}

t.test("processLogits agrees with a plain transcription of upstream on random cases", async (tt) => {
  let s = 12345;
  const r = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 4294967296;
  };
  let worst = 0;
  let argmaxMismatch = 0;
  const cases = 3000;
  for (let c = 0; c < cases; c++) {
    const V = 3 + Math.floor(r() * 40);
    const eos = V - 1;
    // Coarse values so that ties are common.
    const logits = Array.from({ length: V }, () => (r() < 0.5 ? Math.round(r() * 8) / 2 - 2 : r() * 10 - 5));
    const history = Array.from({ length: Math.floor(r() * 10) }, () => Math.floor(r() * (V - 1)));
    const p: SamplingParams = {
      topK: 1 + Math.floor(r() * (V + 3)),
      topP: r() < 0.4 ? 1 : 0.05 + r() * 0.95,
      temperature: r() < 0.4 ? 1 : 0.3 + r() * 1.7,
      repetitionPenalty: [1, 1.35, 0.7, 2][Math.floor(r() * 4)],
    };
    const step = Math.floor(r() * 20);
    const ref = referenceProbs(logits, history, step, p, eos, DEFAULT_MIN_STEPS);
    const got = probsOf(logits, p, history, step, eos);
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(got.probs[i] - ref.probs[i]));
    if (got.argmax !== ref.argmax) argmaxMismatch++;
  }
  tt.ok(worst < 1e-9, `max probability difference ${worst}`);
  tt.equal(argmaxMismatch, 0, "stop-rule argmax");
});

t.test("extreme parameters that overflow float32 still draw a real token (found by the fuzzer)", async (tt) => {
  const rng = new Rng(3);
  // repetition_penalty 1e-300 is > 0 (valid) but Math.fround gives 0: positive logits ÷ 0 = +Infinity.
  // The overflowed logits share the mass: only tokens 0 and 2 (previous, positive) can be drawn.
  for (let i = 0; i < 20; i++) {
    const r = sampleToken(Float32Array.from([1, -1, 2, 0.5]), [0, 2], 20, { ...plain, repetitionPenalty: 1e-300 }, rng, NO_EOS);
    tt.ok(r.token === 0 || r.token === 2, `draw ${i}: token ${r.token} is one of the overflowed logits`);
  }
  // A tiny temperature on large logits: the largest logit wins, never -1.
  const r = sampleToken(Float32Array.from([3e38, 1, 2e38]), [], 20, { ...plain, temperature: 1e-30 }, rng, NO_EOS);
  tt.equal(r.token, 0);
});

t.test("a penalty that rounds to 0 in float32 keeps a masked EOS masked (no NaN)", async (tt) => {
  const rng = new Rng(4);
  // EOS (index 1) is masked to -Infinity before step 11 and is in the history: -Infinity × 0 would be NaN.
  const r = sampleToken(Float32Array.from([0, 5, 0, -1]), [1, 0], 2, { ...plain, repetitionPenalty: 1e-300 }, rng, 1);
  tt.not(r.token, 1, "EOS stays masked");
  tt.ok(r.token >= 0 && r.token < 4, `token ${r.token} is in range`);
});

t.test("a temperature that rounds to Infinity in float32 keeps a masked EOS masked (fuzz seed 1120544269)", async (tt) => {
  const rng = new Rng(6);
  const r = sampleToken(Float32Array.from([0.5, 5, 0, -1]), [], 2, { ...plain, temperature: 1e308 }, rng, 1);
  tt.not(r.token, 1, "EOS stays masked");
  tt.ok(r.token >= 0 && r.token < 4, `token ${r.token} is in range`);
});
