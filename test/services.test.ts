/**
 * Each stage on its own: a real nats-server, one real service process, its input published into its
 * work queue by the test, its output read from the next stage's queue (or the reply subject).
 */
import t from "tap";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { NatsConnection } from "nats";
import { decode, decodeAs, encode } from "../shared/codec.js";
import { encodeWav } from "../shared/dsp/index.js";
import { loadManifest } from "../shared/manifest.js";
import { ensureAllQueues, refAudioStore, voicesBucket } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { GptJob, ReplyEvent, SovitsJob, VocoderJob, VoicePrepareReply, type GenParams, type PreparedVoice, type TextJob } from "../shared/schemas.js";
import { Subjects, WorkQueues, type Stage } from "../shared/subjects.js";
import { VoiceStore } from "../shared/voices.js";
import { startServices, withNats, type ServiceName, type ServiceProcess } from "./helpers/stack.js";

const manifest = loadManifest(fromRoot("models", "tiny"));
const params: GenParams = { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 9, speed: 1, sampleSteps: 4, fragmentInterval: 0.3 };
const envelope = (id: string) => ({ id, reply: Subjects.reply(id), deadline: Date.now() + 30_000, enqueuedAt: Date.now(), timings: [] });

/**
 * A real nats-server with the stage queues, and the service processes a test starts on it; one teardown
 * stops the services first (they drain), then the server.
 */
async function stageEnv(t: { teardown(fn: () => unknown): void }) {
  const env = await withNats();
  await ensureAllQueues(env.nc);
  const procs: ServiceProcess[] = [];
  const cleanups: (() => void)[] = [];
  t.teardown(async () => {
    for (const f of cleanups) f();
    await Promise.all(procs.map((p) => p.stop()));
    await env.stop();
  });
  return {
    ...env,
    async start(names: ServiceName[], extraEnv: Record<string, string> = {}): Promise<ServiceProcess[]> {
      const started = await startServices(env.server.url, names, extraEnv);
      procs.push(...started);
      return started;
    },
    onTeardown(f: () => void): void {
      cleanups.push(f);
    },
  };
}

/** Read the next `n` messages a stage published into `stage`'s work queue (the test plays that stage). */
async function take(nc: NatsConnection, stage: Stage, n: number): Promise<Uint8Array[]> {
  const consumer = await nc.jetstream().consumers.get(WorkQueues[stage].stream, WorkQueues[stage].consumer);
  const out: Uint8Array[] = [];
  const until = Date.now() + 30_000;
  while (out.length < n && Date.now() < until) {
    const batch = await consumer.fetch({ max_messages: n - out.length, expires: 1000 });
    for await (const m of batch) {
      out.push(m.data);
      m.ack();
    }
  }
  return out;
}

t.test("text-frontend - splits, phonemises, asks for the voice, fans out one GPT job per segment", async (t) => {
  const env = await stageEnv(t);
  // The test answers voice preparation itself, as sovits-decoder would.
  const prep = env.nc.subscribe(Subjects.voicePrepare, { callback: (_e, m) => m.respond(encode({ ok: true, voiceKey: "k.abc", promptTokens: 10, cached: true, ms: 1 })) });
  env.onTeardown(() => prep.unsubscribe());
  await env.start(["text-frontend"]);
  const replies = env.nc.subscribe(Subjects.reply("tf1"));
  const job: TextJob = { ...envelope("tf1"), text: "Hello world. How are you today?", textLang: "en", splitMethod: "cut5", voice: { audioSha: "a".repeat(64), promptText: "This is the prompt.", promptLang: "en" }, params };
  await env.nc.jetstream().publish(WorkQueues.text.subject, encode(job));
  for await (const m of replies) {
    const ev = decodeAs(ReplyEvent, m.data);
    t.equal(ev.type, "plan");
    if (ev.type === "plan") {
      t.equal(ev.segments, 2);
      t.equal(ev.timings[0].stage, "text");
    }
    break;
  }
  const jobs = (await take(env.nc, "gpt", 2)).map((d) => decodeAs(GptJob, d));
  t.same(jobs.map((j) => j.seg), [0, 1]);
  for (const j of jobs) {
    t.equal(j.voiceKey, "k.abc");
    t.equal(j.segCount, 2);
    t.ok(j.textIds.length >= 6, "at least 6 phones (upstream's minimum-length rule)");
    t.ok(j.promptIds.length > 0);
    t.ok(j.textIds.every((id) => id >= 0 && id < 732));
  }
});

t.test("text-frontend - voice preparation errors reach the client with their code", async (t) => {
  const env = await stageEnv(t);
  const prep = env.nc.subscribe(Subjects.voicePrepare, { callback: (_e, m) => m.respond(encode({ ok: false, code: "REFERENCE_LENGTH", message: "the reference is 1.00 s long" })) });
  env.onTeardown(() => prep.unsubscribe());
  await env.start(["text-frontend"]);
  const replies = env.nc.subscribe(Subjects.reply("tf2"));
  const job: TextJob = { ...envelope("tf2"), text: "Hello world.", textLang: "en", splitMethod: "cut5", voice: { audioSha: "b".repeat(64), promptText: "Prompt.", promptLang: "en" }, params };
  await env.nc.jetstream().publish(WorkQueues.text.subject, encode(job));
  for await (const m of replies) {
    const ev = decodeAs(ReplyEvent, m.data);
    t.equal(ev.type, "error");
    if (ev.type === "error") {
      t.equal(ev.code, "REFERENCE_LENGTH");
      t.match(ev.message, /1\.00 s/);
    }
    break;
  }
});

t.test("gpt-semantic - decodes a segment to tokens under the manifest's length policy, deterministic by seed", async (t) => {
  const env = await stageEnv(t);
  const voices = new VoiceStore(await voicesBucket(env.nc));
  const voice: PreparedVoice = { audioSha: "c".repeat(64), prompts: Int32Array.from({ length: 150 }, (_, i) => (i * 37) % 1024), ge: new Float32Array(manifest.dims.ge.dim), refMel: new Float32Array(100 * 500), refMelFrames: 500, seconds: 5.4 };
  await voices.put("test.voice", voice);
  await env.start(["gpt-semantic"]);
  const textIds = Int32Array.from([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 3]);
  const mk = (id: string, seed: number): GptJob => ({ ...envelope(id), seg: 0, segCount: 1, voiceKey: "test.voice", promptIds: Int32Array.from([5, 6, 7, 3]), textIds, params: { ...params, seed } });
  for (const [id, seed] of [["g1", 1], ["g2", 1], ["g3", 2]] as const) await env.nc.jetstream().publish(WorkQueues.gpt.subject, encode(mk(id, seed)));
  const out = (await take(env.nc, "sovits", 3)).map((d) => decodeAs(SovitsJob, d));
  const byId = new Map(out.map((j) => [j.id, j]));
  const policy = manifest.lengthPolicy!;
  const limit = Math.max(policy.minTokens, Math.ceil(policy.tokensPerPhone * textIds.length));
  const g1 = byId.get("g1")!;
  t.ok(g1.tokens.length >= 11 && g1.tokens.length <= limit, `${g1.tokens.length} tokens, EOS masked for 11 steps, capped at ${limit}`);
  t.ok(g1.tokens.every((k) => k >= 0 && k < 1024), "semantic codes only (no EOS in the output)");
  t.same(Array.from(byId.get("g2")!.tokens), Array.from(g1.tokens), "same seed, same tokens");
  t.notSame(Array.from(byId.get("g3")!.tokens), Array.from(g1.tokens), "another seed, other tokens");
  t.equal(g1.timings.at(-1)!.stage, "gpt");
});

t.test("sovits-decoder - prepares a voice from the object store and decodes tokens to mel windows", async (t) => {
  const env = await stageEnv(t);
  await env.start(["sovits-decoder"]);
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const sha = createHash("sha256").update(wav).digest("hex");
  const store = await refAudioStore(env.nc);
  await store.putBlob({ name: sha }, wav);
  const ask = async (audioSha: string) => decodeAs(VoicePrepareReply, (await env.nc.request(Subjects.voicePrepare, encode({ audioSha, deadline: Date.now() + 30_000 }), { timeout: 30_000 })).data);
  const first = await ask(sha);
  t.ok(first.ok, JSON.stringify(first));
  if (!first.ok) return;
  t.equal(first.cached, false);
  // 6.05 s + 0.6 s of padding at 25 Hz: about 166 prompt tokens.
  t.ok(Math.abs(first.promptTokens - Math.floor((Math.floor((96800 + 9600 - 400) / 320) + 1) / 2)) <= 1, `prompt tokens ${first.promptTokens}`);
  const again = await ask(sha);
  t.ok(again.ok && again.cached, "second preparation is served from the KV bucket");

  const short = encodeWav(new Float32Array(16000), 16000);
  const shortSha = createHash("sha256").update(short).digest("hex");
  await store.putBlob({ name: shortSha }, short);
  const bad = await ask(shortSha);
  t.same(bad.ok ? "ok" : bad.code, "REFERENCE_LENGTH");
  const missing = await ask("d".repeat(64));
  t.same(missing.ok ? "ok" : missing.code, "NOT_FOUND");

  // 300 tokens → floor(3.75·300) = 1125 frames → windows of 934 − prefix frames.
  const tokens = Int32Array.from({ length: 300 }, (_, i) => (i * 7) % 1024);
  const job: SovitsJob = { ...envelope("s1"), seg: 0, segCount: 1, voiceKey: first.voiceKey, promptIds: Int32Array.from([5, 6, 7, 3]), textIds: Int32Array.from([10, 20, 30, 3]), params, tokens };
  await env.nc.jetstream().publish(WorkQueues.sovits.subject, encode(job));
  const voice = (await new VoiceStore(await voicesBucket(env.nc)).get(first.voiceKey))!;
  const prefix = Math.min(voice.refMelFrames, manifest.dims.cfm.maxPromptFrames);
  const chunk = manifest.dims.cfm.maxFrames - prefix;
  const total = Math.floor(3.75 * 300);
  const nWin = Math.ceil(total / chunk);
  const wins = (await take(env.nc, "vocoder", nWin)).map((d) => decodeAs(VocoderJob, d)).sort((a, b) => a.win - b.win);
  t.equal(wins.length, nWin, `${nWin} windows`);
  t.equal(wins.reduce((n, w) => n + w.frames - w.overlap, 0), total, "the windows cover every mel frame once");
  t.same(wins.map((w) => w.last), wins.map((_, i) => i === nWin - 1));
  t.equal(wins[0].overlap, 0);
  for (let i = 1; i < nWin; i++) t.equal(wins[i].overlap, wins[i - 1].tail, "each window repeats exactly the tail the previous one announced");
  for (const w of wins) {
    t.equal(w.mel.length, 100 * w.frames);
    t.ok(w.mel.every(Number.isFinite));
  }
  // The overlap frames are the previous window's last frames, copied exactly.
  const prev = wins[0];
  const cur = wins[1];
  if (cur) for (let c = 0; c < 100; c += 33) t.equal(cur.mel[c * cur.frames], prev.mel[c * prev.frames + prev.frames - cur.overlap]);
});

t.test("vocoder - a mel window becomes 256 samples per frame on the reply subject", async (t) => {
  const env = await stageEnv(t);
  await env.start(["vocoder"]);
  const frames = 120;
  const mel = Float32Array.from({ length: 100 * frames }, (_, i) => -6 + 4 * Math.sin(i / 17));
  const job = { ...envelope("v1"), seg: 0, segCount: 1, win: 1, last: false, mel, frames, overlap: 12, tail: 12, tokens: 30, fragmentInterval: 0.3 };
  const sub = env.nc.subscribe(Subjects.reply("v1"), { max: 1, timeout: 30_000 });
  await env.nc.jetstream().publish(WorkQueues.vocoder.subject, encode(job));
  for await (const m of sub) {
    const ev = decodeAs(ReplyEvent, m.data);
    t.equal(ev.type, "audio");
    if (ev.type !== "audio") break;
    t.equal(ev.pcm.length, 256 * frames);
    t.equal(ev.overlap, 12 * 256);
    t.equal(ev.tail, 12 * 256);
    t.equal(ev.sampleRate, 24000);
    t.ok(ev.pcm.every((v) => Math.abs(v) <= 1), "within [-1, 1]");
    t.equal(ev.timings.at(-1)!.stage, "vocoder");
  }
  t.equal(typeof decode(encode({ a: 1 })), "object");
});

t.test("sovits-decoder - Euler steps of concurrent jobs run batched and equal each job run alone", async (t) => {
  const env = await stageEnv(t);
  // On the CPU the stage does not batch DiT rows by default (a row costs more in a batch): ask for batches.
  await env.start(["sovits-decoder"], { GSV_CFM_MAX_BATCH: "8", GSV_SOVITS_ORT_WORKERS: "1" });
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const sha = createHash("sha256").update(wav).digest("hex");
  await (await refAudioStore(env.nc)).putBlob({ name: sha }, wav);
  const prep = decodeAs(VoicePrepareReply, (await env.nc.request(Subjects.voicePrepare, encode({ audioSha: sha, deadline: Date.now() + 30_000 }), { timeout: 30_000 })).data);
  if (!prep.ok) throw new Error(prep.message);
  // Different lengths: one and two windows, so rows of different T share DiT batches (padding + x_lens).
  const lengths = [40, 150, 90];
  const job = (id: string, k: number, i: number): SovitsJob => ({
    ...envelope(id), seg: 0, segCount: 1, voiceKey: prep.voiceKey, promptIds: Int32Array.from([5, 6, 7, 3]),
    textIds: Int32Array.from({ length: 8 + i }, (_, j) => 10 + j), params: { ...params, seed: 50 + i, sampleSteps: 6 },
    tokens: Int32Array.from({ length: k }, (_, j) => (j * 13 + i) % 1024),
  });
  const windowsOf = (k: number) => Math.ceil(Math.floor(3.75 * k) / (manifest.dims.cfm.maxFrames - Math.min(manifest.dims.cfm.maxPromptFrames, 500)));
  const alone = new Map<string, VocoderJob>();
  for (let i = 0; i < lengths.length; i++) {
    await env.nc.jetstream().publish(WorkQueues.sovits.subject, encode(job(`alone${i}`, lengths[i], i)));
    for (const d of await take(env.nc, "vocoder", windowsOf(lengths[i]))) {
      const w = decodeAs(VocoderJob, d);
      alone.set(`${i}:${w.win}`, w);
    }
  }
  await Promise.all(lengths.map((k, i) => env.nc.jetstream().publish(WorkQueues.sovits.subject, encode(job(`batch${i}`, k, i)))));
  const total = lengths.reduce((n, k) => n + windowsOf(k), 0);
  const batched = (await take(env.nc, "vocoder", total)).map((d) => decodeAs(VocoderJob, d));
  t.equal(batched.length, alone.size);
  let maxBatch = 0;
  for (const w of batched) {
    const i = Number(w.id.slice(5));
    const a = alone.get(`${i}:${w.win}`)!;
    t.equal(w.frames, a.frames, `job ${i} window ${w.win}: same length`);
    let diff = 0;
    for (let k = 0; k < a.mel.length; k++) diff = Math.max(diff, Math.abs(a.mel[k] - w.mel[k]));
    t.ok(diff < 1e-4, `job ${i} window ${w.win}: batched mel equals alone (max diff ${diff.toExponential(2)})`);
    maxBatch = Math.max(maxBatch, w.timings.at(-1)!.batch);
  }
  t.ok(maxBatch > 1, `DiT steps were batched across jobs (max batch ${maxBatch})`);
});

t.test("vocoder - windows of equal length arriving together are vocoded as one batch, equal to alone", async (t) => {
  const env = await stageEnv(t);
  await env.start(["vocoder"]);
  const frames = 200;
  const mel = (i: number) => Float32Array.from({ length: 100 * frames }, (_, k) => -6 + 3 * Math.sin(k / (13 + i)));
  const job = (id: string, i: number) => ({ ...envelope(id), seg: 0, segCount: 1, win: 0, last: true, mel: mel(i), frames, overlap: 0, tail: 0, tokens: 10, fragmentInterval: 0 });
  const collect = async (ids: string[], publish: () => Promise<void>) => {
    const got = new Map<string, Extract<ReplyEvent, { type: "audio" }>>();
    const subs = ids.map((id) => env.nc.subscribe(Subjects.reply(id), { max: 1, timeout: 30_000 }));
    await publish();
    await Promise.all(subs.map(async (sub, k) => {
      for await (const m of sub) {
        const ev = decodeAs(ReplyEvent, m.data);
        if (ev.type === "audio") got.set(ids[k], ev);
      }
    }));
    return got;
  };
  const alone = new Map<number, Float32Array>();
  for (let i = 0; i < 4; i++) {
    const r = await collect([`va${i}`], async () => void (await env.nc.jetstream().publish(WorkQueues.vocoder.subject, encode(job(`va${i}`, i)))));
    alone.set(i, r.get(`va${i}`)!.pcm);
  }
  const ids = [0, 1, 2, 3].map((i) => `vb${i}`);
  const batched = await collect(ids, async () => void (await Promise.all(ids.map((id, i) => env.nc.jetstream().publish(WorkQueues.vocoder.subject, encode(job(id, i)))))));
  let maxBatch = 0;
  for (let i = 0; i < 4; i++) {
    const b = batched.get(`vb${i}`)!;
    let diff = 0;
    for (let k = 0; k < b.pcm.length; k++) diff = Math.max(diff, Math.abs(b.pcm[k] - alone.get(i)![k]));
    t.ok(diff < 1e-5, `window ${i}: batched audio equals alone (max diff ${diff.toExponential(2)})`);
    maxBatch = Math.max(maxBatch, b.timings.at(-1)!.batch);
  }
  t.ok(maxBatch > 1, `windows were vocoded together (max batch ${maxBatch})`);
});

t.test("replicas - two vocoder replicas share the stage queue, and each reports its queue and batches", async (t) => {
  const env = await stageEnv(t);
  await env.start(["vocoder", "vocoder"]);
  const n = 24;
  const frames = 64;
  const ids = Array.from({ length: n }, (_, i) => `rep${i}`);
  const by = new Map<string, number>();
  const subs = ids.map((id) => env.nc.subscribe(Subjects.reply(id), { max: 1, timeout: 30_000 }));
  await Promise.all(ids.map((id) => env.nc.jetstream().publish(WorkQueues.vocoder.subject, encode({ ...envelope(id), seg: 0, segCount: 1, win: 0, last: true, mel: new Float32Array(100 * frames).fill(-5), frames, overlap: 0, tail: 0, tokens: 1, fragmentInterval: 0 }))));
  for (const sub of subs)
    for await (const m of sub) {
      const ev = decodeAs(ReplyEvent, m.data);
      if (ev.type === "audio") {
        const r = ev.timings.at(-1)!.replica;
        by.set(r, (by.get(r) ?? 0) + 1);
      }
    }
  t.equal([...by.values()].reduce((a, b) => a + b, 0), n, "every window answered exactly once");
  t.equal(by.size, 2, `both replicas worked: ${JSON.stringify(Object.fromEntries(by))}`);
  const statuses: Record<string, unknown>[] = [];
  for await (const m of await env.nc.requestMany(`tts.v1.status.vocoder`, new Uint8Array(), { maxWait: 1000 })) statuses.push(decode(m.data) as Record<string, unknown>);
  t.equal(statuses.length, 2, "each replica answers the status endpoint");
  for (const s of statuses) {
    t.ok(s.queue && typeof (s.queue as { pending: number }).pending === "number", "reports the queue depth");
    t.ok(s.batches && Object.keys(s.batches as object).length > 0, `reports its batch sizes ${JSON.stringify(s.batches)}`);
  }
});

t.test("gpt-semantic - a cancelled request stops decoding at once and frees its batch row", async (t) => {
  const env = await stageEnv(t);
  const voices = new VoiceStore(await voicesBucket(env.nc));
  await voices.put("cancel.voice", { audioSha: "e".repeat(64), prompts: Int32Array.from({ length: 100 }, (_, i) => i), ge: new Float32Array(manifest.dims.ge.dim), refMel: new Float32Array(100 * 300), refMelFrames: 300, seconds: 4 });
  await env.start(["gpt-semantic"]);
  // 700 phones: the length policy allows 1400 tokens, seconds of decoding on the tiny set.
  const long: GptJob = { ...envelope("cancelme"), seg: 0, segCount: 1, voiceKey: "cancel.voice", promptIds: Int32Array.from([5, 6, 3]), textIds: Int32Array.from({ length: 700 }, (_, i) => (i * 11) % 732), params };
  const engineState = async () => {
    const m = await env.nc.request("tts.v1.status.gpt-semantic", new Uint8Array(), { timeout: 5000 });
    return (decode(m.data) as { engines: { running: number; steps: number }[] }).engines[0];
  };
  const started = Date.now();
  await env.nc.jetstream().publish(WorkQueues.gpt.subject, encode(long));
  let running = 0;
  for (let i = 0; i < 100 && running === 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    running = (await engineState()).running;
  }
  t.equal(running, 1, "the request is decoding");
  env.nc.publish(Subjects.cancel("cancelme"));
  let after = await engineState();
  for (let i = 0; i < 50 && after.running !== 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    after = await engineState();
  }
  t.equal(after.running, 0, `its row is free ${Date.now() - started} ms after it started`);
  const stepsAtCancel = after.steps;
  t.ok(stepsAtCancel < 1000, `stopped after ${stepsAtCancel} steps, well before its 1400-token limit`);
  await new Promise((r) => setTimeout(r, 300));
  t.equal((await engineState()).steps, stepsAtCancel, "no further decode steps run for it");
  // Nothing was forwarded to the next stage, and the row serves the next request.
  const next: GptJob = { ...envelope("afterCancel"), seg: 0, segCount: 1, voiceKey: "cancel.voice", promptIds: Int32Array.from([5, 6, 3]), textIds: Int32Array.from({ length: 8 }, (_, i) => i + 10), params };
  await env.nc.jetstream().publish(WorkQueues.gpt.subject, encode(next));
  const out = (await take(env.nc, "sovits", 1)).map((d) => decodeAs(SovitsJob, d));
  t.same(out.map((j) => j.id), ["afterCancel"], "the cancelled request produced no output; the next one did");
});
