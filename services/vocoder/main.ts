/** vocoder stage: de-normalised mel window → 24 kHz PCM, sent straight to the request's reply subject. */
import { loadConfig } from "../../shared/config.js";
import { loadManifest } from "../../shared/manifest.js";
import { connectNats } from "../../shared/nats.js";
import { OrtPool } from "../../shared/ort-pool.js";
import { VocoderJob } from "../../shared/schemas.js";
import { StageRunner, runUntilSignalled, timing } from "../../shared/stage.js";
import { asFloat32, f32 } from "../../shared/tensor.js";

const cfg = loadConfig("vocoder");
const manifest = loadManifest(cfg.modelDir);
const pool = await OrtPool.create({ modelDir: cfg.modelDir, manifest, graphs: ["vocoder"], workers: cfg.ortWorkers, intraOpThreads: cfg.ortThreads });
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
const { upsample, sampleRate } = manifest.dims.vocoder;

const runner = new StageRunner({
  stage: "vocoder",
  schema: VocoderJob,
  nc,
  replica: cfg.replica,
  concurrency: cfg.concurrency,
  ackWaitMs: cfg.ackWaitMs,
  metadata: { modelSet: manifest.name },
  async handle(job, ctx) {
    const started = Date.now();
    const out = await pool.run("vocoder", { x: f32(job.mel, [1, manifest.dims.mel.bands, job.frames]) });
    const pcm = asFloat32(out.audio, "audio");
    ctx.checkAlive(job);
    ctx.reply(job, {
      type: "audio",
      id: job.id,
      seg: job.seg,
      segCount: job.segCount,
      win: job.win,
      last: job.last,
      sampleRate,
      overlap: job.overlap * upsample,
      tail: job.tail * upsample,
      pcm,
      tokens: job.tokens,
      fragmentInterval: job.fragmentInterval,
      timings: [...job.timings, timing("vocoder", cfg.replica, job, started, 1, job.seg, job.win)],
    });
  },
});

await runner.start();
process.stdout.write(JSON.stringify({ ready: "vocoder", replica: cfg.replica }) + "\n");
runUntilSignalled("vocoder", async () => {
  await runner.stop();
  await nc.drain();
  await pool.close();
});
