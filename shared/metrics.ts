/**
 * A small metrics registry written for this project (no client library): counters, gauges and
 * histograms with fixed buckets, rendered in the Prometheus text exposition format 0.0.4, served over
 * HTTP on /metrics. Also a sliding window of recent figures for the status endpoints and `gsv top`.
 *
 * Every process has one registry (`metrics`); the stage runtime, the batchers and the gateway add their
 * series to it. See docs/operations.md, "Profiling and metrics", for every metric and what it means.
 */
import { createServer, type Server } from "node:http";

export type Labels = Record<string, string | number>;

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  render(out: string[]): void;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A sample value as the text format writes it. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function labelKey(names: readonly string[], labels: Labels | undefined): string {
  if (names.length === 0) return "";
  const parts: string[] = [];
  for (const n of names) {
    const v = labels?.[n];
    if (v === undefined) throw new Error(`metric label ${n} is missing`);
    parts.push(`${n}="${escapeLabel(String(v))}"`);
  }
  return parts.join(",");
}

function checkNames(name: string, labelNames: readonly string[]): void {
  if (!NAME.test(name)) throw new Error(`bad metric name ${name}`);
  for (const l of labelNames) if (!LABEL.test(l) || l.startsWith("__") || l === "le") throw new Error(`bad label name ${l} on ${name}`);
}

export class Counter {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly labelNames: readonly string[],
  ) {}
  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0)) throw new Error(`counter ${this.name} can only go up (got ${by})`);
    const k = labelKey(this.labelNames, labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  get(labels?: Labels): number {
    return this.#values.get(labelKey(this.labelNames, labels)) ?? 0;
  }
  render(out: string[]): void {
    for (const [k, v] of this.#values) out.push(`${this.name}${k ? `{${k}}` : ""} ${formatValue(v)}`);
  }
}

export class Gauge {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly labelNames: readonly string[],
  ) {}
  set(labels: Labels | undefined, v: number): void {
    this.#values.set(labelKey(this.labelNames, labels), v);
  }
  inc(labels?: Labels, by = 1): void {
    const k = labelKey(this.labelNames, labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }
  dec(labels?: Labels, by = 1): void {
    this.inc(labels, -by);
  }
  get(labels?: Labels): number {
    return this.#values.get(labelKey(this.labelNames, labels)) ?? 0;
  }
  render(out: string[]): void {
    for (const [k, v] of this.#values) out.push(`${this.name}${k ? `{${k}}` : ""} ${formatValue(v)}`);
  }
}

interface HistogramSeries {
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram {
  readonly buckets: readonly number[];
  readonly #series = new Map<string, HistogramSeries>();
  constructor(
    readonly name: string,
    readonly labelNames: readonly string[],
    buckets: readonly number[],
  ) {
    for (let i = 1; i < buckets.length; i++) if (!(buckets[i] > buckets[i - 1])) throw new Error(`histogram ${name}: buckets must increase`);
    this.buckets = buckets.filter((b) => b !== Infinity);
  }
  observe(labels: Labels | undefined, v: number): void {
    const k = labelKey(this.labelNames, labels);
    let s = this.#series.get(k);
    if (!s) this.#series.set(k, (s = { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 }));
    // Each observation lands in the first bucket whose upper bound holds it; rendering makes them cumulative.
    for (let i = 0; i < this.buckets.length; i++) {
      if (v <= this.buckets[i]) {
        s.counts[i]++;
        break;
      }
    }
    s.sum += v;
    s.count++;
  }
  count(labels?: Labels): number {
    return this.#series.get(labelKey(this.labelNames, labels))?.count ?? 0;
  }
  render(out: string[]): void {
    for (const [k, s] of this.#series) {
      const sep = k ? "," : "";
      let acc = 0;
      for (let i = 0; i < this.buckets.length; i++) {
        acc += s.counts[i];
        out.push(`${this.name}_bucket{${k}${sep}le="${formatValue(this.buckets[i])}"} ${acc}`);
      }
      out.push(`${this.name}_bucket{${k}${sep}le="+Inf"} ${s.count}`);
      out.push(`${this.name}_sum${k ? `{${k}}` : ""} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${k ? `{${k}}` : ""} ${s.count}`);
    }
  }
}

export class Registry {
  readonly #families = new Map<string, Family & { metric: Counter | Gauge | Histogram }>();
  readonly #collectors: (() => unknown)[] = [];

  #add<M extends Counter | Gauge | Histogram>(type: Family["type"], name: string, help: string, metric: M): M {
    const have = this.#families.get(name);
    if (have) {
      if (have.type !== type) throw new Error(`metric ${name} is already registered as a ${have.type}`);
      return have.metric as M;
    }
    this.#families.set(name, { name, help, type, metric, render: (out) => metric.render(out) });
    return metric;
  }

  /** Counters and gauges with the same name and type are shared: asking twice returns the same series. */
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    checkNames(name, labelNames);
    return this.#add("counter", name, help, new Counter(name, labelNames));
  }
  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    checkNames(name, labelNames);
    return this.#add("gauge", name, help, new Gauge(name, labelNames));
  }
  histogram(name: string, help: string, buckets: readonly number[], labelNames: readonly string[] = []): Histogram {
    checkNames(name, labelNames);
    return this.#add("histogram", name, help, new Histogram(name, labelNames, buckets));
  }
  /** Run before every scrape (e.g. read a queue's depth into a gauge). A failing collector is skipped. */
  onCollect(fn: () => unknown): void {
    this.#collectors.push(fn);
  }

  async render(): Promise<string> {
    await Promise.all(this.#collectors.map(async (c) => {
      try {
        await c();
      } catch {
        // a collector that fails leaves its gauges as they were
      }
    }));
    const out: string[] = [];
    for (const f of this.#families.values()) {
      out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`);
      out.push(`# TYPE ${f.name} ${f.type}`);
      f.render(out);
    }
    return out.join("\n") + "\n";
  }
}

/** The process's registry. */
export const metrics = new Registry();

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Seconds buckets for waits and compute times (1 ms … 2 min). */
export const TIME_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] as const;
/** Seconds buckets for one batched model step (0.25 ms … 5 s). */
export const STEP_BUCKETS = [0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] as const;
/** Rows in one batch. */
export const BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128] as const;

/**
 * Serve `registry` on http://host:port/metrics. Port 0 takes any free port (the URL says which).
 * Anything but GET /metrics is a 404; a render failure is a 500, never a crash.
 */
export async function serveMetrics(registry: Registry, port: number, host = "127.0.0.1"): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || path !== "/metrics") {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found: GET /metrics\n");
      return;
    }
    registry.render().then(
      (body) => res.writeHead(200, { "Content-Type": CONTENT_TYPE, "Content-Length": Buffer.byteLength(body) }).end(body),
      (err) => res.writeHead(500, { "Content-Type": "text/plain" }).end(`metrics failed: ${(err as Error).message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  server.unref();
  const addr = server.address();
  const actual = typeof addr === "object" && addr ? addr.port : port;
  const shown = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  return { url: `http://${shown}:${actual}/metrics`, server, close: () => new Promise((r) => server.close(() => r())) };
}

/**
 * `GSV_METRICS_PORT`: unset or empty = no metrics server; 0 = any free port; N = port N.
 * `GSV_METRICS_HOST` (default `HOST`, else 127.0.0.1) is the address it listens on.
 */
export function metricsPortFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = env.GSV_METRICS_PORT;
  if (v === undefined || v.trim() === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`GSV_METRICS_PORT must be a port number (0 = any free port), got ${JSON.stringify(v)}`);
  return n;
}

export async function serveMetricsFromEnv(registry: Registry = metrics): Promise<string | undefined> {
  const port = metricsPortFromEnv();
  if (port === undefined) return undefined;
  const s = await serveMetrics(registry, port, process.env.GSV_METRICS_HOST ?? process.env.HOST ?? "127.0.0.1");
  return s.url;
}

/**
 * Figures over the last `seconds` (default 10), in one-second buckets: how many events, their sum and
 * their largest value. For live views (status, `gsv top`), where a since-start average says little.
 */
export class Recent {
  readonly #n: number;
  readonly #at: number[];
  readonly #count: number[];
  readonly #sum: number[];
  readonly #max: number[];
  readonly #now: () => number;

  constructor(seconds = 10, now: () => number = Date.now) {
    this.#n = seconds;
    this.#at = new Array(seconds).fill(-1);
    this.#count = new Array(seconds).fill(0);
    this.#sum = new Array(seconds).fill(0);
    this.#max = new Array(seconds).fill(0);
    this.#now = now;
  }

  add(v = 1, n = 1): void {
    const sec = Math.floor(this.#now() / 1000);
    const i = sec % this.#n;
    if (this.#at[i] !== sec) {
      this.#at[i] = sec;
      this.#count[i] = 0;
      this.#sum[i] = 0;
      this.#max[i] = -Infinity;
    }
    this.#count[i] += n;
    this.#sum[i] += v;
    this.#max[i] = Math.max(this.#max[i], n > 0 ? v / n : v);
  }

  /** count: events in the window; sum; mean = sum / count; perSec = sum / window seconds; max. */
  snapshot(): { count: number; sum: number; mean: number; perSec: number; max: number } {
    const sec = Math.floor(this.#now() / 1000);
    let count = 0;
    let sum = 0;
    let max = 0;
    for (let i = 0; i < this.#n; i++) {
      if (this.#at[i] < 0 || sec - this.#at[i] >= this.#n) continue;
      count += this.#count[i];
      sum += this.#sum[i];
      if (this.#count[i] > 0) max = Math.max(max, this.#max[i]);
    }
    return { count, sum, mean: count ? sum / count : 0, perSec: sum / this.#n, max };
  }
}
