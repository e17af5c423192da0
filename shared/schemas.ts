/**
 * Message schemas: every message that crosses a process boundary is validated against one of these.
 * Field names of TtsParams follow upstream api_v2 (`/tts`), so its clients work unchanged.
 */
import { z } from "zod";
import { isSafeReplySubject } from "./subjects.js";
import { StreamSpec, WindowState } from "./streaming.js";
import { ModelSelection, ModelSetName } from "./model-sets.js";

const f32 = z.custom<Float32Array>((v) => v instanceof Float32Array, "expected a Float32Array");
const i32 = z.custom<Int32Array>((v) => v instanceof Int32Array, "expected an Int32Array");

const boolish = z.union([z.boolean(), z.literal(0), z.literal(1), z.enum(["true", "false", "0", "1"])]).transform((v) => v === true || v === 1 || v === "true" || v === "1");
const num = (d: number) => z.coerce.number().refine(Number.isFinite, "must be a finite number").default(d);
const int = (d: number) => z.coerce.number().int("must be an integer").default(d);

export const SplitMethods = ["cut0", "cut1", "cut2", "cut3", "cut4", "cut5"] as const;
export const MediaTypes = ["wav", "raw"] as const;

/** The HTTP/NATS request, upstream api_v2 names and defaults. */
export const TtsParams = z.object({
  text: z.string({ error: "text is required" }),
  text_lang: z.string({ error: "text_lang is required" }).transform((s) => s.toLowerCase()),
  ref_audio_path: z.string().optional(),
  aux_ref_audio_paths: z.array(z.string()).optional(), // accepted, ignored by v3 as upstream
  prompt_text: z.string().default(""),
  prompt_lang: z.string().default("en").transform((s) => s.toLowerCase()),
  top_k: int(15).pipe(z.number().min(1, "top_k must be >= 1").max(1025)),
  top_p: num(1).pipe(z.number().gt(0, "top_p must be in (0, 1]").max(1, "top_p must be in (0, 1]")),
  temperature: num(1).pipe(z.number().gt(0, "temperature must be > 0").max(100)),
  text_split_method: z.enum(SplitMethods).default("cut5"),
  batch_size: int(1).pipe(z.number().min(1).max(256)),
  batch_threshold: num(0.75),
  split_bucket: boolish.default(true),
  speed_factor: num(1).pipe(z.number().min(0.25, "speed_factor must be in [0.25, 4]").max(4, "speed_factor must be in [0.25, 4]")),
  fragment_interval: num(0.3).pipe(z.number().min(0).max(10)),
  seed: int(-1).pipe(z.number().min(-1).max(4294967295)),
  media_type: z.enum(MediaTypes).default("wav"),
  streaming_mode: z.union([boolish, z.coerce.number().int()]).default(false)
    .refine((v) => typeof v === "boolean" || (v >= 0 && v <= 3), "streaming_mode must be 0, 1, 2, 3 or true/false"),
  parallel_infer: boolish.default(true),
  repetition_penalty: num(1.35).pipe(z.number().gt(0, "repetition_penalty must be > 0").max(10)),
  sample_steps: int(32).pipe(z.number().min(1, "sample_steps must be in [1, 128]").max(128, "sample_steps must be in [1, 128]")),
  super_sampling: boolish.default(false).refine((v) => !v, "super_sampling is not available"),
  /** Not upstream: a per-request deadline in milliseconds. */
  timeout_ms: int(0).pipe(z.number().min(0).max(3_600_000)),
});
export type TtsParams = z.infer<typeof TtsParams>;

/** What each stage records about itself, carried along to the client. */
export const Timing = z.object({
  stage: z.string(),
  replica: z.string(),
  queueMs: z.number(),
  computeMs: z.number(),
  batch: z.number().int(),
  seg: z.number().int(),
  win: z.number().int().optional(),
  /** Epoch ms when this unit's compute started (for timelines, `gsv profile`). */
  at: z.number().optional(),
});
export type Timing = z.infer<typeof Timing>;

/** Generation settings every stage after the frontend needs. */
export const GenParams = z.object({
  topK: z.number().int().min(1),
  topP: z.number().gt(0).max(1),
  temperature: z.number().gt(0),
  repetitionPenalty: z.number().gt(0),
  seed: z.number().int().min(0).max(4294967295),
  speed: z.number().min(0.25).max(4),
  sampleSteps: z.number().int().min(1).max(128),
  fragmentInterval: z.number().min(0).max(10),
});
export type GenParams = z.infer<typeof GenParams>;

/** Fields every work message carries. */
const Envelope = z.object({
  id: z.string().min(1).max(128).regex(/^[A-Za-z0-9_-]+$/, "id must be [A-Za-z0-9_-]"),
  reply: z.string().min(1).max(256).refine(isSafeReplySubject, "reply must be a literal subject, not $… and not under tts.v1. except tts.v1.reply."),
  deadline: z.number(),
  enqueuedAt: z.number(),
  timings: z.array(Timing).default([]),
  /** The model sets the request runs on (shared/model-sets.ts); absent: each stage's default set. */
  models: ModelSelection.optional(),
});

export const VoiceRef = z.object({
  audioSha: z.string().regex(/^[0-9a-f]{64}$/, "audioSha must be a sha256 hex digest"),
  promptText: z.string().min(1, "prompt_text is required for v3 (it has no reference-free mode)").max(1000),
  promptLang: z.string(),
});
export type VoiceRef = z.infer<typeof VoiceRef>;

export const TextJob = Envelope.extend({
  text: z.string(),
  textLang: z.string(),
  splitMethod: z.enum(SplitMethods),
  voice: VoiceRef,
  params: GenParams,
  /** Present when the request streams (docs/streaming.md). */
  stream: StreamSpec.optional(),
});
export type TextJob = z.infer<typeof TextJob>;

const SegmentFields = {
  seg: z.number().int().min(0),
  segCount: z.number().int().min(1),
  // A KV key as the nats client accepts it: those characters, no leading or trailing dot, no empty token.
  voiceKey: z.string().min(1).max(256).regex(/^(?!\.)(?!.*\.\.)[-/_=.a-zA-Z0-9]+(?<!\.)$/, "voiceKey must be a KV key ([-/_=.a-zA-Z0-9], no leading, trailing or double dot)"),
  promptIds: i32,
  textIds: i32,
  params: GenParams,
  stream: StreamSpec.optional(),
};

/**
 * zh BERT features of a segment, compact (docs/frontend.md): `vecs` [n, dim] holds one vector per zh
 * character, `index` one entry per phone: the vector that phone's row takes, or -1 for a zero row.
 */
export const BertRows = z.object({ dim: z.number().int().positive(), vecs: f32, index: i32 });
export type BertRows = z.infer<typeof BertRows>;

export const GptJob = Envelope.extend({
  ...SegmentFields,
  /** Present only when the model set has bert_zh and the prompt / segment has a zh run; else zeros. */
  promptBert: BertRows.optional(),
  textBert: BertRows.optional(),
});
export type GptJob = z.infer<typeof GptJob>;

export const SovitsJob = Envelope.extend({
  ...SegmentFields,
  tokens: i32,
  /** Streaming only: whether `tokens` is the whole segment, and the state a window after the first carries. */
  tokensFinal: z.boolean().optional(),
  window: WindowState.optional(),
});
export type SovitsJob = z.infer<typeof SovitsJob>;

export const VocoderJob = Envelope.extend({
  seg: z.number().int().min(0),
  segCount: z.number().int().min(1),
  win: z.number().int().min(0),
  last: z.boolean(),
  /** De-normalised log-mel, band-major [100, frames]; the first `overlap` frames repeat the previous window's tail. */
  mel: f32,
  frames: z.number().int().min(1),
  overlap: z.number().int().min(0),
  /** Frames at the end that the next window repeats (0 for a segment's last window). */
  tail: z.number().int().min(0),
  tokens: z.number().int().min(0),
  fragmentInterval: z.number().min(0),
});
export type VocoderJob = z.infer<typeof VocoderJob>;

/** Voice preparation request/reply (sovits-decoder service endpoint). */
export const VoicePrepareRequest = z.object({
  audioSha: VoiceRef.shape.audioSha,
  deadline: z.number(),
  /** The SoVITS set whose VQ and encoders prepare the voice (absent: the default set). */
  sovits: ModelSetName.optional(),
});
export const VoicePrepareReply = z.union([
  z.object({ ok: z.literal(true), voiceKey: z.string(), promptTokens: z.number().int(), cached: z.boolean(), ms: z.number() }),
  z.object({ ok: z.literal(false), code: z.string(), message: z.string() }),
]);

/** A prepared voice, stored in the voices KV bucket. */
export const PreparedVoice = z.object({
  audioSha: z.string(),
  prompts: i32,
  ge: f32,
  /** Normalised reference mel, band-major [bands, frames]. */
  refMel: f32,
  refMelFrames: z.number().int(),
  seconds: z.number(),
});
export type PreparedVoice = z.infer<typeof PreparedVoice>;

/** Events published on a request's reply subject. */
export const ReplyEvent = z.discriminatedUnion("type", [
  z.object({ type: z.literal("plan"), id: z.string(), segments: z.number().int().min(1), texts: z.array(z.string()), timings: z.array(Timing) }),
  z.object({
    type: z.literal("audio"),
    id: z.string(),
    seg: z.number().int(),
    segCount: z.number().int(),
    win: z.number().int(),
    last: z.boolean(),
    sampleRate: z.number().int(),
    /** Samples at the start that overlap the previous window's end, to be cross-faded. */
    overlap: z.number().int().min(0),
    /** Samples at the end that the next window repeats: hold them back until it arrives. */
    tail: z.number().int().min(0),
    pcm: f32,
    tokens: z.number().int(),
    fragmentInterval: z.number(),
    timings: z.array(Timing),
  }),
  z.object({ type: z.literal("error"), id: z.string(), code: z.string(), message: z.string(), stage: z.string() }),
  /** Streaming only: a stage's progress on a segment (gpt: tokens decoded so far; `final` at the segment's end). */
  z.object({ type: z.literal("progress"), id: z.string(), stage: z.string(), seg: z.number().int(), tokens: z.number().int(), final: z.boolean(), at: z.number() }),
]);
export type ReplyEvent = z.infer<typeof ReplyEvent>;

/** Request on tts.v1.vocode.<name> (a real vocoder, GSV_VOCODER=<name>): a normalised log-mel, frames-first [frames, bands]. */
export const VocodeRequest = z.object({
  mel: f32,
  frames: z.number().int().min(1),
  /** Optional epoch ms after which the caller no longer wants the answer. */
  deadline: z.number().optional(),
});
export type VocodeRequest = z.infer<typeof VocodeRequest>;

export const VocodeReply = z.union([
  z.object({ ok: z.literal(true), pcm: f32, sampleRate: z.number().int().positive(), frames: z.number().int(), ms: z.number() }),
  z.object({ ok: z.literal(false), code: z.string(), message: z.string() }),
]);
