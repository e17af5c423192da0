/** gpt-semantic stage: phones + voice prompt tokens → semantic tokens, one segment per job. */
import { loadConfig } from "../../shared/config.js";
import { log } from "../../shared/log.js";
import { loadManifest } from "../../shared/manifest.js";
import { connectNats, voicesBucket } from "../../shared/nats.js";
import { OrtPool } from "../../shared/ort-pool.js";
import { GptJob, type SovitsJob } from "../../shared/schemas.js";
import { StageRunner, runUntilSignalled, timing } from "../../shared/stage.js";
import { VoiceStore } from "../../shared/voices.js";
import { decodeSegment } from "./decoder.js";

const cfg = loadConfig("gpt-semantic");
const manifest = loadManifest(cfg.modelDir);
const pool = await OrtPool.create({ modelDir: cfg.modelDir, manifest, graphs: ["t2s_encoder", "t2s_prefill", "t2s_step"], workers: cfg.ortWorkers, intraOpThreads: cfg.ortThreads });
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
const voices = new VoiceStore(await voicesBucket(nc));

const runner = new StageRunner({
  stage: "gpt",
  schema: GptJob,
  nc,
  replica: cfg.replica,
  concurrency: cfg.concurrency,
  ackWaitMs: cfg.ackWaitMs,
  metadata: { modelSet: manifest.name },
  async handle(job, ctx) {
    const started = Date.now();
    const voice = await voices.require(job.voiceKey);
    const { tokens, stoppedBy } = await decodeSegment(pool, manifest, {
      promptIds: job.promptIds,
      textIds: job.textIds,
      prompts: voice.prompts,
      sampling: { topK: job.params.topK, topP: job.params.topP, temperature: job.params.temperature, repetitionPenalty: job.params.repetitionPenalty },
      seed: (job.params.seed + job.seg * 0x9e3779b1) >>> 0,
      checkAlive: () => ctx.checkAlive(job),
    });
    log.debug("gpt segment done", { id: job.id, seg: job.seg, tokens: tokens.length, stoppedBy });
    const out: SovitsJob = {
      ...job,
      enqueuedAt: Date.now(),
      timings: [...job.timings, timing("gpt", cfg.replica, job, started, 1, job.seg)],
      tokens,
    };
    await ctx.forward("sovits", `${job.id}:sovits:${job.seg}`, out);
  },
});

await runner.start();
process.stdout.write(JSON.stringify({ ready: "gpt-semantic", replica: cfg.replica }) + "\n");
runUntilSignalled("gpt-semantic", async () => {
  await runner.stop();
  await nc.drain();
  await pool.close();
});
