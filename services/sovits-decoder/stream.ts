/**
 * One window of a streamed segment (docs/streaming.md). The same arithmetic as decodeWindows, split so
 * that each window is its own job: window 0 starts from the reference prefix and a fresh noise
 * generator; window w > 0 gets the generated mel it is conditioned on, the generator's state and the
 * previous window's de-normalised tail from the job that decoded window w − 1. With the full-size
 * schedule (mode 1) the windows are exactly those of the non-streaming path.
 */
import type { Manifest } from "../../shared/manifest.js";
import type { OrtPool } from "../../shared/ort-pool.js";
import { Rng } from "../../shared/sampling.js";
import { denormSpec } from "../../shared/dsp/index.js";
import type { PreparedVoice, SovitsJob } from "../../shared/schemas.js";
import { GsvError } from "../../shared/errors.js";
import { makeSchedule, windowFrames, type WindowState } from "../../shared/streaming.js";
import { cfmWindow, concatFrames, encodeTokens, sliceFrames, VOCODER_OVERLAP, type DitFn, type MelWindow } from "./cfm.js";

export interface StreamWindowResult {
  window: MelWindow;
  /** State for the next window's job; absent after the segment's last window. */
  next?: WindowState;
}

export async function decodeStreamWindow(
  pool: OrtPool,
  dit: DitFn,
  manifest: Manifest,
  o: { job: SovitsJob; voice: PreparedVoice; tokens: Int32Array; final: boolean; checkAlive?: () => void },
): Promise<StreamWindowResult> {
  const { job, voice, tokens, final } = o;
  if (!job.stream) throw new GsvError("INTERNAL", "decodeStreamWindow needs a streaming job");
  const bands = manifest.dims.mel.bands;
  const F = manifest.dims.fea.dim;
  const speed = job.params.speed;
  const sched = makeSchedule(job.stream.mode, manifest.dims.cfm, voice.refMelFrames, voice.prompts.length, speed);
  const st = job.window;
  const win = st?.win ?? 0;
  const from = st?.from ?? 0;

  const todo = await encodeTokens(pool, manifest, { codes: tokens, text: job.textIds, ge: voice.ge, speed });
  let to = from + windowFrames(sched, win);
  let last = false;
  if (final && todo.frames <= to) {
    to = todo.frames;
    last = true;
  } else if (todo.frames < to) {
    throw new GsvError("INTERNAL", `window ${win} needs ${to} frames, ${tokens.length} tokens give ${todo.frames}`);
  }
  if (to <= from) throw new GsvError("INTERNAL", `window ${win} of segment ${job.seg} is empty`);

  let p: number;
  let promptMel: Float32Array;
  let feaPrefix: Float32Array;
  let rng: Rng;
  if (!st) {
    // Window 0: the last `prefix` frames of the first T_min frames of the reference, as decodeWindows.
    const ref = await encodeTokens(pool, manifest, { codes: voice.prompts, text: job.promptIds, ge: voice.ge, speed: 1 });
    p = sched.prefix;
    const tMin = Math.min(voice.refMelFrames, ref.frames);
    promptMel = sliceFrames(voice.refMel, bands, voice.refMelFrames, tMin - p, tMin);
    feaPrefix = sliceFrames(ref.data, F, ref.frames, tMin - p, tMin);
    rng = new Rng((job.params.seed ^ Math.imul(job.seg + 1, 0x85ebca6b)) >>> 0);
  } else {
    p = st.p;
    promptMel = st.promptMel;
    feaPrefix = sliceFrames(todo.data, F, todo.frames, from - p, from);
    rng = Rng.fromState(st.rng);
  }

  const n = to - from;
  const chunk = sliceFrames(todo.data, F, todo.frames, from, to);
  const fea = concatFrames(feaPrefix, p, chunk, n, F);
  const mel = await cfmWindow(dit, manifest, { fea, promptMel, p, t: p + n, steps: job.params.sampleSteps, rng, checkAlive: o.checkAlive });

  const denorm = denormSpec(Float32Array.from(mel));
  const overlap = st ? st.prevTailFrames : 0;
  const withOverlap = st ? concatFrames(st.prevTail, st.prevTailFrames, denorm, n, bands) : denorm;
  const tailFrames = Math.min(VOCODER_OVERLAP, n);
  const window: MelWindow = { win, last, mel: withOverlap, frames: n + overlap, overlap, tail: last ? 0 : tailFrames };
  if (last) return { window };

  // The next window is conditioned on the last min(p, frames so far) generated frames. With full-size
  // windows this is upstream's min(p, n) of the window just decoded; smaller windows reach further back.
  const history = st ? concatFrames(st.promptMel, p, mel, n, bands) : mel;
  const historyFrames = st ? p + n : n;
  const nextP = Math.min(p, to);
  return {
    window,
    next: {
      win: win + 1,
      from: to,
      p: nextP,
      promptMel: sliceFrames(history, bands, historyFrames, historyFrames - nextP, historyFrames),
      rng: rng.getState(),
      prevTail: sliceFrames(denorm, bands, n, n - tailFrames, n),
      prevTailFrames: tailFrames,
    },
  };
}
