/**
 * Spectrograms with the conventions of GPT-SoVITS `module/mel_processing.py`:
 *
 * - The signal is reflect-padded by trunc((n_fft − hop)/2) samples on each side (torch "reflect": the
 *   edge sample is not repeated), then framed with `center=False`, so
 *   frames = floor((len + 2·pad − n_fft) / hop) + 1.
 * - The window is torch's periodic Hann of length `win` (0.5 − 0.5·cos(2πn/win)), zero-padded and centred
 *   inside n_fft when win < n_fft, as torch.stft does.
 * - Magnitude is sqrt(re² + im² + 1e-8).
 * - The mel basis is librosa's default `librosa.filters.mel` (Slaney mel scale, Slaney area
 *   normalisation), and the log is the natural log of max(value, 1e-5).
 *
 * All outputs are bin-major: data[b·frames + t].
 *
 * Arithmetic is done in float64 and stored as float32; upstream computes in float32, so values agree to
 * float32 rounding, not bit for bit.
 */
import { GsvError } from "../errors.js";
import { isPowerOfTwo, realPowerSpectrum } from "./fft.js";

export interface Spectrogram {
  /** [bins, frames], row-major. */
  data: Float32Array;
  frames: number;
  bins: number;
}

export interface MelSpectrogram {
  /** [bands, frames], row-major. */
  data: Float32Array;
  frames: number;
}

// ─── STFT ────────────────────────────────────────────────────────────────────

const windows = new Map<string, Float64Array>();

/** torch.hann_window(win) (periodic), centred in an n_fft-long buffer of zeros. */
function paddedHann(nFft: number, win: number): Float64Array {
  const key = `${nFft}/${win}`;
  let w = windows.get(key);
  if (w) return w;
  w = new Float64Array(nFft);
  const left = Math.floor((nFft - win) / 2);
  for (let n = 0; n < win; n++) w[left + n] = 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / win);
  windows.set(key, w);
  return w;
}

/** Reflect padding width used by upstream: int((n_fft − hop) / 2). */
export function reflectPad(nFft: number, hop: number): number {
  return Math.trunc((nFft - hop) / 2);
}

/** Number of STFT frames upstream produces for `len` samples. 0 when the signal is too short. */
export function stftFrameCount(len: number, nFft: number, hop: number): number {
  const padded = len + 2 * reflectPad(nFft, hop);
  return padded < nFft ? 0 : Math.floor((padded - nFft) / hop) + 1;
}

/**
 * Magnitude STFT, [nFft/2+1, frames] bin-major. Throws BAD_AUDIO when the signal is too short to be
 * reflect-padded (torch requires pad < length) or yields no frame.
 */
export function stftMagnitude(x: Float32Array, nFft: number, hop: number, win: number): Spectrogram {
  if (!isPowerOfTwo(nFft) || nFft < 2) throw new RangeError(`nFft must be a power of two >= 2, got ${nFft}`);
  if (!Number.isInteger(hop) || hop < 1 || hop > nFft) throw new RangeError(`hop must be in 1..nFft, got ${hop}`);
  if (!Number.isInteger(win) || win < 1 || win > nFft) throw new RangeError(`win must be in 1..nFft, got ${win}`);

  const len = x.length;
  const pad = reflectPad(nFft, hop);
  if (len <= pad) {
    throw new GsvError("BAD_AUDIO", `audio too short for a spectrogram: ${len} samples, need more than ${pad}`);
  }
  const frames = stftFrameCount(len, nFft, hop);
  if (frames < 1) {
    throw new GsvError("BAD_AUDIO", `audio too short for a spectrogram: ${len} samples give no ${nFft}-sample frame`);
  }

  const bins = (nFft >>> 1) + 1;
  const w = paddedHann(nFft, win);
  const frame = new Float64Array(nFft);
  const power = new Float64Array(bins);
  const data = new Float32Array(bins * frames);
  const last = len - 1;

  for (let t = 0; t < frames; t++) {
    const start = t * hop - pad; // index into the unpadded signal
    if (start >= 0 && start + nFft <= len) {
      for (let i = 0; i < nFft; i++) frame[i] = x[start + i] * w[i];
    } else {
      for (let i = 0; i < nFft; i++) {
        let j = start + i;
        if (j < 0) j = -j;
        else if (j > last) j = 2 * last - j;
        frame[i] = x[j] * w[i];
      }
    }
    realPowerSpectrum(frame, power);
    for (let b = 0; b < bins; b++) data[b * frames + t] = Math.sqrt(power[b] + 1e-8);
  }
  return { data, frames, bins };
}

// ─── Mel filterbank (librosa.filters.mel, htk=False, norm="slaney") ─────────

const F_SP = 200 / 3;
const MIN_LOG_HZ = 1000;
const MIN_LOG_MEL = MIN_LOG_HZ / F_SP; // 15
const LOGSTEP = Math.log(6.4) / 27;

/** Slaney mel scale (librosa `hz_to_mel`, htk=False): linear below 1 kHz, logarithmic above. */
export function hzToMel(hz: number): number {
  return hz >= MIN_LOG_HZ ? MIN_LOG_MEL + Math.log(hz / MIN_LOG_HZ) / LOGSTEP : hz / F_SP;
}

/** Inverse of `hzToMel`. */
export function melToHz(mel: number): number {
  return mel >= MIN_LOG_MEL ? MIN_LOG_HZ * Math.exp(LOGSTEP * (mel - MIN_LOG_MEL)) : F_SP * mel;
}

/**
 * librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with its defaults (Slaney scale and
 * normalisation): [nMels, nFft/2+1] row-major, float32 like librosa.
 * `fmax` null means sr/2.
 */
export function melFilterbank(
  sr: number,
  nFft: number,
  nMels: number,
  fmin = 0,
  fmax: number | null = null,
): Float32Array {
  const top = fmax ?? sr / 2;
  if (!(sr > 0) || !Number.isInteger(nFft) || nFft < 2 || !Number.isInteger(nMels) || nMels < 1) {
    throw new RangeError(`bad mel filterbank parameters sr=${sr} nFft=${nFft} nMels=${nMels}`);
  }
  if (!(fmin >= 0) || !(top > fmin)) throw new RangeError(`bad mel range fmin=${fmin} fmax=${top}`);

  const nBins = Math.floor(nFft / 2) + 1;
  // np.fft.rfftfreq(n_fft, 1/sr)
  const binStep = 1.0 / (nFft * (1.0 / sr));
  const fftFreqs = new Float64Array(nBins);
  for (let k = 0; k < nBins; k++) fftFreqs[k] = k * binStep;

  // mel_frequencies(n_mels + 2, fmin, fmax): np.linspace in mel, then back to Hz.
  const nPts = nMels + 2;
  const minMel = hzToMel(fmin);
  const maxMel = hzToMel(top);
  const melStep = (maxMel - minMel) / (nPts - 1);
  const melF = new Float64Array(nPts);
  for (let i = 0; i < nPts; i++) melF[i] = melToHz(i === nPts - 1 ? maxMel : minMel + i * melStep);

  const weights = new Float32Array(nMels * nBins);
  for (let m = 0; m < nMels; m++) {
    const fLo = melF[m];
    const fMid = melF[m + 1];
    const fHi = melF[m + 2];
    const dLo = fMid - fLo;
    const dHi = fHi - fMid;
    const enorm = 2.0 / (fHi - fLo);
    for (let k = 0; k < nBins; k++) {
      const lower = (fftFreqs[k] - fLo) / dLo; // −ramps[m] / fdiff[m]
      const upper = (fHi - fftFreqs[k]) / dHi; // ramps[m+2] / fdiff[m+1]
      const tri = Math.max(0, Math.min(lower, upper));
      // librosa stores the triangle in float32, then scales it in place by enorm.
      weights[m * nBins + k] = Math.fround(tri) * enorm;
    }
  }
  return weights;
}

interface SparseMel {
  nMels: number;
  nBins: number;
  start: Int32Array; // first non-zero bin per band
  end: Int32Array; // one past the last non-zero bin per band
  weights: Float32Array; // dense [nMels, nBins]
}

const sparseMels = new Map<string, SparseMel>();

function sparseMel(sr: number, nFft: number, nMels: number, fmin: number, fmax: number | null): SparseMel {
  const key = `${sr}/${nFft}/${nMels}/${fmin}/${fmax}`;
  let s = sparseMels.get(key);
  if (s) return s;
  const weights = melFilterbank(sr, nFft, nMels, fmin, fmax);
  const nBins = Math.floor(nFft / 2) + 1;
  const start = new Int32Array(nMels);
  const end = new Int32Array(nMels);
  for (let m = 0; m < nMels; m++) {
    let lo = nBins;
    let hi = 0;
    for (let k = 0; k < nBins; k++) {
      if (weights[m * nBins + k] !== 0) {
        if (k < lo) lo = k;
        hi = k + 1;
      }
    }
    start[m] = lo < hi ? lo : 0;
    end[m] = lo < hi ? hi : 0;
  }
  s = { nMels, nBins, start, end, weights };
  sparseMels.set(key, s);
  return s;
}

/** mel = basis · magnitude, then ln(max(mel, 1e-5)). Bin-major in, band-major out. */
function melFromMagnitude(spec: Spectrogram, mel: SparseMel): Float32Array {
  const { frames } = spec;
  const { nMels, nBins, start, end, weights } = mel;
  if (spec.bins !== nBins) throw new RangeError(`spectrogram has ${spec.bins} bins, mel basis ${nBins}`);
  const out = new Float32Array(nMels * frames);
  const acc = new Float64Array(frames);
  const clip = Math.fround(1e-5);
  const mag = spec.data;
  for (let m = 0; m < nMels; m++) {
    acc.fill(0);
    for (let k = start[m]; k < end[m]; k++) {
      const wt = weights[m * nBins + k];
      const row = k * frames;
      for (let t = 0; t < frames; t++) acc[t] += wt * mag[row + t];
    }
    const o = m * frames;
    for (let t = 0; t < frames; t++) {
      const v = acc[t];
      out[o + t] = Math.log(v > clip ? v : clip);
    }
  }
  return out;
}

// ─── The two spectrograms GPT-SoVITS v3 needs ────────────────────────────────

export const MEL24K = {
  sampleRate: 24000,
  nFft: 1024,
  hop: 256,
  win: 1024,
  nMels: 100,
  fmin: 0,
  fmax: null,
} as const;

export const SPEC32K = { sampleRate: 32000, nFft: 2048, hop: 640, win: 2048 } as const;

/**
 * The v3 log-mel (`TTS.py::mel_fn`) of a 24 kHz waveform: [100, frames] band-major, natural log,
 * NOT normalised (apply `normSpec` for the CFM prompt). Upstream feeds the raw (not peak-normalised)
 * reference here.
 */
export function melSpectrogram24k(x24k: Float32Array): MelSpectrogram {
  const spec = stftMagnitude(x24k, MEL24K.nFft, MEL24K.hop, MEL24K.win);
  const mel = sparseMel(MEL24K.sampleRate, MEL24K.nFft, MEL24K.nMels, MEL24K.fmin, MEL24K.fmax);
  return { data: melFromMagnitude(spec, mel), frames: spec.frames };
}

/** Generic log-mel with the same conventions (used for tests and other rates). */
export function logMelSpectrogram(
  x: Float32Array,
  sr: number,
  nFft: number,
  hop: number,
  win: number,
  nMels: number,
  fmin = 0,
  fmax: number | null = null,
): MelSpectrogram {
  const spec = stftMagnitude(x, nFft, hop, win);
  return { data: melFromMagnitude(spec, sparseMel(sr, nFft, nMels, fmin, fmax)), frames: spec.frames };
}

const SPEC_MIN = -12;
const SPEC_MAX = 2;

/** norm_spec, in place: x' = (x − (−12)) / (2 − (−12)) · 2 − 1, mapping [−12, 2] onto [−1, 1]. */
export function normSpec<T extends Float32Array | Float64Array>(a: T): T {
  for (let i = 0; i < a.length; i++) a[i] = ((a[i] - SPEC_MIN) / (SPEC_MAX - SPEC_MIN)) * 2 - 1;
  return a;
}

/** denorm_spec, in place: x = (x' + 1) / 2 · 14 − 12. */
export function denormSpec<T extends Float32Array | Float64Array>(a: T): T {
  for (let i = 0; i < a.length; i++) a[i] = ((a[i] + 1) / 2) * (SPEC_MAX - SPEC_MIN) + SPEC_MIN;
  return a;
}

/**
 * The linear "refer" spectrogram (`TTS.py::_get_ref_spec` → `spectrogram_torch`) of a 32 kHz waveform:
 * [1025, frames] bin-major, all bins (the model uses the first 704).
 *
 * Upstream's peak rule is applied first, to a copy: if max|x| > 1 the signal is divided by
 * min(2, peak). Upstream applies it in `_get_ref_spec` AFTER mixing to mono and resampling to 32 kHz
 * (so the peak is that of the resampled signal) and only on this path: the 24 kHz mel and the 16 kHz
 * HuBERT input use the raw waveform. The input array is never modified.
 * Upstream quirk NOT reproduced: when the file is already 32 kHz mono, upstream's `audio /= …` runs in
 * place on the cached raw tensor, so its 24 kHz mel then also sees the peak-normalised audio.
 */
export function linearSpectrogram32k(x32k: Float32Array): MelSpectrogram {
  let peak = 0;
  for (let i = 0; i < x32k.length; i++) {
    const a = Math.abs(x32k[i]);
    if (a > peak) peak = a;
  }
  let x = x32k;
  if (peak > 1) {
    const d = Math.min(2, peak);
    x = new Float32Array(x32k.length);
    for (let i = 0; i < x.length; i++) x[i] = x32k[i] / d;
  }
  const spec = stftMagnitude(x, SPEC32K.nFft, SPEC32K.hop, SPEC32K.win);
  return { data: spec.data, frames: spec.frames };
}
