/**
 * Checks of work messages that a schema cannot make without the model set's dims: ids inside the
 * embedding tables, lengths that bound memory, tensors whose size matches their shape. A hostile or
 * broken message fails alone with MALFORMED_MESSAGE before it reaches a batch, where it could fail or
 * corrupt the other requests batched with it, or allocate without bound (the GPT KV cache grows with
 * the longest row).
 */
import type { Manifest } from "./manifest.js";
import { GsvError } from "./errors.js";
import type { GptJob, SovitsJob, VocoderJob } from "./schemas.js";

/** Phones (prompt + text) of one segment; the frontend's segments are far shorter. */
export const MAX_SEGMENT_PHONES = 8192;
/** Semantic tokens of one segment (upstream stops at 50 Hz × 54 s = 2700). */
export const MAX_SEGMENT_TOKENS = 8192;
/** Mel frames of one vocoder window (the CFM window is at most dims.cfm.maxFrames). */
export const MAX_WINDOW_FRAMES = 4096;

function ids(field: string, xs: Int32Array, below: number): void {
  for (let i = 0; i < xs.length; i++) {
    if (xs[i] < 0 || xs[i] >= below) throw new GsvError("MALFORMED_MESSAGE", `${field}[${i}] = ${xs[i]} is outside [0, ${below})`);
  }
}

function bertRows(field: string, rows: GptJob["textBert"], phones: number, m: Manifest): void {
  if (!rows) return;
  const dim = m.dims.t2s.bertDim;
  if (rows.dim !== dim) throw new GsvError("MALFORMED_MESSAGE", `${field}.dim is ${rows.dim}; the model set's bertDim is ${dim}`);
  if (rows.vecs.length % dim !== 0) throw new GsvError("MALFORMED_MESSAGE", `${field}.vecs has ${rows.vecs.length} values, not a multiple of ${dim}`);
  if (rows.index.length !== phones) throw new GsvError("MALFORMED_MESSAGE", `${field}.index has ${rows.index.length} entries for ${phones} phones`);
  const n = rows.vecs.length / dim;
  for (let i = 0; i < rows.index.length; i++) {
    if (rows.index[i] < -1 || rows.index[i] >= n) throw new GsvError("MALFORMED_MESSAGE", `${field}.index[${i}] = ${rows.index[i]} is outside [-1, ${n})`);
  }
  for (let i = 0; i < rows.vecs.length; i++) {
    if (!Number.isFinite(rows.vecs[i])) throw new GsvError("MALFORMED_MESSAGE", `${field}.vecs[${i}] is not finite`);
  }
}

export function checkGptJob(job: GptJob, m: Manifest): void {
  if (job.textIds.length === 0) throw new GsvError("MALFORMED_MESSAGE", "textIds is empty");
  if (job.promptIds.length === 0) throw new GsvError("MALFORMED_MESSAGE", "promptIds is empty (v3 has no reference-free mode)");
  if (job.seg >= job.segCount) throw new GsvError("MALFORMED_MESSAGE", `seg ${job.seg} is not below segCount ${job.segCount}`);
  const n = job.promptIds.length + job.textIds.length;
  if (n > MAX_SEGMENT_PHONES) throw new GsvError("MALFORMED_MESSAGE", `${n} phones in one segment; at most ${MAX_SEGMENT_PHONES}`);
  ids("promptIds", job.promptIds, m.dims.t2s.phoneVocab);
  ids("textIds", job.textIds, m.dims.t2s.phoneVocab);
  bertRows("promptBert", job.promptBert, job.promptIds.length, m);
  bertRows("textBert", job.textBert, job.textIds.length, m);
}

export function checkSovitsJob(job: SovitsJob, m: Manifest): void {
  checkGptJob(job, m);
  // sovits_encp cannot run on zero tokens (onnxruntime fails inside the graph): refuse it here, with a code.
  if (job.tokens.length === 0) throw new GsvError("MALFORMED_MESSAGE", "tokens is empty");
  if (job.tokens.length > MAX_SEGMENT_TOKENS) throw new GsvError("MALFORMED_MESSAGE", `${job.tokens.length} tokens in one segment; at most ${MAX_SEGMENT_TOKENS}`);
  ids("tokens", job.tokens, m.dims.vq.codebook);
}

export function checkVocoderJob(job: VocoderJob, m: Manifest): void {
  const bands = m.dims.mel.bands;
  if (job.frames > MAX_WINDOW_FRAMES) throw new GsvError("MALFORMED_MESSAGE", `${job.frames} frames in one window; at most ${MAX_WINDOW_FRAMES}`);
  if (job.mel.length !== bands * job.frames) throw new GsvError("MALFORMED_MESSAGE", `mel has ${job.mel.length} values; bands × frames is ${bands * job.frames}`);
  if (job.overlap + job.tail > job.frames) throw new GsvError("MALFORMED_MESSAGE", `overlap ${job.overlap} + tail ${job.tail} exceed the window's ${job.frames} frames`);
  if (job.seg >= job.segCount) throw new GsvError("MALFORMED_MESSAGE", `seg ${job.seg} is not below segCount ${job.segCount}`);
  for (let i = 0; i < job.mel.length; i++) if (!Number.isFinite(job.mel[i])) throw new GsvError("MALFORMED_MESSAGE", `mel holds a non-finite value at ${i}`);
}
