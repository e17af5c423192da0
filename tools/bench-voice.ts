/**
 * Voice preparation throughput: N different references (3–10 s) asked for at once, prepared as the
 * sovits-decoder does it (voice-prep.ts through a MicroBatcher over an OrtPool), one reference a call
 * on W workers against batches of B references. Prints references per second and the ratio to batch 1.
 *   node dist/tools/bench-voice.js [--model-dir DIR] [--refs 16] [--configs 1x2,4x2,8x1]
 * (a config BxW: batches of up to B references, W onnxruntime workers of one thread each)
 */
import { parseArgs } from "node:util";
import { MicroBatcher } from "../shared/batcher.js";
import { loadManifest } from "../shared/manifest.js";
import { OrtPool } from "../shared/ort-pool.js";
import { fromRoot } from "../shared/paths.js";
import { runVoiceGraphs, voiceBatching, voiceInput, type VoiceGraphsOut, type VoiceInput } from "../services/sovits-decoder/voice-prep.js";
import { syntheticReference } from "./loadgen.js";

export interface VoiceBatchFigure {
  batch: number;
  workers: number;
  refsPerS: number;
  /** Samples the graphs computed (padding included) per sample of reference audio. */
  padding: number;
  batches: Record<number, number>;
}

/** References per second for each configuration, on the same N references (DSP done once, not timed). */
export async function voicePrepThroughput(dir: string, refs: number, configs: { batch: number; workers: number }[]): Promise<{ model: string; seconds: number; figures: VoiceBatchFigure[] }> {
  const manifest = loadManifest(dir, { verify: false });
  // lengths spread over upstream's 3–10 s, at the sample rates references come in
  const rates = [16000, 22050, 24000, 32000, 44100, 48000];
  const inputs: VoiceInput[] = Array.from({ length: refs }, (_, i) => voiceInput(syntheticReference(3.2 + ((i * 2.9) % 6.6), rates[i % rates.length], i + 1)));
  const seconds = inputs.reduce((s, it) => s + it.seconds, 0);
  const figures: VoiceBatchFigure[] = [];
  for (const { batch, workers } of configs) {
    const pool = await OrtPool.create({ modelDir: dir, manifest, graphs: ["cnhubert", "vq_extract", "ge_encoder"], workers, intraOpThreads: 1 });
    try {
      const batching = voiceBatching(pool);
      let computed = 0;
      const batcher = new MicroBatcher<VoiceInput, VoiceGraphsOut>(
        (items) => {
          computed += items.length * Math.max(...items.map((it) => it.audio16k.length));
          return runVoiceGraphs(pool, manifest, items, batching);
        },
        { maxBatch: batch, concurrency: workers },
      );
      await runVoiceGraphs(pool, manifest, [inputs[0]], batching); // warm-up
      computed = 0;
      const t0 = performance.now();
      await Promise.all(inputs.map((it) => batcher.submit(it)));
      const s = (performance.now() - t0) / 1000;
      const audio = inputs.reduce((n, it) => n + it.audio16k.length, 0);
      figures.push({ batch, workers, refsPerS: refs / s, padding: computed / audio, batches: Object.fromEntries(batcher.histogram) });
    } finally {
      await pool.close();
    }
  }
  return { model: manifest.name, seconds, figures };
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/.*\/dist\//, "dist/"))) {
  const { values } = parseArgs({ options: { "model-dir": { type: "string" }, refs: { type: "string", default: "16" }, configs: { type: "string", default: "1x2,4x2,8x1" } } });
  const configs = values.configs!.split(",").map((c) => {
    const [batch, workers] = c.split("x").map(Number);
    return { batch, workers: workers || 1 };
  });
  const r = await voicePrepThroughput(values["model-dir"] ?? fromRoot("models", "tiny"), Number(values.refs), configs);
  console.log(`voice preparation on ${r.model}: ${values.refs} references, ${r.seconds.toFixed(1)} s of audio, asked for at once`);
  for (const f of r.figures)
    console.log(
      `batch ≤ ${String(f.batch).padStart(2)} on ${f.workers} worker(s): ${f.refsPerS.toFixed(2).padStart(6)} references/s (${(f.refsPerS / r.figures[0].refsPerS).toFixed(2)}x the first), ` +
        `${f.padding.toFixed(2)} samples computed per reference sample, batches ${JSON.stringify(f.batches)}`,
    );
}
