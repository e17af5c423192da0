/**
 * GPT decode throughput vs batch size, measured on the engine itself (no NATS): tokens per second at
 * batch 1, 4, 16, 64 with B requests decoding together. Uses the `bench` set (GPT at upstream's
 * 24 layers × 512) when present (npm run gen-models -- --preset bench), else the tiny set.
 *   node dist/tools/bench-gpt.js [--model-dir DIR] [--steps 24] [--batches 1,4,16,64]
 */
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../shared/ort-options.js";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadManifest } from "../shared/manifest.js";
import { fromRoot } from "../shared/paths.js";
import { GptEngine, type GptSessions } from "../services/gpt-semantic/engine.js";

export interface GptBatchFigure {
  batch: number;
  msPerStep: number;
  tokPerS: number;
}

/** Tokens per second of the engine with B requests decoding together, for each B. */
export async function gptBatchThroughput(dir: string, batches: number[], steps: number, threads = 1): Promise<{ model: string; figures: GptBatchFigure[] }> {
  const manifest = loadManifest(dir, { verify: false });
  const sessions = {} as GptSessions;
  for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) sessions[g] = await ort.InferenceSession.create(join(dir, manifest.graphs[g].file), sessionOptions(threads));
  const figures: GptBatchFigure[] = [];
  for (const b of batches) {
    const engine = new GptEngine(sessions, manifest, { maxRows: b, admitPerStep: b, initialCapacity: 256 });
    for (let i = 0; i < b; i++)
      engine.add({
        id: `b${i}`,
        promptIds: Int32Array.from({ length: 20 }, (_, k) => (k + i) % 732),
        textIds: Int32Array.from({ length: 40 }, (_, k) => (k * 3 + i) % 732),
        prompts: Int32Array.from({ length: 150 }, (_, k) => (k * 7 + i) % 1024),
        sampling: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35 },
        seed: i,
      });
    await engine.step(); // admission (prefills) + first step
    await engine.step();
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) await engine.step();
    const ms = performance.now() - t0;
    figures.push({ batch: b, msPerStep: ms / steps, tokPerS: (b * steps) / (ms / 1000) });
  }
  return { model: `${manifest.name} (${manifest.dims.t2s.layers} layers × ${manifest.dims.t2s.hidden})`, figures };
}

export function defaultGptBenchDir(): string {
  return existsSync(fromRoot("models", "bench", "manifest.json")) ? fromRoot("models", "bench") : fromRoot("models", "tiny");
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/.*\/dist\//, "dist/"))) {
  const { values } = parseArgs({ options: { "model-dir": { type: "string" }, steps: { type: "string", default: "24" }, batches: { type: "string", default: "1,4,16,64" } } });
  const steps = Number(values.steps);
  const r = await gptBatchThroughput(values["model-dir"] ?? defaultGptBenchDir(), values.batches!.split(",").map(Number), steps, Number(process.env.GSV_ORT_THREADS ?? 1));
  console.log(`GPT decode on ${r.model}, ${steps} timed steps per batch, prompt 150 tokens + 60 phones`);
  for (const f of r.figures)
    console.log(`batch ${String(f.batch).padStart(3)}: ${f.msPerStep.toFixed(1).padStart(7)} ms/step  ${f.tokPerS.toFixed(0).padStart(6)} tokens/s  (${(f.tokPerS / r.figures[0].tokPerS).toFixed(2)}x batch ${r.figures[0].batch})`);
}
