/**
 * SoVITS v3 decoding of one segment, upstream's serial path: fea_ref/fea_todo from sovits_encp, then
 * windows of at most 934 frames, each conditioned on a reference prefix of at most 468 frames, each
 * integrated with Euler steps of the CFM velocity field; the next window's prefix is the tail of this one.
 */
import type { Manifest } from "../../shared/manifest.js";
import type { OrtPool } from "../../shared/ort-pool.js";
import { Rng } from "../../shared/sampling.js";
import { denormSpec } from "../../shared/dsp/index.js";
import type { PreparedVoice } from "../../shared/schemas.js";
import { asFloat32, f32, i64 } from "../../shared/tensor.js";

export interface EncodedSegment {
  feaRef: Float32Array; // [F, Tref]
  tRef: number;
  feaTodo: Float32Array; // [F, Ttodo]
  tTodo: number;
}

/** sovits_encp over one token sequence: fea [F, frames]. */
export async function encodeTokens(
  pool: OrtPool,
  manifest: Manifest,
  v: { codes: Int32Array; text: Int32Array; ge: Float32Array; speed: number },
): Promise<{ data: Float32Array; frames: number }> {
  const out = await pool.run("sovits_encp", {
    codes: i64(v.codes, [1, 1, v.codes.length]),
    text: i64(v.text, [1, v.text.length]),
    ge: f32(v.ge, [1, manifest.dims.ge.dim, 1]),
    speed: f32(new Float32Array([v.speed]), [1]),
  });
  const fea = out.fea!;
  return { data: asFloat32(fea, "fea"), frames: fea.dims[2] };
}

export async function encodeSegment(
  pool: OrtPool,
  manifest: Manifest,
  v: { prompts: Int32Array; promptIds: Int32Array; tokens: Int32Array; textIds: Int32Array; ge: Float32Array; speed: number },
): Promise<EncodedSegment> {
  const geDim = manifest.dims.ge.dim;
  const run = async (codes: Int32Array, text: Int32Array, speed: number) => {
    const out = await pool.run("sovits_encp", {
      codes: i64(codes, [1, 1, codes.length]),
      text: i64(text, [1, text.length]),
      ge: f32(v.ge, [1, geDim, 1]),
      speed: f32(new Float32Array([speed]), [1]),
    });
    const fea = out.fea!;
    return { data: asFloat32(fea, "fea"), frames: fea.dims[2] };
  };
  const ref = await run(v.prompts, v.promptIds, 1);
  const todo = await run(v.tokens, v.textIds, v.speed);
  return { feaRef: ref.data, tRef: ref.frames, feaTodo: todo.data, tTodo: todo.frames };
}

/** Frames [from, to) of a channel-major [C, T] matrix. */
export function sliceFrames(a: Float32Array, channels: number, frames: number, from: number, to: number): Float32Array {
  const n = to - from;
  const out = new Float32Array(channels * n);
  for (let c = 0; c < channels; c++) out.set(a.subarray(c * frames + from, c * frames + to), c * n);
  return out;
}

/** Channel-major matrices [C, T_i] as one [rows, C, max T] buffer, each padded with zeros in time. */
export function padFrames(rows: readonly { data: Float32Array; frames: number }[], channels: number): { data: Float32Array; frames: number } {
  const frames = Math.max(...rows.map((r) => r.frames));
  const data = new Float32Array(rows.length * channels * frames);
  rows.forEach((r, b) => {
    for (let c = 0; c < channels; c++) data.set(r.data.subarray(c * r.frames, (c + 1) * r.frames), (b * channels + c) * frames);
  });
  return { data, frames };
}

/** Concatenate two channel-major matrices along time. */
export function concatFrames(a: Float32Array, ta: number, b: Float32Array, tb: number, channels: number): Float32Array {
  const t = ta + tb;
  const out = new Float32Array(channels * t);
  for (let c = 0; c < channels; c++) {
    out.set(a.subarray(c * ta, (c + 1) * ta), c * t);
    out.set(b.subarray(c * tb, (c + 1) * tb), c * t + ta);
  }
  return out;
}

export interface WindowPlan {
  prefix: number;
  chunk: number;
  windows: number;
}

/** Upstream's window arithmetic: T_min = min(ref mel, fea_ref) clipped to the last 468 frames; chunk = 934 − T_min. */
export function planWindows(manifest: Manifest, refMelFrames: number, tRef: number, tTodo: number): WindowPlan {
  const { maxFrames, maxPromptFrames } = manifest.dims.cfm;
  const prefix = Math.min(refMelFrames, tRef, maxPromptFrames);
  const chunk = maxFrames - prefix;
  return { prefix, chunk, windows: Math.max(1, Math.ceil(tTodo / chunk)) };
}

/** One DiT evaluation of one window: inputs band/channel-major [C, T]; returns the velocity [T, bands]. */
export interface DitInput {
  x: Float32Array;
  cond: Float32Array;
  text: Float32Array;
  t: number;
  time: number;
  dt: number;
}
export type DitFn = (input: DitInput) => Promise<Float32Array>;

/**
 * A batch of DiT evaluations as one call: rows padded to the longest window with x_lens marking each
 * row's frames (the graph keeps rows independent and ignores padding), velocities cut back per row.
 */
export async function ditBatch(pool: OrtPool, manifest: Manifest, items: DitInput[]): Promise<Float32Array[]> {
  const bands = manifest.dims.mel.bands;
  const F = manifest.dims.fea.dim;
  const b = items.length;
  const T = Math.max(...items.map((it) => it.t));
  // A lone row needs no padding: its arrays go as they are (the pool copies them to its worker), which
  // spares this thread three allocations and copies a step.
  const it0 = items[0];
  const lone = b === 1 && it0.x.length === bands * T && it0.cond.length === bands * T && it0.text.length === F * T;
  const padded = (of: (it: DitInput) => Float32Array, channels: number) => padFrames(items.map((it) => ({ data: of(it), frames: it.t })), channels).data;
  const x = lone ? it0.x : padded((it) => it.x, bands);
  const cond = lone ? it0.cond : padded((it) => it.cond, bands);
  const text = lone ? it0.text : padded((it) => it.text, F);
  const out = await pool.run("cfm_dit", {
    x: f32(x, [b, bands, T]),
    cond: f32(cond, [b, bands, T]),
    x_lens: i64(items.map((it) => it.t), [b]),
    time: f32(Float32Array.from(items, (it) => it.time), [b]),
    dt_base_bootstrap: f32(Float32Array.from(items, (it) => it.dt), [b]),
    text: f32(text, [b, F, T]),
  });
  const v = asFloat32(out.output, "output"); // [B, T, bands]
  if (lone && v.length === T * bands) return [v];
  return items.map((it, r) => v.slice(r * T * bands, (r * T + it.t) * bands));
}

/** Euler integration of one window. Returns the generated mel [bands, T − P] (normalised). */
export async function cfmWindow(
  dit: DitFn,
  manifest: Manifest,
  w: { fea: Float32Array; promptMel: Float32Array; p: number; t: number; steps: number; rng: Rng; checkAlive?: () => void },
): Promise<Float32Array> {
  const bands = manifest.dims.mel.bands;
  const { p, t, steps } = w;
  const x = new Float32Array(bands * t);
  for (let i = 0; i < x.length; i++) x[i] = w.rng.normal();
  const cond = new Float32Array(bands * t);
  for (let c = 0; c < bands; c++) {
    cond.set(w.promptMel.subarray(c * p, (c + 1) * p), c * t);
    x.fill(0, c * t, c * t + p);
  }
  const d = 1 / steps;
  for (let s = 0; s < steps; s++) {
    w.checkAlive?.();
    const v = await dit({ x, cond, text: w.fea, t, time: s * d, dt: d }); // [T, bands]
    for (let f = p; f < t; f++) for (let c = 0; c < bands; c++) x[c * t + f] += d * v[f * bands + c];
  }
  return sliceFrames(x, bands, t, p, t);
}

/** Mel frames each vocoder window repeats from the previous one, so the client can cross-fade the seam. */
export const VOCODER_OVERLAP = 12;

export interface MelWindow {
  win: number;
  last: boolean;
  /** De-normalised log-mel [bands, frames]; the first `overlap` frames repeat the previous window's tail. */
  mel: Float32Array;
  frames: number;
  overlap: number;
  /** Frames at the end that the next window will repeat (0 for the last). */
  tail: number;
}

/**
 * Decode one segment to mel windows, upstream's serial path: each window is conditioned on a prefix of
 * at most 468 frames, the reference's at first, then the tail of the previous window. Yields each
 * window as soon as it is integrated, so vocoding can start before the segment ends.
 */
export async function* decodeWindows(
  dit: DitFn,
  manifest: Manifest,
  o: { voice: PreparedVoice; enc: EncodedSegment; steps: number; seed: number; seg: number; checkAlive?: () => void },
): AsyncGenerator<MelWindow> {
  const bands = manifest.dims.mel.bands;
  const F = manifest.dims.fea.dim;
  const { voice, enc } = o;
  const plan = planWindows(manifest, voice.refMelFrames, enc.tRef, enc.tTodo);
  let p = plan.prefix;
  // The reference prefix: the first T_min frames, and of those the last `prefix` (upstream keeps the tail).
  const tMin = Math.min(voice.refMelFrames, enc.tRef);
  let promptMel = sliceFrames(voice.refMel, bands, voice.refMelFrames, tMin - p, tMin);
  let feaPrefix = sliceFrames(enc.feaRef, F, enc.tRef, tMin - p, tMin);
  const rng = new Rng((o.seed ^ Math.imul(o.seg + 1, 0x85ebca6b)) >>> 0);
  let prevTail: Float32Array | undefined; // de-normalised last frames of the previous window
  let prevTailFrames = 0;
  for (let win = 0; win < plan.windows; win++) {
    const from = win * plan.chunk;
    const to = Math.min(enc.tTodo, from + plan.chunk);
    const n = to - from;
    const chunk = sliceFrames(enc.feaTodo, F, enc.tTodo, from, to);
    const fea = concatFrames(feaPrefix, p, chunk, n, F);
    const mel = await cfmWindow(dit, manifest, { fea, promptMel, p, t: p + n, steps: o.steps, rng, checkAlive: o.checkAlive });
    // Next prefix: the tail of what was just generated (autoregressive continuation, as upstream's serial path).
    const keep = Math.min(p, n);
    promptMel = sliceFrames(mel, bands, n, n - keep, n);
    feaPrefix = sliceFrames(chunk, F, n, n - keep, n);
    p = keep;

    const denorm = denormSpec(Float32Array.from(mel));
    const overlap = prevTail ? prevTailFrames : 0;
    const withOverlap = prevTail ? concatFrames(prevTail, prevTailFrames, denorm, n, bands) : denorm;
    prevTailFrames = Math.min(VOCODER_OVERLAP, n);
    prevTail = sliceFrames(denorm, bands, n, n - prevTailFrames, n);
    const last = win === plan.windows - 1;
    yield { win, last, mel: withOverlap, frames: n + overlap, overlap, tail: last ? 0 : prevTailFrames };
  }
}
