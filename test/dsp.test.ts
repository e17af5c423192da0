import t from "tap";
import { GsvError } from "../shared/errors.js";
import {
  decodeWav,
  denormSpec,
  encodeWav,
  fftInPlace,
  floatToInt16,
  hzToMel,
  linearSpectrogram32k,
  melFilterbank,
  melSpectrogram24k,
  melToHz,
  normSpec,
  realPowerSpectrum,
  resample,
  resampledLength,
  stftMagnitude,
  wavHeader,
} from "../shared/dsp/index.js";

// ─── helpers ──────────────────────────────────────────────────────────────────

/** The subtest type handed to t.test callbacks (last overload: test(cb)). */
type TT = Parameters<Parameters<typeof t.test>[0]>[0];

/** Small deterministic PRNG for test data (independent of shared/sampling.ts). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function randomSignal(n: number, seed: number, amp = 1): Float32Array {
  const r = lcg(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (2 * r() - 1) * amp;
  return x;
}

function sine(n: number, sr: number, hz: number, amp: number, phase = 0): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = amp * Math.sin((2 * Math.PI * hz * i) / sr + phase);
  return x;
}

/** Naive O(n²) DFT. */
function naiveDft(re: ArrayLike<number>, im: ArrayLike<number>, inverse = false): [Float64Array, Float64Array] {
  const n = re.length;
  const or = new Float64Array(n);
  const oi = new Float64Array(n);
  const sign = inverse ? 1 : -1;
  for (let k = 0; k < n; k++) {
    let sr = 0;
    let si = 0;
    for (let j = 0; j < n; j++) {
      const a = (sign * 2 * Math.PI * ((j * k) % n)) / n;
      const c = Math.cos(a);
      const s = Math.sin(a);
      sr += re[j] * c - im[j] * s;
      si += re[j] * s + im[j] * c;
    }
    or[k] = sr;
    oi[k] = si;
  }
  return [or, oi];
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = a.length): number {
  let m = 0;
  for (let i = from; i < to; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function throwsBadAudio(tt: TT, fn: () => unknown, name: string): void {
  let err: unknown = null;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  tt.ok(err instanceof GsvError && err.code === "BAD_AUDIO", `${name}: throws BAD_AUDIO`, {
    got: err instanceof Error ? `${err.name}: ${err.message}` : String(err),
  });
  if (err instanceof GsvError) tt.ok(err.message.length > 0, `${name}: has a detail (${err.message})`);
}


// ─── FFT ──────────────────────────────────────────────────────────────────────

t.test("fftInPlace matches a naive DFT", async (tt) => {
  for (const n of [1, 2, 4, 8, 16, 64, 256]) {
    const re = Float64Array.from(randomSignal(n, n));
    const im = Float64Array.from(randomSignal(n, n + 1000));
    const [er, ei] = naiveDft(re, im);
    fftInPlace(re, im);
    tt.ok(maxAbsDiff(re, er) < 1e-9 * n && maxAbsDiff(im, ei) < 1e-9 * n, `n=${n}`);
  }
});

t.test("fftInPlace inverse (unscaled) undoes the forward transform", async (tt) => {
  const n = 512;
  const x = Float64Array.from(randomSignal(n, 7));
  const y = Float64Array.from(randomSignal(n, 8));
  const re = x.slice();
  const im = y.slice();
  fftInPlace(re, im);
  fftInPlace(re, im, true);
  for (let i = 0; i < n; i++) {
    re[i] /= n;
    im[i] /= n;
  }
  tt.ok(maxAbsDiff(re, x) < 1e-12 && maxAbsDiff(im, y) < 1e-12);
  tt.throws(() => fftInPlace(new Float64Array(12), new Float64Array(12)), RangeError);
  tt.throws(() => fftInPlace(new Float64Array(8), new Float64Array(4)), RangeError);
});

t.test("realPowerSpectrum matches |DFT|² and Parseval", async (tt) => {
  for (const n of [2, 4, 8, 32, 1024, 2048]) {
    const x = randomSignal(n, 3 * n);
    const [er, ei] = naiveDft(x, new Float64Array(n));
    const p = realPowerSpectrum(x);
    tt.equal(p.length, n / 2 + 1);
    let worst = 0;
    for (let k = 0; k <= n / 2; k++) worst = Math.max(worst, Math.abs(p[k] - (er[k] ** 2 + ei[k] ** 2)));
    tt.ok(worst < 1e-8 * n * n, `n=${n} worst ${worst}`);
    // Parseval: Σ|X|² over the full spectrum = n·Σx²; the one-sided spectrum counts 1..n/2−1 twice.
    let energy = 0;
    for (let i = 0; i < n; i++) energy += x[i] * x[i];
    let spec = p[0] + p[n / 2];
    for (let k = 1; k < n / 2; k++) spec += 2 * p[k];
    tt.ok(Math.abs(spec - n * energy) < 1e-9 * n * energy, `Parseval n=${n}`);
  }
  tt.throws(() => realPowerSpectrum(new Float32Array(1)), RangeError);
  tt.throws(() => realPowerSpectrum(new Float32Array(6)), RangeError);
});

// ─── STFT ─────────────────────────────────────────────────────────────────────

/** Reference STFT written from the torch definitions: explicit reflect pad, periodic Hann, naive DFT. */
function naiveStft(x: Float32Array, nFft: number, hop: number, win: number): { data: Float64Array; frames: number } {
  const pad = Math.trunc((nFft - hop) / 2);
  const padded: number[] = [];
  for (let i = pad; i >= 1; i--) padded.push(x[i]); // x[pad], …, x[1]
  for (let i = 0; i < x.length; i++) padded.push(x[i]);
  for (let i = x.length - 2; i >= x.length - 1 - pad; i--) padded.push(x[i]); // x[len−2], …
  const window = new Float64Array(nFft);
  const left = Math.floor((nFft - win) / 2);
  for (let i = 0; i < win; i++) window[left + i] = 0.5 * (1 - Math.cos((2 * Math.PI * i) / win));
  const frames = Math.floor((padded.length - nFft) / hop) + 1;
  const bins = nFft / 2 + 1;
  const data = new Float64Array(bins * frames);
  for (let f = 0; f < frames; f++) {
    const fr = new Float64Array(nFft);
    for (let i = 0; i < nFft; i++) fr[i] = padded[f * hop + i] * window[i];
    const [re, im] = naiveDft(fr, new Float64Array(nFft));
    for (let b = 0; b < bins; b++) data[b * frames + f] = Math.sqrt(re[b] ** 2 + im[b] ** 2 + 1e-8);
  }
  return { data, frames };
}

t.test("stftMagnitude matches a naive reflect-padded STFT", async (tt) => {
  for (const [nFft, hop, win, len] of [
    [64, 16, 64, 1000],
    [64, 16, 48, 777], // window shorter than n_fft: centred, zero-padded
    [32, 10, 32, 301], // odd (n_fft − hop)/2 → trunc
    [16, 4, 16, 7], // padding reaches the whole signal
  ] as const) {
    const x = randomSignal(len, nFft + len);
    const got = stftMagnitude(x, nFft, hop, win);
    const ref = naiveStft(x, nFft, hop, win);
    tt.equal(got.frames, ref.frames, `frames nFft=${nFft} len=${len}`);
    tt.equal(got.bins, nFft / 2 + 1);
    tt.equal(got.frames, Math.floor((len + 2 * Math.trunc((nFft - hop) / 2) - nFft) / hop) + 1);
    let worst = 0;
    for (let i = 0; i < ref.data.length; i++) worst = Math.max(worst, Math.abs(got.data[i] - ref.data[i]) / (1 + ref.data[i]));
    tt.ok(worst < 1e-5, `values nFft=${nFft} win=${win} len=${len} (worst ${worst})`);
  }
});

t.test("stftMagnitude rejects signals too short to pad", async (tt) => {
  throwsBadAudio(tt, () => stftMagnitude(new Float32Array(0), 1024, 256, 1024), "empty");
  throwsBadAudio(tt, () => stftMagnitude(new Float32Array(384), 1024, 256, 1024), "len == pad");
  tt.equal(stftMagnitude(new Float32Array(385), 1024, 256, 1024).frames, 1);
  tt.throws(() => stftMagnitude(new Float32Array(100), 48, 16, 48), RangeError);
});

// ─── Mel filterbank ───────────────────────────────────────────────────────────

/** Slaney mel scale written out by hand for the test. */
function slaneyMel(hz: number): number {
  return hz < 1000 ? (3 * hz) / 200 : 15 + (27 * Math.log(hz / 1000)) / Math.log(6.4);
}
function slaneyHz(mel: number): number {
  return mel < 15 ? (200 * mel) / 3 : 1000 * Math.pow(6.4, (mel - 15) / 27);
}

t.test("Slaney mel scale", async (tt) => {
  tt.equal(hzToMel(0), 0);
  tt.ok(Math.abs(hzToMel(500) - 7.5) < 1e-12, "linear part: 500 Hz = 7.5");
  tt.ok(Math.abs(hzToMel(1000) - 15) < 1e-12, "1 kHz = 15");
  tt.ok(Math.abs(hzToMel(6400) - 42) < 1e-12, "6.4 kHz = 15 + 27");
  for (const hz of [10, 300, 999, 1000, 1500, 4000, 12000]) {
    tt.ok(Math.abs(hzToMel(hz) - slaneyMel(hz)) < 1e-12, `hzToMel(${hz})`);
    tt.ok(Math.abs(melToHz(hzToMel(hz)) - hz) < 1e-9, `round trip ${hz}`);
    tt.ok(Math.abs(melToHz(slaneyMel(hz)) - slaneyHz(slaneyMel(hz))) < 1e-9);
  }
});

t.test("melFilterbank: librosa Slaney triangles with unit area", async (tt) => {
  const sr = 24000;
  const nFft = 1024;
  const nMels = 100;
  const nBins = nFft / 2 + 1;
  const fb = melFilterbank(sr, nFft, nMels, 0, null);
  tt.equal(fb.length, nMels * nBins);
  tt.same(fb, melFilterbank(sr, nFft, nMels, 0, sr / 2), "fmax null = sr/2");

  // Band edges by hand: n_mels + 2 points evenly spaced in mel between 0 and mel(12 kHz).
  const top = slaneyMel(sr / 2);
  const pts = Array.from({ length: nMels + 2 }, (_, i) => slaneyHz((top * i) / (nMels + 1)));
  const df = sr / nFft;
  for (const m of [0, 1, 20, 45, 70, 99]) {
    const [lo, mid, hi] = [pts[m], pts[m + 1], pts[m + 2]];
    // Every bin against the triangle formula.
    let worst = 0;
    for (let k = 0; k < nBins; k++) {
      const f = k * df;
      const tri = Math.max(0, Math.min((f - lo) / (mid - lo), (hi - f) / (hi - mid)));
      worst = Math.max(worst, Math.abs(fb[m * nBins + k] - (tri * 2) / (hi - lo)));
    }
    tt.ok(worst < 1e-6 * (2 / (hi - lo)), `band ${m} matches the hand formula (worst ${worst})`);
    // The peak sits at the bin nearest the centre frequency (or its neighbour when the centre falls
    // between bins), and nothing lies outside (lo, hi).
    let argmax = 0;
    for (let k = 0; k < nBins; k++) if (fb[m * nBins + k] > fb[m * nBins + argmax]) argmax = k;
    tt.ok(Math.abs(argmax * df - mid) <= df, `band ${m} peaks near ${mid.toFixed(1)} Hz (bin ${argmax})`);
    for (let k = 0; k < nBins; k++) {
      if (k * df <= lo || k * df >= hi) tt.equal(fb[m * nBins + k], 0, `band ${m} bin ${k} outside`);
    }
    // Area: ∫ triangle = 1 for Slaney normalisation; the bin sum approximates it for wide bands.
    if (hi - lo > 10 * df) {
      let area = 0;
      for (let k = 0; k < nBins; k++) area += fb[m * nBins + k] * df;
      tt.ok(Math.abs(area - 1) < 0.01, `band ${m} area ${area.toFixed(4)} ≈ 1`);
    }
  }
});

// ─── Mel and linear spectrograms ──────────────────────────────────────────────

t.test("melSpectrogram24k: shape, silence floor, sine lands in the right band", async (tt) => {
  const n = 24000;
  const silent = melSpectrogram24k(new Float32Array(n));
  tt.equal(silent.frames, Math.floor((n + 768 - 1024) / 256) + 1);
  tt.equal(silent.data.length, 100 * silent.frames);
  const floor = Math.log(Math.fround(1e-5));
  tt.ok(silent.data.every((v) => Math.abs(v - floor) < 1e-5), "silence clamps to ln(1e-5)");

  // 3 kHz is exactly bin 128 (24000/1024 · 128). Expected band: the one whose triangle is highest there.
  const hz = 3000;
  const x = sine(n, 24000, hz, 0.5);
  const mel = melSpectrogram24k(x);
  const fb = melFilterbank(24000, 1024, 100);
  let expected = 0;
  for (let m = 0; m < 100; m++) if (fb[m * 513 + 128] > fb[expected * 513 + 128]) expected = m;
  const f = Math.floor(mel.frames / 2);
  let best = 0;
  for (let m = 0; m < 100; m++) if (mel.data[m * mel.frames + f] > mel.data[best * mel.frames + f]) best = m;
  tt.equal(best, expected, `3 kHz peaks in band ${expected}`);
  // Energy concentrated: bands far from the tone are far below the peak.
  const peak = mel.data[best * mel.frames + f];
  for (const m of [0, 10, best - 10, best + 10, 99]) {
    tt.ok(mel.data[m * mel.frames + f] < peak - 5, `band ${m} at least 5 nats below the peak`);
  }
  // Expected level at the peak: |X[128]| = A·Σw/2 = 0.5·512/2 = 128 for the periodic Hann; the
  // neighbouring bins 127 and 129 carry 64 each (Hann main lobe), the rest ~0.
  const w = (k: number) => fb[best * 513 + k];
  const want = Math.log(w(127) * 64 + w(128) * 128 + w(129) * 64);
  tt.ok(Math.abs(peak - want) < 1e-3, `peak level ${peak} ≈ ${want}`);
});

t.test("normSpec / denormSpec", async (tt) => {
  const a = new Float32Array([-12, 2, -5, 0]);
  normSpec(a);
  tt.ok(Math.abs(a[0] + 1) < 1e-7 && Math.abs(a[1] - 1) < 1e-7 && Math.abs(a[2] - 0) < 1e-7);
  tt.ok(Math.abs(a[3] - (12 / 14) * 2 + 1) < 1e-6);
  const back = denormSpec(a);
  tt.equal(back, a, "in place, returns its argument");
  tt.ok(maxAbsDiff(a, [-12, 2, -5, 0]) < 1e-5);
});

t.test("linearSpectrogram32k: shape and upstream's peak rule", async (tt) => {
  const n = 32000;
  const x = sine(n, 32000, 500, 0.9);
  const s = linearSpectrogram32k(x);
  tt.equal(s.frames, Math.floor((n + 1408 - 2048) / 640) + 1);
  tt.equal(s.data.length, 1025 * s.frames);
  tt.same(s.data, stftMagnitude(x, 2048, 640, 2048).data, "peak ≤ 1: unchanged");

  const loud = sine(n, 32000, 500, 1.5);
  const loudCopy = loud.slice();
  const scaled = Float32Array.from(loud, (v) => v / 1.5);
  const ls = linearSpectrogram32k(loud);
  tt.same(loud, loudCopy, "input not modified");
  tt.ok(maxAbsDiff(ls.data, stftMagnitude(scaled, 2048, 640, 2048).data) < 1e-3, "peak 1.5: divided by 1.5");

  const veryLoud = sine(n, 32000, 500, 3);
  const halved = Float32Array.from(veryLoud, (v) => v / 2);
  tt.ok(
    maxAbsDiff(linearSpectrogram32k(veryLoud).data, stftMagnitude(halved, 2048, 640, 2048).data) < 1e-3,
    "peak 3: divided by min(2, peak) = 2",
  );
});

// ─── Resampling ───────────────────────────────────────────────────────────────

t.test("resample: identity and lengths (ceil(len·to/from))", async (tt) => {
  const x = randomSignal(1000, 1);
  const same = resample(x, 16000, 16000);
  tt.same(same, x);
  tt.not(same, x, "a copy");
  tt.equal(resample(x, 44100, 16000).length, Math.ceil((1000 * 16000) / 44100));
  tt.equal(resampledLength(441000, 44100, 16000), 160000);
  tt.equal(resampledLength(1000, 44100, 16000), 363);
  tt.equal(resampledLength(1, 48000, 16000), 1);
  tt.equal(resample(new Float32Array(0), 48000, 16000).length, 0);
  tt.equal(resample(x, 16000, 48000).length, 3000);
  tt.throws(() => resample(x, 0, 16000), RangeError);
  tt.throws(() => resample(x, 44100.5, 16000), RangeError);
});

t.test("resample keeps a 440 Hz sine's frequency and amplitude", async (tt) => {
  const pairs: [number, number][] = [
    [44100, 16000],
    [44100, 24000],
    [44100, 32000],
    [48000, 16000],
    [48000, 24000],
    [48000, 32000],
    [22050, 32000],
    [16000, 24000],
    [16000, 48000],
    [44101, 16000], // reduced L = 16000: the interpolated-kernel path
  ];
  for (const [from, to] of pairs) {
    const n = Math.round(from * 0.5);
    const x = sine(n, from, 440, 0.8, 0.3);
    const y = resample(x, from, to);
    const ref = new Float64Array(y.length);
    for (let j = 0; j < y.length; j++) ref[j] = 0.8 * Math.sin((2 * Math.PI * 440 * j) / to + 0.3);
    const edge = Math.ceil((40 * to) / Math.min(from, to)); // beyond the kernel's half-width
    const err = maxAbsDiff(y, ref, edge, y.length - edge);
    tt.ok(err < 1e-3, `${from} -> ${to}: max error ${err.toExponential(2)}`);
  }
});

t.test("resample: DC gain is 1, tones above the new Nyquist are removed", async (tt) => {
  const dc = resample(new Float32Array(44100).fill(0.5), 44100, 16000);
  tt.ok(maxAbsDiff(dc, new Float32Array(dc.length).fill(0.5), 200, dc.length - 200) < 1e-5, "DC");

  const cases: [number, number, number][] = [
    [44100, 16000, 10000],
    [44100, 16000, 8200],
    [44100, 24000, 14000],
    [44100, 32000, 18000],
    [48000, 16000, 9000],
    [48000, 24000, 12500],
    [48000, 32000, 16500],
  ];
  for (const [from, to, hz] of cases) {
    const amp = 0.9;
    const y = resample(sine(from, from, hz, amp), from, to);
    const edge = Math.ceil((40 * to) / Math.min(from, to)); // beyond the kernel's half-width
    let e = 0;
    for (let j = edge; j < y.length - edge; j++) e += y[j] * y[j];
    const rms = Math.sqrt(e / (y.length - 2 * edge));
    const db = 20 * Math.log10(rms / (amp / Math.SQRT2));
    tt.ok(db < -80, `${hz} Hz, ${from} -> ${to}: ${db.toFixed(1)} dB`);
  }
});

// ─── WAV ──────────────────────────────────────────────────────────────────────

function ascii(s: string): number[] {
  return Array.from(s, (c) => c.charCodeAt(0));
}
function u16(v: number): number[] {
  return [v & 255, (v >>> 8) & 255];
}
function u32(v: number): number[] {
  return [v & 255, (v >>> 8) & 255, (v >>> 16) & 255, (v >>> 24) & 255];
}
function chunk(id: string, body: number[], declared = body.length): number[] {
  const out = [...ascii(id), ...u32(declared), ...body];
  if (body.length % 2 === 1) out.push(0);
  return out;
}
function fmtBody(format: number, channels: number, rate: number, bits: number, blockAlign?: number): number[] {
  const ba = blockAlign ?? channels * Math.ceil(bits / 8);
  return [...u16(format), ...u16(channels), ...u32(rate), ...u32(rate * ba), ...u16(ba), ...u16(bits)];
}
function extensibleFmt(sub: number, channels: number, rate: number, bits: number, guidTail?: number[]): number[] {
  const tail = guidTail ?? [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71];
  return [...fmtBody(0xfffe, channels, rate, bits), ...u16(22), ...u16(bits), ...u32(channels === 1 ? 4 : 3), ...u16(sub), ...tail];
}
function riff(chunks: number[][], riffSize?: number): Uint8Array {
  const body = [...ascii("WAVE"), ...chunks.flat()];
  return Uint8Array.from([...ascii("RIFF"), ...u32(riffSize ?? body.length), ...body]);
}
function f32le(v: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  return [...b];
}
function f64le(v: number): number[] {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, v, true);
  return [...b];
}
function int24(v: number): number[] {
  return [v & 255, (v >> 8) & 255, (v >> 16) & 255];
}

function closeTo(tt: TT, got: ArrayLike<number>, want: number[], name: string, tol = 1e-7): void {
  tt.equal(got.length, want.length, `${name}: length`);
  tt.ok(maxAbsDiff(got, want) <= tol, `${name}: values`, { got: Array.from(got), want });
}

t.test("decodeWav: every supported sample format", async (tt) => {
  // 8-bit unsigned: (u − 128) / 128
  let w = decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 8000, 8)), chunk("data", [0, 64, 128, 192, 255])]));
  tt.equal(w.sampleRate, 8000);
  tt.equal(w.channels, 1);
  closeTo(tt, w.samples, [-1, -0.5, 0, 0.5, 127 / 128], "pcm8 (odd-sized data chunk)");

  // 16-bit: v / 32768
  const s16 = [-32768, -16384, 0, 1, 32767];
  w = decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), chunk("data", s16.flatMap(u16))]));
  closeTo(tt, w.samples, s16.map((v) => v / 32768), "pcm16");

  // 24-bit: v / 2^23
  const s24 = [-8388608, -1, 0, 4194304, 8388607];
  w = decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 44100, 24)), chunk("data", s24.flatMap(int24))]));
  closeTo(tt, w.samples, s24.map((v) => v / 8388608), "pcm24");

  // 32-bit: v / 2^31
  const s32 = [-2147483648, -1073741824, 0, 1073741824, 2147483647];
  w = decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 48000, 32)), chunk("data", s32.flatMap(u32))]));
  closeTo(tt, w.samples, s32.map((v) => v / 2147483648), "pcm32");

  // float32 / float64, passed through (not clipped)
  const fl = [-1, -0.25, 0, 0.125, 1.5];
  w = decodeWav(riff([chunk("fmt ", fmtBody(3, 1, 32000, 32)), chunk("data", fl.flatMap(f32le))]));
  closeTo(tt, w.samples, fl, "float32");
  w = decodeWav(riff([chunk("fmt ", [...fmtBody(3, 1, 32000, 64), ...u16(0)]), chunk("data", fl.flatMap(f64le))]));
  closeTo(tt, w.samples, fl, "float64 (18-byte fmt)");

  // WAVE_FORMAT_EXTENSIBLE: PCM 16, PCM 24, float 32
  w = decodeWav(riff([chunk("fmt ", extensibleFmt(1, 1, 22050, 16)), chunk("data", s16.flatMap(u16))]));
  tt.equal(w.sampleRate, 22050);
  closeTo(tt, w.samples, s16.map((v) => v / 32768), "extensible pcm16");
  w = decodeWav(riff([chunk("fmt ", extensibleFmt(1, 1, 96000, 24)), chunk("data", s24.flatMap(int24))]));
  closeTo(tt, w.samples, s24.map((v) => v / 8388608), "extensible pcm24");
  w = decodeWav(riff([chunk("fmt ", extensibleFmt(3, 1, 48000, 32)), chunk("data", fl.flatMap(f32le))]));
  closeTo(tt, w.samples, fl, "extensible float32");
});

t.test("decodeWav: channel mixing, unknown chunks, padding, streaming header", async (tt) => {
  // Stereo 16-bit: mean of L and R.
  const frames = [
    [16384, -16384],
    [32767, 32767],
    [-32768, 0],
  ];
  let w = decodeWav(riff([chunk("fmt ", fmtBody(1, 2, 16000, 16)), chunk("data", frames.flat().flatMap(u16))]));
  tt.equal(w.channels, 2);
  closeTo(tt, w.samples, frames.map(([l, r]) => (l + r) / 2 / 32768), "stereo mix");

  // Three channels of float32.
  w = decodeWav(riff([chunk("fmt ", fmtBody(3, 3, 16000, 32)), chunk("data", [0.3, 0.6, 0.9, -0.3, 0, 0.3].flatMap(f32le))]));
  closeTo(tt, w.samples, [0.6, 0], "3-channel mix", 1e-6);

  // LIST before fmt, odd-sized junk between fmt and data (pad byte), trailing chunk after data.
  const pcm = [100, -100, 200].flatMap(u16);
  w = decodeWav(
    riff([
      chunk("LIST", [...ascii("INFOISFT"), ...u32(3), 65, 66, 0]),
      chunk("fmt ", fmtBody(1, 1, 16000, 16)),
      chunk("junk", [1, 2, 3]),
      chunk("data", pcm),
      chunk("id3 ", [9, 9, 9, 9]),
    ]),
  );
  closeTo(tt, w.samples, [100, -100, 200].map((v) => v / 32768), "skips LIST/junk/id3");

  // data chunk before fmt.
  w = decodeWav(riff([chunk("data", pcm), chunk("fmt ", fmtBody(1, 1, 16000, 16))]));
  closeTo(tt, w.samples, [100, -100, 200].map((v) => v / 32768), "data before fmt");

  // A trailing partial frame is dropped.
  w = decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), chunk("data", [...pcm, 7])]));
  tt.equal(w.samples.length, 3, "partial frame dropped");

  // Upstream's streaming header (data size 0) followed by PCM: read to the end.
  const streamed = new Uint8Array(44 + pcm.length);
  streamed.set(wavHeader(24000, 0));
  streamed.set(pcm, 44);
  w = decodeWav(streamed);
  tt.equal(w.sampleRate, 24000);
  closeTo(tt, w.samples, [100, -100, 200].map((v) => v / 32768), "streaming header");

  // data size 0xFFFFFFFF: read to the end.
  w = decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), [...ascii("data"), ...u32(0xffffffff), ...pcm]]));
  tt.equal(w.samples.length, 3, "0xFFFFFFFF data size");

  // A Uint8Array view into a larger buffer.
  const file = encodeWav(new Float32Array([0.5, -0.5]), 16000);
  const big = new Uint8Array(file.length + 10);
  big.set(file, 5);
  w = decodeWav(big.subarray(5, 5 + file.length));
  closeTo(tt, w.samples, [16384 / 32768, -16384 / 32768], "subarray input");
});

t.test("encodeWav / floatToInt16 / wavHeader", async (tt) => {
  tt.same(
    Array.from(floatToInt16(new Float32Array([0, 1, -1, 2, -2, 0.5, -0.5, NaN, 1 / 32767, 0.49 / 32767]))),
    [0, 32767, -32767, 32767, -32767, 16384, -16384, 0, 1, 0],
  );
  const h = wavHeader(24000, 0);
  tt.equal(h.length, 44);
  const v = new DataView(h.buffer);
  tt.equal(String.fromCharCode(...h.subarray(0, 4)), "RIFF");
  tt.equal(v.getUint32(4, true), 36);
  tt.equal(String.fromCharCode(...h.subarray(8, 16)), "WAVEfmt ");
  tt.equal(v.getUint32(16, true), 16);
  tt.equal(v.getUint16(20, true), 1);
  tt.equal(v.getUint16(22, true), 1);
  tt.equal(v.getUint32(24, true), 24000);
  tt.equal(v.getUint32(28, true), 48000);
  tt.equal(v.getUint16(32, true), 2);
  tt.equal(v.getUint16(34, true), 16);
  tt.equal(String.fromCharCode(...h.subarray(36, 40)), "data");
  tt.equal(v.getUint32(40, true), 0);
  tt.equal(new DataView(wavHeader(16000, 1000).buffer).getUint32(4, true), 1036);

  const pcm = randomSignal(5000, 42, 1.2); // some samples beyond ±1 get clipped
  const file = encodeWav(pcm, 32000);
  tt.equal(file.length, 44 + 10000);
  const back = decodeWav(file);
  tt.equal(back.sampleRate, 32000);
  tt.equal(back.channels, 1);
  let worst = 0;
  for (let i = 0; i < pcm.length; i++) {
    const want = Math.max(-1, Math.min(1, pcm[i])) * (32767 / 32768);
    worst = Math.max(worst, Math.abs(back.samples[i] - want));
  }
  tt.ok(worst <= 0.5 / 32768 + 1e-9, `round trip within half an LSB (${worst})`);
});

t.test("decodeWav: malformed input always throws BAD_AUDIO", async (tt) => {
  const good = riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), chunk("data", [1, 0, 2, 0, 3, 0, 4, 0])]);
  throwsBadAudio(tt, () => decodeWav(new Uint8Array(0)), "empty");
  throwsBadAudio(tt, () => decodeWav(good.subarray(0, 8)), "8 bytes");
  throwsBadAudio(tt, () => decodeWav(good.subarray(0, 12)), "RIFF header only");
  throwsBadAudio(tt, () => decodeWav(good.subarray(0, 20)), "truncated fmt chunk");
  throwsBadAudio(tt, () => decodeWav(good.subarray(0, 30)), "fmt cut mid-way");
  throwsBadAudio(tt, () => decodeWav(good.subarray(0, 44)), "data chunk longer than file (no payload)");
  throwsBadAudio(tt, () => decodeWav(good.subarray(0, 47)), "data chunk longer than file");
  const wrongMagic = good.slice();
  wrongMagic.set(ascii("RIFX"), 0);
  throwsBadAudio(tt, () => decodeWav(wrongMagic), "RIFX magic");
  const notRiff = good.slice();
  notRiff.set(ascii("OggS"), 0);
  throwsBadAudio(tt, () => decodeWav(notRiff), "wrong magic");
  const notWave = good.slice();
  notWave.set(ascii("AVI "), 8);
  throwsBadAudio(tt, () => decodeWav(notWave), "RIFF but not WAVE");
  throwsBadAudio(tt, () => decodeWav(new TextEncoder().encode("hello, this is not audio at all")), "text");
  const data = chunk("data", [1, 0, 2, 0]);
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 0, 16000, 16, 2)), data])), "zero channels");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 0, 16)), data])), "0 Hz");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 1_000_000_000, 16)), data])), "absurd rate");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16))])), "no data chunk");
  throwsBadAudio(tt, () => decodeWav(riff([data])), "no fmt chunk");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(0x55, 1, 16000, 16)), data])), "MP3 format code");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16, 3)), data])), "bad block align");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(3, 1, 16000, 16)), data])), "float16");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 40)), data])), "40-bit PCM");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16).slice(0, 14)), data])), "short fmt");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(0xfffe, 1, 16000, 16)), data])), "extensible, 16-byte fmt");
  throwsBadAudio(
    tt,
    () => decodeWav(riff([chunk("fmt ", extensibleFmt(1, 1, 16000, 16, new Array(14).fill(0))), data])),
    "extensible, unknown GUID",
  );
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), chunk("data", [])])), "empty data");
  throwsBadAudio(tt, () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), chunk("data", [1])])), "no whole frame");
  throwsBadAudio(
    tt,
    () => decodeWav(riff([chunk("fmt ", fmtBody(3, 1, 16000, 32)), chunk("data", [0.5, NaN].flatMap(f32le))])),
    "NaN sample",
  );
  throwsBadAudio(
    tt,
    () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), [...ascii("LIST"), ...u32(1000), 1, 2]])),
    "chunk longer than file before data",
  );
  throwsBadAudio(
    tt,
    () => decodeWav(riff([chunk("fmt ", fmtBody(1, 1, 16000, 16)), chunk("fmt ", fmtBody(1, 1, 16000, 16)), data])),
    "two fmt chunks",
  );
  throwsBadAudio(tt, () => decodeWav("RIFF" as unknown as Uint8Array), "not bytes");
});

t.test("decodeWav: fuzzed input only ever throws BAD_AUDIO", async (tt) => {
  const r = lcg(99);
  const base = riff([
    chunk("LIST", [1, 2, 3]),
    chunk("fmt ", extensibleFmt(1, 2, 16000, 24)),
    chunk("data", Array.from({ length: 60 }, (_, i) => i)),
  ]);
  let ok = 0;
  let bad = 0;
  let other = 0;
  for (let iter = 0; iter < 3000; iter++) {
    let buf: Uint8Array;
    if (iter % 3 === 0) {
      buf = Uint8Array.from({ length: Math.floor(r() * 80) }, () => Math.floor(r() * 256));
      if (buf.length >= 12 && r() < 0.7) {
        buf.set(ascii("RIFF"), 0);
        buf.set(ascii("WAVE"), 8);
      }
    } else {
      buf = base.slice(0, Math.floor(r() * (base.length + 1)));
      const flips = 1 + Math.floor(r() * 4);
      for (let f = 0; f < flips && buf.length > 0; f++) buf[Math.floor(r() * buf.length)] = Math.floor(r() * 256);
    }
    try {
      const w = decodeWav(buf);
      if (!(w.samples.length > 0 && w.sampleRate > 0 && w.channels > 0)) other++;
      else ok++;
    } catch (e) {
      if (e instanceof GsvError && e.code === "BAD_AUDIO") bad++;
      else other++;
    }
  }
  tt.equal(other, 0, `decoded ${ok}, rejected ${bad}`);
});
