/**
 * The transport room of a stage: pulls work from the stage's JetStream work queue as credit allows,
 * validates it, runs the handler, acks only after the handler published its output, reports every
 * failure to the request's reply subject with a code, honours cancellation and deadlines, heartbeats
 * long work so JetStream does not redeliver it, registers with the NATS services API, drains on SIGTERM.
 */
import type { JetStreamClient, JsMsg, NatsConnection, Subscription } from "nats";
import type { z } from "zod";
import { decodeAs, encode, peekRouting } from "./codec.js";
import { GsvError, toGsvError } from "./errors.js";
import { defaultQueueLimits, ensureAllQueues, publishWork } from "./nats.js";
import type { ReplyEvent, Timing } from "./schemas.js";
import { PREFIX, ServiceNames, Subjects, WorkQueues, type Stage } from "./subjects.js";
import { log } from "./log.js";
import { metrics, serveMetricsFromEnv } from "./metrics.js";
import { StageObserver } from "./observe.js";
import { extractContext, SpanKind, traceHeaders, tracer, withSpan } from "./trace.js";
import { ModelsLoadRequest, type ModelSetInfo } from "./model-sets.js";

export interface JobBase {
  id: string;
  reply: string;
  deadline: number;
  enqueuedAt: number;
  timings: Timing[];
}

export interface StageContext {
  readonly replica: string;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  /** Throws CANCELLED or DEADLINE_EXCEEDED when the request should stop; call it between units of work. */
  checkAlive(job: JobBase): void;
  /** Publish to a downstream work queue; deduplicated by msgId within JetStream's window. */
  forward(stage: Stage, msgId: string, job: unknown): Promise<void>;
  /** Publish an event to the client. */
  reply(job: JobBase, event: ReplyEvent): void;
  /** Call `onStop` once if the request is cancelled or passes its deadline while this job runs; returns an unwatch function. */
  watch(job: JobBase, onStop: (code: "CANCELLED" | "DEADLINE_EXCEEDED") => void): () => void;
}

export interface StageOptions<S extends z.ZodType> {
  stage: Stage;
  schema: S;
  nc: NatsConnection;
  replica: string;
  concurrency: number;
  ackWaitMs: number;
  version?: string;
  metadata?: Record<string, string>;
  handle(job: z.infer<S>, ctx: StageContext, msg: JsMsg): Promise<void>;
  /** Extra figures for the status endpoint (batch histograms, step times, engine state). */
  extraStatus?: () => Promise<Record<string, unknown>> | Record<string, unknown>;
  /**
   * The model sets this stage holds (shared/model-sets.ts): adds the load endpoint
   * (Subjects.modelsLoad), `modelSets` to the status, and the gsv_model_sets_loaded gauge.
   */
  modelSets?: { load(name?: string): Promise<ModelSetInfo>; names(): string[]; counts: Record<string, number> };
}

export interface StageStats {
  inflight: number;
  processed: number;
  failed: number;
  redelivered: number;
}

export class StageRunner<S extends z.ZodType> {
  readonly stats: StageStats = { inflight: 0, processed: 0, failed: 0, redelivered: 0 };
  #opts: StageOptions<S>;
  #js: JetStreamClient;
  #cancelled = new Map<string, number>();
  #watchers = new Map<string, Set<() => void>>();
  #cancelSub?: Subscription;
  #statusSub?: Subscription;
  #preloadSub?: Subscription;
  #stopping = false;
  #loop?: Promise<void>;
  #slotWaiters: (() => void)[] = [];
  #batch?: { stop(): void };
  #idleWaiters: (() => void)[] = [];
  #ctx: StageContext;
  /** Metrics, recent figures and spans of this stage (shared/observe.ts). */
  readonly observer: StageObserver;
  /** Where this replica serves Prometheus metrics (GSV_METRICS_PORT), if it does. */
  metricsUrl: string | undefined;

  constructor(opts: StageOptions<S>) {
    this.#opts = opts;
    this.observer = new StageObserver(opts.stage);
    tracer.init(ServiceNames[opts.stage], opts.replica);
    this.#js = opts.nc.jetstream();
    const self = this;
    this.#ctx = {
      replica: opts.replica,
      nc: opts.nc,
      js: this.#js,
      checkAlive(job) {
        if (self.#cancelled.has(job.id)) throw new GsvError("CANCELLED");
        if (Date.now() > job.deadline) throw new GsvError("DEADLINE_EXCEEDED", `request ${job.id} passed its deadline in ${opts.stage}`);
      },
      async forward(stage, msgId, job) {
        try {
          self.observer.noteOutput(job);
          await publishWork(self.#js, WorkQueues[stage].subject, encode(job), msgId, (job as { deadline?: number }).deadline ?? Date.now() + 10_000, traceHeaders());
        } catch (err) {
          const m = (err as Error).message ?? "";
          if (/maximum messages|resource limits|full/i.test(m)) throw new GsvError("OVERLOADED", `the ${stage} queue is full`);
          throw new GsvError("STAGE_UNAVAILABLE", `cannot queue work for ${stage}: ${m}`);
        }
      },
      reply(job, event) {
        self.observer.noteOutput(event);
        safePublish(opts.nc, job.reply, encode(event));
      },
      watch(job, onStop) {
        let fired = false;
        const fire = (code: "CANCELLED" | "DEADLINE_EXCEEDED") => {
          if (fired) return;
          fired = true;
          unwatch();
          onStop(code);
        };
        const onCancel = () => fire("CANCELLED");
        const timer = setTimeout(() => fire("DEADLINE_EXCEEDED"), Math.max(0, job.deadline - Date.now()));
        let set = self.#watchers.get(job.id);
        if (!set) self.#watchers.set(job.id, (set = new Set()));
        set.add(onCancel);
        const unwatch = () => {
          clearTimeout(timer);
          set!.delete(onCancel);
          if (set!.size === 0) self.#watchers.delete(job.id);
        };
        if (self.#cancelled.has(job.id)) queueMicrotask(onCancel);
        return unwatch;
      },
    };
  }

  get context(): StageContext {
    return this.#ctx;
  }

  async start(): Promise<void> {
    const { nc, stage } = this.#opts;
    await ensureAllQueues(nc, { ...defaultQueueLimits, ackWaitMs: this.#opts.ackWaitMs });
    this.#cancelSub = nc.subscribe(Subjects.cancelAll, {
      callback: (_err, m) => {
        const id = m.subject.slice(m.subject.lastIndexOf(".") + 1);
        // Bounded: a flood of cancels for made-up ids must not grow memory without limit (oldest go first).
        if (this.#cancelled.size >= 100_000) this.#cancelled.delete(this.#cancelled.keys().next().value!);
        this.#cancelled.set(id, Date.now() + 10 * 60_000);
        for (const w of [...(this.#watchers.get(id) ?? [])]) w();
      },
    });
    this.metricsUrl = await serveMetricsFromEnv();
    metrics.onCollect(() => this.status());
    const svc = await nc.services.add({
      name: ServiceNames[stage],
      version: this.#opts.version ?? "0.1.0",
      description: `gsv-pipeline ${ServiceNames[stage]} stage`,
      metadata: { stage, replica: this.#opts.replica, ...(this.metricsUrl ? { metrics: this.metricsUrl } : {}), ...this.#opts.metadata },
      // $SRV.STATS.<service>: each endpoint's `data` is this replica's status (counters, queue, figures).
      statsHandler: () => this.status(),
    });
    svc.addEndpoint("stats", {
      subject: `${PREFIX}.stats.${ServiceNames[stage]}`,
      handler: (_err, m) => m.respond(encode({ replica: this.#opts.replica, ...this.stats })),
      metadata: { description: "replica counters (one replica answers)" },
    });
    const sets = this.#opts.modelSets;
    if (sets) {
      const loaded = metrics.gauge("gsv_model_sets_loaded", "Model sets this replica holds loaded", ["stage"]);
      metrics.onCollect(() => loaded.set({ stage }, sets.names().length));
      svc.addEndpoint("models-load", {
        subject: Subjects.modelsLoad(ServiceNames[stage]),
        queue: `${ServiceNames[stage]}-models`,
        metadata: { description: "load a model set (one replica answers) and describe it" },
        handler: (_err, m) => {
          (async () => {
            const req = decodeAs(ModelsLoadRequest, m.data);
            const info = await sets.load(req.set);
            m.respond(encode({ ok: true, ...info }));
          })().catch((err) => {
            const e = toGsvError(err);
            m.respond(encode({ ok: false, code: e.code, message: e.message }));
          });
        },
      });
      // A switch's broadcast (no queue group: every replica): load the set now, so that the first request
      // naming it on this replica does not wait for the load. Failures only log: a request naming the set
      // gets the coded error.
      this.#preloadSub = nc.subscribe(Subjects.modelsPreload(ServiceNames[stage]), {
        callback: (_err, m) => {
          (async () => sets.load(decodeAs(ModelsLoadRequest, m.data).set))().catch((err) =>
            log.warn(`${stage}: model-set preload failed: ${(err as Error).message}`),
          );
        },
      });
    }
    // Status is a plain subscription, not a services-API endpoint: every replica answers, not one of a queue group.
    this.#statusSub = nc.subscribe(`${PREFIX}.status.${ServiceNames[stage]}`, {
      callback: (_err, m) => {
        this.status().then(
          (s) => m.respond(encode(s)),
          (err) => m.respond(encode({ replica: this.#opts.replica, error: (err as Error).message })),
        );
      },
    });
    this.#loop = this.#run();
  }

  /** What the status endpoint answers: this replica's counters, the stage queue's depth, and stage-specific figures. */
  async status(): Promise<Record<string, unknown>> {
    const q = WorkQueues[this.#opts.stage];
    let queue: { pending: number; ackPending: number; redelivered: number } | undefined;
    try {
      const info = await (await this.#opts.nc.jetstreamManager()).consumers.info(q.stream, q.consumer);
      queue = { pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered };
      this.observer.setQueueDepth(info.num_pending, info.num_ack_pending);
    } catch {
      queue = undefined;
    }
    return { stage: this.#opts.stage, replica: this.#opts.replica, ...this.stats, queue, figures: this.observer.figures(), ...(this.#opts.modelSets ? { modelSets: { loaded: this.#opts.modelSets.names(), count: this.#opts.modelSets.names().length, ...this.#opts.modelSets.counts } } : {}), ...(await this.#opts.extraStatus?.()) };
  }

  async #run(): Promise<void> {
    const q = WorkQueues[this.#opts.stage];
    let consumer = await this.#js.consumers.get(q.stream, q.consumer);
    let failures = 0;
    while (!this.#stopping) {
      const free = this.#opts.concurrency - this.stats.inflight;
      if (free <= 0) {
        await new Promise<void>((r) => this.#slotWaiters.push(r));
        continue;
      }
      try {
        const batch = await consumer.fetch({ max_messages: free, expires: 1000 });
        this.#batch = batch;
        for await (const m of batch) {
          if (this.#stopping) {
            // Fetched as the drain began: give it back, delayed, so it goes to another replica. A plain
            // nak went straight back into this replica's still-open pull, was nak'ed again, and so on
            // until max_deliver dropped it: the request hung until its deadline.
            m.nak(1000);
            continue;
          }
          void this.#dispatch(m);
        }
        failures = 0;
      } catch (err) {
        if (this.#stopping || this.#opts.nc.isClosed()) break;
        failures++;
        log.warn(`${this.#opts.stage}: fetch failed, retrying`, { error: (err as Error).message });
        await new Promise((r) => setTimeout(r, Math.min(2000, 250 * failures)));
        // A restarted nats-server has lost the memory-storage work queues: declare them again and
        // take a fresh handle on the consumer (both idempotent), so the stage serves again on its own.
        try {
          await ensureAllQueues(this.#opts.nc, { ...defaultQueueLimits, ackWaitMs: this.#opts.ackWaitMs });
          consumer = await this.#js.consumers.get(q.stream, q.consumer);
        } catch (e) {
          log.warn(`${this.#opts.stage}: cannot declare the work queues yet`, { error: (e as Error).message });
        }
      }
      const now = Date.now();
      for (const [id, until] of this.#cancelled) if (until < now) this.#cancelled.delete(id);
    }
  }

  async #dispatch(m: JsMsg): Promise<void> {
    this.stats.inflight++;
    if (m.redelivered) this.stats.redelivered++;
    this.observer.started(m.redelivered);
    const span = tracer.startSpan(`${ServiceNames[this.#opts.stage]} process`, {
      parent: extractContext(m.headers) ?? null,
      kind: SpanKind.CONSUMER,
      attributes: { "messaging.system": "nats", "messaging.operation": "process", "messaging.destination.name": m.subject, "gsv.stage": this.#opts.stage, "gsv.replica": this.#opts.replica, "gsv.redelivered": m.redelivered },
    });
    let errorCode: string | undefined;
    const heartbeat = setInterval(() => m.working(), Math.max(200, Math.floor(this.#opts.ackWaitMs / 3)));
    let job: (JobBase & z.infer<S>) | undefined;
    try {
      job = decodeAs(this.#opts.schema, m.data) as JobBase & z.infer<S>;
      const j = job as JobBase & { seg?: number; win?: number };
      span.setAttribute("gsv.request_id", j.id).setAttribute("gsv.seg", j.seg).setAttribute("gsv.win", j.win);
      this.#ctx.checkAlive(job);
      await withSpan(span, () => this.#opts.handle(job!, this.#ctx, m));
      m.ack();
      this.stats.processed++;
    } catch (err) {
      const e = toGsvError(err);
      this.stats.failed++;
      errorCode = e.code;
      span.setError(e.code, e.message);
      const routing = job ?? peekRouting(m.data);
      if (e.code !== "CANCELLED" && routing.reply && routing.id) {
        const event: ReplyEvent = { type: "error", id: routing.id, code: e.code, message: e.message, stage: this.#opts.stage };
        safePublish(this.#opts.nc, routing.reply, encode(event));
      }
      if (e.code === "INTERNAL" || e.code === "MODEL_ERROR") log.error(`${this.#opts.stage}: ${e.message}`, { id: routing.id });
      m.term(); // a coded failure is final for this request: never redeliver it
    } finally {
      clearInterval(heartbeat);
      this.observer.finished(errorCode);
      span.end();
      this.stats.inflight--;
      this.#slotWaiters.shift()?.();
      if (this.stats.inflight === 0) for (const w of this.#idleWaiters.splice(0)) w();
    }
  }

  /** Stop pulling, finish what is in flight, then return. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#batch?.stop(); // end the open pull at once: nothing more is delivered to this replica
    for (const w of this.#slotWaiters.splice(0)) w();
    if (this.stats.inflight > 0) await new Promise<void>((r) => this.#idleWaiters.push(r));
    this.#cancelSub?.unsubscribe();
    this.#statusSub?.unsubscribe();
    this.#preloadSub?.unsubscribe();
    await this.#loop?.catch(() => undefined);
  }
}

/** Measure queue wait and compute time of one unit of work. */
export function timing(stage: string, replica: string, job: JobBase, started: number, batch: number, seg: number, win?: number): Timing {
  return {
    stage,
    replica,
    queueMs: Math.max(0, started - job.enqueuedAt),
    computeMs: Date.now() - started,
    batch,
    seg,
    ...(win === undefined ? {} : { win }),
    at: started,
  };
}

/** Run a service until SIGTERM/SIGINT, then drain: stop pulling, finish in-flight work, close NATS. */
export function runUntilSignalled(name: string, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${name}: ${sig}, draining`);
    const force = setTimeout(() => process.exit(1), 15_000);
    force.unref();
    stop().then(() => tracer.shutdown()).then(
      () => process.exit(0),
      (err) => {
        log.error(`${name}: shutdown failed`, { error: (err as Error).message });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
}

/** Publish a reply event; a closed connection or a refused subject must never take the stage down. */
function safePublish(nc: NatsConnection, subject: string, data: Uint8Array): void {
  try {
    nc.publish(subject, data);
  } catch (err) {
    log.warn("cannot publish a reply event", { subject, error: (err as Error).message });
  }
}
