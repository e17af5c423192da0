/**
 * Voice preparation, upstream's reference processing: 16 kHz + 0.6 s of zeros → cnhubert → VQ → prompt
 * tokens; 32 kHz linear spectrogram → ge; raw 24 kHz mel, normalised → CFM prompt.
 */
import { decodeWav, linearSpectrogram32k, melSpectrogram24k, normSpec, resample } from "../../shared/dsp/index.js";
import { GsvError } from "../../shared/errors.js";
import type { Manifest } from "../../shared/manifest.js";
import type { OrtPool } from "../../shared/ort-pool.js";
import type { PreparedVoice } from "../../shared/schemas.js";
import { asFloat32, f32, int64ToInt32 } from "../../shared/tensor.js";

export const REF_MIN_SECONDS = 3;
export const REF_MAX_SECONDS = 10;
/** Upstream pads with int(32000 * 0.3) samples at 16 kHz (0.6 s), a quirk we keep for parity. */
export const REF_PAD_16K = 9600;

export async function prepareVoice(pool: OrtPool, manifest: Manifest, audioSha: string, wav: Uint8Array): Promise<PreparedVoice> {
  const { sampleRate, samples } = decodeWav(wav);
  const x16 = resample(samples, sampleRate, 16000);
  const seconds = x16.length / 16000;
  if (x16.length < REF_MIN_SECONDS * 16000 || x16.length > REF_MAX_SECONDS * 16000) {
    throw new GsvError("REFERENCE_LENGTH", `the reference is ${seconds.toFixed(2)} s long; it must be 3 to 10 s`);
  }
  let peak = 0;
  for (const v of x16) peak = Math.max(peak, Math.abs(v));
  if (peak < 1e-4) throw new GsvError("BAD_AUDIO", "the reference is silent");

  const padded = new Float32Array(x16.length + REF_PAD_16K);
  padded.set(x16);
  const ssl = await pool.run("cnhubert", { ref_audio_16k: f32(padded, [1, padded.length]) });
  const codes = await pool.run("vq_extract", { ssl_content: ssl.ssl_content });
  const prompts = int64ToInt32(codes.prompts, "prompts");

  const { ge, refMel, refMelFrames } = await referenceConditioning(pool, manifest, samples, sampleRate);
  return { audioSha, prompts, ge, refMel, refMelFrames, seconds };
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
  const spec = linearSpectrogram32k(resample(samples, sampleRate, 32000));
  const geOut = await pool.run("ge_encoder", { refer: f32(spec.data, [1, manifest.dims.spec.bins, spec.frames]) });
  const ge = asFloat32(geOut.ge, "ge");
  const mel = melSpectrogram24k(resample(samples, sampleRate, 24000));
  normSpec(mel.data);
  return { ge, refMel: mel.data, refMelFrames: mel.frames, spec };
}
