/**
 * Streaming synthesis (docs/streaming.md) through the whole pipeline: five processes, a real nats-server,
 * the tiny models. Streamed against non-streamed audio, audio before the GPT is done, cancellation,
 * bad parameters, the typed NATS client and its example program.
 */
import t from "tap";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { GsvClient } from "../shared/client.js";
import { decode } from "../shared/codec.js";
import { decodeWav, floatToInt16 } from "../shared/dsp/index.js";
import { fromRoot } from "../shared/paths.js";
import type { ReplyEvent } from "../shared/schemas.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV } from "./helpers/stack.js";

let stack: Stack;
let nc: NatsConnection;
const tmp = mkdtempSync(join(tmpdir(), "gsv-stream-"));
t.before(async () => {
  // A slower GPT (8 ms a step) makes "audio before the GPT finishes" independent of this machine's load.
  stack = await startStack({ env: { ...TEST_ENV, GSV_GPT_STEP_DELAY_MS: "8" } });
  nc = await connect({ servers: stack.natsUrl });
});
t.teardown(async () => {
  await nc?.close();
  await stack?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** One segment (cut0, no punctuation) long enough for several windows in every mode. */
const LONG = Array.from({ length: 40 }, (_, i) => ["streaming", "audio", "arrives", "early"][i % 4]).join(" ");

async function tts(body: Record<string, unknown>): Promise<{ status: number; headers: Headers; data: Uint8Array; trailers?: string }> {
  const res = await fetch(`${stack.gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: res.status, headers: res.headers, data: new Uint8Array(await res.arrayBuffer()) };
}

const base = { text: LONG, text_lang: "en", text_split_method: "cut0", seed: 21, sample_steps: 4 };

/**
 * The measure: with J the sample positions where windows join (start of each cross-fade), a streamed
 * signal s and a reference r of equal length agree within ±N samples of the joins if every sample
 * outside those neighbourhoods is identical; inside, the RMS of s − r is reported.
 */
function joinMeasure(s: Float32Array, r: Float32Array, joins: number[], n: number): { outsideDiffering: number; insideRms: number } {
  const near = (i: number) => joins.some((j) => i >= j - n && i < j + n);
  let outside = 0;
  let sq = 0;
  let count = 0;
  for (let i = 0; i < s.length; i++) {
    const d = s[i] - r[i];
    if (near(i)) {
      sq += d * d;
      count++;
    } else if (d !== 0) outside++;
  }
  return { outsideDiffering: outside, insideRms: count ? Math.sqrt(sq / count) : 0 };
}

/** Where windows join in the assembled audio, from the audio events (each window's new samples follow its overlap). */
function joinsOf(events: Extract<ReplyEvent, { type: "audio" }>[]): number[] {
  const sorted = [...events].sort((a, b) => a.seg - b.seg || a.win - b.win);
  const joins: number[] = [];
  let pos = 0;
  for (const ev of sorted) {
    if (ev.win > 0) joins.push(pos - ev.overlap);
    pos += ev.pcm.length - ev.overlap;
    if (ev.last) pos += Math.floor(32000 * ev.fragmentInterval);
  }
  return joins;
}

async function client() {
  const c = new GsvClient(nc, { timeoutMs: 120_000 });
  const audioSha = await c.putReferenceAudio(readFileSync(fromRoot("voices", "default.wav")));
  return { c, voice: { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" } };
}

t.test("streaming - mode 1 streams the non-streaming windows: the same samples, sample-exact at and between joins", async (t) => {
  const whole = await tts({ ...base, media_type: "raw" });
  t.equal(whole.status, 200);
  const { c, voice } = await client();
  const events: Extract<ReplyEvent, { type: "audio" }>[] = [];
  const s = c.stream({ text: LONG, splitMethod: "cut0", voice, params: { seed: 21, sampleSteps: 4 }, stream: 1, onEvent: (ev) => void (ev.type === "audio" && events.push(ev)) });
  for await (const _ of s) void _;
  const r = await s.result;
  const joins = joinsOf(events);
  t.ok(joins.length >= 1, `the segment was decoded in ${joins.length + 1} windows`);
  const ref = new Int16Array(whole.data.buffer, whole.data.byteOffset, whole.data.length / 2);
  const ref32 = Float32Array.from(ref, (v) => v / 32768);
  const got = Float32Array.from(floatToInt16(r.pcm), (v) => v / 32768);
  t.equal(got.length, ref32.length, "same length");
  const m = joinMeasure(got, ref32, joins, 0);
  t.equal(m.outsideDiffering, 0, "N = 0: every sample is identical");

  // The same over HTTP: chunked WAV with an unknown-length header, then raw.
  const wav = await tts({ ...base, streaming_mode: 1 });
  t.equal(wav.status, 200);
  t.equal(new DataView(wav.data.buffer).getUint32(40, true), 0xffffffff, "the WAV header's data size says: unknown length");
  const streamedWav = decodeWav(wav.data).samples;
  t.equal(streamedWav.length, ref32.length);
  t.equal(joinMeasure(streamedWav, ref32, joins, 0).outsideDiffering, 0, "streamed WAV equals the non-streamed audio");
  const raw = await tts({ ...base, streaming_mode: true, media_type: "raw" });
  t.equal(Buffer.from(raw.data).equals(Buffer.from(whole.data)), true, "streaming_mode=true, raw: byte-identical to the non-streamed raw body");
});

t.test("streaming - modes 2 and 3: the same length, deterministic, and joins without gaps or spikes", async (t) => {
  const whole = decodeWav((await tts(base)).data).samples;
  const { c, voice } = await client();
  for (const mode of [2, 3] as const) {
    const events: Extract<ReplyEvent, { type: "audio" }>[] = [];
    const run = async (record: boolean) => {
      const s = c.stream({ text: LONG, splitMethod: "cut0", voice, params: { seed: 21, sampleSteps: 4 }, stream: mode, onEvent: (ev) => void (record && ev.type === "audio" && events.push(ev)) });
      for await (const _ of s) void _;
      return (await s.result).pcm;
    };
    const a = await run(true);
    const b = await run(false);
    t.equal(a.length, whole.length, `mode ${mode}: the same length as the non-streamed audio`);
    t.same(Buffer.from(a.buffer).equals(Buffer.from(b.buffer)), true, `mode ${mode}: the same request gives the same samples`);
    const joins = joinsOf(events);
    const segEnd = a.length - Math.floor(32000 * 0.3);
    t.ok(joins.length >= 3, `mode ${mode}: ${joins.length + 1} windows`);
    // Each cross-fade (12 frames) against the 12 frames on either side: the RMS stays within a factor of 4.
    const rms = (from: number, to: number) => {
      let s = 0;
      for (let i = from; i < to; i++) s += a[i] * a[i];
      return Math.sqrt(s / (to - from));
    };
    const w = 12 * 256;
    for (const j of joins) {
      if (j + 2 * w > segEnd) continue;
      const inside = rms(j, j + w);
      const around = (rms(j - w, j) + rms(j + w, j + 2 * w)) / 2;
      t.ok(inside > around / 4 && inside < around * 4, `mode ${mode}: join at ${j}: RMS ${inside.toFixed(4)} vs ${around.toFixed(4)} around it`);
    }
  }
});

t.test("streaming - the first audio arrives before gpt-semantic has finished the segment", async (t) => {
  const { c, voice } = await client();
  const order: string[] = [];
  let firstAudioTokens = -1;
  const progress: Extract<ReplyEvent, { type: "progress" }>[] = [];
  const s = c.stream({
    text: LONG,
    splitMethod: "cut0",
    voice,
    params: { seed: 3, sampleSteps: 2 },
    stream: 3,
    onEvent: (ev) => {
      if (ev.type === "progress") {
        progress.push(ev);
        order.push(ev.final ? "gpt-final" : "gpt-partial");
      } else if (ev.type === "audio") {
        if (!order.includes("audio")) firstAudioTokens = progress.length ? progress[progress.length - 1].tokens : 0;
        order.push("audio");
      }
    },
  });
  let chunks = 0;
  for await (const _ of s) chunks++;
  const r = await s.result;
  const final = progress.find((p) => p.final)!;
  t.ok(final, "gpt-semantic reported the end of the segment");
  t.equal(final.tokens, r.tokens[0], "with the segment's token count");
  t.ok(order.indexOf("audio") >= 0 && order.indexOf("audio") < order.indexOf("gpt-final"), `the first audio event came before the GPT's final one (${order.slice(0, 8).join(", ")}, …)`);
  t.ok(firstAudioTokens > 0 && firstAudioTokens < final.tokens, `audio began when ${firstAudioTokens} of ${final.tokens} tokens were decoded`);
  t.ok(chunks > 3, `${chunks} audio chunks`);
});

t.test("streaming - cancelling a streamed request mid-way stops every stage", async (t) => {
  const { c, voice } = await client();
  const status = async (svc: string) => decode((await nc.request(`tts.v1.status.${svc}`, new Uint8Array(), { timeout: 5000 })).data) as { inflight: number; failed: number; engines?: { running: number }[] };
  const busy = async () => {
    const [g, s, v] = await Promise.all([status("gpt-semantic"), status("sovits-decoder"), status("vocoder")]);
    return g.inflight + (g.engines ?? []).reduce((n, e) => n + e.running, 0) + s.inflight + v.inflight;
  };
  const sovitsFailedBefore = (await status("sovits-decoder")).failed;
  const gptFailedBefore = (await status("gpt-semantic")).failed;
  const abort = new AbortController();
  const text = Array.from({ length: 160 }, (_, i) => ["alpha", "bravo", "charlie", "delta"][i % 4]).join(" ");
  const s = c.stream({ text, splitMethod: "cut0", voice, params: { seed: 9, sampleSteps: 8 }, stream: 3, signal: abort.signal });
  let got = 0;
  let error: unknown;
  try {
    for await (const _ of s) {
      got++;
      if (got === 1) abort.abort();
    }
  } catch (e) {
    error = e;
  }
  t.equal((error as { code?: string })?.code, "CANCELLED", "the iterator ends with CANCELLED");
  let n = await busy();
  for (let i = 0; i < 250 && n > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    n = await busy();
  }
  t.equal(n, 0, "gpt-semantic, sovits-decoder and vocoder hold nothing of it");
  // The window chain does not go on: over several polls nothing of it starts again.
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 50));
    n += await busy();
  }
  t.equal(n, 0, "and nothing restarts");
  t.ok((await status("gpt-semantic")).failed > gptFailedBefore, "its GPT job ended as cancelled");
  t.ok((await status("sovits-decoder")).failed > sovitsFailedBefore, "its window job ended as cancelled");
});

t.test("streaming - bad streaming parameters are a 400 with a code", async (t) => {
  // ("yes" is a valid boolean to upstream's FastAPI parser, so it is not in this list.)
  for (const v of [7, -1, "abc", 1.5, "maybe"]) {
    const r = await tts({ text: "Hello.", text_lang: "en", streaming_mode: v });
    t.equal(r.status, 400, `streaming_mode ${JSON.stringify(v)}`);
    t.equal((JSON.parse(new TextDecoder().decode(r.data)) as { code: string }).code, "BAD_PARAMETER");
  }
  const q = await fetch(`${stack.gatewayUrl}/tts?text=Hello.&text_lang=en&streaming_mode=4`);
  t.equal(q.status, 400, "GET streaming_mode=4");
  await q.arrayBuffer();
});

t.test("streaming - the typed client: chunks in order make up the whole audio, equal to the gateway's", async (t) => {
  const { c, voice } = await client();
  const text = "Chunks arrive in order. They make up the whole.";
  const s = c.stream({ text, voice, params: { seed: 5, sampleSteps: 4 }, stream: 2 });
  const pieces: Float32Array[] = [];
  let expectOffset = 0;
  for await (const chunk of s) {
    t.equal(chunk.offset, expectOffset, "offsets are contiguous");
    t.equal(chunk.sampleRate, 24000);
    expectOffset += chunk.pcm.length;
    pieces.push(chunk.pcm);
  }
  const r = await s.result;
  t.equal(expectOffset, r.pcm.length, "the chunks add up to the result");
  const joined = new Float32Array(expectOffset);
  let o = 0;
  for (const p of pieces) {
    joined.set(p, o);
    o += p.length;
  }
  t.same(Buffer.from(joined.buffer).equals(Buffer.from(r.pcm.buffer)), true, "and equal it sample for sample");
  const http = await tts({ text, text_lang: "en", seed: 5, sample_steps: 4, streaming_mode: 2, media_type: "raw" });
  const ints = floatToInt16(r.pcm);
  t.same(Buffer.from(http.data).equals(Buffer.from(ints.buffer)), true, "the gateway streams the same audio");
  const whole = await c.synthesize({ text, voice, params: { seed: 5, sampleSteps: 4 } });
  t.equal(whole.pcm.length, r.pcm.length, "non-streamed through the client: the same length");
});

t.test("streaming - the README's example program speaks over NATS", async (t) => {
  const out = join(tmp, "example.wav");
  const proc = spawn(process.execPath, [fromRoot("dist", "tools", "examples", "nats-client.js"), "An example from another program.", out], { env: { ...process.env, NATS_URL: stack.natsUrl } });
  let stdout = "";
  let stderr = "";
  proc.stdout.on("data", (d: Buffer) => (stdout += d));
  proc.stderr.on("data", (d: Buffer) => (stderr += d));
  const code = await new Promise<number | null>((r) => proc.on("exit", r));
  t.equal(code, 0, stderr);
  const report = JSON.parse(stdout.trim()) as { seconds: number; chunks: number };
  const wav = decodeWav(readFileSync(out));
  t.equal(wav.sampleRate, 24000);
  t.ok(Math.abs(wav.samples.length / 24000 - report.seconds) < 1e-6, `wrote ${report.seconds.toFixed(2)} s`);
  t.ok(report.chunks >= 2, `in ${report.chunks} chunks`);
});
