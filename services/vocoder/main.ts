/**
 * vocoder stage: de-normalised mel window → 24 kHz PCM, sent straight to the request's reply subject.
 *
 * With GSV_VOCODER=<name> the process instead serves a real, trained vocoder from vocoders/<name>/
 * (vocoder.json + ONNX, e.g. mb-melgan-ljspeech) as the request/reply endpoint tts.v1.vocode.<name>, so
 * it can run beside the model set's vocoder stage. See docs/real-vocoder.md.
 */
import { loadConfig } from "../../shared/config.js";
import { loadManifest, type Manifest } from "../../shared/manifest.js";
import { ModelSetCache, stageModelSets } from "../../shared/model-sets.js";
import { connectNats } from "../../shared/nats.js";
import { OrtPool } from "../../shared/ort-pool.js";
import { VocodeRequest, VocoderJob } from "../../shared/schemas.js";
import { StageRunner, runUntilSignalled, timing } from "../../shared/stage.js";
import { asFloat32, f32 } from "../../shared/tensor.js";
import { MicroBatcher, batcherTotals } from "../../shared/batcher.js";
import { batchObserver } from "../../shared/observe.js";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { decodeAs, encode } from "../../shared/codec.js";
import { GsvError, toGsvError } from "../../shared/errors.js";
import { log } from "../../shared/log.js";
import { fromRoot } from "../../shared/paths.js";
import { Subjects } from "../../shared/subjects.js";
import { checkVocoderJob } from "../../shared/job-checks.js";

/** The model set's vocoder graph behind the JetStream work queue (the default). */
async function serveModelSetVocoder(): Promise<void> {
  const cfg = loadConfig("vocoder");
  const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
  // Windows of equal length are vocoded together (no padding, so a batched window equals the window alone).
  const maxBatch = Number(process.env.GSV_VOCODER_MAX_BATCH ?? 8);
  /** The vocoder graph of a SoVITS set, with its own batcher (batches never mix sets). */
  interface VocoderSet {
    manifest: Manifest;
    sha: string;
    pool: OrtPool;
    vocode: MicroBatcher<{ mel: Float32Array; frames: number }, { pcm: Float32Array; batch: number }>;
  }
  const sets = new ModelSetCache<VocoderSet>({
    max: cfg.maxModelSets,
    modelDir: cfg.modelDir,
    modelsRoot: cfg.modelsRoot,
    async load(name, dir) {
      const manifest = loadManifest(dir, { graphs: ["vocoder"] });
      const pool = await OrtPool.create({ modelDir: dir, manifest, graphs: ["vocoder"], workers: cfg.ortWorkers, intraOpThreads: cfg.ortThreads });
      const { upsample } = manifest.dims.vocoder;
      const bands = manifest.dims.mel.bands;
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
        { maxBatch, concurrency: cfg.ortWorkers, key: (it) => it.frames, observe: batchObserver("vocoder", "vocoder") },
      );
      log.info("vocoder loaded a model set", { set: name, dir });
      return { manifest, sha: createHash("sha256").update(JSON.stringify(manifest.graphs)).digest("hex"), pool, vocode };
    },
    async unload(set) {
      await set.pool.close();
    },
  });
  (await sets.acquire()).release(); // the default set at start: a broken default fails the process

  const runner = new StageRunner({
    stage: "vocoder",
    schema: VocoderJob,
    nc,
    replica: cfg.replica,
    // Pull enough windows that batches can form.
    concurrency: Math.max(cfg.concurrency, maxBatch * cfg.ortWorkers),
    ackWaitMs: cfg.ackWaitMs,
    metadata: { modelSet: sets.defaultName },
    modelSets: stageModelSets(sets, (set) => ({ sha: set.sha, manifest: set.manifest })),
    extraStatus: async () => {
      const { histogram, waiting } = batcherTotals((await sets.loaded()).map(([, set]) => set.vocode));
      return { batches: histogram, waiting };
    },
    async handle(job, ctx) {
      const lease = await sets.acquire(job.models?.sovits);
      const { manifest, vocode } = lease.value;
      const { upsample, sampleRate } = manifest.dims.vocoder;
      const started = Date.now();
      let pcm: Float32Array;
      let batch: number;
      try {
        checkVocoderJob(job, manifest);
        ({ pcm, batch } = await vocode.submit({ mel: job.mel, frames: job.frames }));
      } finally {
        lease.release();
      }
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
  process.stdout.write(JSON.stringify({ ready: "vocoder", replica: cfg.replica, metrics: runner.metricsUrl }) + "\n");
  runUntilSignalled("vocoder", async () => {
    await runner.stop();
    await nc.drain();
    await sets.close();
  });
}

// ─── GSV_VOCODER=<name>: a real, trained vocoder from vocoders/<name>/ ──────────────────────────

/** vocoders/<name>/vocoder.json: what the service needs to know about the ONNX graph. */
const RealVocoderSpec = z.object({
  name: z.string(),
  file: z.string().regex(/^[\w.-]+\.onnx$/),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  sampleRate: z.number().int().positive(),
  hop: z.number().int().positive(),
  bands: z.number().int().positive(),
  maxSeconds: z.number().positive(),
  /** Fewest frames the graph accepts (MB-MelGAN's first reflect pad is 3 frames wide). */
  minFrames: z.number().int().min(1).default(1),
  input: z.object({ name: z.string(), layout: z.string().startsWith("frames-first", "only frames-first [B,T,bands] inputs are supported") }),
  output: z.object({ name: z.string() }),
});

async function serveRealVocoder(name: string): Promise<void> {
  const cfg = loadConfig("vocoder");
  // The name is also a subject token: no dots, wildcards or path separators.
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(name)) throw new Error(`GSV_VOCODER must be a vocoder name under vocoders/, got ${JSON.stringify(name)}`);
  const dir = fromRoot("vocoders", name);
  const spec = RealVocoderSpec.parse(JSON.parse(readFileSync(join(dir, "vocoder.json"), "utf8")));
  const sha = createHash("sha256").update(readFileSync(join(dir, spec.file))).digest("hex");
  if (sha !== spec.sha256) throw new Error(`${join(dir, spec.file)} has sha256 ${sha}, vocoder.json says ${spec.sha256} (a Git LFS pointer or a damaged file?)`);
  // OrtPool only reads manifest.graphs[g].file: one graph, loaded under the name "vocoder".
  const manifest = { graphs: { vocoder: { file: spec.file } } } as unknown as Manifest;
  const pool = await OrtPool.create({ modelDir: dir, manifest, graphs: ["vocoder"], workers: cfg.ortWorkers, intraOpThreads: cfg.ortThreads });
  const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
  const maxFrames = Math.ceil((spec.maxSeconds * spec.sampleRate) / spec.hop);
  const subject = Subjects.vocode(name);
  let inflight = 0;
  let idle: (() => void) | undefined;

  const vocode = async (data: Uint8Array): Promise<Record<string, unknown>> => {
    const t0 = Date.now();
    const req = decodeAs(VocodeRequest, data);
    if (req.frames > maxFrames) {
      throw new GsvError("BAD_PARAMETER", `mel has ${req.frames} frames; at most ${maxFrames} (${spec.maxSeconds} s) per request: split longer input`);
    }
    if (req.frames < spec.minFrames) throw new GsvError("BAD_PARAMETER", `mel has ${req.frames} frames; this vocoder needs at least ${spec.minFrames}`);
    if (req.mel.length !== req.frames * spec.bands) {
      throw new GsvError("MALFORMED_MESSAGE", `mel has ${req.mel.length} values, frames × bands is ${req.frames * spec.bands}`);
    }
    for (let i = 0; i < req.mel.length; i++) {
      if (!Number.isFinite(req.mel[i])) throw new GsvError("MALFORMED_MESSAGE", `mel holds a non-finite value at ${i}`);
    }
    if (req.deadline !== undefined && Date.now() > req.deadline) throw new GsvError("DEADLINE_EXCEEDED");
    const out = await pool.run("vocoder", { [spec.input.name]: f32(req.mel, [1, req.frames, spec.bands]) });
    const pcm = asFloat32(out[spec.output.name], spec.output.name);
    if (pcm.length !== req.frames * spec.hop) throw new GsvError("MODEL_ERROR", `the vocoder gave ${pcm.length} samples for ${req.frames} frames`);
    return { ok: true, pcm, sampleRate: spec.sampleRate, frames: req.frames, ms: Date.now() - t0 };
  };

  const svc = await nc.services.add({
    name: `vocoder-${name}`,
    version: "0.1.0",
    description: `gsv-pipeline real vocoder ${name} (${spec.sampleRate} Hz, hop ${spec.hop}, ${spec.bands} bands)`,
    metadata: { vocoder: name, replica: cfg.replica, sampleRate: String(spec.sampleRate), hop: String(spec.hop), bands: String(spec.bands) },
  });
  svc.addEndpoint("vocode", {
    subject,
    queue: `vocoder-${name}`,
    metadata: { description: "normalised log-mel [frames, bands] → PCM", maxFrames: String(maxFrames) },
    handler: (_err, m) => {
      inflight++;
      vocode(m.data)
        .then(
          (reply) => m.respond(encode(reply)),
          (err) => {
            const e = toGsvError(err);
            if (e.code === "INTERNAL" || e.code === "MODEL_ERROR") log.error(`vocoder ${name}: ${e.message}`);
            m.respond(encode({ ok: false, code: e.code, message: e.message }));
          },
        )
        .finally(() => {
          if (--inflight === 0) idle?.();
        });
    },
  });

  process.stdout.write(JSON.stringify({ ready: "vocoder", vocoder: name, subject, replica: cfg.replica }) + "\n");
  log.info("vocoder ready", { vocoder: name, subject, replica: cfg.replica });
  runUntilSignalled(`vocoder ${name}`, async () => {
    await svc.stop();
    if (inflight > 0) await new Promise<void>((r) => (idle = r));
    await nc.drain();
    await pool.close();
  });
}

// Last, after every declaration above is initialised.
const realVocoder = process.env.GSV_VOCODER;
if (realVocoder) await serveRealVocoder(realVocoder);
else await serveModelSetVocoder();
