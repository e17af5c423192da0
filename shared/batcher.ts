/**
 * Dynamic batching without added latency: work items wait only while the executor is busy. When it
 * frees up, every waiting item with the same key as the oldest one (up to maxBatch) runs as one batch.
 * So an idle stage runs a lone item at once, and a loaded stage runs ever larger batches.
 *
 * Invariants: items of one key run in arrival order; a batch never mixes keys; at most `concurrency`
 * batches run at once (one per onnxruntime worker).
 */
import { currentContext, type BatchInfo } from "./observe.js";
import type { SpanContext } from "./trace.js";

export interface BatcherOptions<I> {
  maxBatch: number;
  concurrency: number;
  /** Items may share a batch only if their keys are equal (e.g. a length bucket). */
  key?: (item: I) => string | number;
  /** Called after every batch with its size, times and the trace contexts of the items' requests (metrics, spans). */
  observe?: (b: BatchInfo) => void;
}

interface Waiting<I, O> {
  item: I;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
  /** The span of the job that submitted the item (its request's trace). */
  ctx: SpanContext | undefined;
}

export class MicroBatcher<I, O> {
  #queue: Waiting<I, O>[] = [];
  #running = 0;
  #run: (items: I[]) => Promise<O[]>;
  #o: BatcherOptions<I>;
  /** batch size → number of batches run, for metrics. */
  readonly histogram = new Map<number, number>();

  constructor(run: (items: I[]) => Promise<O[]>, opts: BatcherOptions<I>) {
    this.#run = run;
    this.#o = opts;
  }

  get waiting(): number {
    return this.#queue.length;
  }

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ item, resolve, reject, ctx: currentContext() });
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#running < this.#o.concurrency && this.#queue.length) {
      const key = this.#o.key?.(this.#queue[0].item);
      const batch: Waiting<I, O>[] = [];
      for (let i = 0; i < this.#queue.length && batch.length < this.#o.maxBatch; ) {
        if (key === undefined || this.#o.key!(this.#queue[i].item) === key) batch.push(...this.#queue.splice(i, 1));
        else i++;
      }
      this.#running++;
      this.histogram.set(batch.length, (this.histogram.get(batch.length) ?? 0) + 1);
      const startMs = Date.now();
      const observe = () => {
        try {
          this.#o.observe?.({ size: batch.length, startMs, endMs: Date.now(), carried: batch.map((w) => w.ctx) });
        } catch {
          // observing never fails a batch
        }
      };
      this.#run(batch.map((w) => w.item)).finally(observe).then(
        (outs) => batch.forEach((w, i) => w.resolve(outs[i])),
        (err) => batch.forEach((w) => w.reject(err)),
      ).finally(() => {
        this.#running--;
        this.#pump();
      });
    }
  }
}
