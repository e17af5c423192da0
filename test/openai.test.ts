/**
 * The OpenAI-compatible API, driven by the official `openai` npm client pointed at the gateway:
 * /v1/audio/speech in every response_format, streamed as audio and as SSE events, the same audio as
 * api_v2 for the same settings, OpenAI-shaped errors, and a voice registered by a plain NATS client.
 */
import t from "tap";
import OpenAI from "openai";
import { connect } from "nats";
import { readFileSync } from "node:fs";
import { decodeWav } from "../shared/dsp/index.js";
import { fromRoot } from "../shared/paths.js";
import { Buckets } from "../shared/subjects.js";
import { sha256Hex } from "../shared/voice-registry.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV } from "./helpers/stack.js";
import { ffmpegDecode, ffprobe } from "./helpers/ffmpeg.js";

let stack: Stack;
let client: OpenAI;
t.before(async () => {
  stack = await startStack({ env: { ...TEST_ENV } });
  client = new OpenAI({ baseURL: `${stack.gatewayUrl}/v1`, apiKey: "not-checked", maxRetries: 0 });
});
t.teardown(() => stack?.stop());

/** GPT-SoVITS extras the gateway accepts beside OpenAI's fields (fixed seed, fast CFM, English). */
const extras = { text_lang: "en", seed: 9, sample_steps: 2 };
const input = "Speech through the OpenAI client.";
type Params = OpenAI.Audio.SpeechCreateParams;

async function speech(p: Partial<Params> & Record<string, unknown>): Promise<{ bytes: Uint8Array; type: string | null }> {
  const res = await client.audio.speech.create({ model: "tts-1", input, voice: "alloy", ...extras, ...p } as Params);
  return { bytes: new Uint8Array(await res.arrayBuffer()), type: res.headers.get("content-type") };
}

async function apiV2(extra: Record<string, unknown> = {}): Promise<Response> {
  return fetch(`${stack.gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: input, text_lang: "en", seed: 9, sample_steps: 2, ...extra }) });
}

function int16(x: Float32Array): number[] {
  return Array.from(x, (v) => Math.round(v * 32768));
}

t.test("openai - the official client gets wav that equals api_v2's answer for the same settings", async (t) => {
  const wav = await speech({ response_format: "wav" });
  t.equal(wav.type, "audio/wav");
  const ours = decodeWav(wav.bytes);
  t.equal(ours.sampleRate, 24000);
  const ref = await apiV2();
  t.equal(ref.status, 200);
  const theirs = decodeWav(new Uint8Array(await ref.arrayBuffer()));
  t.ok(ours.samples.length > 24000 * 0.3, `${ours.samples.length} samples`);
  t.same(int16(ours.samples), int16(theirs.samples), "same samples as /tts (alloy speaks with the default voice)");
  const pcm = await speech({ response_format: "pcm" });
  t.equal(pcm.bytes.length, 2 * theirs.samples.length, "pcm: 24 kHz 16-bit mono, as OpenAI's pcm");
  const slower = await speech({ response_format: "pcm", speed: 0.5 });
  t.ok(slower.bytes.length > pcm.bytes.length * 1.5, "speed 0.5 makes it longer");
});

t.test("openai - every response_format decodes with ffmpeg as the format it claims", async (t) => {
  const want: Record<string, [string, string]> = { mp3: ["mp3", "audio/mpeg"], opus: ["opus", "audio/ogg; codecs=opus"], aac: ["aac", "audio/aac"], flac: ["flac", "audio/flac"] };
  for (const [fmt, [codec, type]] of Object.entries(want)) {
    const r = await speech({ response_format: fmt as Params["response_format"] });
    t.equal(r.type, type, `${fmt}: content type`);
    t.equal(ffprobe(r.bytes).codec, codec, `${fmt}: codec`);
    t.ok(ffmpegDecode(r.bytes).length > 1000, `${fmt}: decodes to audio`);
  }
  const dflt = await client.audio.speech.create({ model: "tts-1", input, voice: "alloy", ...extras } as Params);
  t.equal(dflt.headers.get("content-type"), "audio/mpeg", "mp3 is the default, as OpenAI's");
  await dflt.arrayBuffer();
});

t.test("openai - stream_format sse: speech.audio.delta events carry base64 audio, then speech.audio.done with usage", async (t) => {
  const res = await client.audio.speech.create({ model: "gpt-4o-mini-tts", input, voice: "alloy", response_format: "pcm", stream_format: "sse", instructions: "Speak cheerfully.", ...extras } as Params);
  t.equal(res.headers.get("content-type"), "text/event-stream");
  const text = await res.text();
  const events = text
    .split("\n\n")
    .filter((b) => b.trim())
    .map((b) => {
      t.ok(b.startsWith("data: "), "every event is a data: line");
      return JSON.parse(b.slice(6)) as { type: string; audio?: string; usage?: { input_tokens: number; output_tokens: number; total_tokens: number } };
    });
  const deltas = events.filter((e) => e.type === "speech.audio.delta");
  t.ok(deltas.length >= 1, `${deltas.length} delta events`);
  t.equal(events.at(-1)?.type, "speech.audio.done", "done comes last");
  t.equal(events.filter((e) => e.type === "speech.audio.done").length, 1);
  const usage = events.at(-1)!.usage!;
  t.equal(usage.total_tokens, usage.input_tokens + usage.output_tokens);
  t.ok(usage.output_tokens > 0);
  const audio = Buffer.concat(deltas.map((d) => Buffer.from(d.audio!, "base64")));
  const plain = await speech({ response_format: "pcm" });
  t.ok(audio.equals(Buffer.from(plain.bytes)), "the deltas joined are the pcm answer, byte for byte");
  const mp3 = await client.audio.speech.create({ model: "tts-1", input, voice: "alloy", response_format: "mp3", stream_format: "sse", ...extras } as Params);
  const mp3Audio = Buffer.concat(
    (await mp3.text())
      .split("\n\n")
      .filter((b) => b.trim())
      .map((b) => JSON.parse(b.slice(6)) as { type: string; audio?: string })
      .filter((e) => e.type === "speech.audio.delta")
      .map((e) => Buffer.from(e.audio!, "base64")),
  );
  t.equal(ffprobe(mp3Audio).codec, "mp3", "sse deltas in mp3 join into an mp3 stream");
});

t.test("openai - errors come back in OpenAI's shape and the client raises them", async (t) => {
  const cases: [string, Record<string, unknown>, number, string, string | null][] = [
    ["unknown voice", { voice: "nobody-here" }, 404, "NOT_FOUND", "voice"],
    ["unknown response_format", { response_format: "wma" }, 400, "BAD_PARAMETER", "response_format"],
    ["unknown model", { model: "whisper-1" }, 400, "BAD_PARAMETER", "model"],
    ["speed out of range", { speed: 5 }, 400, "BAD_PARAMETER", "speed"],
    ["empty input", { input: "  " }, 400, "MISSING_TEXT", "input"],
    ["unknown stream_format", { stream_format: "ws" }, 400, "BAD_PARAMETER", "stream_format"],
    ["unknown language", { text_lang: "xx" }, 400, "UNKNOWN_LANGUAGE", null],
  ];
  for (const [name, p, status, code, param] of cases) {
    try {
      await speech(p);
      t.fail(`${name}: should have failed`);
    } catch (err) {
      t.ok(err instanceof OpenAI.APIError, `${name}: an OpenAI.APIError`);
      const e = err as InstanceType<typeof OpenAI.APIError>;
      t.equal(e.status, status, `${name}: status`);
      t.equal(e.code, code, `${name}: code`);
      const body = e.error as { message: string; type: string; param: string | null };
      t.ok(body.message.length > 5, `${name}: ${body.message}`);
      t.equal(body.type, status >= 500 ? "server_error" : "invalid_request_error");
      if (param) t.equal(body.param, param, `${name}: param`);
    }
  }
  const raw = await fetch(`${stack.gatewayUrl}/v1/audio/speech`, { method: "POST", headers: { "content-type": "application/json" }, body: "{oops" });
  t.equal(raw.status, 400);
  t.equal(((await raw.json()) as { error: { code: string } }).error.code, "BAD_REQUEST");
});

t.test("openai - a voice registered by a plain NATS client (object store + KV) is usable by id", async (t) => {
  const nc = await connect({ servers: stack.natsUrl });
  t.teardown(() => nc.close());
  const js = nc.jetstream();
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const sha = sha256Hex(wav);
  const os = await js.views.os(Buckets.refAudio);
  if (!(await os.info(sha))) await os.putBlob({ name: sha }, wav);
  const kv = await js.views.kv(Buckets.voiceRegistry);
  const promptText = readFileSync(fromRoot("voices", "default.txt"), "utf8").trim();
  await kv.put("narrator", JSON.stringify({ id: "narrator", name: "Narrator", audioSha: sha, promptText, promptLang: "en" }));

  const listed = (await (await fetch(`${stack.gatewayUrl}/voices`)).json()) as { voices: { id: string }[] };
  t.ok(listed.voices.some((v) => v.id === "narrator"), "GET /voices lists it");
  const byId = await speech({ voice: "narrator", response_format: "pcm" });
  const byObject = await speech({ voice: { id: "narrator" }, response_format: "pcm" });
  const viaApiV2 = await apiV2({ ref_audio_path: "voice:narrator", media_type: "raw" });
  t.equal(viaApiV2.status, 200);
  const v2 = new Uint8Array(await viaApiV2.arrayBuffer());
  t.ok(Buffer.from(byId.bytes).equals(Buffer.from(v2)), "OpenAI voice \"narrator\" = api_v2 ref_audio_path \"voice:narrator\"");
  t.ok(Buffer.from(byObject.bytes).equals(Buffer.from(v2)), "voice {\"id\": \"narrator\"} too");
  // Same recording and transcript as the default voice, so the same audio as "alloy".
  const alloy = await speech({ response_format: "pcm" });
  t.ok(Buffer.from(alloy.bytes).equals(Buffer.from(byId.bytes)), "the registry resolves to the same recording");

  await kv.put("broken", JSON.stringify({ id: "broken", audioSha: "nothex" }));
  try {
    await speech({ voice: "broken" });
    t.fail("a malformed registry entry must not be used");
  } catch (err) {
    t.equal((err as InstanceType<typeof OpenAI.APIError>).status, 400, "a malformed entry is a clear 400");
  }
});

t.test("openai - GET /v1/models lists what `model` accepts", async (t) => {
  const ids: string[] = [];
  for await (const m of client.models.list()) ids.push(m.id);
  for (const id of ["gpt-sovits-v3", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]) t.ok(ids.includes(id), id);
  const v3 = await speech({ model: "gpt-sovits-v3", response_format: "pcm" });
  t.ok(v3.bytes.length > 0, "each listed model is accepted");
});

t.test("openai - SillyTavern's OpenAI-compatible TTS provider, its request replayed unchanged", async (t) => {
  // src/endpoints/openai.js, custom /generate-voice: the body it posts to the provider endpoint, with
  // the provider's defaults (model tts-1, voice alloy, speed 1, mp3). No language: text_lang is auto.
  const res = await fetch(`${stack.gatewayUrl}/v1/audio/speech`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer sk-anything" },
    body: JSON.stringify({ input: "Hello from SillyTavern.", response_format: "mp3", voice: "alloy", speed: 1, model: "tts-1" }),
  });
  const data = new Uint8Array(await res.arrayBuffer());
  t.equal(res.status, 200, res.ok ? "200" : new TextDecoder().decode(data));
  t.equal(res.headers.get("content-type"), "audio/mpeg");
  t.equal(ffprobe(data).codec, "mp3");
  t.ok(ffmpegDecode(data).length > 24000 * 0.3, "some speech came back");
});
