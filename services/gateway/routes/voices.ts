/**
 * The voice registry over HTTP: POST /voices (multipart upload: the audio file and its transcript),
 * GET /voices, GET /voices/<id>, DELETE /voices/<id>. A registered voice is usable as OpenAI's `voice`
 * and as api_v2's `ref_audio_path: "voice:<id>"`. Storage: shared/voice-registry.ts.
 */
import { randomBytes } from "node:crypto";
import { decodeWav } from "../../../shared/dsp/index.js";
import { GsvError } from "../../../shared/errors.js";
import { log } from "../../../shared/log.js";
import { sha256Hex, VOICE_ID, type VoiceEntry } from "../../../shared/voice-registry.js";
import { ffmpegAvailable, transcodeToWav } from "../audio-encode.js";
import { readBody, sendJson, type Ctx, type Route } from "../common.js";
import type { Gateway } from "../http.js";
import { boundaryOf, parseMultipart } from "../multipart.js";
import { primeVoice } from "./api-v2.js";

/** Upstream's reference rule: 3 to 10 seconds. */
export const REF_MIN_SECONDS = 3;
export const REF_MAX_SECONDS = 10;
export const DEFAULT_MAX_UPLOAD_BYTES = 8 * 1024 * 1024;

export function voiceRoutes(gw: Gateway): Route[] {
  return [
    { method: "POST", path: "/voices", handle: (ctx) => handleCreate(gw, ctx) },
    { method: "GET", path: "/voices", handle: async (ctx) => sendJson(ctx.res, 200, { voices: (await gw.o.registry.list()).map(publicEntry) }) },
    { method: "GET", path: /^\/voices\/([^/]+)$/, handle: async (ctx) => sendJson(ctx.res, 200, publicEntry(await gw.o.registry.require(checkId(ctx.params[0])))) },
    {
      method: "DELETE",
      path: /^\/voices\/([^/]+)$/,
      handle: async (ctx) => {
        const v = await gw.o.registry.delete(checkId(ctx.params[0]));
        sendJson(ctx.res, 200, { deleted: v.id });
      },
    },
  ];
}

function checkId(id: string): string {
  if (!VOICE_ID.test(id)) throw new GsvError("BAD_PARAMETER", `id: ${JSON.stringify(id)} is not a voice id (1-64 characters of A-Z a-z 0-9 _ -)`);
  return id;
}

/** What the API shows of a voice, with the names it can be used by. */
function publicEntry(v: VoiceEntry) {
  return {
    id: v.id,
    name: v.name,
    prompt_text: v.promptText,
    prompt_lang: v.promptLang,
    seconds: v.seconds,
    sample_rate: v.sampleRate,
    audio_sha256: v.audioSha,
    created_at: v.createdAt,
    ref_audio_path: `voice:${v.id}`,
  };
}

function slug(s: string): string {
  return s
    .normalize("NFKD")
    .replace(/[^A-Za-z0-9_-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 64);
}

async function handleCreate(gw: Gateway, ctx: Ctx): Promise<void> {
  const max = gw.o.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const boundary = boundaryOf(ctx.req.headers["content-type"]);
  const body = await readBody(ctx.req, max, "the upload");
  const parts = parseMultipart(body, boundary);
  const field = (name: string) => parts.find((p) => p.name === name && p.filename === undefined)?.data.toString("utf8").trim();
  const file = parts.find((p) => (p.name === "audio" || p.name === "file") && p.data.length > 0);
  if (!file) throw new GsvError("BAD_PARAMETER", "audio: the form needs an audio file field named \"audio\" (or \"file\")");
  const promptText = field("prompt_text") ?? "";
  if (!promptText) throw new GsvError("BAD_PARAMETER", "prompt_text: the transcript of the recording is required (v3 has no reference-free mode)");
  if (promptText.length > 1000) throw new GsvError("BAD_PARAMETER", "prompt_text: longer than 1000 characters");
  const promptLang = (field("prompt_lang") || "en").toLowerCase();
  if (!/^[a-z_]{2,10}$/.test(promptLang)) throw new GsvError("BAD_PARAMETER", `prompt_lang: ${JSON.stringify(promptLang)} is not a language mode`);
  const name = (field("name") ?? "").slice(0, 200);
  const id = field("id") || slug(name) || slug((file.filename ?? "").replace(/\.[^.]*$/, "")) || `v-${randomBytes(4).toString("hex")}`;
  checkId(id);

  // WAV is read as is; anything else is decoded by ffmpeg (when installed) and stored as WAV.
  const isWav = file.data.length >= 12 && file.data.toString("latin1", 0, 4) === "RIFF" && file.data.toString("latin1", 8, 12) === "WAVE";
  let wav: Uint8Array = file.data;
  if (!isWav) {
    if (!(await ffmpegAvailable())) throw new GsvError("BAD_AUDIO", "the upload is not a WAV file (other formats need ffmpeg, which is not installed)");
    wav = await transcodeToWav(file.data, 4 * max);
  }
  const audio = decodeWav(wav);
  const seconds = audio.samples.length / audio.sampleRate;
  if (seconds < REF_MIN_SECONDS || seconds > REF_MAX_SECONDS) {
    throw new GsvError("REFERENCE_LENGTH", `the recording is ${seconds.toFixed(2)} s long; a reference must be ${REF_MIN_SECONDS} to ${REF_MAX_SECONDS} s`);
  }
  let peak = 0;
  for (const v of audio.samples) peak = Math.max(peak, Math.abs(v));
  if (peak < 1e-4) throw new GsvError("BAD_AUDIO", "the recording is silent");

  const entry = await gw.o.registry.create(
    { id, name, audioSha: sha256Hex(wav), promptText, promptLang, seconds: Math.round(seconds * 1000) / 1000, sampleRate: audio.sampleRate, createdAt: new Date().toISOString() },
    wav,
  );
  // Prepare it now so the first request in this voice does not wait (best effort: the stages may be down).
  primeVoice(gw, entry.audioSha).catch((err: Error) => log.warn("gateway: voice not prepared", { id, error: err.message }));
  sendJson(ctx.res, 201, publicEntry(entry), { Location: `/voices/${entry.id}` });
}
