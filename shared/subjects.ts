/**
 * Every NATS name the project uses: subjects, streams, consumers, buckets. Nothing else spells one.
 * Subjects are versioned under one prefix so a v2 protocol can run beside v1 on the same cluster.
 */
export const PREFIX = "tts.v1";

export const Stages = ["text", "gpt", "sovits", "vocoder"] as const;
export type Stage = (typeof Stages)[number];

/** One JetStream work-queue stream per stage, one durable pull consumer shared by the stage's replicas. */
export const WorkQueues: Record<Stage, { stream: string; subject: string; consumer: string }> = {
  text: { stream: "TTS_TEXT", subject: `${PREFIX}.work.text`, consumer: "text-frontend" },
  gpt: { stream: "TTS_GPT", subject: `${PREFIX}.work.gpt`, consumer: "gpt-semantic" },
  sovits: { stream: "TTS_SOVITS", subject: `${PREFIX}.work.sovits`, consumer: "sovits-decoder" },
  vocoder: { stream: "TTS_VOCODER", subject: `${PREFIX}.work.vocoder`, consumer: "vocoder" },
};

export const Subjects = {
  /** Request/reply (NATS services API endpoint of sovits-decoder): make sure a voice is prepared. */
  voicePrepare: `${PREFIX}.voice.prepare`,
  /** Publish an empty message here to cancel a request; every stage listens on the wildcard. */
  cancel: (requestId: string) => `${PREFIX}.cancel.${requestId}`,
  cancelAll: `${PREFIX}.cancel.*`,
  /** Default reply subject of a request; clients may name any subject they subscribe to. */
  reply: (requestId: string) => `${PREFIX}.reply.${requestId}`,
  /** Request/reply: copy synthesis with a real vocoder served by `GSV_VOCODER=<name>` (see docs/real-vocoder.md). */
  vocode: (name: string) => `${PREFIX}.vocode.${name}`,
  /** Request, every replica answers: its counters, queue depth and recent figures (`gsv top`). */
  status: (service: string) => `${PREFIX}.status.${service}`,
  /** Request/reply (services API, one replica of the stage answers): load a model set and describe it (shared/model-sets.ts). */
  modelsLoad: (service: string) => `${PREFIX}.models.load.${service}`,
  /** After a switch: every replica of the service loads the set in the background (no reply). */
  modelsPreload: (service: string) => `${PREFIX}.models.preload.${service}`,
  /** Request, every gateway replica answers: its recent requests with per-stage timings (`gsv profile`). */
  recentRequests: (service: string) => `${PREFIX}.recent.${service}`,
} as const;

export const Buckets = {
  /** KV: prepared voices (prompt tokens, ge, reference mel), keyed by model set and audio hash. */
  voices: "tts_voices",
  /** Object store: reference audio by content hash. */
  refAudio: "tts_ref_audio",
  /** KV: registered voices (id → audio sha, prompt text and language); see shared/voice-registry.ts. */
  voiceRegistry: "tts_voice_registry",
  /** KV: tokens so far of streamed segments, written by gpt-semantic, read by sovits-decoder (docs/streaming.md). */
  tokens: "tts_tokens",
  /** KV: the model sets new requests run on (key `current`), written by /set_*_weights, watched by every gateway. */
  modelSelection: "tts_model_selection",
} as const;

/** The services-API name of each process. */
export const ServiceNames: Record<Stage | "gateway", string> = {
  text: "text-frontend",
  gpt: "gpt-semantic",
  sovits: "sovits-decoder",
  vocoder: "vocoder",
  gateway: "gateway",
};

/** Voice KV key: safe characters only (KV keys allow [-/_=.a-zA-Z0-9]). */
export function voiceKey(modelSetSha: string, audioSha: string): string {
  return `${modelSetSha.slice(0, 16)}.${audioSha}`;
}

/**
 * Whether a stage may publish a request's events to `subject`: literal tokens only (no wildcards, no
 * spaces), never a system subject (`$JS.API.…`, `$SYS…`: a hostile reply could delete a stream), and
 * inside the project's prefix only under `tts.v1.reply.` (not onto a work queue or another request's cancel).
 */
export function isSafeReplySubject(subject: string): boolean {
  if (subject.length === 0 || subject.length > 256) return false;
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(subject)) return false;
  return !subject.startsWith(`${PREFIX}.`) || subject.startsWith(`${PREFIX}.reply.`);
}
