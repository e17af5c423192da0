/**
 * Upstream GPT-SoVITS api_v2.py, endpoint for endpoint: /tts (GET and POST), /control,
 * /set_refer_audio, /set_gpt_weights, /set_sovits_weights; plus what the unofficial GPT-SoVITS-V2 fork
 * adds that SillyTavern's provider calls (POST / as /tts, GET /speakers). docs/api.md documents them.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { decodeAs, encode } from "../../../shared/codec.js";
import { GsvError, isErrorCode } from "../../../shared/errors.js";
import { VoicePrepareReply } from "../../../shared/schemas.js";
import { Subjects } from "../../../shared/subjects.js";
import { encodeAudio, FORMATS, ffmpegAvailable, type AudioFormat } from "../audio-encode.js";
import { readJsonObject, sendJson, timingHeaders, type Ctx, type Route } from "../common.js";
import { newRequestId, type Gateway, type ResolvedVoice, type SynthJob } from "../http.js";
import { genParams, parseApiV2, queryToObject, type ApiV2Params } from "../params.js";
import { streamAudio } from "../stream.js";
import type { StreamMode } from "../../../shared/streaming.js";

/** The folder (inside the voices directory) where the GPT-SoVITS-V2 fork keeps its named references. */
export const FORK_REF_DIR = "参考音频";

export function apiV2Routes(gw: Gateway): Route[] {
  const tts = (ctx: Ctx) => handleTts(gw, ctx);
  return [
    { method: "GET", path: "/tts", handle: tts },
    { method: "POST", path: "/tts", handle: tts },
    { method: "POST", path: "/", handle: tts }, // the GPT-SoVITS-V2 fork (SillyTavern posts here)
    { method: "GET", path: "/control", handle: (ctx) => handleControl(gw, ctx) },
    { method: "POST", path: "/control", handle: (ctx) => handleControl(gw, ctx) },
    { method: "GET", path: "/set_refer_audio", handle: (ctx) => handleSetReferAudio(gw, ctx) },
    { method: "GET", path: "/set_gpt_weights", handle: (ctx) => handleSetWeights(gw, ctx, "gpt") },
    { method: "GET", path: "/set_sovits_weights", handle: (ctx) => handleSetWeights(gw, ctx, "sovits") },
    { method: "GET", path: "/speakers", handle: (ctx) => handleSpeakers(gw, ctx) },
  ];
}

async function requestParams(gw: Gateway, ctx: Ctx): Promise<Record<string, unknown>> {
  return ctx.req.method === "GET" ? queryToObject(ctx.url) : readJsonObject(ctx.req, gw.o.maxBodyBytes ?? 1024 * 1024);
}

/** Check up front that the format can be produced, before any synthesis work is spent. */
export async function requireEncoder(format: AudioFormat): Promise<void> {
  if (FORMATS[format].ffmpeg && !(await ffmpegAvailable())) {
    throw new GsvError("ENCODER_UNAVAILABLE", `${format} needs ffmpeg, which is not installed (apt-get install -y ffmpeg); wav and raw work without it`);
  }
}

export function apiV2Job(p: ApiV2Params, voice: ResolvedVoice): SynthJob {
  return {
    text: p.text,
    textLang: p.text_lang,
    splitMethod: p.text_split_method,
    voice,
    promptText: p.prompt_text,
    promptLang: p.prompt_lang,
    params: genParams(p, p.speed_factor),
    timeoutMs: p.timeout_ms,
  };
}

async function handleTts(gw: Gateway, ctx: Ctx): Promise<void> {
  const t0 = Date.now();
  const p = parseApiV2(await requestParams(gw, ctx));
  await requireEncoder(p.media_type);
  const voice = await gw.resolveVoice(p.ref_audio_path);
  const job = { ...apiV2Job(p, voice), receivedAt: t0, id: newRequestId() };
  const gatewayMs = Date.now() - t0;
  const gone = gw.clientGone(ctx.res);
  try {
    // streaming_mode 1..3 (docs/streaming.md): audio goes out as it is decoded, in chunked transfer.
    const mode = Number(p.streaming_mode);
    if (mode > 0) {
      const streamed = { ...job, stream: mode as StreamMode };
      await streamAudio(ctx.res, (onAudio) => gw.synthesize({ ...streamed, onAudio }, gone.signal, ctx.req, ctx.res), p.media_type, mode, gatewayMs, { "X-Request-Id": job.id, "X-Gsv-Voice": encodeURIComponent(voice.label) });
      return;
    }
    const result = await gw.synthesize(job, gone.signal, ctx.req, ctx.res);
    const body = await encodeAudio(result.pcm, result.sampleRate, p.media_type);
    ctx.res.writeHead(200, {
      "Content-Type": FORMATS[p.media_type].contentType,
      "Content-Length": body.length,
      ...timingHeaders(result, gatewayMs),
      "X-Gsv-Voice": encodeURIComponent(voice.label),
      "X-Gsv-Streaming-Mode": String(p.streaming_mode),
    });
    ctx.res.end(body);
  } finally {
    gone.done();
  }
}

/**
 * command=restart: forget what earlier requests changed (the default reference set by
 * /set_refer_audio) and answer; the stages keep running (restarting a process is the orchestrator's
 * job). command=exit: answer, then shut the gateway down gracefully (in-flight requests finish).
 */
async function handleControl(gw: Gateway, ctx: Ctx): Promise<void> {
  const raw = await requestParams(gw, ctx);
  const command = raw.command;
  if (command === undefined || command === null || command === "") throw new GsvError("BAD_PARAMETER", "command is required");
  if (command === "restart") {
    gw.restart();
    sendJson(ctx.res, 200, { message: "success", command });
    return;
  }
  if (command === "exit") {
    ctx.res.once("finish", () => gw.o.onExit?.());
    sendJson(ctx.res, 200, { message: "success", command });
    return;
  }
  throw new GsvError("BAD_PARAMETER", `command: ${JSON.stringify(command)} is not one of restart, exit`);
}

/** Ask a sovits-decoder replica to prepare (and cache) a voice: this checks the audio as the pipeline will. */
export async function primeVoice(gw: Gateway, audioSha: string, timeoutMs = 30_000): Promise<void> {
  let m;
  try {
    m = await gw.o.nc.request(Subjects.voicePrepare, encode({ audioSha, deadline: Date.now() + timeoutMs }), { timeout: timeoutMs });
  } catch (err) {
    throw new GsvError("STAGE_UNAVAILABLE", `no sovits-decoder replica prepared the voice: ${(err as Error).message}`);
  }
  const r = decodeAs(VoicePrepareReply, m.data);
  if (!r.ok) throw new GsvError(isErrorCode(r.code) ? r.code : "INTERNAL", r.message);
}

/** Upstream primes its prompt cache with the file; we check it, prepare the voice, and make it the default. */
async function handleSetReferAudio(gw: Gateway, ctx: Ctx): Promise<void> {
  const path = ctx.url.searchParams.get("refer_audio_path");
  if (!path) throw new GsvError("BAD_PARAMETER", "refer_audio_path is required");
  const voice = await gw.resolveVoice(path);
  await primeVoice(gw, voice.audioSha);
  gw.defaultRef = path;
  sendJson(ctx.res, 200, { message: "success" });
}

/**
 * Switch the GPT or SoVITS model set of new requests (docs/api.md): `weights_path` names a set under the
 * models root. 200 only once the stages have loaded it and it fits the other half of the selection;
 * requests admitted earlier finish on their old sets.
 */
async function handleSetWeights(gw: Gateway, ctx: Ctx, which: "gpt" | "sovits"): Promise<void> {
  const path = ctx.url.searchParams.get("weights_path");
  if (!path) throw new GsvError("BAD_PARAMETER", `${which} weight path is required`);
  if (!gw.o.models) throw new GsvError("NOT_SUPPORTED", "this gateway runs without model-set switching");
  const sel = await gw.o.models.switchTo(which, path);
  sendJson(ctx.res, 200, { message: "success", model_set: which === "gpt" ? sel.gpt : sel.sovits, models: sel });
}

/** The GPT-SoVITS-V2 fork's speaker list: one entry per WAV in voices/参考音频, named by its file name. */
async function handleSpeakers(gw: Gateway, ctx: Ctx): Promise<void> {
  const files = await readdir(join(gw.o.voicesDir, FORK_REF_DIR)).catch(() => [] as string[]);
  const names = files.filter((f) => /\.wav$/i.test(f)).map((f) => f.replace(/\.wav$/i, "")).sort();
  sendJson(ctx.res, 200, names.map((n) => ({ name: n, voice_id: n })));
}
