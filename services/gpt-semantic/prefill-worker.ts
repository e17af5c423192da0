/**
 * The GPT's prefills in a thread of their own (EngineOptions.prefill): the engine worker keeps decoding its
 * running rows while a newcomer's encoder and prefill run here, on another core. Requests are taken one
 * at a time, in arrival order; each answer hands its K/V buffers over without copying them.
 */
import { parentPort, workerData } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../../shared/ort-options.js";
import type { Manifest } from "../../shared/manifest.js";
import { runPrefill, type GptRequest, type PrefillSessions } from "./engine.js";

interface Init {
  paths: Record<keyof PrefillSessions, string>;
  manifest: Manifest;
  intraOpThreads: number;
}
const init = workerData as Init;
const port = parentPort!;

const sessions = {} as PrefillSessions;
try {
  const opts = sessionOptions(init.intraOpThreads);
  for (const [name, path] of Object.entries(init.paths)) sessions[name as keyof PrefillSessions] = await ort.InferenceSession.create(path, opts);
} catch (err) {
  port.postMessage({ type: "ready", ok: false, error: (err as Error).message });
  process.exit(1);
}
port.postMessage({ type: "ready", ok: true });

port.on("message", async (m: { id: number; req: GptRequest }) => {
  try {
    const out = await runPrefill(sessions, init.manifest, m.req);
    const buffers = new Set<ArrayBuffer>();
    for (const a of [out.logits, ...out.k, ...out.v]) buffers.add(a.buffer as ArrayBuffer);
    port.postMessage({ id: m.id, out }, [...buffers]);
  } catch (err) {
    port.postMessage({ id: m.id, error: (err as Error).message });
  }
});
