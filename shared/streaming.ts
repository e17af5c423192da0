/**
 * Streaming synthesis (docs/streaming.md): the window schedule that gpt-semantic and sovits-decoder
 * agree on, the token lookahead, and the state a sovits window job carries to the next one.
 *
 * A segment is decoded as a chain of window jobs. gpt-semantic forwards the first one as soon as it
 * has the tokens for window 0 (plus a lookahead) and keeps the tokens so far in the `tts_tokens` KV
 * bucket; each window job, when done, forwards the next window's job itself, carrying the generated
 * mel the next window is conditioned on and the state of the noise generator. No stage keeps state
 * between messages: any replica can take any window.
 */
import { z } from "zod";

const f32 = z.custom<Float32Array>((v) => v instanceof Float32Array, "expected a Float32Array");
const i32 = z.custom<Int32Array>((v) => v instanceof Int32Array, "expected an Int32Array");

/**
 * api_v2's streaming_mode: 0 off; 1 (true) segment fragments at full quality (upstream's return_fragment);
 * 2 medium quality, faster first audio; 3 lower quality, fastest first audio.
 */
export type StreamMode = 0 | 1 | 2 | 3;

/** Normalise the parsed HTTP value (boolean or integer) to a mode, or undefined if it is not one. */
export function toStreamMode(v: boolean | number): StreamMode | undefined {
  if (v === false || v === 0) return 0;
  if (v === true || v === 1) return 1;
  if (v === 2 || v === 3) return v;
  return undefined;
}

/** Tokens decoded past a window's end before it is decoded, so the encoder's convolutions see their full context. */
export const LOOKAHEAD_TOKENS = 8;

/** Tokens (25 Hz) of the first window in modes 2 and 3; later windows double, up to the full window. */
export const FIRST_WINDOW_TOKENS: Record<2 | 3, number> = { 2: 32, 3: 16 };

/** Mel frames sovits_encp gives for n tokens at a speed (docs/models.md). */
export function melFrames(tokens: number, speed: number): number {
  const t50 = speed === 1 ? 2 * tokens : Math.floor((2 * tokens) / speed + 0.001) + 1;
  return Math.floor((15 * t50) / 8);
}

/** Fewest tokens whose mel covers `frames` frames. */
export function tokensFor(frames: number, speed: number): number {
  let n = Math.max(0, Math.floor((frames * speed) / 3.75) - 3);
  while (melFrames(n, speed) < frames) n++;
  return n;
}

export interface StreamSchedule {
  mode: 1 | 2 | 3;
  /** Reference-prefix frames of window 0 (upstream's T_min clipped to 468). */
  prefix: number;
  /** The full window's new frames: 934 − prefix, as the non-streaming path. */
  chunk: number;
  speed: number;
}

/** Upstream's window arithmetic for a voice: prefix = min(ref mel frames, prompt fea frames, 468). */
export function makeSchedule(mode: 1 | 2 | 3, cfm: { maxFrames: number; maxPromptFrames: number }, refMelFrames: number, promptTokens: number, speed: number): StreamSchedule {
  const tRef = melFrames(promptTokens, 1); // the reference is always encoded at speed 1
  const prefix = Math.min(refMelFrames, tRef, cfm.maxPromptFrames);
  return { mode, prefix, chunk: cfm.maxFrames - prefix, speed };
}

/** New frames of window `win` (when it is not the segment's last). */
export function windowFrames(s: StreamSchedule, win: number): number {
  if (s.mode === 1) return s.chunk;
  const first = Math.floor(FIRST_WINDOW_TOKENS[s.mode] * 3.75);
  return Math.min(s.chunk, first * 2 ** Math.min(win, 20));
}

/** Todo frame where window `win` ends (exclusive), if it is not the last. */
export function windowEnd(s: StreamSchedule, win: number): number {
  let end = 0;
  for (let w = 0; w <= win; w++) end += windowFrames(s, w);
  return end;
}

/** Tokens gpt-semantic must have decoded before window `win` can be decoded (unless the segment ends first). */
export function tokensNeeded(s: StreamSchedule, win: number): number {
  return tokensFor(windowEnd(s, win), s.speed) + LOOKAHEAD_TOKENS;
}

/** Token counts at which gpt-semantic publishes the tokens so far, up to `maxTokens`. */
export function emitPoints(s: StreamSchedule, maxTokens: number): number[] {
  const out: number[] = [];
  for (let w = 0; ; w++) {
    const n = tokensNeeded(s, w);
    if (n > maxTokens) break;
    out.push(n);
  }
  return out;
}

/** Carried on TextJob/GptJob/SovitsJob when the request streams. */
export const StreamSpec = z.object({ mode: z.union([z.literal(1), z.literal(2), z.literal(3)]) });
export type StreamSpec = z.infer<typeof StreamSpec>;

/** What window `win` > 0 of a streamed segment needs from the windows before it. */
export const WindowState = z.object({
  win: z.number().int().min(1),
  /** First todo frame of this window. */
  from: z.number().int().min(1),
  /** Prompt frames this window is conditioned on. */
  p: z.number().int().min(0),
  /** The last `p` generated frames (normalised mel, band-major [bands, p]). */
  promptMel: f32,
  /** The noise generator's state after the previous windows. */
  rng: z.object({ s: z.array(z.number().int()).length(4), spare: z.number(), hasSpare: z.boolean() }),
  /** De-normalised last frames of the previous window, repeated in front of this one for the vocoder's cross-fade. */
  prevTail: f32,
  prevTailFrames: z.number().int().min(0),
});
export type WindowState = z.infer<typeof WindowState>;

/** The tokens so far of a streamed segment, in KV `tts_tokens` under tokensKey(). */
export const TokensSoFar = z.object({ tokens: i32, final: z.boolean() });
export type TokensSoFar = z.infer<typeof TokensSoFar>;

export function tokensKey(id: string, seg: number): string {
  return `${id}.${seg}`;
}
