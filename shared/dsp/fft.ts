/**
 * Radix-2 FFT for power-of-two sizes.
 *
 * `fftInPlace` is an iterative decimation-in-time complex FFT (bit-reversal permutation, then
 * butterflies) whose twiddles and bit-reversal table are computed once per size and cached.
 * `realPowerSpectrum` computes |X[k]|² for k = 0..n/2 of a real input of length n through one complex
 * FFT of size n/2 (the usual even/odd packing), so a frame costs about half a complex FFT.
 *
 * Sign convention: forward transform X[k] = Σ x[j]·e^(−2πi·jk/n), as numpy and torch use. The inverse
 * is unscaled (the caller divides by n if it wants the true inverse).
 */

export type FloatArray = Float32Array | Float64Array;

interface FftPlan {
  readonly n: number;
  /** cos(2πj/n) and sin(2πj/n) for j < n/2. */
  readonly cos: Float64Array;
  readonly sin: Float64Array;
  /** Bit-reversal permutation of 0..n-1. */
  readonly rev: Uint32Array;
}

interface RealScratch {
  readonly re: Float64Array;
  readonly im: Float64Array;
}

const plans = new Map<number, FftPlan>();
const realScratch = new Map<number, RealScratch>();

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 2 ** 30 && (n & (n - 1)) === 0;
}

function assertSize(n: number, min: number): void {
  if (!isPowerOfTwo(n) || n < min) {
    throw new RangeError(`FFT size must be a power of two >= ${min}, got ${n}`);
  }
}

function getPlan(n: number): FftPlan {
  let plan = plans.get(n);
  if (plan) return plan;
  const half = n >>> 1;
  const cos = new Float64Array(Math.max(half, 1));
  const sin = new Float64Array(Math.max(half, 1));
  for (let j = 0; j < half; j++) {
    const a = (2 * Math.PI * j) / n;
    cos[j] = Math.cos(a);
    sin[j] = Math.sin(a);
  }
  const rev = new Uint32Array(n);
  let bits = 0;
  while (1 << bits < n) bits++;
  for (let i = 0; i < n; i++) {
    let r = 0;
    let v = i;
    for (let b = 0; b < bits; b++) {
      r = (r << 1) | (v & 1);
      v >>>= 1;
    }
    rev[i] = r;
  }
  plan = { n, cos, sin, rev };
  plans.set(n, plan);
  return plan;
}

/**
 * In-place complex FFT of (re, im), both of the same power-of-two length.
 * `inverse` flips the twiddle sign and does not scale.
 */
export function fftInPlace(re: FloatArray, im: FloatArray, inverse = false): void {
  const n = re.length;
  if (im.length !== n) throw new RangeError(`re and im lengths differ (${n} vs ${im.length})`);
  assertSize(n, 1);
  if (n === 1) return;
  const { cos, sin, rev } = getPlan(n);

  for (let i = 0; i < n; i++) {
    const j = rev[i];
    if (j > i) {
      const tr = re[i];
      re[i] = re[j];
      re[j] = tr;
      const ti = im[i];
      im[i] = im[j];
      im[j] = ti;
    }
  }

  const sign = inverse ? 1 : -1;
  for (let size = 2; size <= n; size <<= 1) {
    const half = size >>> 1;
    const step = n / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0, t = 0; k < half; k++, t += step) {
        const wr = cos[t];
        const wi = sign * sin[t];
        const a = start + k;
        const b = a + half;
        const br = re[b];
        const bi = im[b];
        const xr = br * wr - bi * wi;
        const xi = br * wi + bi * wr;
        const ar = re[a];
        const ai = im[a];
        re[b] = ar - xr;
        im[b] = ai - xi;
        re[a] = ar + xr;
        im[a] = ai + xi;
      }
    }
  }
}

/**
 * Power spectrum |X[k]|² (k = 0..n/2) of a real signal of power-of-two length n >= 2.
 * Writes into `out` (length >= n/2+1) when given, else allocates. Scratch buffers are cached per size,
 * so the call allocates nothing when `out` is passed.
 */
export function realPowerSpectrum(x: ArrayLike<number>, out?: Float64Array): Float64Array {
  const n = x.length;
  assertSize(n, 2);
  const m = n >>> 1;
  const result = out ?? new Float64Array(m + 1);
  if (result.length < m + 1) throw new RangeError(`output needs ${m + 1} bins, has ${result.length}`);

  let scratch = realScratch.get(m);
  if (!scratch) {
    scratch = { re: new Float64Array(m), im: new Float64Array(m) };
    realScratch.set(m, scratch);
  }
  const { re, im } = scratch;
  for (let k = 0; k < m; k++) {
    re[k] = x[2 * k];
    im[k] = x[2 * k + 1];
  }
  fftInPlace(re, im);

  // Z = FFT_m(x_even + i·x_odd). X[k] = E[k] + W^k·O[k] with
  // E[k] = (Z[k] + conj Z[m−k]) / 2, O[k] = (Z[k] − conj Z[m−k]) / 2i, W = e^(−2πi/n).
  const { cos, sin } = getPlan(n);
  const z0r = re[0];
  const z0i = im[0];
  result[0] = (z0r + z0i) * (z0r + z0i);
  result[m] = (z0r - z0i) * (z0r - z0i);
  for (let k = 1; k < m; k++) {
    const a = re[k];
    const b = im[k];
    const c = re[m - k];
    const d = im[m - k];
    const er = 0.5 * (a + c);
    const ei = 0.5 * (b - d);
    const or = 0.5 * (b + d);
    const oi = -0.5 * (a - c);
    const wc = cos[k];
    const ws = sin[k];
    // (or + i·oi)·(wc − i·ws)
    const xr = er + or * wc + oi * ws;
    const xi = ei + oi * wc - or * ws;
    result[k] = xr * xr + xi * xi;
  }
  return result;
}
