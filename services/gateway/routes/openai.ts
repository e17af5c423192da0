/**
 * OpenAI-compatible speech: POST /v1/audio/speech (and GET /v1/models), so OpenAI SDKs and tools
 * built on them work by changing their base URL. Audio is streamed as it is synthesised:
 * `stream_format: "audio"` as chunked encoded bytes, `"sse"` as `speech.audio.delta` events with
 * base64 audio and one `speech.audio.done` event. Errors use OpenAI's `{"error": {...}}` shape.
 */
import { z } from "zod";
import { GsvError } from "../../../shared/errors.js";
import { SplitMethods } from "../../../shared/schemas.js";
import { AudioEncoderStream, FORMATS, type AudioFormat } from "../audio-encode.js";
import { readJsonObject, sendJson, VOICE_PREFIX, type Ctx, type Route } from "../common.js";
import type { Gateway, ResolvedVoice, SynthJob } from "../http.js";
import type { ModelSelection } from "../../../shared/model-sets.js";
import { genParams, intParam, numParam, paramError } from "../params.js";
import { requireEncoder } from "./api-v2.js";

/** Model names accepted in `model`; all are served by the one model set the stages run. */
export const OPENAI_MODELS = ["gpt-sovits-v3", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"] as const;
/** OpenAI's built-in voice names: they speak with the server's default reference unless registered. */
export const OPENAI_VOICES = ["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"];

const RESPONSE_FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"] as const;
const toAudioFormat = (f: (typeof RESPONSE_FORMATS)[number]): AudioFormat => (f === "pcm" ? "raw" : f);

const SpeechRequest = z.object({
  model: z.string({ error: "model is required" }).min(1, "model is required"),
  input: z.string({ error: "input is required" }),
  voice: z.union([z.string().min(1), z.object({ id: z.string().min(1) })], { error: "voice is required (a name or {\"id\": ...})" }),
  response_format: z.preprocess((v) => v ?? undefined, z.enum(RESPONSE_FORMATS, { error: `must be one of ${RESPONSE_FORMATS.join(", ")}` }).default("mp3")),
  speed: numParam(1, (n) => n >= 0.25 && n <= 4, "in [0.25, 4]"),
  /** Accepted and ignored: GPT-SoVITS takes its style from the reference voice (docs/api.md). */
  instructions: z.string({ error: "must be a string" }).max(4096).optional(),
  stream_format: z.preprocess((v) => v ?? undefined, z.enum(["audio", "sse"], { error: "must be audio or sse" }).default("audio")),
  // GPT-SoVITS extras (not OpenAI): same meaning and defaults as api_v2.
  text_lang: z.string().default("auto").transform((s) => s.toLowerCase()),
  prompt_text: z.string().optional(),
  prompt_lang: z.string().optional().transform((s) => s?.toLowerCase()),
  text_split_method: z.enum(SplitMethods).default("cut5"),
  seed: intParam(-1, -1, 4294967295),
  sample_steps: intParam(32, 1, 128),
  top_k: intParam(15, 1, 1025),
  top_p: numParam(1, (n) => n > 0 && n <= 1, "in (0, 1]"),
  temperature: numParam(1, (n) => n > 0 && n <= 100, "in (0, 100]"),
  repetition_penalty: numParam(1.35, (n) => n > 0 && n <= 10, "in (0, 10]"),
  fragment_interval: numParam(0.3, (n) => n >= 0 && n <= 10, "in [0, 10]"),
});

export function openaiRoutes(gw: Gateway): Route[] {
  return [
    { method: "POST", path: "/v1/audio/speech", style: "openai", handle: (ctx) => handleSpeech(gw, ctx) },
    { method: "GET", path: "/v1/models", style: "openai", handle: (ctx) => handleModels(gw, ctx) },
  ];
}

/** OpenAI's model names (the current selection), then the model sets under the models root. */
async function handleModels(gw: Gateway, ctx: Ctx): Promise<void> {
  const sets = (await gw.o.models?.available()) ?? [];
  const ids = [...OPENAI_MODELS, ...sets.filter((s) => !(OPENAI_MODELS as readonly string[]).includes(s))];
  sendJson(ctx.res, 200, { object: "list", data: ids.map((id) => ({ id, object: "model", created: 0, owned_by: "gsv-pipeline" })) });
}

/** OpenAI's `voice`: a registered voice id (bare, "voice:<id>" or {"id"}); OpenAI's built-in names and "default" fall back to the default reference. */
async function resolveOpenAiVoice(gw: Gateway, voice: string | { id: string }): Promise<ResolvedVoice> {
  const id = typeof voice === "string" ? voice : voice.id;
  const bare = id.startsWith(VOICE_PREFIX) ? id.slice(VOICE_PREFIX.length) : id;
  const registered = await gw.o.registry.get(bare);
  if (registered) return { audioSha: registered.audioSha, promptText: registered.promptText, promptLang: registered.promptLang, label: VOICE_PREFIX + bare };
  if (bare === "default" || OPENAI_VOICES.includes(bare)) return gw.resolveVoice(undefined);
  throw new GsvError("NOT_FOUND", `voice: ${JSON.stringify(id)} is not registered (GET /voices lists the registered voices; "default" is the server's default voice)`);
}

async function handleSpeech(gw: Gateway, ctx: Ctx): Promise<void> {
  const raw = await readJsonObject(ctx.req, gw.o.maxBodyBytes ?? 1024 * 1024);
  const parsed = SpeechRequest.safeParse(raw);
  if (!parsed.success) {
    throw paramError(parsed.error);
  }
  const p = parsed.data;
  if (!p.input.trim()) throw new GsvError("MISSING_TEXT", "input: must not be empty");
  // A model set's name runs the request on that set (GPT and SoVITS halves); OpenAI's names on the current selection.
  let models: ModelSelection | undefined;
  if (!(OPENAI_MODELS as readonly string[]).includes(p.model)) {
    const notServed = () => new GsvError("BAD_PARAMETER", `model: ${JSON.stringify(p.model)} is not served; use one of ${OPENAI_MODELS.join(", ")} or a model set (GET /v1/models)`);
    if (!gw.o.models) {
      if (!(await gw.servedModelSets()).includes(p.model)) throw notServed();
    } else {
      models = await gw.o.models.forRequest(p.model).catch((err: unknown) => {
        throw err instanceof GsvError && (err.code === "UNKNOWN_MODEL_SET" || err.code === "BAD_PARAMETER") ? notServed() : err;
      });
    }
  }
  const format = toAudioFormat(p.response_format);
  await requireEncoder(format);
  const voice = await resolveOpenAiVoice(gw, p.voice);
  const job: SynthJob = {
    text: p.input,
    textLang: p.text_lang,
    splitMethod: p.text_split_method,
    voice,
    promptText: p.prompt_text ?? "",
    promptLang: p.prompt_lang,
    params: genParams(p, p.speed),
    timeoutMs: 0,
    ...(models ? { models } : {}),
  };
  await streamSpeech(gw, ctx, job, format, p.stream_format, p.input.length);
}

/**
 * Synthesize and stream: PCM pieces go through the encoder as they arrive; the status line and
 * headers are written with the first encoded bytes, so an error before any audio is still a proper
 * JSON error. An error after that ends an SSE stream with an `error` event, and cuts an audio stream.
 */
async function streamSpeech(gw: Gateway, ctx: Ctx, job: SynthJob, format: AudioFormat, mode: "audio" | "sse", inputChars: number): Promise<void> {
  const { res } = ctx;
  const sse = mode === "sse";
  let started = false;
  const begin = () => {
    if (started) return;
    started = true;
    res.writeHead(200, sse ? { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no" } : { "Content-Type": FORMATS[format].contentType });
  };
  const send = (chunk: Uint8Array) => {
    begin();
    if (sse) res.write(`data: ${JSON.stringify({ type: "speech.audio.delta", audio: Buffer.from(chunk).toString("base64") })}\n\n`);
    else res.write(chunk);
  };
  let enc: AudioEncoderStream | undefined;
  job.onAudio = (pcm, sampleRate) => {
    enc ??= new AudioEncoderStream(format, sampleRate, send);
    enc.write(pcm);
  };
  const gone = gw.clientGone(res);
  try {
    const result = await gw.synthesize(job, gone.signal, ctx.req, ctx.res);
    enc ??= new AudioEncoderStream(format, result.sampleRate, send);
    await enc.end();
    begin();
    if (sse) {
      const outputTokens = result.tokens.reduce((a, b) => a + b, 0);
      res.write(`data: ${JSON.stringify({ type: "speech.audio.done", usage: { input_tokens: inputChars, output_tokens: outputTokens, total_tokens: inputChars + outputTokens } })}\n\n`);
    }
    res.end();
  } catch (err) {
    enc?.abort();
    if (started && sse && !res.writableEnded) {
      const e = err instanceof GsvError ? err : new GsvError("INTERNAL", (err as Error).message);
      res.end(`data: ${JSON.stringify({ type: "error", error: { message: e.message, type: "server_error", code: e.code } })}\n\n`);
      return;
    }
    throw err;
  } finally {
    gone.done();
  }
}
