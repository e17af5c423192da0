/**
 * Voice preparation, upstream's reference processing: 16 kHz + 0.6 s of zeros → cnhubert → VQ → prompt
 * tokens; 32 kHz linear spectrogram → ge; raw 24 kHz mel, normalised → CFM prompt.
 *
 * The graphs can run several references as one batch (`runVoiceGraphs`): the references are padded to
 * the longest and each row's own length goes with it (`ref_lengths`, `refer_lengths`), so every row's
 * result equals its result alone. Graphs exported before those inputs existed take one reference a call;
 * `voiceBatching` reads which kind a model set has from the loaded graphs.
 */
import { decodeWav, linearSpectrogram32k, melSpectrogram24k, normSpec, resample } from "../../shared/dsp/index.js";
import { GsvError } from "../../shared/errors.js";
import type { Manifest } from "../../shared/manifest.js";
import type { OrtPool } from "../../shared/ort-pool.js";
import type { PreparedVoice } from "../../shared/schemas.js";
import { asFloat32, f32, i64, type TensorLike } from "../../shared/tensor.js";
import { padFrames, sliceFrames } from "./cfm.js";

export const REF_MIN_SECONDS = 3;
export const REF_MAX_SECONDS = 10;
/** Upstream pads with int(32000 * 0.3) samples at 16 kHz (0.6 s), a quirk we keep for parity. */
export const REF_PAD_16K = 9600;

/** HuBERT's feature extractor: seven convolutions, kernels and strides (receptive field 400, hop 320). */
const HUBERT_CONVS: readonly (readonly [number, number])[] = [[10, 5], [3, 2], [3, 2], [3, 2], [3, 2], [2, 2], [2, 2]];

/** The 50 Hz frames HuBERT gives for n samples at 16 kHz (⌊(n − 400)/320⌋ + 1, conv by conv). */
export function hubertFrames(n: number): number {
  for (const [k, s] of HUBERT_CONVS) n = Math.floor((n - k) / s) + 1;
  return n;
}

/** A reference's inputs to the voice graphs, computed from its audio (checked for length and silence). */
export interface VoiceInput {
  /** The reference at 16 kHz with REF_PAD_16K zeros appended (cnhubert's input). */
  audio16k: Float32Array;
  /** The 32 kHz linear spectrogram, bin-major [bins, frames] (ge_encoder's input). */
  spec: { data: Float32Array; frames: number };
  /** The normalised 24 kHz mel, band-major [bands, frames] (the CFM prompt). */
  refMel: Float32Array;
  refMelFrames: number;
  seconds: number;
}

/** What the graphs make of a reference. */
export interface VoiceGraphsOut {
  prompts: Int32Array;
  ge: Float32Array;
}

/** Which voice graphs take a batch of references in one call. */
export interface VoiceBatching {
  cnhubert: boolean;
  vq_extract: boolean;
  ge_encoder: boolean;
}

/**
 * Read from the loaded graphs: cnhubert and ge_encoder batch when they take the row lengths
 * (`ref_lengths`, `refer_lengths`), vq_extract when its batch dimension is not fixed to 1. On the cost
 * model (no graph loaded) the generator's contract, which batches all three.
 */
export function voiceBatching(pool: OrtPool): VoiceBatching {
  const takes = (graph: "cnhubert" | "ge_encoder", input: string): boolean => {
    const inputs = pool.inputs(graph);
    return inputs === undefined || inputs.some((i) => i.name === input);
  };
  const vq = pool.inputs("vq_extract");
  return {
    cnhubert: takes("cnhubert", "ref_lengths"),
    ge_encoder: takes("ge_encoder", "refer_lengths"),
    vq_extract: vq === undefined || vq[0]?.shape[0] !== 1,
  };
}

/** Decode, resample and check a reference; the spectrogram and mel for its conditioning. */
export function voiceInput(wav: Uint8Array): VoiceInput {
  const { sampleRate, samples } = decodeWav(wav);
  const x16 = resample(samples, sampleRate, 16000);
  const seconds = x16.length / 16000;
  if (x16.length < REF_MIN_SECONDS * 16000 || x16.length > REF_MAX_SECONDS * 16000) {
    throw new GsvError("REFERENCE_LENGTH", `the reference is ${seconds.toFixed(2)} s long; it must be 3 to 10 s`);
  }
  let peak = 0;
  for (const v of x16) peak = Math.max(peak, Math.abs(v));
  if (peak < 1e-4) throw new GsvError("BAD_AUDIO", "the reference is silent");
  const audio16k = new Float32Array(x16.length + REF_PAD_16K);
  audio16k.set(x16);
  return { audio16k, ...conditioningInput(samples, sampleRate), seconds };
}

/** The 32 kHz linear spectrogram (ge_encoder's input) and the normalised 24 kHz log-mel (upstream's `norm_spec(mel_fn(ref))`). */
function conditioningInput(samples: Float32Array, sampleRate: number): Pick<VoiceInput, "spec" | "refMel" | "refMelFrames"> {
  const spec = linearSpectrogram32k(resample(samples, sampleRate, 32000));
  const mel = melSpectrogram24k(resample(samples, sampleRate, 24000));
  normSpec(mel.data);
  return { spec, refMel: mel.data, refMelFrames: mel.frames };
}

/** Row b of a [B, C, T] tensor cut to its first `frames` frames, as [1, C, frames]. */
function rowOf(t: TensorLike, b: number, frames: number): TensorLike {
  const [, C, T] = t.dims;
  const row = (t.data as Float32Array).subarray(b * C * T, (b + 1) * C * T);
  return f32(sliceFrames(row, C, T, 0, frames), [1, C, frames]);
}

/** ge [ge.dim] per reference from its linear spectrogram: one call when the graph batches, else one each. */
async function geOf(pool: OrtPool, manifest: Manifest, specs: readonly VoiceInput["spec"][], batched: boolean): Promise<Float32Array[]> {
  const bins = manifest.dims.spec.bins;
  if (!batched) {
    const ge: Float32Array[] = [];
    for (const sp of specs) ge.push(asFloat32((await pool.run("ge_encoder", { refer: f32(sp.data, [1, bins, sp.frames]) })).ge, "ge"));
    return ge;
  }
  const padded = padFrames(specs, bins);
  const out = asFloat32(
    (await pool.run("ge_encoder", { refer: f32(padded.data, [specs.length, bins, padded.frames]), refer_lengths: i64(specs.map((sp) => sp.frames), [specs.length]) })).ge,
    "ge",
  );
  const dim = out.length / specs.length;
  return specs.map((_, b) => out.slice(b * dim, (b + 1) * dim));
}

/**
 * cnhubert → vq_extract → prompt tokens and ge_encoder → ge for several references: one call per graph
 * where the graph batches, else one call per reference. Row i of the result belongs to items[i] and equals
 * what the reference gives alone.
 */
export async function runVoiceGraphs(pool: OrtPool, manifest: Manifest, items: readonly VoiceInput[], batching: VoiceBatching): Promise<VoiceGraphsOut[]> {
  if (items.length === 0) return [];
  const t50 = items.map((it) => hubertFrames(it.audio16k.length));
  for (const n of t50) if (n < 2) throw new GsvError("REFERENCE_LENGTH", `a reference of ${n} HuBERT frames gives no prompt token`);
  // cnhubert: SSL features per reference, [1, D, T50_i] each
  let ssl: TensorLike[];
  if (batching.cnhubert) {
    const { data, frames: width } = padFrames(items.map((it) => ({ data: it.audio16k, frames: it.audio16k.length })), 1);
    const out = await pool.run("cnhubert", {
      ref_audio_16k: f32(data, [items.length, width]),
      ref_lengths: i64(items.map((it) => it.audio16k.length), [items.length]),
    });
    const all = out.ssl_content;
    asFloat32(all, "ssl_content");
    ssl = items.map((_, b) => (items.length === 1 && all.dims[2] === t50[0] ? all : rowOf(all, b, t50[b])));
  } else {
    ssl = [];
    for (const it of items) ssl.push((await pool.run("cnhubert", { ref_audio_16k: f32(it.audio16k, [1, it.audio16k.length]) })).ssl_content);
  }
  // vq_extract: ⌊T50/2⌋ codes per reference (a k2 s2 conv, then the nearest code, frame pair by frame pair)
  let prompts: Int32Array[];
  if (batching.vq_extract && items.length > 1) {
    const D = manifest.dims.ssl.dim;
    const padded = padFrames(ssl.map((s) => ({ data: s.data as Float32Array, frames: s.dims[2] })), D);
    const codes = (await pool.run("vq_extract", { ssl_content: f32(padded.data, [items.length, D, padded.frames]) })).prompts;
    prompts = items.map((_, b) => codesRow(codes, b, Math.floor(t50[b] / 2)));
  } else {
    prompts = [];
    for (const s of ssl) {
      const codes = (await pool.run("vq_extract", { ssl_content: s })).prompts;
      prompts.push(codesRow(codes, 0, codes.dims[1]));
    }
  }
  const ge = await geOf(pool, manifest, items.map((it) => it.spec), batching.ge_encoder);
  return items.map((_, i) => ({ prompts: prompts[i], ge: ge[i] }));
}

/**
 * runVoiceGraphs for the service's batches: if the batch fails, each reference is run again alone, so a
 * reference the graphs cannot take fails only itself (its slot holds its error).
 */
export async function runVoiceBatch(pool: OrtPool, manifest: Manifest, items: readonly VoiceInput[], batching: VoiceBatching): Promise<(VoiceGraphsOut | { error: unknown })[]> {
  try {
    return await runVoiceGraphs(pool, manifest, items, batching);
  } catch (err) {
    if (items.length === 1) return [{ error: err }];
    const alone = await Promise.allSettled(items.map((it) => runVoiceGraphs(pool, manifest, [it], batching)));
    return alone.map((r) => (r.status === "fulfilled" ? r.value[0] : { error: r.reason }));
  }
}

/** Row b of a [B, T25] int64 tensor, its first n codes, as int32. */
function codesRow(t: TensorLike, b: number, n: number): Int32Array {
  if (!(t?.data instanceof BigInt64Array)) throw new Error("output prompts is missing or not int64");
  const width = t.dims[1];
  if (n > width) throw new Error(`vq_extract gave ${width} codes where ${n} were expected`);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Number(t.data[b * width + i]);
  return out;
}

/** A prepared voice from its inputs and what the graphs made of them. */
export function preparedVoice(audioSha: string, input: VoiceInput, out: VoiceGraphsOut): PreparedVoice {
  return { audioSha, prompts: out.prompts, ge: out.ge, refMel: input.refMel, refMelFrames: input.refMelFrames, seconds: input.seconds };
}

/** One reference, alone (the in-process baseline and tools). */
export async function prepareVoice(pool: OrtPool, manifest: Manifest, audioSha: string, wav: Uint8Array): Promise<PreparedVoice> {
  const input = voiceInput(wav);
  const [out] = await runVoiceGraphs(pool, manifest, [input], voiceBatching(pool));
  return preparedVoice(audioSha, input, out);
}

/**
 * The decoder's conditioning from the reference audio: ge from the 32 kHz linear spectrogram (bins
 * 0..703 in the graph), and the CFM prompt, the 24 kHz log-mel normalised to [−1, 1] (upstream's
 * `norm_spec(mel_fn(ref))`). The spectrogram is returned too (tools/export/ort-run.ts compares it).
 */
export async function referenceConditioning(
  pool: OrtPool,
  manifest: Manifest,
  samples: Float32Array,
  sampleRate: number,
): Promise<{ ge: Float32Array; refMel: Float32Array; refMelFrames: number; spec: { data: Float32Array; frames: number } }> {
  const c = conditioningInput(samples, sampleRate);
  const [ge] = await geOf(pool, manifest, [c.spec], voiceBatching(pool).ge_encoder);
  return { ge, ...c };
}
