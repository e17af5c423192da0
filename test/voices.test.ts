/**
 * The voice registry over HTTP against the real stack: multipart upload (WAV, or any format ffmpeg
 * reads), listing, use by api_v2 and OpenAI, deletion, and every bad upload (too big, not audio, too
 * short or long, silent, bad id, duplicate, not multipart).
 */
import t from "tap";
import { mkdtempSync, readFileSync, rmSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "nats";
import { decodeWav, encodeWav } from "../shared/dsp/index.js";
import { fromRoot } from "../shared/paths.js";
import { Buckets } from "../shared/subjects.js";
import { sha256Hex } from "../shared/voice-registry.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV } from "./helpers/stack.js";
import { ffmpegEncode } from "./helpers/ffmpeg.js";

const MAX_UPLOAD = 400_000;
const voices = mkdtempSync(join(tmpdir(), "gsv-voices-"));
copyFileSync(fromRoot("voices", "default.wav"), join(voices, "default.wav"));
copyFileSync(fromRoot("voices", "default.txt"), join(voices, "default.txt"));
const wav = new Uint8Array(readFileSync(fromRoot("voices", "default.wav")));
const transcript = readFileSync(fromRoot("voices", "default.txt"), "utf8").trim();

let stack: Stack;
let url: string;
t.before(async () => {
  stack = await startStack({ env: { ...TEST_ENV, GSV_VOICES_DIR: voices, GSV_MAX_UPLOAD_BYTES: String(MAX_UPLOAD) } });
  url = stack.gatewayUrl;
});
t.teardown(async () => {
  await stack?.stop();
  rmSync(voices, { recursive: true, force: true });
});

interface Json {
  code?: string;
  message?: string;
  id?: string;
  [k: string]: unknown;
}

async function upload(fields: Record<string, string>, file?: { bytes: Uint8Array; name: string; type?: string; field?: string }): Promise<{ status: number; json: Json; headers: Headers }> {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  if (file) form.append(file.field ?? "audio", new Blob([file.bytes], { type: file.type ?? "audio/wav" }), file.name);
  const res = await fetch(`${url}/voices`, { method: "POST", body: form });
  return { status: res.status, json: (await res.json()) as Json, headers: res.headers };
}

async function tts(body: Record<string, unknown>): Promise<{ status: number; data: Uint8Array; json?: Json }> {
  const res = await fetch(`${url}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: "A registered voice.", text_lang: "en", seed: 13, sample_steps: 2, media_type: "raw", ...body }) });
  const data = new Uint8Array(await res.arrayBuffer());
  return { status: res.status, data, json: res.ok ? undefined : (JSON.parse(new TextDecoder().decode(data)) as Json) };
}

t.test("voices - upload a WAV, list it, speak with it by api_v2 and OpenAI, delete it", async (t) => {
  const up = await upload({ id: "alice", name: "Alice", prompt_text: transcript, prompt_lang: "en" }, { bytes: wav, name: "alice.wav" });
  t.equal(up.status, 201, up.json.message ?? "created");
  t.equal(up.headers.get("location"), "/voices/alice");
  t.equal(up.json.id, "alice");
  t.equal(up.json.ref_audio_path, "voice:alice");
  t.equal(up.json.audio_sha256, sha256Hex(wav), "a WAV upload is stored as sent (content-addressed)");
  t.ok(Math.abs((up.json.seconds as number) - 6.05) < 0.01, `seconds ${up.json.seconds}`);

  const list = (await (await fetch(`${url}/voices`)).json()) as { voices: Json[] };
  t.same(list.voices.map((v) => v.id), ["alice"]);
  const one = (await (await fetch(`${url}/voices/alice`)).json()) as Json;
  t.equal(one.prompt_text, transcript);

  // The object store holds the audio under its hash; the KV entry names it.
  const nc = await connect({ servers: stack.natsUrl });
  t.teardown(() => nc.close());
  const os = await nc.jetstream().views.os(Buckets.refAudio);
  t.ok(await os.info(sha256Hex(wav)), "audio in the object store by sha256");
  const kv = await nc.jetstream().views.kv(Buckets.voiceRegistry);
  t.equal((JSON.parse(new TextDecoder().decode((await kv.get("alice"))!.value)) as Json).audioSha, sha256Hex(wav), "metadata in KV");

  const byVoice = await tts({ ref_audio_path: "voice:alice" });
  const byFile = await tts({ ref_audio_path: "default.wav" });
  t.equal(byVoice.status, 200, byVoice.json?.message);
  t.ok(Buffer.from(byVoice.data).equals(Buffer.from(byFile.data)), "voice:alice speaks exactly as the same recording by path");
  const openai = await fetch(`${url}/v1/audio/speech`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "tts-1", input: "A registered voice.", voice: "alice", response_format: "pcm", text_lang: "en", seed: 13, sample_steps: 2 }) });
  t.equal(openai.status, 200);
  t.ok(Buffer.from(await openai.arrayBuffer()).equals(Buffer.from(byVoice.data)), "OpenAI voice \"alice\" is the same voice");

  const dup = await upload({ id: "alice", prompt_text: transcript }, { bytes: wav, name: "again.wav" });
  t.equal(dup.status, 409);
  t.equal(dup.json.code, "ALREADY_EXISTS");

  const del = await fetch(`${url}/voices/alice`, { method: "DELETE" });
  t.equal(del.status, 200);
  t.same(await del.json(), { deleted: "alice" });
  t.equal((await fetch(`${url}/voices/alice`)).status, 404, "gone from GET");
  const after = await tts({ ref_audio_path: "voice:alice" });
  t.equal(after.status, 404);
  t.equal(after.json?.code, "NOT_FOUND");
  t.equal((await fetch(`${url}/voices/alice`, { method: "DELETE" })).status, 404, "deleting twice is NOT_FOUND");
  const again = await upload({ id: "alice", prompt_text: transcript }, { bytes: wav, name: "alice.wav" });
  t.equal(again.status, 201, "a deleted id can be registered again");
  t.equal((await tts({ ref_audio_path: "voice:alice" })).status, 200, "and is usable at once");
  t.equal((await fetch(`${url}/voices/alice`, { method: "DELETE" })).status, 200);
  t.equal((await tts({ ref_audio_path: "default.wav" })).status, 200, "the same recording by path still works (its audio is uploaded again)");
});

t.test("voices - a non-WAV upload (mp3) is decoded by ffmpeg and stored as WAV", async (t) => {
  const mp3 = ffmpegEncode(wav, ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"]);
  const up = await upload({ name: "Bob the Builder", prompt_text: transcript }, { bytes: mp3, name: "bob.mp3", type: "audio/mpeg" });
  t.equal(up.status, 201, up.json.message ?? "");
  t.equal(up.json.id, "Bob-the-Builder", "the id defaults to the name, made safe");
  t.equal(up.json.prompt_lang, "en", "prompt_lang defaults to en");
  t.ok(Math.abs((up.json.seconds as number) - 6.05) < 0.15, `decoded length (mp3 adds its encoder delay and padding) ${up.json.seconds} s`);
  t.equal(up.json.sample_rate, 16000);
  const nc = await connect({ servers: stack.natsUrl });
  t.teardown(() => nc.close());
  const stored = await (await nc.jetstream().views.os(Buckets.refAudio)).getBlob(up.json.audio_sha256 as string);
  t.ok(stored, "stored");
  t.equal(decodeWav(stored!).sampleRate, 16000, "stored as a WAV our decoder reads");
  const r = await tts({ ref_audio_path: "voice:Bob-the-Builder" });
  t.equal(r.status, 200, r.json?.message);
});

t.test("voices - bad uploads are clear coded errors", async (t) => {
  const tone = (s: number, amp = 0.3) => encodeWav(Float32Array.from({ length: Math.round(16000 * s) }, (_, i) => amp * Math.sin(i / 5)), 16000);
  const big = encodeWav(new Float32Array(250_000).map((_, i) => 0.2 * Math.sin(i / 3)), 16000); // 500 kB > 400 kB
  const cases: [string, Record<string, string>, Parameters<typeof upload>[1], number, string][] = [
    ["oversize", { id: "big", prompt_text: "x" }, { bytes: big, name: "big.wav" }, 413, "PAYLOAD_TOO_LARGE"],
    ["not audio", { id: "text", prompt_text: "x" }, { bytes: new TextEncoder().encode("this is not audio, only text ".repeat(20)), name: "notes.wav" }, 400, "BAD_AUDIO"],
    ["too short", { id: "short", prompt_text: "x" }, { bytes: tone(1.5), name: "short.wav" }, 400, "REFERENCE_LENGTH"],
    ["too long", { id: "long", prompt_text: "x" }, { bytes: tone(11), name: "long.wav" }, 400, "REFERENCE_LENGTH"],
    ["silent", { id: "quiet", prompt_text: "x" }, { bytes: tone(4, 0), name: "quiet.wav" }, 400, "BAD_AUDIO"],
    ["no transcript", { id: "nott" }, { bytes: wav, name: "v.wav" }, 400, "BAD_PARAMETER"],
    ["no file", { id: "nofile", prompt_text: "x" }, undefined, 400, "BAD_PARAMETER"],
    ["id with a path", { id: "../../etc", prompt_text: "x" }, { bytes: wav, name: "v.wav" }, 400, "BAD_PARAMETER"],
    ["id too long", { id: "x".repeat(65), prompt_text: "x" }, { bytes: wav, name: "v.wav" }, 400, "BAD_PARAMETER"],
    ["bad prompt_lang", { id: "lang", prompt_text: "x", prompt_lang: "en; rm -rf" }, { bytes: wav, name: "v.wav" }, 400, "BAD_PARAMETER"],
  ];
  for (const [name, fields, file, status, code] of cases) {
    const r = await upload(fields, file);
    t.equal(r.status, status, `${name}: status`);
    t.equal(r.json.code, code, `${name}: ${r.json.message}`);
  }
  const json = await fetch(`${url}/voices`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  t.equal(json.status, 400, "not multipart");
  t.equal(((await json.json()) as Json).code, "BAD_REQUEST");
  const broken = await fetch(`${url}/voices`, { method: "POST", headers: { "content-type": "multipart/form-data; boundary=XYZ" }, body: "--XYZ\r\nContent-Disposition: form-data; name=\"audio\"\r\n\r\nunterminated" });
  t.equal(((await broken.json()) as Json).code, "BAD_REQUEST", "a malformed multipart body");
  const list = (await (await fetch(`${url}/voices`)).json()) as { voices: Json[] };
  t.notOk(list.voices.some((v) => ["big", "text", "short", "long", "quiet", "nott", "nofile", "lang"].includes(v.id as string)), "nothing bad was registered");
  t.equal((await fetch(`${url}/voices/${encodeURIComponent("../x")}`)).status, 400, "GET with a bad id");
  t.equal((await fetch(`${url}/voices/%E0%A4%A`)).status, 400, "GET with broken percent-encoding");
  t.equal((await tts({ ref_audio_path: "voice:unknown-voice" })).json?.code, "NOT_FOUND", "unknown voice id in ref_audio_path");
  const ok = await tts({});
  t.equal(ok.status, 200, "the gateway still serves");
});
