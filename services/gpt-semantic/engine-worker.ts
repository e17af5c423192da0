/** The GPT engine in a worker thread: owns the sessions and every KV cache; the service's event loop never blocks. */
import { Worker, parentPort, workerData } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../../shared/ort-options.js";
import { SimDevice, costDilation, costModelSessions, ortBackend } from "../../shared/cost-model.js";
import type { Manifest } from "../../shared/manifest.js";
import { GptEngine, type EngineOptions, type GptRequest, type GptSessions, type PrefillOut } from "./engine.js";

interface Init {
  paths: Record<keyof GptSessions, string>;
  manifest: Manifest;
  intraOpThreads: number;
  engine: EngineOptions;
  /** Prefill in a thread of its own (prefill-worker.ts) while this one decodes. Ignored on the cost model. */
  prefillThread?: boolean;
}
const init = workerData as Init;
const port = parentPort!;

/**
 * Starts prefill-worker.ts and returns the engine's `prefill` for it. If that thread dies, its prefills
 * in flight and every later one fail with its error (the rows end with it; decoding goes on).
 */
async function prefillThread(): Promise<(req: GptRequest) => Promise<PrefillOut>> {
  const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
  const { t2s_encoder, t2s_prefill } = init.paths;
  const w = new Worker(new URL(`./prefill-worker${ext}`, import.meta.url), { workerData: { paths: { t2s_encoder, t2s_prefill }, manifest: init.manifest, intraOpThreads: init.intraOpThreads } });
  await new Promise<void>((resolve, reject) => {
    w.once("message", (m: { ok: boolean; error?: string }) => (m.ok ? resolve() : reject(new Error(`GPT prefill thread failed to start: ${m.error}`))));
    w.once("error", reject);
  });
  const waiting = new Map<number, { resolve: (o: PrefillOut) => void; reject: (e: Error) => void }>();
  let dead: Error | undefined;
  const die = (err: Error) => {
    dead ??= new Error(`GPT prefill thread stopped: ${err.message}`);
    for (const p of waiting.values()) p.reject(dead);
    waiting.clear();
  };
  w.on("error", die);
  w.on("exit", (code) => die(new Error(`exit code ${code}`)));
  w.on("message", (m: { id: number; out?: PrefillOut; error?: string }) => {
    const p = waiting.get(m.id);
    waiting.delete(m.id);
    if (m.out) p?.resolve(m.out);
    else p?.reject(new Error(m.error ?? "prefill failed"));
  });
  w.unref();
  let next = 0;
  return (req) =>
    new Promise<PrefillOut>((resolve, reject) => {
      if (dead) return reject(dead);
      const id = next++;
      waiting.set(id, { resolve, reject });
      w.postMessage({ id, req });
    });
}

const opts = sessionOptions(init.intraOpThreads);
let sessions = {} as GptSessions;
let prefill: ((req: GptRequest) => Promise<PrefillOut>) | undefined;
try {
  if (ortBackend() === "cost-model") {
    // Simulated GPU (shared/cost-model.ts): the engine runs unchanged, only the graphs are not executed.
    const device = new SimDevice({ manifest: init.manifest, dilation: costDilation() });
    sessions = costModelSessions(Object.keys(init.paths) as (keyof GptSessions)[], device) as unknown as GptSessions;
  } else {
    if (init.prefillThread) prefill = await prefillThread();
    for (const [name, path] of Object.entries(init.paths))
      if (!prefill || name === "t2s_step") sessions[name as keyof GptSessions] = await ort.InferenceSession.create(path, opts);
  }
} catch (err) {
  port.postMessage({ type: "ready", ok: false, error: (err as Error).message });
  process.exit(1);
}
const engine = new GptEngine(sessions, init.manifest, {
  ...init.engine,
  ...(prefill ? { prefill } : {}),
  // The engine's clock is performance.now(); the service records epoch ms.
  onPrefill: (p) => port.postMessage({ type: "prefill", id: p.id, startMs: performance.timeOrigin + p.startMs, endMs: performance.timeOrigin + p.endMs }),
});
port.postMessage({ type: "ready", ok: true });

/**
 * Runs of decode steps with the same rows are reported together ("steps": epoch ms times, each step's
 * ms, the row ids), for metrics and batch spans; a run ends when a row joins or leaves, after 64 steps,
 * or after a second. Reported before the "done" of any row that left, so the service still knows its span.
 */
interface Run {
  key: string;
  ids: string[];
  startMs: number;
  endMs: number;
  stepMs: number[];
  tokens: number;
}
let run: Run | undefined;
const epochMs = () => performance.timeOrigin + performance.now();
function flushRun(): void {
  if (run && run.stepMs.length) port.postMessage({ type: "steps", ids: run.ids, startMs: run.startMs, endMs: run.endMs, stepMs: run.stepMs, tokens: run.tokens });
  run = undefined;
}

/**
 * GSV_GPT_STEP_DELAY_MS (testing and demos only): a pause after every decode step, to emulate a slower
 * GPT so that streaming's overlap of stages can be shown deterministically on a fast or loaded machine.
 */
const stepDelayMs = Math.max(0, Number(process.env.GSV_GPT_STEP_DELAY_MS ?? 0) || 0);

let looping = false;
async function loop(): Promise<void> {
  if (looping) return;
  looping = true;
  try {
    while (!engine.idle) {
      const t0 = epochMs();
      const done = await engine.step();
      const t1 = epochMs();
      const ids = engine.rowIds;
      const key = ids.length ? [...ids].sort().join(",") : "";
      if (!run || run.key !== key || run.stepMs.length >= 64 || t1 - run.startMs > 1000) flushRun();
      if (ids.length) {
        run ??= { key, ids, startMs: t0, endMs: t1, stepMs: [], tokens: 0 };
        run.stepMs.push(t1 - t0);
        run.tokens += ids.length;
        run.endMs = t1;
      }
      for (const p of engine.takePartials()) port.postMessage({ type: "partial", partial: p }, [p.tokens.buffer as ArrayBuffer]);
      for (const r of done) port.postMessage({ type: "done", result: r }, [r.tokens.buffer as ArrayBuffer]);
      await new Promise((r) => setImmediate(r)); // let add/abort messages in between steps
      if (stepDelayMs > 0) await new Promise((r) => setTimeout(r, stepDelayMs));
    }
    flushRun();
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
      stats: { running: engine.running, prefilling: engine.prefilling, waiting: engine.waiting, kvBytes: engine.kvBytes, steps: engine.stats.steps, tokens: engine.stats.tokens, prefills: engine.stats.prefills, lastStepMs: engine.stats.lastStepMs, batchHistogram: Object.fromEntries(engine.stats.batchHistogram) },
    });
  }
});
