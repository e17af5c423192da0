/**
 * Dynamic batching without added latency: work items wait only while the executor is busy (and, after a
 * batch, for the rest of the macrotask that handed out its results, so its callers can resubmit). When it
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
  /** Serve items in this order (lexicographic, smaller first; ties in arrival order) instead of arrival order. */
  priority?: (item: I) => number[];
  /** The largest batch the item that leads it may run in (default maxBatch). */
  batchLimit?: (item: I) => number;
  /**
   * Hold a batch that is not full until its oldest item has waited this long (default 0: run at once).
   * For work that arrives in bursts and whose batches cost about as much as one item (a GPU).
   */
  maxWaitMs?: number;
}

function lexLess(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

interface Waiting<I, O> {
  item: I;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
  /** The span of the job that submitted the item (its request's trace). */
  ctx: SpanContext | undefined;
  /** When it was submitted (Date.now()). */
  at: number;
}

/** Batch-size histogram (size → batches run) and items waiting, summed over several batchers (status of a stage holding several model sets). */
export function batcherTotals(batchers: Iterable<{ histogram: Map<number, number>; waiting: number }>): { histogram: Record<number, number>; waiting: number } {
  const histogram = new Map<number, number>();
  let waiting = 0;
  for (const b of batchers) {
    for (const [k, v] of b.histogram) histogram.set(k, (histogram.get(k) ?? 0) + v);
    waiting += b.waiting;
  }
  return { histogram: Object.fromEntries(histogram), waiting };
}

export class MicroBatcher<I, O> {
  #queue: Waiting<I, O>[] = [];
  #running = 0;
  /** Batches whose results were handed out and whose callers' resubmissions are still being collected. */
  #settling = 0;
  /** The pump waiting for a batch's oldest item to reach maxWaitMs. */
  #timer: NodeJS.Timeout | undefined;
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
      this.#queue.push({ item, resolve, reject, ctx: currentContext(), at: Date.now() });
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#settling > 0) return; // the settling batch's pump comes, with its callers' resubmissions
    while (this.#running < this.#o.concurrency && this.#queue.length) {
      const prio = this.#o.priority;
      if (prio) {
        const ranked = this.#queue.map((w, i) => ({ w, i, p: prio(w.item) }));
        ranked.sort((a, b) => lexLess(a.p, b.p) || a.i - b.i);
        this.#queue = ranked.map((r) => r.w);
      }
      const key = this.#o.key?.(this.#queue[0].item);
      const limit = Math.max(1, Math.min(this.#o.maxBatch, this.#o.batchLimit?.(this.#queue[0].item) ?? this.#o.maxBatch));
      const holdUntil = this.#queue[0].at + (this.#o.maxWaitMs ?? 0);
      if (holdUntil > Date.now() && this.#queue.filter((w) => key === undefined || this.#o.key!(w.item) === key).length < limit) {
        this.#timer ??= setTimeout(() => {
          this.#timer = undefined;
          this.#pump();
        }, holdUntil - Date.now());
        return;
      }
      const batch: Waiting<I, O>[] = [];
      for (let i = 0; i < this.#queue.length && batch.length < limit; ) {
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
        (outs) => this.#settle(() => batch.forEach((w, i) => w.resolve(outs[i]))),
        (err) => this.#settle(() => batch.forEach((w) => w.reject(err))),
      );
    }
  }

  /**
   * A batch is done: hand out its results, then hold the next batch back until the callers' continuations
   * have run (one macrotask). An item that resubmits at once (the next Euler step of a window) then
   * joins the items that waited meanwhile, instead of the first one back taking those alone and the rest
   * forming a second group that takes turns with it (8 such jobs averaged 3.9 rows of 8 per batch).
   */
  #settle(deliver: () => void): void {
    this.#running--;
    this.#settling++;
    deliver();
    setImmediate(() => {
      this.#settling--;
      this.#pump();
    });
  }
}
