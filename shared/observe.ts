/**
 * What a stage process measures about itself: Prometheus series (shared/metrics.ts), recent figures for
 * the status endpoint, $SRV.STATS and `gsv top`, and trace spans (shared/trace.ts). The stage runtime
 * (shared/stage.ts) calls `StageObserver` around every job; batchers call `batchObserver` per batch.
 */
import type { Stage } from "./subjects.js";
import type { Timing } from "./schemas.js";
import { BATCH_BUCKETS, metrics, Recent, STEP_BUCKETS, TIME_BUCKETS } from "./metrics.js";
import { activeSpan, recordBatchSpan, type Span, type SpanContext } from "./trace.js";

const jobsTotal = () => metrics.counter("gsv_stage_jobs_total", "Work messages a stage finished without error", ["stage"]);
const errorsTotal = () => metrics.counter("gsv_stage_errors_total", "Work messages a stage ended with an error, by error code (docs/errors.md)", ["stage", "code"]);
const redeliveredTotal = () => metrics.counter("gsv_stage_redelivered_total", "Work messages received again after a replica failed to ack them in time", ["stage"]);
const unitsTotal = () => metrics.counter("gsv_stage_units_total", "Units of work a stage timed (text: requests, gpt/sovits: segments, sovits/vocoder: mel windows)", ["stage"]);
const queueWait = () => metrics.histogram("gsv_stage_queue_wait_seconds", "Per unit of work: time from being queued for the stage until its compute started (JetStream wait plus any wait inside the stage, e.g. for a GPT batch row)", TIME_BUCKETS, ["stage"]);
const compute = () => metrics.histogram("gsv_stage_compute_seconds", "Per unit of work: time the stage computed on it (includes the batch steps it shared with other requests)", TIME_BUCKETS, ["stage"]);
const inflight = () => metrics.gauge("gsv_stage_inflight", "Work messages this replica is working on now", ["stage"]);
const batchSize = () => metrics.histogram("gsv_batch_size", "Rows in one batched model step (gpt_decode: a T2S decode step; gpt_prefill: one request's T2S encoder and prefill; cfm_dit: a DiT Euler step; vocoder: a vocoder run)", BATCH_BUCKETS, ["stage", "op"]);
const stepTime = () => metrics.histogram("gsv_batch_step_seconds", "Wall time of one batched model step", STEP_BUCKETS, ["stage", "op"]);
const tokensTotal = () => metrics.counter("gsv_tokens_generated_total", "Semantic tokens generated (one per running row per GPT decode step)", ["stage"]);

/** What one batched step reports. Times are epoch ms. */
export interface BatchInfo {
  size: number;
  startMs: number;
  endMs: number;
  /** The spans of the requests whose work was in the batch (span links). */
  carried: (SpanContext | undefined)[];
  /** Steps this record covers (GPT reports runs of steps with the same rows); default 1. */
  steps?: number;
  /** Each step's ms, when it covers several. */
  stepMs?: number[];
  /** Tokens generated in it (GPT). */
  tokens?: number;
  attributes?: Record<string, string | number | boolean>;
}

interface BatchFigures {
  size: Recent;
  step: Recent;
  tokens: Recent;
  total: { batches: number; rows: number; tokens: number; stepMs: number };
}

const batchFigures = new Map<string, BatchFigures>();

/**
 * Record a batched step: the batch size and step time histograms, tokens, recent figures, and (when
 * traces are exported) one span linking to every request it carried.
 */
export function recordBatch(stage: Stage, op: string, b: BatchInfo): void {
  const labels = { stage, op };
  let f = batchFigures.get(`${stage}:${op}`);
  if (!f) batchFigures.set(`${stage}:${op}`, (f = { size: new Recent(), step: new Recent(), tokens: new Recent(), total: { batches: 0, rows: 0, tokens: 0, stepMs: 0 } }));
  const steps = b.steps ?? 1;
  const each = b.stepMs ?? Array.from({ length: steps }, () => (b.endMs - b.startMs) / steps);
  for (const ms of each) {
    batchSize().observe(labels, b.size);
    stepTime().observe(labels, ms / 1000);
    f.size.add(b.size);
    f.step.add(ms);
    f.total.stepMs += ms;
  }
  f.total.batches += each.length;
  f.total.rows += b.size * each.length;
  if (b.tokens) {
    tokensTotal().inc({ stage }, b.tokens);
    f.tokens.add(b.tokens);
    f.total.tokens += b.tokens;
  }
  recordBatchSpan(`${stage} ${op} batch`, b.startMs, b.endMs, b.carried, { "gsv.stage": stage, "gsv.op": op, "gsv.steps": steps, ...(b.tokens ? { "gsv.tokens": b.tokens } : {}), ...b.attributes });
}

/** A MicroBatcher `observe` hook for one stage and op. */
export function batchObserver(stage: Stage, op: string): (b: BatchInfo) => void {
  return (b) => recordBatch(stage, op, b);
}

/** The active span's context (what a batcher captures when an item is submitted). */
export function currentContext(): SpanContext | undefined {
  return activeSpan()?.context;
}

export class StageObserver {
  readonly stage: Stage;
  readonly #recentJobs = new Recent();
  readonly #recentErrors = new Recent();
  readonly #recentQueue = new Recent();
  readonly #recentCompute = new Recent();
  readonly #errors = new Map<string, number>();
  /** Timings already counted, per job span (one unit can ride along on several messages). */
  readonly #seen = new WeakMap<Span, Set<string>>();

  constructor(stage: Stage) {
    this.stage = stage;
    // Register the series at start, so a scrape shows them (at zero) before the first job.
    jobsTotal();
    errorsTotal();
    redeliveredTotal();
    unitsTotal();
    queueWait();
    compute();
    inflight().set({ stage }, 0);
    batchSize();
    stepTime();
    if (stage === "gpt") tokensTotal().inc({ stage }, 0);
  }

  started(redelivered: boolean): void {
    inflight().inc({ stage: this.stage });
    if (redelivered) redeliveredTotal().inc({ stage: this.stage });
  }

  finished(errorCode: string | undefined): void {
    inflight().dec({ stage: this.stage });
    if (errorCode === undefined) {
      jobsTotal().inc({ stage: this.stage });
      this.#recentJobs.add(1);
    } else {
      errorsTotal().inc({ stage: this.stage, code: errorCode });
      this.#errors.set(errorCode, (this.#errors.get(errorCode) ?? 0) + 1);
      this.#recentErrors.add(1);
    }
  }

  /**
   * A message this stage publishes carries its timings: the last one, if it is this stage's, is a unit
   * of work this stage did. Counted once per (job, seg, win).
   */
  noteOutput(job: unknown): void {
    const timings = (job as { timings?: Timing[] } | undefined)?.timings;
    const t = timings?.[timings.length - 1];
    if (!t || t.stage !== this.stage) return;
    const span = activeSpan();
    if (span) {
      let seen = this.#seen.get(span);
      if (!seen) this.#seen.set(span, (seen = new Set()));
      const key = `${t.seg}:${t.win ?? ""}`;
      if (seen.has(key)) return;
      seen.add(key);
      span.setAttribute("gsv.queue_ms", (Number(span.attributes["gsv.queue_ms"] ?? 0) || 0) + t.queueMs);
      span.setAttribute("gsv.compute_ms", (Number(span.attributes["gsv.compute_ms"] ?? 0) || 0) + t.computeMs);
      span.setAttribute("gsv.batch", Math.max(Number(span.attributes["gsv.batch"] ?? 0) || 0, t.batch));
    }
    unitsTotal().inc({ stage: this.stage });
    queueWait().observe({ stage: this.stage }, t.queueMs / 1000);
    compute().observe({ stage: this.stage }, t.computeMs / 1000);
    this.#recentQueue.add(t.queueMs);
    this.#recentCompute.add(t.computeMs);
  }

  setQueueDepth(pending: number, ackPending: number): void {
    metrics.gauge("gsv_stage_queue_depth", "Messages waiting in the stage's work queue, not yet delivered to any replica (JetStream consumer num_pending)", ["stage"]).set({ stage: this.stage }, pending);
    metrics.gauge("gsv_stage_queue_ack_pending", "Messages delivered to the stage's replicas and not yet acked (all replicas)", ["stage"]).set({ stage: this.stage }, ackPending);
  }

  /** This replica's own figures: totals since start and the last 10 s. */
  figures(): Record<string, unknown> {
    const s = this.stage;
    const jobs = this.#recentJobs.snapshot();
    const q = this.#recentQueue.snapshot();
    const c = this.#recentCompute.snapshot();
    const batches: Record<string, unknown> = {};
    for (const [key, f] of batchFigures) {
      if (!key.startsWith(`${s}:`)) continue;
      const size = f.size.snapshot();
      const step = f.step.snapshot();
      const tokens = f.tokens.snapshot();
      batches[key.slice(s.length + 1)] = {
        steps: f.total.batches,
        meanBatch: f.total.batches ? f.total.rows / f.total.batches : 0,
        meanStepMs: f.total.batches ? f.total.stepMs / f.total.batches : 0,
        tokens: f.total.tokens,
        recent: { steps: size.count, meanBatch: size.mean, maxBatch: size.max, meanStepMs: step.mean, maxStepMs: step.max, stepsPerSec: size.count / 10, tokensPerSec: tokens.perSec },
      };
    }
    return {
      jobs: jobsTotal().get({ stage: s }),
      errors: Object.fromEntries(this.#errors),
      units: unitsTotal().get({ stage: s }),
      inflight: inflight().get({ stage: s }),
      recent: { seconds: 10, jobsPerSec: jobs.perSec, errors: this.#recentErrors.snapshot().count, meanQueueMs: q.mean, meanComputeMs: c.mean, maxQueueMs: q.max, maxComputeMs: c.max },
      batches,
    };
  }
}
