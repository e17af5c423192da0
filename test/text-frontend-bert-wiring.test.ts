/**
 * zh BERT features through the running pipeline: text-frontend with a model set that has bert_zh (a tiny
 * random BERT graph, test/helpers/tiny-bert.ts) → GPT jobs carrying compact features → gpt-semantic, which
 * expands them into t2s_encoder's ref_bert/text_bert rows. Real nats-server (max_payload 1 MB, the NATS
 * default), real service processes, real onnxruntime.
 */
import t from "tap";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import * as ort from "onnxruntime-node";
import { decodeAs, encode } from "../shared/codec.js";
import { loadManifest, ManifestError } from "../shared/manifest.js";
import { ensureAllQueues, voicesBucket } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { GptJob, ReplyEvent, SovitsJob, type GenParams, type PreparedVoice, type TextJob } from "../shared/schemas.js";
import { Subjects, WorkQueues, type Stage } from "../shared/subjects.js";
import { VoiceStore } from "../shared/voices.js";
import { checkGptJob } from "../shared/job-checks.js";
import { GsvError } from "../shared/errors.js";
import { expandBert, parseVocab, tokenizeChars } from "../services/text-frontend/bert.js";
import { promptToPhones, textToSegments } from "../services/text-frontend/frontend.js";
import { GptEngine, type GptRequest, type GptSessions } from "../services/gpt-semantic/engine.js";
import { TINY_BERT_VOCAB, makeBertModelSet } from "./helpers/tiny-bert.js";
import { startNatsServer, startServices, type ServiceName, type ServiceProcess } from "./helpers/stack.js";

const tiny = fromRoot("models", "tiny");
const bertDir = mkdtempSync(join(tmpdir(), "gsv-bertset-"));
t.teardown(() => rmSync(bertDir, { recursive: true, force: true }));
makeBertModelSet(tiny, bertDir);
const manifest = loadManifest(bertDir);
const D = manifest.dims.t2s.bertDim;
const vocab = parseVocab(TINY_BERT_VOCAB);
const params: GenParams = { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 9, speed: 1, sampleSteps: 4, fragmentInterval: 0.3 };
const envelope = (id: string) => ({ id, reply: Subjects.reply(id), deadline: Date.now() + 60_000, enqueuedAt: Date.now(), timings: [] });
const TEXT = "今天天气很好。Hello world. 我们一起去银行取钱！";
const PROMPT = "学生老师你好。";

/** A nats-server at the NATS default max_payload (1 MB), the queues, a fake voice preparation, a voice in KV. */
async function stageEnv(t: { teardown(fn: () => unknown): void }) {
  const config = readFileSync(fromRoot("infra", "nats-server.conf"), "utf8").replace(/^max_payload:.*$/m, "max_payload: 1MB");
  const server = await startNatsServer({ config });
  const nc = await connect({ servers: server.url });
  await ensureAllQueues(nc);
  const prep = nc.subscribe(Subjects.voicePrepare, { callback: (_e, m) => m.respond(encode({ ok: true, voiceKey: "test.voice", promptTokens: 150, cached: true, ms: 1 })) });
  const voice: PreparedVoice = { audioSha: "c".repeat(64), prompts: Int32Array.from({ length: 150 }, (_, i) => (i * 37) % 1024), ge: new Float32Array(manifest.dims.ge.dim), refMel: new Float32Array(100 * 500), refMelFrames: 500, seconds: 5.4 };
  await new VoiceStore(await voicesBucket(nc)).put("test.voice", voice);
  const procs: ServiceProcess[] = [];
  t.teardown(async () => {
    prep.unsubscribe();
    await Promise.all(procs.map((p) => p.stop()));
    await nc.close();
    await server.stop();
  });
  return {
    nc,
    async start(names: ServiceName[], modelDir: string) {
      procs.push(...(await startServices(server.url, names, { GSV_MODEL_DIR: modelDir })));
    },
  };
}

async function take(nc: NatsConnection, stage: Stage, n: number): Promise<Uint8Array[]> {
  const consumer = await nc.jetstream().consumers.get(WorkQueues[stage].stream, WorkQueues[stage].consumer);
  const out: Uint8Array[] = [];
  const until = Date.now() + 60_000;
  while (out.length < n && Date.now() < until) {
    for await (const m of await consumer.fetch({ max_messages: n - out.length, expires: 1000 })) {
      out.push(m.data);
      m.ack();
    }
  }
  return out;
}

const textJob = (id: string, text = TEXT, splitMethod: TextJob["splitMethod"] = "cut5"): TextJob => ({
  ...envelope(id), text, textLang: "auto", splitMethod, voice: { audioSha: "a".repeat(64), promptText: PROMPT, promptLang: "zh" }, params,
});

/** Reference, independent of bert.ts's batching: each zh run through the graph alone (B = 1, no padding), row c+1 repeated word2ph[c] times. */
const bertSession = await ort.InferenceSession.create(join(bertDir, manifest.graphs.bert_zh!.file));
async function reference(seg: { phones: readonly string[]; runs: ReturnType<typeof promptToPhones>["runs"] }): Promise<Float32Array> {
  const out = new Float32Array(seg.phones.length * D);
  let row = 0;
  for (const r of seg.runs) {
    if (r.lang === "zh" && r.word2ph) {
      const tokens = tokenizeChars(r.normText, vocab);
      const L = tokens.length;
      const res = await bertSession.run({
        input_ids: new ort.Tensor("int64", BigInt64Array.from(tokens.map(BigInt)), [1, L]),
        attention_mask: new ort.Tensor("int64", new BigInt64Array(L).fill(1n), [1, L]),
        token_type_ids: new ort.Tensor("int64", new BigInt64Array(L), [1, L]),
      });
      const h = res.hidden_m3.data as Float32Array;
      r.word2ph.forEach((n, c) => {
        for (let k = 0; k < n; k++) out.set(h.subarray((c + 1) * D, (c + 2) * D), (row + k) * D);
        row += n;
      });
    } else row += r.phones.length;
  }
  t.equal(row, seg.phones.length);
  return out;
}

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), a.length === b.length ? 0 : Infinity);

t.test("manifest - bert_zh is optional; with it, its graph and vocab are verified", async (t) => {
  t.notOk(loadManifest(tiny).graphs.bert_zh, "the tiny set has none and is still valid");
  t.ok(manifest.graphs.bert_zh?.vocab.file, "the BERT set names its vocab");
  const broken = mkdtempSync(join(tmpdir(), "gsv-bertset-bad-"));
  t.teardown(() => rmSync(broken, { recursive: true, force: true }));
  makeBertModelSet(tiny, broken);
  writeFileSync(join(broken, "bert_zh_vocab.txt"), TINY_BERT_VOCAB + "\nextra");
  t.throws(() => loadManifest(broken), ManifestError, "an altered vocab fails the check");
  t.ok(loadManifest(broken, { graphs: ["t2s_encoder"] }), "services that do not load bert_zh verify only their graphs");
});

t.test("job checks - malformed BERT rows fail alone with MALFORMED_MESSAGE", async (t) => {
  const base: GptJob = { ...envelope("c1"), seg: 0, segCount: 1, voiceKey: "k", promptIds: Int32Array.from([5, 6, 3]), textIds: Int32Array.from([10, 20, 3]), params };
  const rows = (n: number, index: number[], dim = D) => ({ dim, vecs: new Float32Array(n * dim).fill(0.5), index: Int32Array.from(index) });
  t.doesNotThrow(() => checkGptJob({ ...base, textBert: rows(2, [0, 1, -1]), promptBert: rows(1, [0, 0, 0]) }, manifest));
  const bad: [string, Partial<GptJob>][] = [
    ["index shorter than the phones", { textBert: rows(2, [0, 1]) }],
    ["index past the vectors", { textBert: rows(2, [0, 2, -1]) }],
    ["index below -1", { promptBert: rows(1, [0, -2, 0]) }],
    ["another dim", { textBert: rows(1, [0, 0, 0], 8) }],
    ["vecs not a multiple of dim", { textBert: { dim: D, vecs: new Float32Array(D + 1), index: Int32Array.from([0, 0, 0]) } }],
    ["a NaN", { textBert: { ...rows(1, [0, 0, 0]), vecs: new Float32Array(D).fill(NaN) } }],
  ];
  for (const [what, extra] of bad) {
    let code: string | undefined;
    try {
      checkGptJob({ ...base, ...extra }, manifest);
    } catch (err) {
      code = err instanceof GsvError ? err.code : String(err);
    }
    t.equal(code, "MALFORMED_MESSAGE", what);
  }
});

t.test("text-frontend → gpt-semantic with bert_zh: features reach t2s_encoder", async (t) => {
  const env = await stageEnv(t);
  await env.start(["text-frontend"], bertDir);
  await env.nc.jetstream().publish(WorkQueues.text.subject, encode(textJob("b1")));
  const jobs = (await take(env.nc, "gpt", 3)).map((d) => decodeAs(GptJob, d)).sort((a, b) => a.seg - b.seg);
  t.equal(jobs.length, 3);
  const segs = textToSegments(TEXT, "auto", "cut5");
  const prompt = promptToPhones(PROMPT, "zh");
  t.same(segs.map((s) => s.runs.map((r) => r.lang)), [["zh"], ["en"], ["zh"]]);
  const promptRef = await reference(prompt);
  for (const [i, j] of jobs.entries()) {
    t.ok(j.promptBert, `segment ${i}: the prompt's features ride along`);
    t.ok(maxDiff(expandBert(j.promptBert, j.promptIds.length, D), promptRef) < 1e-5, `segment ${i}: prompt rows equal the graph run alone`);
    if (segs[i].runs[0].lang === "zh") {
      const ref = await reference(segs[i]);
      t.ok(ref.some((v) => v !== 0));
      t.equal(j.textBert!.vecs.length, segs[i].runs[0].word2ph!.filter((n) => n > 0).length * D, "one vector per character, not per phone");
      t.ok(maxDiff(expandBert(j.textBert, j.textIds.length, D), ref) < 1e-5, `segment ${i}: text rows equal the graph run alone`);
    } else {
      t.equal(j.textBert, undefined, `segment ${i} (en): no features, zeros downstream`);
    }
  }

  // gpt-semantic on the same set: its tokens are those of an in-process engine fed the reference rows,
  // and differ from the same jobs without features (zeros).
  await env.start(["gpt-semantic"], bertDir);
  const zh = jobs[2];
  const { promptBert: _p, textBert: _t, ...bare } = zh;
  await env.nc.jetstream().publish(WorkQueues.gpt.subject, encode({ ...zh, id: "withbert", reply: Subjects.reply("withbert"), deadline: Date.now() + 60_000 }));
  await env.nc.jetstream().publish(WorkQueues.gpt.subject, encode({ ...bare, id: "nobert", reply: Subjects.reply("nobert"), deadline: Date.now() + 60_000 }));
  const out = new Map((await take(env.nc, "sovits", 2)).map((d) => decodeAs(SovitsJob, d)).map((j) => [j.id, j]));
  const withBert = out.get("withbert")!;
  const noBert = out.get("nobert")!;
  t.ok(withBert && noBert);
  t.notOk("textBert" in withBert || "promptBert" in withBert, "features are not forwarded to sovits-decoder");

  const sessions = {} as GptSessions;
  for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) sessions[g] = await ort.InferenceSession.create(join(bertDir, manifest.graphs[g].file), { intraOpNumThreads: 1 });
  const voice = (await new VoiceStore(await voicesBucket(env.nc)).get("test.voice"))!;
  const decodeLocal = async (extra: Partial<GptRequest>) => {
    const engine = new GptEngine(sessions, manifest, { maxRows: 2 });
    const p = zh.params;
    engine.add({ id: "x", promptIds: zh.promptIds, textIds: zh.textIds, prompts: voice.prompts, sampling: { topK: p.topK, topP: p.topP, temperature: p.temperature, repetitionPenalty: p.repetitionPenalty }, seed: (p.seed + zh.seg * 0x9e3779b1) >>> 0, ...extra });
    for (;;) {
      const done = await engine.step();
      if (done.length) return Array.from(done[0].tokens);
    }
  };
  const local = await decodeLocal({ promptBert: promptRef, textBert: await reference(segs[2]) });
  t.same(Array.from(withBert.tokens), local, "service tokens = engine fed the reference BERT rows");
  t.same(Array.from(noBert.tokens), await decodeLocal({}), "without features: the zero-row tokens");
  t.notSame(Array.from(withBert.tokens), Array.from(noBert.tokens), "the features change the tokens");
});

t.test("text-frontend without bert_zh: no features in the GPT jobs (zeros, as before)", async (t) => {
  const env = await stageEnv(t);
  await env.start(["text-frontend"], tiny);
  await env.nc.jetstream().publish(WorkQueues.text.subject, encode(textJob("n1")));
  const jobs = (await take(env.nc, "gpt", 3)).map((d) => decodeAs(GptJob, d));
  t.equal(jobs.length, 3);
  for (const j of jobs) t.ok(j.promptBert === undefined && j.textBert === undefined, `segment ${j.seg}: no BERT fields`);
});

t.test("text-frontend with bert_zh: a segment whose features exceed max_payload fails with SEGMENT_TOO_LONG", async (t) => {
  const env = await stageEnv(t);
  await env.start(["text-frontend"], bertDir);
  const long = "今天天气很好我们一起去银行取钱".repeat(20) + "。"; // 300 zh characters, one segment: 1.2 MB of f32 features
  const replies = env.nc.subscribe(Subjects.reply("long1"), { max: 1, timeout: 60_000 });
  await env.nc.jetstream().publish(WorkQueues.text.subject, encode(textJob("long1", long, "cut0")));
  for await (const m of replies) {
    const ev = decodeAs(ReplyEvent, m.data);
    t.equal(ev.type, "error");
    if (ev.type === "error") {
      t.equal(ev.code, "SEGMENT_TOO_LONG");
      t.match(ev.message, /max_payload/);
    }
  }
});
