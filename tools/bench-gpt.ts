/**
 * GPT decode throughput vs batch size, measured on the engine itself (no NATS): tokens per second at
 * batch 1, 4, 16, 64 with B requests decoding together. Uses the `bench` set (GPT at upstream's
 * 24 layers × 512) when present (npm run gen-models -- --preset bench), else the tiny set.
 *   node dist/tools/bench-gpt.js [--model-dir DIR] [--steps 24] [--batches 1,4,16,64]
 */
import * as ort from "onnxruntime-node";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadManifest } from "../shared/manifest.js";
import { fromRoot } from "../shared/paths.js";
import { GptEngine, type GptSessions } from "../services/gpt-semantic/engine.js";

const { values } = parseArgs({ options: { "model-dir": { type: "string" }, steps: { type: "string", default: "24" }, batches: { type: "string", default: "1,4,16,64" } } });
const dir = values["model-dir"] ?? (existsSync(fromRoot("models", "bench", "manifest.json")) ? fromRoot("models", "bench") : fromRoot("models", "tiny"));
const manifest = loadManifest(dir, { verify: false });
const sessions = {} as GptSessions;
for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) sessions[g] = await ort.InferenceSession.create(join(dir, manifest.graphs[g].file), { intraOpNumThreads: Number(process.env.GSV_ORT_THREADS ?? 1) });
const steps = Number(values.steps);
console.log(`GPT decode on ${manifest.name} (${manifest.dims.t2s.layers} layers × ${manifest.dims.t2s.hidden}), ${steps} timed steps per batch, prompt 150 tokens + 40 phones`);
const results: { batch: number; tokPerS: number; msPerStep: number }[] = [];
for (const b of values.batches!.split(",").map(Number)) {
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
  const r = { batch: b, tokPerS: (b * steps) / (ms / 1000), msPerStep: ms / steps };
  results.push(r);
  console.log(`batch ${String(b).padStart(3)}: ${r.msPerStep.toFixed(1).padStart(7)} ms/step  ${r.tokPerS.toFixed(0).padStart(6)} tokens/s  (${(r.tokPerS / results[0].tokPerS).toFixed(2)}x batch ${results[0].batch})`);
}
