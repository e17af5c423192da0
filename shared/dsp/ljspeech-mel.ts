/**
 * The mel spectrogram the MB-MelGAN LJSpeech vocoder (vocoders/mb-melgan-ljspeech) was trained on:
 * TensorFlowTTS's LJSpeech preprocessing, i.e. librosa
 *
 *   S   = |librosa.stft(x, n_fft=1024, hop_length=256, win_length=1024, window="hann",
 *                       center=True, pad_mode="reflect")|
 *   mel = log10(max(librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80, fmin=80, fmax=7600) · S, 1e-10))
 *
 * then per-band z-normalisation. Conventions, and how they differ from the GPT-SoVITS v3 mel in
 * spectrogram.ts (which is NOT used here, and is not changed):
 * - The signal is 22,050 Hz mono. It is reflect-padded by n_fft/2 = 512 samples on each side (numpy
 *   "reflect": the edge sample is not repeated) and framed centred, so frames = 1 + floor(len / 256) and
 *   frame t covers samples [256·t − 512, 256·t + 512). (v3: pad (n_fft − hop)/2 and center=False.)
 * - Periodic Hann window of 1024 (0.5 − 0.5·cos(2πn/1024)), no zero padding since win = n_fft.
 * - Magnitude is the plain |X| (v3 adds 1e-8 under the square root).
 * - Slaney mel (librosa's default: Slaney scale and area normalisation), 80 bands, 80 – 7,600 Hz, from
 *   `melFilterbank`; log10 with a 1e-10 floor (v3: natural log, 1e-5 floor, 100 bands, 0 – 12 kHz).
 * - Normalisation: TensorFlowTTS subtracts the LJSpeech per-band mean and divides by its std
 *   (stats.npy). Those statistics are not available offline, so by default each clip is normalised by
 *   its own per-band mean and std, taken over its louder 70% of frames (frame loudness = the mean
 *   log-mel over the bands), which keeps pauses from dragging the mean down. Explicit statistics can be
 *   passed instead (for instance pooled over several clips).
 *
 * Output layout is frames-first, [frames, 80] row-major (data[t·80 + b]), which is what the model's
 * `mels` input [batch, frames, 80] wants. Arithmetic is float64, stored as float32.
 */
import { GsvError } from "../errors.js";
import { realPowerSpectrum } from "./fft.js";
import { melFilterbank } from "./spectrogram.js";

export const LJSPEECH_MEL = {
  sampleRate: 22050,
  nFft: 1024,
  hop: 256,
  win: 1024,
  bands: 80,
  fmin: 80,
  fmax: 7600,
  logFloor: 1e-10,
  /** Fraction of frames (the loudest) the clip's own statistics are taken over. */
  loudFraction: 0.7,
  /** Smallest std used when normalising (a constant band would otherwise divide by zero). */
  minStd: 1e-3,
} as const;

export interface LjspeechMel {
  /** [frames, bands] row-major (frames first). */
  data: Float32Array;
  frames: number;
  bands: number;
}

export interface MelStats {
  /** Per-band mean and std of the log10 mel, [bands] each. */
  mean: Float64Array;
  std: Float64Array;
}

/** Frames the centred STFT gives for `len` samples: 1 + floor(len / hop). */
export function ljspeechFrameCount(len: number): number {
  return 1 + Math.floor(len / LJSPEECH_MEL.hop);
}

let hann: Float64Array | undefined;
let basis: { weights: Float32Array; start: Int32Array; end: Int32Array; bins: number } | undefined;

function window(): Float64Array {
  if (hann) return hann;
  const n = LJSPEECH_MEL.win;
  hann = new Float64Array(n);
  for (let i = 0; i < n; i++) hann[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / n);
  return hann;
}

function melBasis(): NonNullable<typeof basis> {
  if (basis) return basis;
  const { sampleRate, nFft, bands, fmin, fmax } = LJSPEECH_MEL;
  const weights = melFilterbank(sampleRate, nFft, bands, fmin, fmax);
  const bins = nFft / 2 + 1;
  const start = new Int32Array(bands);
  const end = new Int32Array(bands);
  for (let m = 0; m < bands; m++) {
    let lo = bins;
    let hi = 0;
    for (let k = 0; k < bins; k++) {
      if (weights[m * bins + k] !== 0) {
        lo = Math.min(lo, k);
        hi = k + 1;
      }
    }
    start[m] = lo < hi ? lo : 0;
    end[m] = lo < hi ? hi : 0;
  }
  return (basis = { weights, start, end, bins });
}

/**
 * log10 mel of a 22,050 Hz mono signal, not normalised: [frames, 80] frames-first.
 * Throws BAD_AUDIO when the signal is not longer than the 512-sample reflect pad (numpy/librosa
 * reflect padding needs that) or holds a non-finite sample.
 */
export function ljspeechLogMel(x: Float32Array): LjspeechMel {
  const { nFft, hop, bands, logFloor } = LJSPEECH_MEL;
  const pad = nFft / 2;
  const len = x.length;
  if (len <= pad) throw new GsvError("BAD_AUDIO", `audio too short for the LJSpeech mel: ${len} samples, need more than ${pad}`);
  for (let i = 0; i < len; i++) {
    if (!Number.isFinite(x[i])) throw new GsvError("BAD_AUDIO", `audio holds a non-finite sample at ${i}`);
  }
  const frames = ljspeechFrameCount(len);
  const w = window();
  const { weights, start, end, bins } = melBasis();
  const frame = new Float64Array(nFft);
  const power = new Float64Array(bins);
  const mag = new Float64Array(bins);
  const out = new Float32Array(frames * bands);
  const last = len - 1;
  for (let t = 0; t < frames; t++) {
    const s0 = t * hop - pad;
    if (s0 >= 0 && s0 + nFft <= len) {
      for (let i = 0; i < nFft; i++) frame[i] = x[s0 + i] * w[i];
    } else {
      for (let i = 0; i < nFft; i++) {
        let j = s0 + i;
        // numpy "reflect", repeated for the (never reached here) case of a pad longer than the signal
        while (j < 0 || j > last) j = j < 0 ? -j : 2 * last - j;
        frame[i] = x[j] * w[i];
      }
    }
    realPowerSpectrum(frame, power);
    for (let k = 0; k < bins; k++) mag[k] = Math.sqrt(power[k]);
    const o = t * bands;
    for (let m = 0; m < bands; m++) {
      let acc = 0;
      const row = m * bins;
      for (let k = start[m]; k < end[m]; k++) acc += weights[row + k] * mag[k];
      out[o + m] = Math.log10(acc > logFloor ? acc : logFloor);
    }
  }
  return { data: out, frames, bands };
}

/**
 * Per-band mean and std of a [frames, bands] log-mel over its loudest `fraction` of frames (loudness:
 * the frame's mean over bands). At least one frame is always used.
 */
export function melStats(mel: LjspeechMel, fraction: number = LJSPEECH_MEL.loudFraction): MelStats {
  const { data, frames, bands } = mel;
  if (!(fraction > 0 && fraction <= 1)) throw new RangeError(`fraction must be in (0, 1], got ${fraction}`);
  const loud = new Float64Array(frames);
  for (let t = 0; t < frames; t++) {
    let s = 0;
    for (let b = 0; b < bands; b++) s += data[t * bands + b];
    loud[t] = s / bands;
  }
  const keep = Math.max(1, Math.round(frames * fraction));
  const order = Array.from({ length: frames }, (_, t) => t).sort((a, b) => loud[b] - loud[a] || a - b);
  const chosen = order.slice(0, keep);
  const mean = new Float64Array(bands);
  const std = new Float64Array(bands);
  for (const t of chosen) for (let b = 0; b < bands; b++) mean[b] += data[t * bands + b];
  for (let b = 0; b < bands; b++) mean[b] /= keep;
  for (const t of chosen) {
    for (let b = 0; b < bands; b++) {
      const d = data[t * bands + b] - mean[b];
      std[b] += d * d;
    }
  }
  for (let b = 0; b < bands; b++) std[b] = Math.sqrt(std[b] / keep);
  return { mean, std };
}

/** (x − mean) / max(std, minStd) per band, into a new array. */
export function normaliseMel(mel: LjspeechMel, stats: MelStats): LjspeechMel {
  const { data, frames, bands } = mel;
  if (stats.mean.length !== bands || stats.std.length !== bands) throw new RangeError(`statistics have ${stats.mean.length} bands, the mel ${bands}`);
  const out = new Float32Array(data.length);
  for (let t = 0; t < frames; t++) {
    for (let b = 0; b < bands; b++) {
      out[t * bands + b] = (data[t * bands + b] - stats.mean[b]) / Math.max(stats.std[b], LJSPEECH_MEL.minStd);
    }
  }
  return { data: out, frames, bands };
}

/**
 * The vocoder's input for a 22,050 Hz mono clip: log10 mel, z-normalised per band with `stats` when
 * given, else with the clip's own statistics over its louder 70% of frames. [frames, 80] frames-first.
 */
export function ljspeechMel(x22k: Float32Array, stats?: MelStats): LjspeechMel {
  const mel = ljspeechLogMel(x22k);
  return normaliseMel(mel, stats ?? melStats(mel));
}
