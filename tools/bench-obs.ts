/**
 * What observability costs per unit of work: a histogram observation, a span (created and ended, with
 * and without an exporter queue), trace headers for a publish, and rendering /metrics.
 *   node dist/tools/bench-obs.js
 */
import { Registry, TIME_BUCKETS } from "../shared/metrics.js";
import { Tracer, withSpan, traceHeaders } from "../shared/trace.js";

function per(label: string, n: number, unit: "ns" | "us", f: () => void): void {
  f(); // warm up
  const t = performance.now();
  for (let i = 0; i < n; i++) f();
  const ms = performance.now() - t;
  console.log(`${label.padEnd(52)} ${(unit === "ns" ? (ms * 1e6) / n : (ms * 1e3) / n).toFixed(0)} ${unit}/op`);
}

const r = new Registry();
const h = r.histogram("h_seconds", "h", TIME_BUCKETS, ["stage"]);
let i = 0;
per("histogram observe (16 buckets, 1 label)", 1e6, "ns", () => h.observe({ stage: "gpt" }, (i++ % 1000) / 1000));
const c = r.counter("c_total", "c", ["stage", "code"]);
per("counter inc (2 labels)", 1e6, "ns", () => c.inc({ stage: "gpt", code: "OK" }));
const off = new Tracer();
per("span start+end, no exporter", 1e5, "ns", () => off.startSpan("x", { parent: null, attributes: { a: 1 } }).end());
const on = new Tracer();
on.init("bench", "bench-1", { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1", OTEL_BSP_SCHEDULE_DELAY: "3600000", OTEL_BSP_MAX_QUEUE_SIZE: "1000000000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "1000000000" });
per("span start+end, queued for export", 1e5, "ns", () => on.startSpan("x", { parent: null, attributes: { a: 1 } }).end());
const s = off.startSpan("x", { parent: null });
await withSpan(s, async () => per("trace headers for one NATS publish", 1e5, "ns", () => void traceHeaders()));
for (let k = 0; k < 40; k++) h.observe({ stage: `s${k}` }, 0.1);
let rendered = 0;
const t = performance.now();
for (let k = 0; k < 500; k++) rendered += (await r.render()).length;
console.log(`${"render /metrics (41 histogram series, " + Math.round(rendered / 500) + " bytes)"}`.padEnd(52), `${(((performance.now() - t) * 1e3) / 500).toFixed(0)} us/op`);
process.exit(0);
