/** sovits-decoder stage: voice preparation (a services-API endpoint) and tokens → mel windows (CFM). */
import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import { intEnv, loadConfig } from "../../shared/config.js";
import { ortBackend } from "../../shared/cost-model.js";
import { decodeAs, encode } from "../../shared/codec.js";
import { GsvError, toGsvError } from "../../shared/errors.js";
import { log } from "../../shared/log.js";
import { loadManifest, type Manifest } from "../../shared/manifest.js";
import { ModelSetCache, stageModelSets, type Lease } from "../../shared/model-sets.js";
import { connectNats, refAudioStore, tokensBucket, voicesBucket } from "../../shared/nats.js";
import { OrtPool } from "../../shared/ort-pool.js";
import { SovitsJob, VoicePrepareRequest, type VocoderJob } from "../../shared/schemas.js";
import { StageRunner, runUntilSignalled, timing } from "../../shared/stage.js";
import { Subjects, voiceKey } from "../../shared/subjects.js";
import { VoiceStore } from "../../shared/voices.js";
import { checkSovitsJob } from "../../shared/job-checks.js";
import { MicroBatcher, batcherTotals } from "../../shared/batcher.js";
import { batchObserver } from "../../shared/observe.js";
import { extractContext, SpanKind, tracer } from "../../shared/trace.js";
import { decodeWindows, ditBatch, encodeSegment, type DitInput } from "./cfm.js";
import { preparedVoice, runVoiceBatch, voiceBatching, voiceInput, type VoiceGraphsOut, type VoiceInput } from "./voice-prep.js";
import { decodeStreamWindow } from "./stream.js";
import { makeSchedule, tokensKey, tokensNeeded, TokensSoFar } from "../../shared/streaming.js";
import type { StageContext } from "../../shared/stage.js";

const cfg = loadConfig("sovits-decoder");
// On onnxruntime's CPU backend the DiT is compute-bound and this stage does most of a request's work, so
// by default it runs one DiT call per core (GSV_SOVITS_ORT_WORKERS, else GSV_ORT_WORKERS if set, else
// the core count up to 2) and does not batch rows: a DiT row costs more in a batch than alone on a CPU
// (docs/performance.md). On the cost model (a simulated GPU) one device per replica and batches of 8.
const onCpu = ortBackend() === "onnx";
const ortWorkers = intEnv("GSV_SOVITS_ORT_WORKERS", process.env.GSV_ORT_WORKERS ? cfg.ortWorkers : onCpu ? Math.min(2, availableParallelism()) : 1) || 1;
// Euler steps of all windows in flight (any request of one model set) run as one DiT batch: "pad" pads
// rows to the longest window (x_lens masks), "bucket" batches only windows of equal length.
const cfmMode = process.env.GSV_CFM_BATCH === "bucket" ? "bucket" : "pad";
const cfmMaxBatch = intEnv("GSV_CFM_MAX_BATCH", onCpu ? 1 : 8) || 1;
// Steps are served earliest deadline first, then by segment and window, so a request's audio comes in
// order. A batch led by a streamed window holds at most GSV_CFM_STREAM_BATCH windows (default 1): on a
// CPU the DiT is compute-bound (batching buys ~13 %), and a large batch would hold back the first audio.
const cfmStreamBatch = Number(process.env.GSV_CFM_STREAM_BATCH ?? 1);
type DitItem = DitInput & { prio: number[]; streamed: boolean };
// References being prepared at the same time (new voices) run the voice graphs as one batch of up to
// GSV_VOICE_MAX_BATCH (padded, each row with its own length). Default 1 on onnxruntime's CPU backend, where
// HuBERT is compute-bound and two preparations on two workers finish sooner than one batch on one
// (docs/performance.md); 8 on the cost model. Sets whose voice graphs take one reference a call run 1.
const voiceMaxBatch = intEnv("GSV_VOICE_MAX_BATCH", onCpu ? 1 : 8) || 1;
// A batch that is not full may wait this long for more references (default 0: none).
const voiceBatchWaitMs = intEnv("GSV_VOICE_BATCH_WAIT_MS", 0);

/** A SoVITS set in use: its graphs (VQ, encoders, DiT) and its own DiT batcher (batches never mix sets). */
interface SovitsSet {
  name: string;
  manifest: Manifest;
  modelSha: string;
  pool: OrtPool;
  dit: MicroBatcher<DitItem, { v: Float32Array; batch: number }>;
  /** Voice graphs over the references being prepared; a reference that fails alone gets its own error. */
  voices: MicroBatcher<VoiceInput, VoiceGraphsOut | { error: unknown }>;
}
const sets = new ModelSetCache<SovitsSet>({
  max: cfg.maxModelSets,
  modelDir: cfg.modelDir,
  modelsRoot: cfg.modelsRoot,
  async load(name, dir) {
    const graphs = ["cnhubert", "vq_extract", "ge_encoder", "sovits_encp", "cfm_dit"] as const;
    const manifest = loadManifest(dir, { graphs });
    const pool = await OrtPool.create({ modelDir: dir, manifest, graphs, workers: ortWorkers, intraOpThreads: cfg.ortThreads });
    const dit = new MicroBatcher<DitItem, { v: Float32Array; batch: number }>(async (items) => (await ditBatch(pool, manifest, items)).map((v) => ({ v, batch: items.length })), {
      maxBatch: cfmMaxBatch,
      concurrency: ortWorkers,
      key: cfmMode === "bucket" ? (it) => it.t : undefined,
      observe: batchObserver("sovits", "cfm_dit"),
      priority: (it) => it.prio,
      batchLimit: (it) => (it.streamed ? cfmStreamBatch : cfmMaxBatch),
    });
    const batching = voiceBatching(pool);
    const voices = new MicroBatcher<VoiceInput, VoiceGraphsOut | { error: unknown }>(
      (items) => runVoiceBatch(pool, manifest, items, batching),
      {
        maxBatch: batching.cnhubert || batching.ge_encoder ? voiceMaxBatch : 1,
        concurrency: ortWorkers,
        maxWaitMs: voiceBatchWaitMs,
        observe: batchObserver("sovits", "voice_prep"),
      },
    );
    log.info("sovits-decoder loaded a model set", { set: name, dir, voiceBatch: batching });
    return { name, manifest, modelSha: createHash("sha256").update(JSON.stringify(manifest.graphs)).digest("hex"), pool, dit, voices };
  },
  async unload(set) {
    await set.pool.close();
  },
});
(await sets.acquire()).release(); // the default set at start: a broken default fails the process
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
const voices = new VoiceStore(await voicesBucket(nc));
const refAudio = await refAudioStore(nc);
const tokensKv = await tokensBucket(nc);

/** Streaming: wait until gpt-semantic has decoded `need` tokens of the segment, or all of them. */
async function waitForTokens(job: SovitsJob, need: number, ctx: StageContext): Promise<TokensSoFar> {
  const watcher = await tokensKv.watch({ key: tokensKey(job.id, job.seg) });
  const unwatch = ctx.watch(job, () => watcher.stop());
  try {
    for await (const e of watcher) {
      if (e.operation !== "PUT" || e.value.length === 0) continue;
      const t = decodeAs(TokensSoFar, e.value);
      if (t.final || t.tokens.length >= need) return t;
    }
  } finally {
    unwatch();
    watcher.stop();
  }
  ctx.checkAlive(job);
  throw new GsvError("INTERNAL", `the token watch of ${job.id}:${job.seg} ended`);
}

// Voice preparation: single flight per voice within this replica; the result is shared through KV.
const preparing = new Map<string, Promise<{ key: string; tokens: number; cached: boolean }>>();
async function ensureVoice(set: SovitsSet, audioSha: string): Promise<{ key: string; tokens: number; cached: boolean }> {
  const key = voiceKey(set.modelSha, audioSha);
  const have = await voices.get(key);
  if (have) return { key, tokens: have.prompts.length, cached: true };
  let p = preparing.get(key);
  if (!p) {
    p = (async () => {
      const bytes = await refAudio.getBlob(audioSha);
      if (!bytes) throw new GsvError("NOT_FOUND", `reference audio ${audioSha.slice(0, 12)}… is not in the object store`);
      const input = voiceInput(bytes); // a bad reference fails here, on its own
      const out = await set.voices.submit(input);
      if ("error" in out) throw out.error;
      const voice = preparedVoice(audioSha, input, out);
      await voices.put(key, voice);
      return { key, tokens: voice.prompts.length, cached: false };
    })().finally(() => preparing.delete(key));
    preparing.set(key, p);
  }
  return p;
}

const runner = new StageRunner({
  stage: "sovits",
  schema: SovitsJob,
  nc,
  replica: cfg.replica,
  // Each job decodes its windows one after another; jobs in flight are what the DiT batches over.
  concurrency: Math.max(cfg.concurrency, cfmMaxBatch * ortWorkers),
  ackWaitMs: cfg.ackWaitMs,
  metadata: { modelSet: sets.defaultName, cfmBatch: cfmMode },
  modelSets: stageModelSets(sets, (set) => ({ sha: set.modelSha, manifest: set.manifest })),
  extraStatus: async () => {
    const loaded = (await sets.loaded()).map(([, set]) => set);
    const dit = batcherTotals(loaded.map((set) => set.dit));
    const voice = batcherTotals(loaded.map((set) => set.voices));
    return { ditBatches: dit.histogram, ditWaiting: dit.waiting, voiceBatches: voice.histogram, voiceWaiting: voice.waiting };
  },
  async handle(job, ctx) {
    const lease = await sets.acquire(job.models?.sovits);
    try {
      await decodeSegment(job, ctx, lease);
    } finally {
      lease.release();
    }
  },
});

async function decodeSegment(job: SovitsJob, ctx: StageContext, lease: Lease<SovitsSet>): Promise<void> {
  const { manifest, pool, dit } = lease.value;
  checkSovitsJob(job, manifest);
  if (job.stream) return streamWindow(job, ctx, lease.value);
  const started = Date.now();
  const voice = await voices.require(job.voiceKey);
  const enc = await encodeSegment(pool, manifest, {
    prompts: voice.prompts,
    promptIds: job.promptIds,
    tokens: job.tokens,
    textIds: job.textIds,
    ge: voice.ge,
    speed: job.params.speed,
  });
  let winBatch = 1;
  let win = 0;
  const ditFn = async (input: DitInput) => {
    const r = await dit.submit({ ...input, prio: [job.deadline, job.seg, win], streamed: false });
    winBatch = Math.max(winBatch, r.batch);
    return r.v;
  };
  let winStarted = started;
  for await (const w of decodeWindows(ditFn, manifest, { voice, enc, steps: job.params.sampleSteps, seed: job.params.seed, seg: job.seg, checkAlive: () => ctx.checkAlive(job) })) {
    const out: VocoderJob = {
      id: job.id,
      reply: job.reply,
      deadline: job.deadline,
      enqueuedAt: Date.now(),
      // A later window waited for the one before it, not in a queue: its queue time is 0.
      timings: [...job.timings, { ...timing("sovits", cfg.replica, job, winStarted, winBatch, job.seg, win), ...(win > 0 ? { queueMs: 0 } : {}) }],
      seg: job.seg,
      segCount: job.segCount,
      win,
      last: w.last,
      mel: w.mel,
      frames: w.frames,
      overlap: w.overlap,
      tail: w.tail,
      tokens: job.tokens.length,
      fragmentInterval: job.params.fragmentInterval,
      ...(job.models ? { models: job.models } : {}),
    };
    await ctx.forward("vocoder", `${job.id}:vocoder:${job.seg}:${win}`, out);
    win = w.win + 1;
    winStarted = Date.now();
    winBatch = 1;
  }
}

/** One window of a streamed segment; forwards its mel to the vocoder and the next window's job to this stage. */
async function streamWindow(job: SovitsJob, ctx: StageContext, set: SovitsSet): Promise<void> {
  const { manifest, pool, dit } = set;
  const voice = await voices.require(job.voiceKey);
  const sched = makeSchedule(job.stream!.mode, manifest.dims.cfm, voice.refMelFrames, voice.prompts.length, job.params.speed);
  let tokens = job.tokens;
  let final = job.tokensFinal === true;
  const need = tokensNeeded(sched, job.window?.win ?? 0);
  if (!final && tokens.length < need) {
    const t = await waitForTokens(job, need, ctx);
    if (t.final || t.tokens.length > tokens.length) ({ tokens, final } = t);
  }
  const started = Date.now();
  let winBatch = 1;
  const ditFn = async (input: DitInput) => {
    const r = await dit.submit({ ...input, prio: [job.deadline, job.seg, job.window?.win ?? 0], streamed: true });
    winBatch = Math.max(winBatch, r.batch);
    return r.v;
  };
  const r = await decodeStreamWindow(pool, ditFn, manifest, { job, voice, tokens, final, checkAlive: () => ctx.checkAlive(job) });
  const w = r.window;
  const out: VocoderJob = {
    id: job.id,
    reply: job.reply,
    deadline: job.deadline,
    enqueuedAt: Date.now(),
    timings: [...job.timings, timing("sovits", cfg.replica, job, started, winBatch, job.seg, w.win)],
    seg: job.seg,
    segCount: job.segCount,
    win: w.win,
    last: w.last,
    mel: w.mel,
    frames: w.frames,
    overlap: w.overlap,
    tail: w.tail,
    tokens: final ? tokens.length : 0,
    fragmentInterval: job.params.fragmentInterval,
    ...(job.models ? { models: job.models } : {}),
  };
  await ctx.forward("vocoder", `${job.id}:vocoder:${job.seg}:${w.win}`, out);
  if (r.next) {
    const next: SovitsJob = { ...job, enqueuedAt: Date.now(), tokens, tokensFinal: final, window: r.next };
    await ctx.forward("sovits", `${job.id}:sovits:${job.seg}:w${r.next.win}`, next);
  }
}

await runner.start();
const svc = await nc.services.add({ name: "voice-prep", version: "0.1.0", description: "prepares reference voices", metadata: { replica: cfg.replica } });
// Voice preparations in progress: a drain waits for them, or their requesters would wait until their deadline.
let preparingNow = 0;
let preparedAll: (() => void) | undefined;
svc.addEndpoint("prepare", {
  subject: Subjects.voicePrepare,
  queue: "voice-prep",
  handler: (_err, m) => {
    const t0 = Date.now();
    const span = tracer.startSpan("sovits-decoder voice.prepare", { parent: extractContext(m.headers) ?? null, kind: SpanKind.SERVER, attributes: { "gsv.replica": cfg.replica } });
    preparingNow++;
    (async () => {
      const req = decodeAs(VoicePrepareRequest, m.data);
      const lease = await sets.acquire(req.sovits);
      const r = await ensureVoice(lease.value, req.audioSha).finally(() => lease.release());
      span.setAttribute("gsv.voice_cached", r.cached);
      m.respond(encode({ ok: true, voiceKey: r.key, promptTokens: r.tokens, cached: r.cached, ms: Date.now() - t0 }));
    })()
      .catch((err) => {
        const e = toGsvError(err);
        span.setError(e.code, e.message);
        m.respond(encode({ ok: false, code: e.code, message: e.message }));
      })
      .finally(() => {
        span.end();
        if (--preparingNow === 0) preparedAll?.();
      });
  },
});
await nc.flush(); // the server has the voice-prep subscription before anyone is told this replica is ready
process.stdout.write(JSON.stringify({ ready: "sovits-decoder", replica: cfg.replica, metrics: runner.metricsUrl }) + "\n");
log.info("sovits-decoder ready", { replica: cfg.replica, modelSet: sets.defaultName });
runUntilSignalled("sovits-decoder", async () => {
  await svc.stop(); // no new voice preparations; answer the ones in progress before the connection closes
  if (preparingNow > 0) await new Promise<void>((r) => (preparedAll = r));
  await runner.stop();
  await nc.drain();
  await sets.close();
});
