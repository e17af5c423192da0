/** The GPT engine in a worker thread: owns the sessions and every KV cache; the service's event loop never blocks. */
import { parentPort, workerData } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../../shared/ort-options.js";
import type { Manifest } from "../../shared/manifest.js";
import { GptEngine, type EngineOptions, type GptRequest, type GptSessions } from "./engine.js";

interface Init {
  paths: Record<keyof GptSessions, string>;
  manifest: Manifest;
  intraOpThreads: number;
  engine: EngineOptions;
}
const init = workerData as Init;
const port = parentPort!;

const opts = sessionOptions(init.intraOpThreads);
const sessions = {} as GptSessions;
try {
  for (const [name, path] of Object.entries(init.paths)) sessions[name as keyof GptSessions] = await ort.InferenceSession.create(path, opts);
} catch (err) {
  port.postMessage({ type: "ready", ok: false, error: (err as Error).message });
  process.exit(1);
}
const engine = new GptEngine(sessions, init.manifest, init.engine);
port.postMessage({ type: "ready", ok: true });

let looping = false;
async function loop(): Promise<void> {
  if (looping) return;
  looping = true;
  try {
    while (!engine.idle) {
      const done = await engine.step();
      for (const p of engine.takePartials()) port.postMessage({ type: "partial", partial: p }, [p.tokens.buffer as ArrayBuffer]);
      for (const r of done) port.postMessage({ type: "done", result: r }, [r.tokens.buffer as ArrayBuffer]);
      await new Promise((r) => setImmediate(r)); // let add/abort messages in between steps
    }
  } catch (err) {
    port.postMessage({ type: "fatal", error: (err as Error).message });
  } finally {
    looping = false;
  }
}

port.on("message", (m: { type: "add"; req: GptRequest } | { type: "abort"; id: string } | { type: "stats" }) => {
  if (m.type === "add") {
    engine.add(m.req);
    void loop();
  } else if (m.type === "abort") {
    engine.abort(m.id);
    void loop();
  } else if (m.type === "stats") {
    port.postMessage({
      type: "stats",
      stats: { running: engine.running, waiting: engine.waiting, kvBytes: engine.kvBytes, steps: engine.stats.steps, tokens: engine.stats.tokens, prefills: engine.stats.prefills, lastStepMs: engine.stats.lastStepMs, batchHistogram: Object.fromEntries(engine.stats.batchHistogram) },
    });
  }
});
