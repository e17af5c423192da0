/**
 * T2S token sampling, in the exact order of upstream GPT-SoVITS (`AR/models/t2s_model.py` decode loops +
 * `AR/models/utils.py::logits_to_probs` / `sample` / `multinomial_sample_one_no_sync`):
 *
 *  1. step < 11: the EOS column is removed (`logits[:, :-1]`). We set it to −∞ instead, which gives the
 *     same softmax, the same top-p cumulative sums and the same top-k pivot (see `processLogits`).
 *  2. Repetition penalty (only when ≠ 1) over every token of y = prompt + generated so far, applied
 *     once per unique token: logit < 0 ? logit·penalty : logit / penalty.
 *     NB: upstream does this with an in-place `scatter_` on the caller's `logits` tensor.
 *  3. top-p (only when top_p < 1) on the untempered logits: sort descending, cumulative softmax, remove
 *     every token whose cumulative probability (itself included) is > top_p, except the first.
 *     There is NO shift-right (unlike HF's `top_k_top_p_filtering`, which this repo also contains but
 *     does not use here): the token that crosses the threshold is removed too.
 *  4. logits / max(T, 1e-5).
 *  5. top-k, always: v = topk(logits, min(k, width)); logits < v[-1] → −∞ (ties with the k-th value
 *     are kept, so more than k tokens can survive).
 *  6. softmax, then the "exponential race": token = argmax(probs / q), q ~ Exp(1) i.i.d.
 *
 * Stop rule: upstream stops when the sample is EOS OR `torch.argmax(logits)` is EOS, where `logits` is
 * the caller's tensor AFTER the EOS-column slice and the in-place repetition penalty, but BEFORE top-p,
 * temperature and top-k (those build new tensors). `argmax` below is exactly that. It equals the argmax
 * of the final probabilities except for tie-breaking (top-p and top-k always keep the maximum and the
 * temperature is monotone).
 *
 * Arithmetic: logits are held as float32 (like torch) through the penalty and temperature; softmax and
 * cumulative sums use float64. Upstream's rounding is device-dependent (e.g. CUDA multiplies by the
 * reciprocal of a scalar divisor, CPU divides; cumsum accumulates in float64 on CPU and float32 on
 * CUDA), so results match upstream up to float32 rounding, never bit for bit, and the random stream is
 * ours. Ties in the top-p sort are broken by lower token id first (torch.sort is not stable).
 */
import { webcrypto } from "node:crypto";
import { GsvError } from "./errors.js";

export interface SamplingParams {
  topK: number;
  topP: number;
  temperature: number;
  repetitionPenalty: number;
}

/** Upstream's `idx < 11`: EOS cannot be produced before this many generated tokens. */
export const DEFAULT_MIN_STEPS = 11;

// ─── RNG ─────────────────────────────────────────────────────────────────────

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * Deterministic PRNG: xoshiro128** (128-bit state), seeded from a uint32 through splitmix32.
 */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new RangeError(`Rng seed must be an integer in 0..2^32-1, got ${seed}`);
    }
    let sm = seed >>> 0;
    const splitmix = (): number => {
      sm = (sm + 0x9e3779b9) | 0;
      let z = sm;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) | 0;
    };
    this.s0 = splitmix();
    this.s1 = splitmix();
    this.s2 = splitmix();
    this.s3 = splitmix();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the all-zero state is a fixed point
  }

  /** Next uniform uint32. */
  nextUint32(): number {
    const s1 = this.s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result >>> 0;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Exp(1) variate: −ln(1 − u), u in [0, 1). Always finite and ≥ 0. */
  exponential(): number {
    return -Math.log(1 - this.next());
  }

  private spare = 0;
  private hasSpare = false;

  /** The whole state, so a generator can continue in another process (streamed windows carry it). */
  getState(): { s: number[]; spare: number; hasSpare: boolean } {
    return { s: [this.s0, this.s1, this.s2, this.s3], spare: this.spare, hasSpare: this.hasSpare };
  }

  static fromState(st: { s: number[]; spare: number; hasSpare: boolean }): Rng {
    const r = new Rng(0);
    [r.s0, r.s1, r.s2, r.s3] = st.s.map((x) => x | 0);
    r.spare = st.spare;
    r.hasSpare = st.hasSpare;
    return r;
  }

  /** Standard normal variate (Box–Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.hasSpare) {
      this.hasSpare = false;
      return this.spare;
    }
    const r = Math.sqrt(-2 * Math.log(1 - this.next())); // 1 − u in (0, 1]
    const a = 2 * Math.PI * this.next();
    this.spare = r * Math.sin(a);
    this.hasSpare = true;
    return r * Math.cos(a);
  }
}

/** −1 → a random uint32 from the OS CSPRNG; otherwise the seed itself, which must be an integer in 0..2^32−1. */
export function resolveSeed(seed: number): number {
  if (seed === -1) return webcrypto.getRandomValues(new Uint32Array(1))[0];
  if (typeof seed !== "number" || !Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new GsvError("BAD_PARAMETER", `seed must be -1 or an integer in 0..4294967295, got ${String(seed)}`);
  }
  return seed >>> 0;
}

// ─── Parameter validation ────────────────────────────────────────────────────

export function validateSamplingParams(p: SamplingParams): void {
  const { topK, topP, temperature, repetitionPenalty } = p;
  if (typeof topK !== "number" || !Number.isInteger(topK) || topK < 1) {
    throw new GsvError("BAD_PARAMETER", `top_k must be an integer >= 1, got ${String(topK)}`);
  }
  if (typeof topP !== "number" || !Number.isFinite(topP) || topP <= 0 || topP > 1) {
    throw new GsvError("BAD_PARAMETER", `top_p must be in (0, 1], got ${String(topP)}`);
  }
  if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature <= 0) {
    throw new GsvError("BAD_PARAMETER", `temperature must be a finite number > 0, got ${String(temperature)}`);
  }
  if (typeof repetitionPenalty !== "number" || !Number.isFinite(repetitionPenalty) || repetitionPenalty <= 0) {
    throw new GsvError(
      "BAD_PARAMETER",
      `repetition_penalty must be a finite number > 0, got ${String(repetitionPenalty)}`,
    );
  }
}

// ─── Scratch buffers (the sampler runs once per token per request) ───────────

let cap = 0;
let work = new Float32Array(0); // processed logits
let sel = new Float32Array(0); // top-p / top-k selection scratch
let seen = new Uint8Array(0); // repetition-penalty de-duplication
let probsBuf = new Float64Array(0);

function ensure(n: number): void {
  if (n <= cap) return;
  cap = Math.max(n, 2 * cap);
  work = new Float32Array(cap);
  sel = new Float32Array(cap);
  seen = new Uint8Array(cap);
  probsBuf = new Float64Array(cap);
}

/**
 * top-p in place on w[0..V): walk the values in descending order (ties: lower token id first),
 * accumulate their softmax, and set to −∞ every token after the first whose cumulative probability
 * (itself included) exceeds topP. Uses a native sort of the values instead of sorting ids with a
 * comparator: the kept set is "all values above the last kept value v*, plus the first few ids (in id
 * order) whose value equals v*", which is exactly what the stable id-order tie-break gives.
 */
function applyTopP(w: Float32Array, V: number, topP: number): void {
  const s = sel.subarray(0, V);
  s.set(w.subarray(0, V));
  s.sort(); // ascending; position V−1−r is the r-th largest
  const max = s[V - 1];
  let sum = 0;
  for (let r = 0; r < V; r++) sum += Math.exp(s[V - 1 - r] - max);
  let cum = Math.exp(0) / sum;
  let kept = V; // number of tokens kept in sorted order
  for (let r = 1; r < V; r++) {
    cum += Math.exp(s[V - 1 - r] - max) / sum;
    if (cum > topP) {
      kept = r;
      break;
    }
  }
  if (kept === V) return;
  const boundary = s[V - kept]; // value of the last kept token
  let above = 0; // kept tokens with a value strictly above the boundary
  while (above < kept && s[V - 1 - above] > boundary) above++;
  let tiesLeft = kept - above;
  for (let i = 0; i < V; i++) {
    const v = w[i];
    if (v > boundary) continue;
    if (v === boundary && tiesLeft > 0) {
      tiesLeft--;
      continue;
    }
    w[i] = -Infinity;
  }
}

/** The k-th largest of w[0..V) counting duplicates (torch.topk(w, k).values[-1]); 1 ≤ k < V. */
function kthLargest(w: Float32Array, V: number, k: number): number {
  if (k > 32) {
    const s = sel.subarray(0, V);
    s.set(w.subarray(0, V));
    s.sort();
    return s[V - k];
  }
  // Small k: keep the k largest seen so far in top[0..k), descending, by insertion.
  const top = sel;
  let n = 0;
  for (let i = 0; i < V; i++) {
    const v = w[i];
    if (n === k && !(v > top[k - 1])) continue;
    let j = n < k ? n++ : k - 1;
    while (j > 0 && top[j - 1] < v) {
      top[j] = top[j - 1];
      j--;
    }
    top[j] = v;
  }
  return top[k - 1];
}

/**
 * Steps 1–5 and the softmax: writes the final probabilities into probs[0..V) and returns upstream's
 * stop-rule argmax (see the module comment). `probs` must hold at least logits.length values.
 */
export function processLogits(
  logits: ArrayLike<number>,
  history: ArrayLike<number>,
  step: number,
  p: SamplingParams,
  eos: number,
  minSteps: number,
  probs: Float64Array,
): number {
  const V = logits.length;
  if (V === 0) throw new RangeError("empty logits");
  if (probs.length < V) throw new RangeError(`probs buffer holds ${probs.length}, needs ${V}`);
  ensure(V);
  const w = work;

  for (let i = 0; i < V; i++) {
    const v = logits[i];
    if (v !== v || v === Infinity) throw new GsvError("MODEL_ERROR", `the GPT produced a ${v} logit at index ${i}`);
    w[i] = v;
  }

  // 1. No EOS in the first `minSteps` steps.
  if (step < minSteps && eos >= 0 && eos < V) w[eos] = -Infinity;

  // 2. Repetition penalty, once per unique previous token.
  if (p.repetitionPenalty !== 1) {
    // Clamped into float32's normal range: a penalty that rounds to 0 or Infinity would turn a 0 or a
    // masked (-Infinity) logit into NaN. Only absurd values (below 1e-30, above 1e30) are affected.
    const pen = Math.fround(Math.min(Math.max(p.repetitionPenalty, 1e-30), 1e30));
    const h = history.length;
    for (let j = 0; j < h; j++) {
      const tk = history[j];
      if (!(tk >= 0 && tk < V) || !Number.isInteger(tk)) {
        throw new RangeError(`history token ${tk} at ${j} is outside 0..${V - 1}`);
      }
      if (seen[tk] === 0) {
        seen[tk] = 1;
        const l = w[tk];
        w[tk] = l < 0 ? l * pen : l / pen;
      }
    }
    for (let j = 0; j < h; j++) seen[history[j]] = 0;
  }

  // Upstream's stop-rule argmax: over the penalised logits, first index on ties.
  let argmax = 0;
  for (let i = 1; i < V; i++) if (w[i] > w[argmax]) argmax = i;

  // 3. top-p on the untempered logits, without the shift-right.
  if (p.topP < 1) applyTopP(w, V, p.topP);

  // 4. Temperature.
  // Clamped so that float32 rounding cannot make it Infinity (then -Infinity / Infinity would be NaN).
  const temp = Math.fround(Math.min(Math.max(p.temperature, 1e-5), 1e30));
  if (temp !== 1) for (let i = 0; i < V; i++) w[i] = w[i] / temp;

  // 5. top-k: drop everything below the k-th largest value (counting duplicates).
  const k = Math.min(Math.max(1, Math.floor(p.topK)), V);
  if (k < V) {
    const pivot = kthLargest(w, V, k);
    for (let i = 0; i < V; i++) if (w[i] < pivot) w[i] = -Infinity;
  }

  // 6. Softmax.
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (w[i] > max) max = w[i];
  if (max === -Infinity) throw new GsvError("MODEL_ERROR", "no token has a finite logit");
  if (max === Infinity) {
    // An extreme temperature or penalty overflowed float32: the overflowed logits share all the mass.
    let n = 0;
    for (let i = 0; i < V; i++) n += w[i] === Infinity ? 1 : 0;
    for (let i = 0; i < V; i++) probs[i] = w[i] === Infinity ? 1 / n : 0;
    return argmax;
  }
  let sum = 0;
  for (let i = 0; i < V; i++) {
    const v = w[i];
    const e = v === -Infinity ? 0 : Math.exp(v - max);
    probs[i] = e;
    sum += e;
  }
  const inv = 1 / sum;
  for (let i = 0; i < V; i++) probs[i] *= inv;
  return argmax;
}

/**
 * Sample one token. `history` is every token of y so far (prompt tokens + generated), `step` the
 * 0-based decode step (upstream's idx). Returns the drawn token and upstream's stop-rule argmax; the
 * caller stops when either equals `eos`.
 */
export function sampleToken(
  logits: Float32Array,
  history: ArrayLike<number>,
  step: number,
  p: SamplingParams,
  rng: Rng,
  eos: number,
  minSteps = DEFAULT_MIN_STEPS,
): { token: number; argmax: number } {
  ensure(logits.length);
  const probs = probsBuf;
  const argmax = processLogits(logits, history, step, p, eos, minSteps, probs);
  // Exponential race: argmax(p_i / q_i). Zero-probability tokens can never win, so only the survivors
  // draw a variate (in index order).
  let token = -1;
  let best = -1;
  for (let i = 0, V = logits.length; i < V; i++) {
    const pi = probs[i];
    if (pi > 0) {
      const v = pi / rng.exponential();
      if (v > best) {
        best = v;
        token = i;
      }
    }
  }
  if (token < 0) throw new GsvError("MODEL_ERROR", "the sampler found no token with a positive probability");
  return { token, argmax };
}
