/** vocoder stage: de-normalised mel window → 24 kHz PCM, sent straight to the request's reply subject. */
import { loadConfig } from "../../shared/config.js";
import { loadManifest } from "../../shared/manifest.js";
import { connectNats } from "../../shared/nats.js";
import { OrtPool } from "../../shared/ort-pool.js";
import { VocoderJob } from "../../shared/schemas.js";
import { StageRunner, runUntilSignalled, timing } from "../../shared/stage.js";
import { asFloat32, f32 } from "../../shared/tensor.js";
import { MicroBatcher } from "../../shared/batcher.js";

const cfg = loadConfig("vocoder");
const manifest = loadManifest(cfg.modelDir);
const pool = await OrtPool.create({ modelDir: cfg.modelDir, manifest, graphs: ["vocoder"], workers: cfg.ortWorkers, intraOpThreads: cfg.ortThreads });
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
const { upsample, sampleRate } = manifest.dims.vocoder;
const bands = manifest.dims.mel.bands;

// Windows of equal length are vocoded together (no padding, so a batched window equals the window alone).
const maxBatch = Number(process.env.GSV_VOCODER_MAX_BATCH ?? 8);
const vocode = new MicroBatcher<{ mel: Float32Array; frames: number }, { pcm: Float32Array; batch: number }>(
  async (items) => {
    const frames = items[0].frames;
    const x = new Float32Array(items.length * bands * frames);
    items.forEach((it, i) => x.set(it.mel, i * bands * frames));
    const out = await pool.run("vocoder", { x: f32(x, [items.length, bands, frames]) });
    const audio = asFloat32(out.audio, "audio");
    const n = frames * upsample;
    return items.map((_, i) => ({ pcm: audio.slice(i * n, (i + 1) * n), batch: items.length }));
  },
  { maxBatch, concurrency: cfg.ortWorkers, key: (it) => it.frames },
);

const runner = new StageRunner({
  stage: "vocoder",
  schema: VocoderJob,
  nc,
  replica: cfg.replica,
  // Pull enough windows that batches can form.
  concurrency: Math.max(cfg.concurrency, maxBatch * cfg.ortWorkers),
  ackWaitMs: cfg.ackWaitMs,
  metadata: { modelSet: manifest.name },
  extraStatus: () => ({ batches: Object.fromEntries(vocode.histogram), waiting: vocode.waiting }),
  async handle(job, ctx) {
    const started = Date.now();
    const { pcm, batch } = await vocode.submit({ mel: job.mel, frames: job.frames });
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
      timings: [...job.timings, timing("vocoder", cfg.replica, job, started, batch, job.seg, job.win)],
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
