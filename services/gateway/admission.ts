/**
 * Admission control at the gateway: decide at once, before any work is queued, whether a request can be
 * served, and shed the rest with 503 OVERLOADED + Retry-After (a coded JSON error) instead of letting
 * queues and memory grow and every request miss its deadline.
 *
 * Three signals, cheapest first:
 *  1. requests in flight at this gateway ≥ `maxInflight` (GSV_MAX_INFLIGHT): a hard cap that bounds the
 *     gateway's memory (each request holds its audio until it is sent);
 *  2. work waiting in the stage queues (JetStream consumer `num_pending`, polled every `pollMs` in the
 *     background, never on the request path) ≥ `maxQueued` (GSV_MAX_QUEUED): catches overload caused by
 *     other gateways or clients that publish on NATS directly, which the local count cannot see;
 *  3. the recent latency of successful requests (EWMA, measured by this gateway) already exceeds the new
 *     request's deadline: it would be accepted only to time out.
 * Retry-After is the expected time for the work ahead to drain: EWMA latency × in flight / cap, 1..30 s.
 */
import type { ServerResponse } from "node:http";
import type { NatsConnection } from "nats";
import { GsvError } from "../../shared/errors.js";
import { Stages, WorkQueues } from "../../shared/subjects.js";

export interface AdmissionOptions {
  maxInflight: number;
  /** Messages waiting (not yet delivered) across the stage queues before new requests are shed; 0 turns the check off. */
  maxQueued: number;
  /** How often the queue depths are read. */
  pollMs?: number;
}

export interface AdmissionState {
  inflight: number;
  admitted: number;
  shed: number;
  queued: number;
  latencyMs: number;
}

export class Admission {
  readonly #o: Required<AdmissionOptions>;
  #inflight = 0;
  #admitted = 0;
  #shed = 0;
  #queued = 0;
  #latency = 0; // EWMA of successful requests' latency, ms (0: nothing measured yet)
  #timer?: NodeJS.Timeout;
  #polling = false;

  constructor(o: AdmissionOptions) {
    this.#o = { pollMs: 500, ...o };
  }

  static fromEnv(dfltInflight = 64): AdmissionOptions {
    const num = (name: string, d: number) => {
      const v = Number(process.env[name] ?? d);
      return Number.isFinite(v) && v >= 0 ? v : d;
    };
    return { maxInflight: num("GSV_MAX_INFLIGHT", dfltInflight) || dfltInflight, maxQueued: num("GSV_MAX_QUEUED", 1000), pollMs: num("GSV_ADMISSION_POLL_MS", 500) || 500 };
  }

  /** Start reading the stage queue depths in the background (no-op when maxQueued is 0). */
  watchQueues(nc: NatsConnection): this {
    if (this.#o.maxQueued <= 0 || this.#timer) return this;
    const poll = async () => {
      if (this.#polling || nc.isClosed()) return;
      this.#polling = true;
      try {
        const jsm = await nc.jetstreamManager();
        let queued = 0;
        for (const s of Stages) {
          const q = WorkQueues[s];
          queued += (await jsm.consumers.info(q.stream, q.consumer)).num_pending;
        }
        this.#queued = queued;
      } catch {
        // NATS is down or a queue is being re-declared: keep the last figure; the request path reports it
      } finally {
        this.#polling = false;
      }
    };
    this.#timer = setInterval(() => void poll(), this.#o.pollMs);
    this.#timer.unref();
    void poll();
    return this;
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  get state(): AdmissionState {
    return { inflight: this.#inflight, admitted: this.#admitted, shed: this.#shed, queued: this.#queued, latencyMs: Math.round(this.#latency) };
  }

  /** Seconds a shed client should wait before trying again. */
  retryAfter(): number {
    const drain = (this.#latency || 1000) * Math.max(1, this.#inflight / Math.max(1, this.#o.maxInflight));
    return Math.min(30, Math.max(1, Math.ceil(drain / 1000)));
  }

  /**
   * The gateway's hook: admit the request or throw OVERLOADED (with Retry-After set on `res`). An admitted
   * request counts as in flight until its response is finished or its connection closes.
   */
  admit(res: ServerResponse, timeoutMs: number): void {
    const why = this.#refusal(timeoutMs);
    if (why) {
      this.#shed++;
      res.setHeader("Retry-After", String(this.retryAfter()));
      throw new GsvError("OVERLOADED", why);
    }
    this.#inflight++;
    this.#admitted++;
    const t0 = Date.now();
    let done = false;
    const release = () => {
      if (done) return;
      done = true;
      this.#inflight--;
      if (res.statusCode === 200) {
        const ms = Date.now() - t0;
        this.#latency = this.#latency === 0 ? ms : 0.8 * this.#latency + 0.2 * ms;
      }
    };
    res.once("finish", release);
    res.once("close", release);
  }

  #refusal(timeoutMs: number): string | undefined {
    if (this.#inflight >= this.#o.maxInflight) return `${this.#inflight} requests in flight (the cap is ${this.#o.maxInflight}); try again shortly`;
    if (this.#o.maxQueued > 0 && this.#queued >= this.#o.maxQueued) return `${this.#queued} units of work are queued in the stages (the cap is ${this.#o.maxQueued}); try again shortly`;
    if (this.#latency > 0 && this.#inflight > 0 && this.#latency > timeoutMs) {
      return `requests take about ${Math.round(this.#latency)} ms now, longer than this request's deadline of ${timeoutMs} ms; try again shortly`;
    }
    return undefined;
  }
}
