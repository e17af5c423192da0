import { Worker } from "node:worker_threads";
import { join } from "node:path";
import { graphEntry, type AnyGraphName, type GraphName, type Manifest } from "./manifest.js";
import type { Feeds, GraphInput, TensorLike } from "./tensor.js";
import { GsvError } from "./errors.js";
import { SimDevice, costDilation, ortBackend } from "./cost-model.js";

interface Pending {
  resolve: (out: Record<string, TensorLike>) => void;
  reject: (err: Error) => void;
}

interface Slot {
  worker: Worker;
  busy: number;
  pending: Map<number, Pending>;
}

/**
 * onnxruntime sessions in worker threads. Each worker loads every graph the service needs; a call goes
 * to the least busy worker. Input buffers are copied into the worker; output buffers are transferred back.
 * With GSV_BACKEND=cost-model each worker is a simulated GPU instead (shared/cost-model.ts): no graph runs.
 */
export class OrtPool {
  #slots: Slot[] = [];
  #devices: SimDevice[] = [];
  #nextId = 1;
  #closed = false;
  /** Each loaded graph's inputs (from the first worker; every worker loads the same files). */
  #inputs: Record<string, GraphInput[]> | undefined;

  private constructor() {}

  static async create(opts: { modelDir: string; manifest: Manifest; graphs: readonly AnyGraphName[]; workers: number; intraOpThreads: number }): Promise<OrtPool> {
    const pool = new OrtPool();
    if (ortBackend() === "cost-model") {
      const dilation = costDilation();
      pool.#devices = Array.from({ length: Math.max(1, opts.workers) }, () => new SimDevice({ manifest: opts.manifest, dilation }));
      return pool;
    }
    const graphs: Record<string, string> = {};
    for (const g of opts.graphs) graphs[g] = join(opts.modelDir, graphEntry(opts.manifest, g).file);
    // Under tap's TypeScript loader this module is a .ts file, and so is its worker.
    const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
    const url = new URL(`./ort-worker${ext}`, import.meta.url);
    await Promise.all(
      Array.from({ length: Math.max(1, opts.workers) }, async () => {
        const worker = new Worker(url, { workerData: { graphs, intraOpThreads: opts.intraOpThreads } });
        const slot: Slot = { worker, busy: 0, pending: new Map() };
        await new Promise<void>((resolve, reject) => {
          const onFirst = (m: { ready?: boolean; error?: string; inputs?: Record<string, GraphInput[]> }) => {
            pool.#inputs ??= m.inputs;
            if (m.ready) resolve();
            else reject(new Error(`onnxruntime worker failed to load: ${m.error}`));
          };
          worker.once("message", onFirst);
          worker.once("error", reject);
        });
        worker.on("message", (m: { id?: number; result?: Record<string, TensorLike>; error?: string }) => {
          if (m.id === undefined) return;
          const p = slot.pending.get(m.id);
          if (!p) return;
          slot.pending.delete(m.id);
          slot.busy--;
          if (m.error !== undefined) p.reject(new GsvError("MODEL_ERROR", m.error));
          else p.resolve(m.result!);
        });
        worker.on("error", (err) => {
          for (const p of slot.pending.values()) p.reject(new GsvError("MODEL_ERROR", `worker died: ${err.message}`));
          slot.pending.clear();
        });
        pool.#slots.push(slot);
      }),
    );
    return pool;
  }

  run(graph: AnyGraphName, feeds: Feeds): Promise<Record<string, TensorLike>> {
    if (this.#closed) return Promise.reject(new GsvError("INTERNAL", "onnxruntime pool is closed"));
    if (this.#devices.length) {
      let dev = this.#devices[0];
      for (const d of this.#devices) if (d.queued < dev.queued) dev = d;
      return dev.run(graph as GraphName, feeds).catch((err: Error) => Promise.reject(new GsvError("MODEL_ERROR", err.message)));
    }
    let slot = this.#slots[0];
    for (const s of this.#slots) if (s.busy < slot.busy) slot = s;
    const id = this.#nextId++;
    slot.busy++;
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject });
      slot.worker.postMessage({ id, graph, feeds });
    });
  }

  /**
   * The inputs a loaded graph declares, or undefined on the cost model (no graph is loaded there; it
   * simulates the contract as tools/gen-models.ts writes it).
   */
  inputs(graph: AnyGraphName): GraphInput[] | undefined {
    return this.#inputs?.[graph];
  }

  get size(): number {
    return this.#slots.length || this.#devices.length;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
    this.#slots = [];
    this.#devices = [];
  }
}
