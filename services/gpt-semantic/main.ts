/** gpt-semantic stage: phones + voice prompt tokens → semantic tokens, decoded with continuous batching across requests. */
import { loadConfig } from "../../shared/config.js";
import { GsvError } from "../../shared/errors.js";
import { log } from "../../shared/log.js";
import { loadManifest, type Manifest } from "../../shared/manifest.js";
import { ModelSetCache, stageModelSets } from "../../shared/model-sets.js";
import { createHash } from "node:crypto";
import { connectNats, tokensBucket, voicesBucket } from "../../shared/nats.js";
import { GptJob, type SovitsJob } from "../../shared/schemas.js";
import { StageRunner, runUntilSignalled, type StageContext } from "../../shared/stage.js";
import { VoiceStore } from "../../shared/voices.js";
import { checkGptJob } from "../../shared/job-checks.js";
import { EngineClient } from "./engine-client.js";
import { currentContext, recordBatch } from "../../shared/observe.js";
import type { SpanContext } from "../../shared/trace.js";

// The trace context of each request in the engine, so decode-step spans can link to the requests' spans.
const contexts = new Map<string, SpanContext | undefined>();
import { MAX_TOKENS } from "./engine.js";
import { expandBert } from "../text-frontend/bert.js";
import { encode } from "../../shared/codec.js";
import { emitPoints, makeSchedule, tokensKey } from "../../shared/streaming.js";

const cfg = loadConfig("gpt-semantic");
const maxRows = Number(process.env.GSV_GPT_MAX_ROWS ?? 16);
const engineOptions = {
  maxRows,
  kvBudgetBytes: Number(process.env.GSV_GPT_KV_BUDGET_MB ?? 2048) * 1024 * 1024,
  // Playback-paced admission of a streamed request's later segments (docs/streaming.md, "Scheduling"); 0: off.
  ...(process.env.GSV_GPT_PACING === "0" ? {} : { pacing: {} }),
};
/** A GPT set in use: its manifest and its continuous-batching engine (one per set: batches never mix sets). */
interface GptSet {
  manifest: Manifest;
  sha: string;
  engine: EngineClient;
}
const sets = new ModelSetCache<GptSet>({
  max: cfg.maxModelSets,
  modelDir: cfg.modelDir,
  modelsRoot: cfg.modelsRoot,
  async load(name, dir) {
    const manifest = loadManifest(dir, { graphs: ["t2s_encoder", "t2s_prefill", "t2s_step"] });
    const engine = await EngineClient.create({
      modelDir: dir,
      manifest,
      workers: cfg.ortWorkers,
      intraOpThreads: cfg.ortThreads,
      engine: engineOptions,
      // Prefills run in a thread of their own beside the decode steps (GSV_GPT_PREFILL_THREAD=0: between steps).
      prefillThread: process.env.GSV_GPT_PREFILL_THREAD !== "0",
      onPrefill: (p) => recordBatch("gpt", "gpt_prefill", { size: 1, startMs: p.startMs, endMs: p.endMs, carried: [contexts.get(p.id)] }),
      onSteps: (s) => recordBatch("gpt", "gpt_decode", { size: s.ids.length, startMs: s.startMs, endMs: s.endMs, steps: s.stepMs.length, stepMs: s.stepMs, tokens: s.tokens, carried: s.ids.map((id) => contexts.get(id)) }),
    });
    log.info("gpt-semantic loaded a model set", { set: name, dir });
    return { manifest, sha: createHash("sha256").update(JSON.stringify(manifest.graphs)).digest("hex"), engine };
  },
  async unload(set) {
    await set.engine.close();
  },
});
// The default set is loaded at start, as before: a broken default fails the process, not the first request.
(await sets.acquire()).release();
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
const voices = new VoiceStore(await voicesBucket(nc));
const tokensKv = await tokensBucket(nc);
let serial = 0;

const runner = new StageRunner({
  stage: "gpt",
  schema: GptJob,
  nc,
  replica: cfg.replica,
  // The pull credit is the engine's batch: every job fetched can join the running batch at once.
  concurrency: maxRows * Math.max(1, cfg.ortWorkers),
  ackWaitMs: cfg.ackWaitMs,
  metadata: { modelSet: sets.defaultName, maxRows: String(maxRows) },
  modelSets: stageModelSets(sets, (set) => ({ sha: set.sha, manifest: set.manifest })),
  extraStatus: async () => {
    const engines: Record<string, unknown> = {};
    for (const [name, set] of await sets.loaded()) engines[name] = await set.engine.stats().catch(() => []);
    return { engines: Object.values(engines).flat(), enginesBySet: engines };
  },
  async handle(job, ctx) {
    const lease = await sets.acquire(job.models?.gpt);
    try {
      await decodeSegment(job, ctx, lease.value);
    } finally {
      lease.release();
    }
  },
});

async function decodeSegment(job: GptJob, ctx: StageContext, set: GptSet): Promise<void> {
  const { manifest, engine } = set;
  checkGptJob(job, manifest);
  const received = Date.now();
  const voice = await voices.require(job.voiceKey);
  const key = `${job.id}:${job.seg}:${++serial}`;
  contexts.set(key, currentContext());
  let stopped: "CANCELLED" | "DEADLINE_EXCEEDED" | undefined;
  const unwatch = ctx.watch(job, (code) => {
    stopped = code;
    engine.abort(key);
  });
  // Streaming (docs/streaming.md): at each window's token count, the tokens so far go to KV, the first
  // window's job goes to sovits-decoder at once, and the client hears of the progress.
  const stream = job.stream;
  const schedule = stream ? makeSchedule(stream.mode, manifest.dims.cfm, voice.refMelFrames, voice.prompts.length, job.params.speed) : undefined;
  let firstSent = false;
  let chain: Promise<void> = Promise.resolve();
  // The BERT features stay here: later stages do not need them.
  const { promptBert: _pb, textBert: _tb, ...segmentJob } = job;
  const sovitsJob = (tokens: Int32Array, final: boolean, timings: SovitsJob["timings"]): SovitsJob => ({ ...segmentJob, enqueuedAt: Date.now(), timings, tokens, tokensFinal: final });
  const progress = (tokens: number, final: boolean) =>
    ctx.reply(job, { type: "progress", id: job.id, stage: "gpt", seg: job.seg, tokens, final, at: Date.now() });
  const onPartial = schedule
    ? (p: { tokens: Int32Array }) => {
        chain = chain.then(async () => {
          if (stopped) return;
          await tokensKv.put(tokensKey(job.id, job.seg), encode({ tokens: p.tokens, final: false }));
          if (!firstSent) {
            firstSent = true;
            const t = { stage: "gpt", replica: cfg.replica, queueMs: Math.max(0, received - job.enqueuedAt), computeMs: Date.now() - received, batch: 1, seg: job.seg, at: received };
            await ctx.forward("sovits", `${job.id}:sovits:${job.seg}`, sovitsJob(p.tokens, false, [...job.timings, t]));
          }
          progress(p.tokens.length, false);
        });
        chain.catch(() => undefined); // handled: `await chain` below rethrows it
      }
    : undefined;
  const r = await engine
    .decode({
      id: key,
      promptIds: job.promptIds,
      textIds: job.textIds,
      prompts: voice.prompts,
      sampling: { topK: job.params.topK, topP: job.params.topP, temperature: job.params.temperature, repetitionPenalty: job.params.repetitionPenalty },
      seed: (job.params.seed + job.seg * 0x9e3779b1) >>> 0,
      // zh BERT rows, expanded to one row per phone (absent: the engine passes zeros).
      ...(job.promptBert ? { promptBert: expandBert(job.promptBert, job.promptIds.length, manifest.dims.t2s.bertDim) } : {}),
      ...(job.textBert ? { textBert: expandBert(job.textBert, job.textIds.length, manifest.dims.t2s.bertDim) } : {}),
      ...(schedule ? { emitAt: emitPoints(schedule, MAX_TOKENS), group: job.id, order: job.seg, speed: job.params.speed } : {}),
    }, onPartial)
    .finally(() => {
      unwatch();
      contexts.delete(key);
    });
  await chain;
  if (stopped) throw new GsvError(stopped);
  if (r.error) throw new GsvError("MODEL_ERROR", r.error);
  log.debug("gpt segment done", { id: job.id, seg: job.seg, tokens: r.tokens.length, stoppedBy: r.stoppedBy, meanBatch: r.meanBatch });
  if (schedule) {
    const timings = [...job.timings, { stage: "gpt", replica: cfg.replica, queueMs: Math.max(0, received - job.enqueuedAt) + Math.round(r.queueMs), computeMs: Math.round(r.computeMs), batch: r.maxBatch, seg: job.seg, at: received + Math.round(r.queueMs) }];
    await tokensKv.put(tokensKey(job.id, job.seg), encode({ tokens: r.tokens, final: true }));
    if (!firstSent) await ctx.forward("sovits", `${job.id}:sovits:${job.seg}`, sovitsJob(r.tokens, true, timings));
    progress(r.tokens.length, true);
    return;
  }
  const out: SovitsJob = {
    ...segmentJob,
    enqueuedAt: Date.now(),
    timings: [
      ...job.timings,
      {
        stage: "gpt",
        replica: cfg.replica,
        queueMs: Math.max(0, received - job.enqueuedAt) + Math.round(r.queueMs),
        computeMs: Math.round(r.computeMs),
        batch: r.maxBatch,
        seg: job.seg,
        at: received + Math.round(r.queueMs),
      },
    ],
    tokens: r.tokens,
  };
  await ctx.forward("sovits", `${job.id}:sovits:${job.seg}`, out);
}

await runner.start();
process.stdout.write(JSON.stringify({ ready: "gpt-semantic", replica: cfg.replica, metrics: runner.metricsUrl }) + "\n");
runUntilSignalled("gpt-semantic", async () => {
  await runner.stop();
  await nc.drain();
  await sets.close();
});
