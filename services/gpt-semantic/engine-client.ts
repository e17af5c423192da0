/** The service side of the GPT engine: one or more engine workers, requests routed to the least loaded. */
import { Worker } from "node:worker_threads";
import { join } from "node:path";
import { GsvError } from "../../shared/errors.js";
import type { Manifest } from "../../shared/manifest.js";
import type { EngineOptions, GptPartial, GptRequest, GptResult } from "./engine.js";

export interface EngineStats {
  running: number;
  prefilling: number;
  waiting: number;
  kvBytes: number;
  steps: number;
  tokens: number;
  prefills: number;
  lastStepMs: number;
  batchHistogram: Record<string, number>;
}

/** A prefill that gave a row: from admission to joining the batch (encoder + prefill, and any wait for the prefill thread). Epoch ms. */
export interface PrefillRecord {
  id: string;
  startMs: number;
  endMs: number;
}

/** A run of decode steps with the same rows (see engine-worker.ts). Times are epoch ms. */
export interface StepRun {
  ids: string[];
  startMs: number;
  endMs: number;
  stepMs: number[];
  tokens: number;
}

interface Slot {
  worker: Worker;
  load: number;
  pending: Map<string, (r: GptResult) => void>;
  partials: Map<string, (p: GptPartial) => void>;
  failures: Map<string, (e: Error) => void>;
}

export class EngineClient {
  #slots: Slot[] = [];

  /** `prefillThread`: each engine worker prefills in a thread of its own (engine-worker.ts). `onPrefill`: each prefill that gave a row. */
  static async create(o: {
    modelDir: string;
    manifest: Manifest;
    workers: number;
    intraOpThreads: number;
    engine: Omit<EngineOptions, "prefill" | "onPrefill" | "now">;
    prefillThread?: boolean;
    onSteps?: (s: StepRun) => void;
    onPrefill?: (p: PrefillRecord) => void;
  }): Promise<EngineClient> {
    const c = new EngineClient();
    const paths = {
      t2s_encoder: join(o.modelDir, o.manifest.graphs.t2s_encoder.file),
      t2s_prefill: join(o.modelDir, o.manifest.graphs.t2s_prefill.file),
      t2s_step: join(o.modelDir, o.manifest.graphs.t2s_step.file),
    };
    const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
    for (let i = 0; i < Math.max(1, o.workers); i++) {
      const worker = new Worker(new URL(`./engine-worker${ext}`, import.meta.url), { workerData: { paths, manifest: o.manifest, intraOpThreads: o.intraOpThreads, engine: o.engine, prefillThread: o.prefillThread ?? false } });
      const slot: Slot = { worker, load: 0, pending: new Map(), partials: new Map(), failures: new Map() };
      await new Promise<void>((resolve, reject) => {
        worker.once("message", (m: { ok: boolean; error?: string }) => (m.ok ? resolve() : reject(new Error(`GPT engine failed to start: ${m.error}`))));
        worker.once("error", reject);
      });
      worker.on("message", (m: { type: string; result?: GptResult; partial?: GptPartial; error?: string }) => {
        if (m.type === "steps") o.onSteps?.(m as unknown as StepRun);
        else if (m.type === "prefill") o.onPrefill?.(m as unknown as PrefillRecord);
        else if (m.type === "partial" && m.partial) {
          slot.partials.get(m.partial.id)?.(m.partial);
        } else if (m.type === "done" && m.result) {
          const r = m.result;
          slot.load--;
          slot.failures.delete(r.id);
          slot.partials.delete(r.id);
          const resolve = slot.pending.get(r.id);
          slot.pending.delete(r.id);
          resolve?.(r);
        } else if (m.type === "fatal") {
          for (const fail of slot.failures.values()) fail(new GsvError("MODEL_ERROR", `GPT engine: ${m.error}`));
          slot.failures.clear();
          slot.pending.clear();
          slot.partials.clear();
          slot.load = 0;
        }
      });
      c.#slots.push(slot);
    }
    return c;
  }

  /** Decode one sequence; with `req.emitAt`, `onPartial` gets the tokens so far at those counts. */
  decode(req: GptRequest, onPartial?: (p: GptPartial) => void): Promise<GptResult> {
    let slot = this.#slots[0];
    for (const s of this.#slots) if (s.load < slot.load) slot = s;
    slot.load++;
    return new Promise((resolve, reject) => {
      slot.pending.set(req.id, resolve);
      slot.failures.set(req.id, reject);
      if (onPartial) slot.partials.set(req.id, onPartial);
      slot.worker.postMessage({ type: "add", req });
    });
  }

  abort(id: string): void {
    for (const s of this.#slots) if (s.pending.has(id)) s.worker.postMessage({ type: "abort", id });
  }

  async stats(): Promise<EngineStats[]> {
    return Promise.all(
      this.#slots.map(
        (s) =>
          new Promise<EngineStats>((resolve) => {
            const on = (m: { type: string; stats?: EngineStats }) => {
              if (m.type !== "stats") return;
              s.worker.off("message", on);
              resolve(m.stats!);
            };
            s.worker.on("message", on);
            s.worker.postMessage({ type: "stats" });
          }),
      ),
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
