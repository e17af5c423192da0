/**
 * The whole pipeline, as a user runs it: a real nats-server, the five services as separate processes
 * (compiled), the tiny model set, HTTP in, WAV out.
 */
import t from "tap";
import { copyFileSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "nats";
import { decodeWav, encodeWav } from "../shared/dsp/index.js";
import { encode } from "../shared/codec.js";
import { Subjects, WorkQueues } from "../shared/subjects.js";
import { fromRoot } from "../shared/paths.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV } from "./helpers/stack.js";

const voices = mkdtempSync(join(tmpdir(), "gsv-voices-"));
copyFileSync(fromRoot("voices", "default.wav"), join(voices, "default.wav"));
copyFileSync(fromRoot("voices", "default.txt"), join(voices, "default.txt"));
const tone = (seconds: number) => encodeWav(Float32Array.from({ length: Math.round(16000 * seconds) }, (_, i) => 0.3 * Math.sin((2 * Math.PI * 220 * i) / 16000)), 16000);
writeFileSync(join(voices, "short.wav"), tone(1.5));
writeFileSync(join(voices, "long.wav"), tone(12));
writeFileSync(join(voices, "notaudio.wav"), "this is not a wav file at all, just text");
symlinkSync("/etc/hostname", join(voices, "escape.wav"));

let stack: Stack;
t.before(async () => {
  stack = await startStack({ env: { ...TEST_ENV, GSV_VOICES_DIR: voices } });
});
t.teardown(async () => {
  await stack?.stop();
  rmSync(voices, { recursive: true, force: true });
});

async function tts(body: Record<string, unknown>): Promise<{ status: number; headers: Headers; data: Uint8Array }> {
  const res = await fetch(`${stack.gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, data: new Uint8Array(await res.arrayBuffer()) };
}

/** 960 samples per token at 24 kHz: Tm = floor(3.75·T25) mel frames × 256; then 9600 samples of pause per segment. */
function expectedSamples(tokens: number[], fragmentInterval = 0.3): number {
  return tokens.reduce((n, k) => n + 256 * Math.floor(3.75 * k) + Math.floor(32000 * fragmentInterval), 0);
}

t.test("pipeline - POST /tts speaks a sentence to a WAV of the expected length", async (t) => {
  const r = await tts({ text: "Hello world. This is a test of the pipeline.", text_lang: "en", seed: 7, sample_steps: 4 });
  t.equal(r.status, 200, r.status === 200 ? "200 OK" : new TextDecoder().decode(r.data.slice(0, 300)));
  t.equal(r.headers.get("content-type"), "audio/wav");
  const wav = decodeWav(r.data);
  t.equal(wav.sampleRate, 24000);
  t.equal(wav.channels, 1);
  const tokens = r.headers.get("x-gsv-tokens")!.split(",").map(Number);
  t.equal(tokens.length, Number(r.headers.get("x-gsv-segments")));
  t.ok(tokens.length >= 2, "cut5 split the two sentences");
  for (const k of tokens) t.ok(k >= 12, `segment has ${k} tokens (at least the length policy minimum)`);
  t.equal(wav.samples.length, expectedSamples(tokens), "960 samples per token plus the pause per segment");
  let energy = 0;
  for (const v of wav.samples) energy += v * v;
  t.ok(energy > 0, "the audio is not silence");
  const timing = r.headers.get("server-timing")!;
  for (const stage of ["gateway", "text", "gpt", "sovits", "vocoder", "total"]) t.match(timing, new RegExp(`\\b${stage};dur=\\d+`), `Server-Timing has ${stage}`);
});

t.test("pipeline - GET /tts with api_v2 query names; same seed gives the same audio, another seed other audio", async (t) => {
  const q = (seed: number) => `${stack.gatewayUrl}/tts?text=${encodeURIComponent("Good morning, everyone.")}&text_lang=en&seed=${seed}&sample_steps=4&top_k=15`;
  const a = new Uint8Array(await (await fetch(q(11))).arrayBuffer());
  const b = new Uint8Array(await (await fetch(q(11))).arrayBuffer());
  const c = new Uint8Array(await (await fetch(q(12))).arrayBuffer());
  t.ok(a.length > 44);
  t.same(Buffer.from(a).equals(Buffer.from(b)), true, "deterministic by seed");
  t.same(Buffer.from(a).equals(Buffer.from(c)), false, "a different seed changes the audio");
});

t.test("pipeline - media_type raw returns bare int16 PCM", async (t) => {
  const r = await tts({ text: "Raw audio please.", text_lang: "en", seed: 3, sample_steps: 2, media_type: "raw", fragment_interval: 0 });
  t.equal(r.status, 200);
  t.equal(r.headers.get("content-type"), "audio/raw");
  const tokens = r.headers.get("x-gsv-tokens")!.split(",").map(Number);
  t.equal(r.data.length, 2 * expectedSamples(tokens, 0));
});

t.test("pipeline - bad input gets a clear coded error, and the next request is still served", async (t) => {
  const cases: [string, Record<string, unknown>, number, string][] = [
    ["missing text", { text_lang: "en" }, 400, "MISSING_TEXT"],
    ["blank text", { text: "   ", text_lang: "en" }, 400, "MISSING_TEXT"],
    ["unknown language", { text: "Hello there.", text_lang: "xx" }, 400, "UNKNOWN_LANGUAGE"],
    ["script no language reads", { text: "Привет мир", text_lang: "zh" }, 422, "UNSUPPORTED_LANGUAGE"],
    ["oversized text", { text: "word ".repeat(2000), text_lang: "en" }, 413, "TEXT_TOO_LONG"],
    ["reference too short", { text: "Hello there.", text_lang: "en", ref_audio_path: "short.wav", prompt_text: "a tone" }, 400, "REFERENCE_LENGTH"],
    ["reference too long", { text: "Hello there.", text_lang: "en", ref_audio_path: "long.wav", prompt_text: "a tone" }, 400, "REFERENCE_LENGTH"],
    ["reference not audio", { text: "Hello there.", text_lang: "en", ref_audio_path: "notaudio.wav", prompt_text: "text" }, 400, "BAD_AUDIO"],
    ["path outside the voices directory", { text: "Hello there.", text_lang: "en", ref_audio_path: "../../etc/passwd", prompt_text: "x" }, 403, "PATH_NOT_ALLOWED"],
    ["absolute path outside", { text: "Hello there.", text_lang: "en", ref_audio_path: "/etc/passwd", prompt_text: "x" }, 403, "PATH_NOT_ALLOWED"],
    ["symlink leading outside", { text: "Hello there.", text_lang: "en", ref_audio_path: "escape.wav", prompt_text: "x" }, 403, "PATH_NOT_ALLOWED"],
    ["missing reference", { text: "Hello there.", text_lang: "en", ref_audio_path: "nope.wav", prompt_text: "x" }, 404, "NOT_FOUND"],
    ["top_k out of range", { text: "Hello there.", text_lang: "en", top_k: 0 }, 400, "BAD_PARAMETER"],
    ["temperature not a number", { text: "Hello there.", text_lang: "en", temperature: "hot" }, 400, "BAD_PARAMETER"],
  ];
  for (const [name, body, status, code] of cases) {
    const r = await tts(body);
    const json = JSON.parse(new TextDecoder().decode(r.data)) as { code: string; message: string };
    t.equal(r.status, status, `${name}: status`);
    t.equal(json.code, code, `${name}: ${json.message}`);
    t.ok(json.message.length > 5, `${name}: has a message`);
  }
  const bad = await fetch(`${stack.gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
  t.equal(bad.status, 400);
  t.equal(((await bad.json()) as { code: string }).code, "BAD_REQUEST");
  const ok = await tts({ text: "Still working.", text_lang: "en", seed: 1, sample_steps: 2 });
  t.equal(ok.status, 200, "the next request is served");
});

t.test("pipeline - malformed NATS messages get an error reply; the stages keep serving", async (t) => {
  const nc = await connect({ servers: stack.natsUrl });
  t.teardown(() => nc.close());
  const js = nc.jetstream();
  for (const stage of ["text", "gpt", "sovits", "vocoder"] as const) {
    const id = `malformed${stage}`;
    const reply = Subjects.reply(id);
    const sub = nc.subscribe(reply, { max: 1, timeout: 10_000 });
    await js.publish(WorkQueues[stage].subject, encode({ id, reply, deadline: Date.now() + 10_000, enqueuedAt: Date.now(), bogus: true }));
    await js.publish(WorkQueues[stage].subject, new Uint8Array([0xc1, 0x00, 0xff])); // not even msgpack
    for await (const m of sub) {
      const ev = (await import("../shared/codec.js")).decode(m.data) as { type: string; code: string; stage: string };
      t.equal(ev.type, "error", `${stage}: error event`);
      t.equal(ev.code, "MALFORMED_MESSAGE", `${stage}: code`);
      t.equal(ev.stage, stage);
    }
  }
  // A well-formed sovits job with no tokens: sovits_encp cannot run on it, so it is refused before the graph.
  const id = "emptytokens";
  const sub = nc.subscribe(Subjects.reply(id), { max: 1, timeout: 10_000 });
  const params = { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 3, speed: 1, sampleSteps: 1, fragmentInterval: 0.3 };
  await js.publish(WorkQueues.sovits.subject, encode({ id, reply: Subjects.reply(id), deadline: Date.now() + 10_000, enqueuedAt: Date.now(), timings: [], seg: 0, segCount: 1, voiceKey: "k.v", promptIds: Int32Array.from([1, 2]), textIds: Int32Array.from([3]), params, tokens: new Int32Array(0) }));
  for await (const m of sub) {
    const ev = (await import("../shared/codec.js")).decode(m.data) as { type: string; code: string; message: string };
    t.equal(ev.code, "MALFORMED_MESSAGE", `empty tokens: ${ev.message}`);
  }
  const ok = await tts({ text: "After the garbage.", text_lang: "en", seed: 2, sample_steps: 2 });
  t.equal(ok.status, 200);
});

t.test("pipeline - /health reports a replica of every stage", async (t) => {
  const res = await fetch(`${stack.gatewayUrl}/health`);
  const body = (await res.json()) as { status: string; replicas: Record<string, number> };
  t.equal(res.status, 200);
  t.equal(body.status, "ok");
  for (const s of ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"]) t.equal(body.replicas[s], 1, s);
});

t.test("pipeline - an HTTP client that disconnects cancels its request in the stages", async (t) => {
  const nc = await connect({ servers: stack.natsUrl });
  t.teardown(() => nc.close());
  const { decode } = await import("../shared/codec.js");
  const gptStatus = async () => decode((await nc.request("tts.v1.status.gpt-semantic", new Uint8Array(), { timeout: 5000 })).data) as { failed: number; engines: { running: number }[] };
  const gptRunning = async () => (await gptStatus()).engines.reduce((n, e) => n + e.running, 0);
  const failedBefore = (await gptStatus()).failed;
  const abort = new AbortController();
  // One long segment (no punctuation to split on): about a thousand tokens of decoding on the tiny set.
  const text = Array.from({ length: 120 }, (_, i) => ["alpha", "bravo", "charlie", "delta"][i % 4]).join(" ");
  const pending = fetch(`${stack.gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text, text_lang: "en", seed: 4, sample_steps: 2 }), signal: abort.signal }).catch((e: Error) => e);
  let running = 0;
  for (let i = 0; i < 200 && running === 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    running = await gptRunning();
  }
  t.ok(running >= 1, `the request is decoding in gpt-semantic (${running} rows)`);
  abort.abort();
  t.ok((await pending) instanceof Error, "the client gave up");
  for (let i = 0; i < 100 && running > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    running = await gptRunning();
  }
  t.equal(running, 0, "gpt-semantic stopped decoding it");
  t.ok((await gptStatus()).failed > failedBefore, "its GPT job ended as cancelled, not by finishing");
  const health = (await (await fetch(`${stack.gatewayUrl}/health`)).json()) as { inflight: number };
  t.equal(health.inflight, 0, "the gateway no longer counts it");
});
