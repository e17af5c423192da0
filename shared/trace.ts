/**
 * W3C trace context and a minimal OpenTelemetry span exporter (OTLP/HTTP, JSON), written for this project.
 *
 * - `traceparent`/`tracestate` travel in NATS message headers; every stage continues the trace of the
 *   message it handles with a child span, and the gateway continues an incoming HTTP `traceparent` or starts
 *   a trace. The span being worked on is kept in an AsyncLocalStorage, so a stage's publishes carry it.
 * - Batch steps (GPT engine steps, CFM DiT batches, vocoder batches) get spans that *link* to the spans of
 *   the requests they carried (a batch has many parents, so links, not parenthood).
 * - Spans are exported only when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
 *   and OTEL_SDK_DISABLED is not "true". The exporter batches, keeps a bounded queue, drops spans when it
 *   is full, and never throws into or blocks the service. Unsampled traces (flags 00) are propagated, not
 *   exported.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomFillSync } from "node:crypto";
import { headers as natsHeaders, type MsgHdrs } from "nats";

export interface SpanContext {
  traceId: string;
  spanId: string;
  /** Trace flags; bit 0 = sampled. */
  flags: number;
  traceState?: string;
}

export type AttrValue = string | number | boolean;
export type Attributes = Record<string, AttrValue | undefined>;

export interface Link {
  context: SpanContext;
  attributes?: Attributes;
}

export const SpanKind = { INTERNAL: 1, SERVER: 2, CLIENT: 3, PRODUCER: 4, CONSUMER: 5 } as const;
export type SpanKindValue = (typeof SpanKind)[keyof typeof SpanKind];

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const ZERO32 = "0".repeat(32);
const ZERO16 = "0".repeat(16);

/**
 * Parse a `traceparent` header (W3C Trace Context level 1). Returns undefined for anything invalid:
 * wrong lengths, upper case, all-zero ids, version ff. A higher version is read by its first four fields.
 */
export function parseTraceparent(h: string | undefined | null, traceState?: string | null): SpanContext | undefined {
  if (!h) return undefined;
  const v = h.trim();
  const parts = v.split("-");
  if (parts.length < 4) return undefined;
  const [version, traceId, spanId, flags] = parts;
  if (!/^[0-9a-f]{2}$/.test(version) || version === "ff") return undefined;
  if (version === "00" && (parts.length !== 4 || v.length !== 55)) return undefined;
  if (!HEX32.test(traceId) || traceId === ZERO32) return undefined;
  if (!HEX16.test(spanId) || spanId === ZERO16) return undefined;
  if (!/^[0-9a-f]{2}$/.test(flags)) return undefined;
  const ts = traceState?.trim();
  return { traceId, spanId, flags: parseInt(flags, 16), ...(ts ? { traceState: ts.slice(0, 512) } : {}) };
}

export function formatTraceparent(c: SpanContext): string {
  return `00-${c.traceId}-${c.spanId}-${(c.flags & 0xff).toString(16).padStart(2, "0")}`;
}

// Ids come from a pool of random bytes refilled 4 KiB at a time: one getrandom per ~300 spans, not two per span.
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const s = pool.toString("hex", poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
}

export const newTraceId = (): string => {
  for (;;) {
    const id = randomHex(16);
    if (id !== ZERO32) return id;
  }
};
export const newSpanId = (): string => {
  for (;;) {
    const id = randomHex(8);
    if (id !== ZERO16) return id;
  }
};

/** Epoch time in nanoseconds with sub-millisecond resolution, as a bigint. */
export function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}
export const msToNs = (ms: number): bigint => BigInt(Math.round(ms * 1000)) * 1000n;

export class Span {
  readonly context: SpanContext;
  readonly parentSpanId: string | undefined;
  readonly name: string;
  readonly kind: SpanKindValue;
  readonly startNs: bigint;
  endNs: bigint | undefined;
  readonly attributes: Attributes;
  readonly links: Link[];
  status: { code: 0 | 1 | 2; message?: string } = { code: 0 };
  readonly #tracer: Tracer;

  constructor(tracer: Tracer, name: string, o: SpanOptions) {
    this.#tracer = tracer;
    this.name = name;
    this.kind = o.kind ?? SpanKind.INTERNAL;
    const parent = o.parent === undefined ? activeSpan()?.context : o.parent ?? undefined;
    this.context = {
      traceId: parent?.traceId ?? newTraceId(),
      spanId: newSpanId(),
      flags: parent ? parent.flags : 1,
      ...(parent?.traceState ? { traceState: parent.traceState } : {}),
    };
    this.parentSpanId = parent?.spanId;
    this.startNs = o.startMs !== undefined ? msToNs(o.startMs) : nowNs();
    this.attributes = { ...o.attributes };
    this.links = o.links ?? [];
  }

  get sampled(): boolean {
    return (this.context.flags & 1) === 1;
  }

  setAttribute(k: string, v: AttrValue | undefined): this {
    this.attributes[k] = v;
    return this;
  }

  setError(code: string, message?: string): this {
    this.status = { code: 2, message: message ? `${code}: ${message}` : code };
    this.attributes["gsv.error_code"] = code;
    return this;
  }

  /** End the span (once); it is queued for export if a exporter is configured and the trace is sampled. */
  end(endMs?: number): void {
    if (this.endNs !== undefined) return;
    this.endNs = endMs !== undefined ? msToNs(endMs) : nowNs();
    if (this.endNs < this.startNs) this.endNs = this.startNs;
    this.#tracer.finished(this);
  }

  /** W3C headers for a NATS message that continues this span's trace. */
  headers(h: MsgHdrs = natsHeaders()): MsgHdrs {
    h.set("traceparent", formatTraceparent(this.context));
    if (this.context.traceState) h.set("tracestate", this.context.traceState);
    return h;
  }
}

export interface SpanOptions {
  /** The parent span context; undefined = the active span (if any); null = start a new trace. */
  parent?: SpanContext | null;
  kind?: SpanKindValue;
  attributes?: Attributes;
  links?: Link[];
  /** Epoch ms when the span started (default now). */
  startMs?: number;
}

// ─── OTLP/HTTP JSON export ─────────────────────────────────────────────────────────────────────────

export interface ExporterOptions {
  /** The full URL spans are POSTed to, e.g. http://collector:4318/v1/traces. */
  url: string;
  headers?: Record<string, string>;
  resource: Attributes;
  /** Spans held at most; further spans are dropped (and counted) until an export frees room. */
  maxQueue?: number;
  maxBatch?: number;
  /** How often queued spans are sent (ms). */
  intervalMs?: number;
  timeoutMs?: number;
}

function otlpValue(v: AttrValue): Record<string, unknown> {
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}

export function otlpAttributes(a: Attributes | undefined): { key: string; value: Record<string, unknown> }[] {
  const out: { key: string; value: Record<string, unknown> }[] = [];
  for (const [key, v] of Object.entries(a ?? {})) if (v !== undefined) out.push({ key, value: otlpValue(v) });
  return out;
}

/** One span as OTLP/JSON: ids as lower-case hex, times as decimal strings of nanoseconds. */
export function otlpSpan(s: Span): Record<string, unknown> {
  return {
    traceId: s.context.traceId,
    spanId: s.context.spanId,
    ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
    ...(s.context.traceState ? { traceState: s.context.traceState } : {}),
    name: s.name,
    kind: s.kind,
    startTimeUnixNano: String(s.startNs),
    endTimeUnixNano: String(s.endNs ?? s.startNs),
    attributes: otlpAttributes(s.attributes),
    links: s.links.map((l) => ({ traceId: l.context.traceId, spanId: l.context.spanId, ...(l.context.traceState ? { traceState: l.context.traceState } : {}), attributes: otlpAttributes(l.attributes) })),
    status: s.status.code === 0 ? {} : { code: s.status.code, ...(s.status.message ? { message: s.status.message } : {}) },
  };
}

export class OtlpExporter {
  readonly #o: Required<ExporterOptions>;
  #queue: Span[] = [];
  #timer: NodeJS.Timeout;
  #sending: Promise<void> | undefined;
  /** Spans sent, spans dropped (queue full or a failed POST), failed POSTs. */
  readonly counts = { exported: 0, dropped: 0, failures: 0 };

  constructor(o: ExporterOptions) {
    this.#o = { headers: {}, maxQueue: 2048, maxBatch: 512, intervalMs: 1000, timeoutMs: 10_000, ...o };
    this.#timer = setInterval(() => void this.flush(), this.#o.intervalMs);
    this.#timer.unref();
  }

  /** Queue a finished span; drops it when the queue is full. Never throws. */
  push(s: Span): void {
    if (this.#queue.length >= this.#o.maxQueue) {
      this.counts.dropped++;
      return;
    }
    this.#queue.push(s);
    if (this.#queue.length >= this.#o.maxBatch && !this.#sending) void this.flush();
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** Send what is queued, one POST per batch, one flush at a time. Resolves when done; never rejects. */
  flush(): Promise<void> {
    if (this.#sending) return this.#sending.then(() => (this.#queue.length ? this.flush() : undefined));
    if (this.#queue.length === 0) return Promise.resolve();
    this.#sending = (async () => {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, this.#o.maxBatch);
        const body = JSON.stringify({
          resourceSpans: [{ resource: { attributes: otlpAttributes(this.#o.resource) }, scopeSpans: [{ scope: { name: "gsv-pipeline", version: "0.1.0" }, spans: batch.map(otlpSpan) }] }],
        });
        try {
          const res = await fetch(this.#o.url, {
            method: "POST",
            headers: { "Content-Type": "application/json", ...this.#o.headers },
            body,
            signal: AbortSignal.timeout(this.#o.timeoutMs),
          });
          await res.arrayBuffer().catch(() => undefined);
          if (res.ok) this.counts.exported += batch.length;
          else {
            this.counts.failures++;
            this.counts.dropped += batch.length;
          }
        } catch {
          this.counts.failures++;
          this.counts.dropped += batch.length;
          break; // the collector is down: try again at the next interval
        }
      }
    })()
      .catch(() => undefined)
      .finally(() => {
        this.#sending = undefined;
      });
    return this.#sending;
  }

  async shutdown(timeoutMs = 2000): Promise<void> {
    clearInterval(this.#timer);
    await Promise.race([this.flush(), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }
}

// ─── the process's tracer ──────────────────────────────────────────────────────────────────────────

/** `k1=v1,k2=v2` (OTEL_EXPORTER_OTLP_HEADERS), values URL-decoded. */
export function parseOtlpHeaders(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (s ?? "").split(",")) {
    const i = part.indexOf("=");
    if (i <= 0) continue;
    try {
      out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
    } catch {
      // a malformed value is skipped
    }
  }
  return out;
}

/** Where spans go, from the standard OpenTelemetry variables; undefined = no export. */
export function otlpTracesUrl(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if ((env.OTEL_SDK_DISABLED ?? "").toLowerCase() === "true") return undefined;
  if ((env.OTEL_TRACES_EXPORTER ?? "otlp").toLowerCase() === "none") return undefined;
  if (env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) return env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const base = env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (!base) return undefined;
  return base.replace(/\/+$/, "") + "/v1/traces";
}

const envInt = (v: string | undefined, d: number): number => {
  const n = Number(v);
  return v && Number.isInteger(n) && n > 0 ? n : d;
};

export class Tracer {
  exporter: OtlpExporter | undefined;
  readonly als = new AsyncLocalStorage<Span>();

  /** Set up export for this process (service.name etc.) from the environment; a no-op without an endpoint. */
  init(serviceName: string, instance: string, env: NodeJS.ProcessEnv = process.env): void {
    const url = otlpTracesUrl(env);
    if (!url || this.exporter) return;
    this.exporter = new OtlpExporter({
      url,
      headers: parseOtlpHeaders(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS ?? env.OTEL_EXPORTER_OTLP_HEADERS),
      resource: { "service.name": env.OTEL_SERVICE_NAME ?? serviceName, "service.instance.id": instance, "service.namespace": "gsv-pipeline" },
      maxQueue: envInt(env.OTEL_BSP_MAX_QUEUE_SIZE, 2048),
      maxBatch: envInt(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512),
      intervalMs: envInt(env.OTEL_BSP_SCHEDULE_DELAY, 1000),
      timeoutMs: envInt(env.OTEL_EXPORTER_OTLP_TIMEOUT, 10_000),
    });
  }

  get enabled(): boolean {
    return this.exporter !== undefined;
  }

  startSpan(name: string, o: SpanOptions = {}): Span {
    return new Span(this, name, o);
  }

  finished(s: Span): void {
    if (this.exporter && s.sampled) this.exporter.push(s);
  }

  async shutdown(): Promise<void> {
    await this.exporter?.shutdown();
  }
}

export const tracer = new Tracer();

/** The span the current async context works for (set by `withSpan`). */
export function activeSpan(): Span | undefined {
  return tracer.als.getStore();
}

export function withSpan<T>(span: Span, fn: () => T): T {
  return tracer.als.run(span, fn);
}

/** Trace headers for a NATS publish made on behalf of the active span (undefined outside one). */
export function traceHeaders(): MsgHdrs | undefined {
  return activeSpan()?.headers();
}

/** The span context a NATS message carries, if any. */
export function extractContext(h: MsgHdrs | undefined): SpanContext | undefined {
  if (!h) return undefined;
  return parseTraceparent(h.get("traceparent"), h.get("tracestate"));
}

/**
 * A span for one batch step that carried work of several requests: it links to each request's span.
 * `startMs`/`endMs` are epoch ms. Duplicate contexts (one request with two rows) are linked once.
 */
export function recordBatchSpan(name: string, startMs: number, endMs: number, carried: (SpanContext | undefined)[], attributes: Attributes = {}): void {
  if (!tracer.enabled) return;
  const seen = new Set<string>();
  const links: Link[] = [];
  for (const c of carried) {
    if (!c || seen.has(c.spanId)) continue;
    seen.add(c.spanId);
    links.push({ context: c });
  }
  if (links.length === 0) return;
  // A batch is its own trace root; it is exported if any request it carried is sampled.
  const sampled = links.some((l) => (l.context.flags & 1) === 1);
  const span = new Span(tracer, name, { parent: null, kind: SpanKind.INTERNAL, startMs, links, attributes: { "gsv.batch_size": carried.length, ...attributes } });
  if (!sampled) span.context.flags = 0;
  span.end(endMs);
}
