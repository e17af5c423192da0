/**
 * `gsv top`: live per-stage load in the terminal, from every replica's status (tts.v1.status.<service>):
 * replicas, work in flight, queue depth, jobs/s, batch size, step time, tokens/s, errors, mean queue wait
 * and compute over the last 10 s. `--once` prints one snapshot and exits.
 */
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "nats";
import { decode } from "../shared/codec.js";
import { ServiceNames, Subjects } from "../shared/subjects.js";

export const TOP_SERVICES = ["gateway", "text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"] as const;

export interface TopRow {
  service: string;
  replicas: number;
  inflight: number;
  /** Messages waiting in the stage's queue (not yet delivered); undefined for the gateway. */
  queue?: number;
  ackPending?: number;
  perSec: number;
  batch?: number;
  stepMs?: number;
  tokensPerSec?: number;
  errors: number;
  queueMs?: number;
  computeMs?: number;
  done: number;
}

interface BatchFig {
  steps: number;
  meanBatch: number;
  meanStepMs: number;
  recent: { steps: number; meanBatch: number; meanStepMs: number; tokensPerSec: number };
}

/**
 * The batched model steps a stage's batch and step columns average: not gpt_prefill (one request's
 * prefill, not a batch) and not voice_prep (a new reference's preparation, once per voice, not per request).
 */
function stepOps(batches: Record<string, BatchFig>): BatchFig[] {
  return Object.entries(batches)
    .filter(([op]) => op !== "gpt_prefill" && op !== "voice_prep")
    .map(([, b]) => b);
}

interface Status {
  inflight?: number;
  processed?: number;
  failed?: number;
  requests?: number;
  queue?: { pending: number; ackPending: number };
  recent?: { requestsPerSec?: number };
  figures?: { recent: { jobsPerSec: number; meanQueueMs: number; meanComputeMs: number; errors: number }; batches: Record<string, BatchFig>; jobs: number };
}

/** Ask every replica of every service for its status; one row per service. */
export async function snapshot(nc: NatsConnection, maxWait = 500): Promise<TopRow[]> {
  return Promise.all(
    TOP_SERVICES.map(async (service) => {
      const all: Status[] = [];
      try {
        for await (const m of await nc.requestMany(Subjects.status(service), new Uint8Array(), { maxWait })) all.push(decode(m.data) as Status);
      } catch {
        // no replica answered
      }
      const row: TopRow = { service, replicas: all.length, inflight: 0, perSec: 0, errors: 0, done: 0 };
      let wq = 0;
      let wc = 0;
      let jobsRecent = 0;
      let batchRows = 0;
      let batchSteps = 0;
      let stepSum = 0;
      let stepN = 0;
      for (const s of all) {
        row.inflight += s.inflight ?? 0;
        row.errors += s.failed ?? 0;
        if (service === ServiceNames.gateway) {
          row.perSec += s.recent?.requestsPerSec ?? 0;
          row.done += s.requests ?? 0;
          continue;
        }
        row.done += s.processed ?? 0;
        // Every replica reads the same consumer: the queue is the stage's, not the replica's.
        if (s.queue) {
          row.queue = Math.max(row.queue ?? 0, s.queue.pending);
          row.ackPending = Math.max(row.ackPending ?? 0, s.queue.ackPending);
        }
        const f = s.figures;
        if (!f) continue;
        row.perSec += f.recent.jobsPerSec;
        const n = f.recent.jobsPerSec;
        wq += f.recent.meanQueueMs * n;
        wc += f.recent.meanComputeMs * n;
        jobsRecent += n;
        for (const b of stepOps(f.batches)) {
          // The last 10 s if anything ran in them, else since start.
          if (b.recent.steps > 0) {
            batchRows += b.recent.meanBatch * b.recent.steps;
            batchSteps += b.recent.steps;
            stepSum += b.recent.meanStepMs * b.recent.steps;
            stepN += b.recent.steps;
          }
          if (b.recent.tokensPerSec || b.steps) row.tokensPerSec = (row.tokensPerSec ?? 0) + b.recent.tokensPerSec;
        }
      }
      // Nothing ran in the last 10 s: show the figures since start.
      if (batchSteps === 0)
        for (const s of all)
          for (const b of stepOps(s.figures?.batches ?? {}))
            if (b.steps) {
              batchRows += b.meanBatch * b.steps;
              batchSteps += b.steps;
              stepSum += b.meanStepMs * b.steps;
              stepN += b.steps;
            }
      if (service !== ServiceNames.gateway) {
        row.batch = batchSteps ? batchRows / batchSteps : service === ServiceNames.text && row.done ? 1 : undefined;
        row.stepMs = stepN ? stepSum / stepN : undefined;
        row.queueMs = jobsRecent ? wq / jobsRecent : undefined;
        row.computeMs = jobsRecent ? wc / jobsRecent : undefined;
        if (service !== ServiceNames.gpt) row.tokensPerSec = undefined;
        else row.tokensPerSec ??= 0;
      }
      return row;
    }),
  );
}

const COLUMNS: [string, (r: TopRow) => string][] = [
  ["SERVICE", (r) => r.service],
  ["REPL", (r) => String(r.replicas)],
  ["INFLIGHT", (r) => String(r.inflight)],
  ["QUEUE", (r) => (r.queue === undefined ? "-" : String(r.queue))],
  ["ACKPEND", (r) => (r.ackPending === undefined ? "-" : String(r.ackPending))],
  ["DONE", (r) => String(r.done)],
  ["/S", (r) => r.perSec.toFixed(1)],
  ["BATCH", (r) => (r.batch === undefined ? "-" : r.batch.toFixed(2))],
  ["STEP_MS", (r) => (r.stepMs === undefined ? "-" : r.stepMs.toFixed(1))],
  ["TOK/S", (r) => (r.tokensPerSec === undefined ? "-" : r.tokensPerSec.toFixed(1))],
  ["ERRORS", (r) => String(r.errors)],
  ["QWAIT_MS", (r) => (r.queueMs === undefined ? "-" : r.queueMs.toFixed(0))],
  ["COMPUTE_MS", (r) => (r.computeMs === undefined ? "-" : r.computeMs.toFixed(0))],
];

/** The table `gsv top` prints. */
export function renderTop(rows: TopRow[], at = new Date()): string {
  const cells = [COLUMNS.map(([h]) => h), ...rows.map((r) => COLUMNS.map(([, f]) => f(r)))];
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((c) => c[i].length)));
  const lines = cells.map((c) => c.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join("  "));
  return `gsv top  ${at.toISOString()}  (rates and means over the last 10 s, BATCH/STEP_MS since start when idle; DONE, ERRORS since start)\n${lines.join("\n")}\n`;
}

export const TOP_HELP = `gsv top [--nats nats://host:4222] [--once] [--interval 2]
    Live per-stage load from every replica's status: replicas, in flight, queue depth, jobs/s, mean
    batch size, step time, tokens/s (gpt), errors, queue wait and compute. --once prints one snapshot.`;

export async function topCli(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { nats: { type: "string" }, once: { type: "boolean", default: false }, interval: { type: "string", default: "2" } } });
  const url = values.nats ?? process.env.NATS_URL;
  if (!url) throw new Error("gsv top needs the pipeline's NATS: --nats nats://host:4222 (or NATS_URL); `gsv up` prints it");
  const nc = await connect({ servers: url });
  try {
    if (values.once) {
      process.stdout.write(renderTop(await snapshot(nc)));
      return;
    }
    const every = Math.max(0.2, Number(values.interval) || 2) * 1000;
    let stop = false;
    process.once("SIGINT", () => (stop = true));
    while (!stop) {
      const table = renderTop(await snapshot(nc));
      process.stdout.write(`\x1b[2J\x1b[H${table}\n(Ctrl-C to quit)\n`);
      await new Promise((r) => setTimeout(r, every));
    }
  } finally {
    await nc.close();
  }
}
