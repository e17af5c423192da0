/**
 * What the gateway measures: Prometheus series (served on its own HTTP port at /metrics), a ring buffer
 * of its recent requests with every stage's timing (answered on tts.v1.recent.gateway, read by
 * `gsv profile`), its status (tts.v1.status.gateway, $SRV.STATS.gateway, read by `gsv top`).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { NatsConnection, Subscription } from "nats";
import { decode, encode } from "../../shared/codec.js";
import { metrics, Recent, TIME_BUCKETS } from "../../shared/metrics.js";
import type { Timing } from "../../shared/schemas.js";
import { requestUrl } from "./protocol-errors.js";
import { PREFIX, ServiceNames, Subjects } from "../../shared/subjects.js";

/** One request as the gateway saw it. Times are epoch ms. */
export interface RequestRecord {
  id: string;
  traceId?: string;
  receivedAt: number;
  /** When the request was queued for the text stage (after validation and the reference upload). */
  queuedAt?: number;
  firstAudioAt?: number;
  doneAt: number;
  status: number;
  code?: string;
  segments?: number;
  audioSeconds?: number;
  timings: Timing[];
}

const ROUTES = new Set(["/tts", "/health", "/metrics", "/control", "/set_refer_audio", "/set_gpt_weights", "/set_sovits_weights", "/v1/audio/speech", "/v1/models", "/voices"]);
const RTF_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16] as const;

export class GatewayObserver {
  readonly requests = metrics.counter("gsv_gateway_requests_total", "HTTP requests answered, by route and HTTP status", ["route", "status"]);
  readonly errors = metrics.counter("gsv_gateway_errors_total", "HTTP requests that ended with an error, by error code (docs/errors.md)", ["route", "code"]);
  readonly duration = metrics.histogram("gsv_gateway_request_seconds", "Time from receiving an HTTP request to the end of its response", TIME_BUCKETS, ["route"]);
  readonly firstAudio = metrics.histogram("gsv_gateway_first_audio_seconds", "Time from queuing a /tts request to its first playable audio", TIME_BUCKETS);
  readonly rtf = metrics.histogram("gsv_gateway_rtf", "Real-time factor of a /tts request: processing seconds per second of audio (below 1 is faster than real time)", RTF_BUCKETS);
  readonly audio = metrics.counter("gsv_gateway_audio_seconds_total", "Seconds of audio produced");
  readonly inflight = metrics.gauge("gsv_gateway_inflight", "/tts requests in flight");
  readonly #ring: RequestRecord[] = [];
  readonly #size: number;
  readonly #recent = new Recent();
  readonly #recentErrors = new Recent();
  #subs: Subscription[] = [];

  constructor(size = Number(process.env.GSV_RECENT_REQUESTS ?? 256)) {
    this.#size = Math.max(1, size || 256);
    this.inflight.set(undefined, 0);
  }

  static route(path: string): string {
    return ROUTES.has(path) ? path : "other";
  }

  /**
   * Count this HTTP exchange when its response closes: route, status, duration, and the error code the
   * handler left in `res.gsvCode`. A response that never finished means the client went away: 499 CANCELLED.
   */
  watch(req: IncomingMessage, res: ServerResponse): void {
    const t0 = performance.now();
    let route = "other";
    try {
      route = GatewayObserver.route(requestUrl(req.url).pathname);
    } catch {
      // a malformed target: the gateway answers BAD_REQUEST
    }
    res.once("close", () => {
      const done = res.writableFinished;
      const code = (res as ServerResponse & { gsvCode?: string }).gsvCode ?? (done ? undefined : "CANCELLED");
      this.answered(route, done ? res.statusCode : 499, (performance.now() - t0) / 1000, code);
    });
  }

  /** The in-flight gauge reads `count` at every scrape. */
  trackInflight(count: () => number): void {
    metrics.onCollect(() => this.inflight.set(undefined, count()));
  }

  /** One HTTP response ended. `code` is the error code of a failed request. */
  answered(route: string, status: number, seconds: number, code?: string): void {
    this.requests.inc({ route, status });
    this.duration.observe({ route }, seconds);
    if (code) {
      this.errors.inc({ route, code });
      if (route === "/tts" || route === "/v1/audio/speech") this.#recentErrors.add(1);
    }
    if (route === "/tts" || route === "/v1/audio/speech") this.#recent.add(1);
  }

  record(r: RequestRecord): void {
    if (r.firstAudioAt !== undefined && r.queuedAt !== undefined) this.firstAudio.observe(undefined, (r.firstAudioAt - r.queuedAt) / 1000);
    if (r.audioSeconds) {
      this.audio.inc(undefined, r.audioSeconds);
      this.rtf.observe(undefined, (r.doneAt - r.receivedAt) / 1000 / r.audioSeconds);
    }
    this.#ring.push(r);
    if (this.#ring.length > this.#size) this.#ring.splice(0, this.#ring.length - this.#size);
  }

  /** The newest `last` requests, or those with the given ids, oldest first. */
  recentRequests(o: { last?: number; ids?: string[] } = {}): RequestRecord[] {
    if (o.ids?.length) {
      const want = new Set(o.ids);
      return this.#ring.filter((r) => want.has(r.id));
    }
    return this.#ring.slice(-Math.max(1, o.last ?? this.#size));
  }

  status(replica: string, inflight: number): Record<string, unknown> {
    const ok = this.requests;
    let total = 0;
    let failed = 0;
    for (const line of renderCounter(ok)) {
      if (line.route !== "/tts") continue;
      total += line.v;
      if (line.status >= 400) failed += line.v;
    }
    return {
      stage: "gateway",
      replica,
      inflight,
      /** /tts requests answered, and those answered with an error status. */
      requests: total,
      failed,
      recent: { seconds: 10, requestsPerSec: this.#recent.snapshot().perSec, errors: this.#recentErrors.snapshot().count },
    };
  }

  /** Answer status (every replica), $SRV.PING/INFO/STATS as service "gateway", and the recent-requests subject. */
  async register(nc: NatsConnection, replica: string, inflight: () => number, metadata: Record<string, string> = {}): Promise<void> {
    const svc = await nc.services.add({
      name: ServiceNames.gateway,
      version: "0.1.0",
      description: "gsv-pipeline HTTP gateway",
      metadata: { replica, ...metadata },
      statsHandler: async () => this.status(replica, inflight()),
    });
    svc.addEndpoint("stats", {
      subject: `${PREFIX}.stats.${ServiceNames.gateway}`,
      handler: (_e, m) => m.respond(encode(this.status(replica, inflight()))),
      metadata: { description: "gateway counters (one replica answers)" },
    });
    this.#subs.push(
      nc.subscribe(Subjects.status(ServiceNames.gateway), { callback: (_e, m) => m.respond(encode(this.status(replica, inflight()))) }),
      nc.subscribe(Subjects.recentRequests(ServiceNames.gateway), {
        callback: (_e, m) => {
          let q: { last?: number; ids?: string[] } = {};
          try {
            if (m.data.length) q = decode(m.data) as typeof q;
          } catch {
            q = {};
          }
          m.respond(encode({ replica, requests: this.recentRequests({ last: Number(q.last) || undefined, ids: Array.isArray(q.ids) ? q.ids.map(String) : undefined }) }));
        },
      }),
    );
    this.#stop = () => svc.stop().then(() => undefined);
  }

  #stop: () => Promise<void> = async () => undefined;

  async close(): Promise<void> {
    for (const s of this.#subs) s.unsubscribe();
    await this.#stop().catch(() => undefined);
  }
}

/** The per-status values of the requests counter (for the status summary). */
function renderCounter(c: { render(out: string[]): void }): { route: string; status: number; v: number }[] {
  const out: string[] = [];
  c.render(out);
  return out.map((l) => ({ route: /route="([^"]*)"/.exec(l)?.[1] ?? "", status: Number(/status="(\d+)"/.exec(l)?.[1] ?? 0), v: Number(l.slice(l.lastIndexOf(" ") + 1)) }));
}
