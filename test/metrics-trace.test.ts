/**
 * The metrics registry (text format, read back by an independent parser), W3C traceparent parsing, and
 * the OTLP/HTTP exporter against a local HTTP receiver: batching, a bounded queue that drops, and a
 * collector that is down never failing the caller. The whole pipeline with real spans is in
 * observability.test.ts.
 */
import t from "tap";
import { createServer, type Server } from "node:http";
import { Recent, Registry, serveMetrics, metricsPortFromEnv } from "../shared/metrics.js";
import { formatTraceparent, otlpTracesUrl, parseOtlpHeaders, parseTraceparent, Span, Tracer, withSpan, activeSpan, traceHeaders } from "../shared/trace.js";
import { checkHistograms, parseProm, value } from "./helpers/prom.js";

t.test("metrics - counters, gauges and histograms render in the text format and parse back", async (t) => {
  const r = new Registry();
  const c = r.counter("x_requests_total", "Requests.\nSecond line \\ here", ["route", "code"]);
  c.inc({ route: "/tts", code: "200" });
  c.inc({ route: "/tts", code: "200" }, 2);
  c.inc({ route: 'we"ird\\path\n', code: "500" });
  const g = r.gauge("x_inflight", "In flight");
  g.inc();
  g.inc();
  g.dec();
  const h = r.histogram("x_wait_seconds", "Wait", [0.1, 0.5, 1], ["stage"]);
  for (const v of [0.05, 0.1, 0.3, 0.7, 2, 5]) h.observe({ stage: "gpt" }, v);
  let collected = 0;
  r.onCollect(() => {
    collected++;
    g.set(undefined, 7);
  });
  r.onCollect(() => {
    throw new Error("a broken collector is skipped");
  });
  const text = await r.render();
  const s = parseProm(text);
  t.equal(collected, 1, "collectors run before rendering");
  t.equal(s.types.get("x_requests_total"), "counter");
  t.equal(s.types.get("x_wait_seconds"), "histogram");
  t.equal(s.help.get("x_requests_total"), "Requests.\nSecond line \\ here", "HELP escapes newline and backslash");
  t.equal(value(s, "x_requests_total", { route: "/tts", code: "200" }), 3);
  t.equal(value(s, "x_requests_total", { route: 'we"ird\\path\n', code: "500" }), 1, "label values escape quotes, backslashes and newlines");
  t.equal(value(s, "x_inflight"), 7);
  // Cumulative buckets, computed by hand: le 0.1 holds 0.05 and 0.1 (upper bounds are inclusive).
  t.same(
    s.samples.filter((x) => x.name === "x_wait_seconds_bucket").map((x) => [x.labels.le, x.value]),
    [["0.1", 2], ["0.5", 3], ["1", 4], ["+Inf", 6]],
  );
  t.equal(value(s, "x_wait_seconds_count", { stage: "gpt" }), 6);
  t.ok(Math.abs(value(s, "x_wait_seconds_sum", { stage: "gpt" }) - 8.15) < 1e-9);
  t.equal(checkHistograms(s), 1);
  t.throws(() => c.inc({ route: "/tts" }), /label code is missing/);
  t.throws(() => c.inc({ route: "/tts", code: "1" }, -1), /only go up/);
  t.throws(() => r.counter("bad name", "x"), /bad metric name/);
  t.throws(() => r.gauge("x_requests_total", "again"), /already registered as a counter/);
  t.equal(r.counter("x_requests_total", "same", ["route", "code"]), c, "asking again returns the same counter");
});

t.test("metrics - GET /metrics serves the registry; other paths are 404; GSV_METRICS_PORT parsing", async (t) => {
  const r = new Registry();
  r.counter("y_total", "Y").inc(undefined, 5);
  const srv = await serveMetrics(r, 0);
  t.teardown(() => srv.close());
  const res = await fetch(srv.url);
  t.equal(res.status, 200);
  t.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  t.equal(value(parseProm(await res.text()), "y_total"), 5);
  t.equal((await fetch(srv.url.replace("/metrics", "/other"))).status, 404);
  t.equal(metricsPortFromEnv({}), undefined, "absent = off");
  t.equal(metricsPortFromEnv({ GSV_METRICS_PORT: "" }), undefined, "empty = off");
  t.equal(metricsPortFromEnv({ GSV_METRICS_PORT: "0" }), 0, "0 = any free port");
  t.equal(metricsPortFromEnv({ GSV_METRICS_PORT: "9464" }), 9464);
  t.throws(() => metricsPortFromEnv({ GSV_METRICS_PORT: "http" }), /GSV_METRICS_PORT/);
});

t.test("metrics - Recent keeps the last 10 s in one-second buckets", async (t) => {
  let now = 1_000_000;
  const r = new Recent(10, () => now);
  r.add(4);
  r.add(6);
  now += 3000;
  r.add(10);
  t.same(r.snapshot(), { count: 3, sum: 20, mean: 20 / 3, perSec: 2, max: 10 });
  now += 8000; // the first second has left the window
  t.same(r.snapshot(), { count: 1, sum: 10, mean: 10, perSec: 1, max: 10 });
  now += 60_000;
  t.same(r.snapshot(), { count: 0, sum: 0, mean: 0, perSec: 0, max: 0 });
});

t.test("trace - traceparent parsing follows W3C Trace Context", async (t) => {
  const ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  t.same(parseTraceparent(ok), { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: 1 });
  t.same(parseTraceparent(ok, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: 1, traceState: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE" });
  t.equal(formatTraceparent(parseTraceparent(ok)!), ok, "round trip");
  t.equal(parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")!.flags, 0, "not sampled");
  t.ok(parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"), "a later version is read by its first four fields");
  for (const bad of [
    "",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", // three fields
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", // short trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // version 00 with extra field
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
  ])
    t.equal(parseTraceparent(bad), undefined, `rejects ${JSON.stringify(bad)}`);
});

t.test("trace - child spans inherit the trace; the active span travels through awaits into NATS headers", async (t) => {
  const tr = new Tracer();
  const root = tr.startSpan("root", { parent: null });
  t.match(root.context.traceId, /^[0-9a-f]{32}$/);
  t.equal(root.parentSpanId, undefined);
  const parent = parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "k=v")!;
  const child = tr.startSpan("child", { parent });
  t.equal(child.context.traceId, parent.traceId);
  t.equal(child.parentSpanId, parent.spanId);
  t.not(child.context.spanId, parent.spanId);
  t.equal(child.context.flags, 0, "the sampled flag is inherited");
  t.equal(child.context.traceState, "k=v", "tracestate is carried");
  await withSpan(child, async () => {
    await new Promise((r) => setTimeout(r, 5));
    t.equal(activeSpan(), child, "the active span survives an await");
    const h = traceHeaders()!;
    t.equal(h.get("traceparent"), `00-${parent.traceId}-${child.context.spanId}-00`);
    t.equal(h.get("tracestate"), "k=v");
  });
  t.equal(traceHeaders(), undefined, "no headers outside a span");
  const many = Array.from({ length: 2000 }, () => tr.startSpan("n", { parent: null }).context);
  t.equal(new Set(many.map((c) => c.traceId)).size, 2000, "2000 new traces, 2000 different trace ids");
  t.equal(new Set(many.map((c) => c.spanId)).size, 2000, "and span ids");
  t.ok(many.every((c) => /^[0-9a-f]{32}$/.test(c.traceId) && /^[0-9a-f]{16}$/.test(c.spanId)), "lower-case hex of the right length");
  t.equal(otlpTracesUrl({}), undefined, "no endpoint, no export");
  t.equal(otlpTracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" }), "http://c:4318/v1/traces");
  t.equal(otlpTracesUrl({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/custom" }), "http://c:4318/custom");
  t.equal(otlpTracesUrl({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SDK_DISABLED: "true" }), undefined);
  t.same(parseOtlpHeaders("api-key=a%20b, x=1,broken"), { "api-key": "a b", x: "1" });
  tr.init("svc", "svc-1", {});
  t.equal(tr.enabled, false, "without OTEL_EXPORTER_OTLP_ENDPOINT nothing is exported");
});

interface Received {
  headers: Record<string, string | string[] | undefined>;
  body: { resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: Record<string, unknown>[] }[] }[] };
}

async function receiver(status = 200): Promise<{ url: string; got: Received[]; server: Server }> {
  const got: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/v1/traces" && req.method === "POST") got.push({ headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
      res.writeHead(status, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const a = server.address();
  return { url: `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`, got, server };
}

t.test("trace - the exporter POSTs OTLP/JSON in batches, drops beyond its queue, survives a dead collector", async (t) => {
  const rx = await receiver();
  t.teardown(() => rx.server.close());
  const tr = new Tracer();
  tr.init("unit", "unit-1", { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=secret", OTEL_BSP_SCHEDULE_DELAY: "60000", OTEL_BSP_MAX_QUEUE_SIZE: "5" });
  t.ok(tr.enabled);
  const exp = tr.exporter!;
  const a = tr.startSpan("a", { parent: null, attributes: { "s": "x", "i": 3, "d": 1.5, "b": true } });
  const b = tr.startSpan("b", { parent: a.context, links: [{ context: a.context }] });
  b.setError("MODEL_ERROR", "boom");
  b.end(Date.now() + 5);
  a.end();
  const unsampled = tr.startSpan("u", { parent: { traceId: "1".repeat(32), spanId: "2".repeat(16), flags: 0 } });
  unsampled.end();
  t.equal(exp.queued, 2, "an unsampled span is not queued");
  await exp.flush();
  t.equal(rx.got.length, 1, "one POST for a batch of two");
  t.equal(rx.got[0].headers["content-type"], "application/json");
  t.equal(rx.got[0].headers["x-api-key"], "secret", "OTEL_EXPORTER_OTLP_HEADERS are sent");
  const rs = rx.got[0].body.resourceSpans[0];
  t.same(rs.resource.attributes.find((x) => x.key === "service.name")?.value, { stringValue: "unit" });
  const spans = rs.scopeSpans[0].spans;
  const sb = spans.find((s) => s.name === "b")!;
  const sa = spans.find((s) => s.name === "a")!;
  t.equal(sb.traceId, a.context.traceId);
  t.equal(sb.parentSpanId, a.context.spanId);
  t.match(sb.startTimeUnixNano as string, /^\d{19}$/, "nanoseconds as a decimal string");
  t.ok(BigInt(sb.endTimeUnixNano as string) >= BigInt(sb.startTimeUnixNano as string));
  t.same(sb.status, { code: 2, message: "MODEL_ERROR: boom" });
  t.same((sb.links as { spanId: string }[]).map((l) => l.spanId), [a.context.spanId]);
  t.same(sa.attributes, [
    { key: "s", value: { stringValue: "x" } },
    { key: "i", value: { intValue: "3" } },
    { key: "d", value: { doubleValue: 1.5 } },
    { key: "b", value: { boolValue: true } },
  ]);
  // Bounded queue: 5 held, the rest dropped and counted.
  for (let i = 0; i < 8; i++) tr.startSpan(`q${i}`, { parent: null }).end();
  t.equal(exp.counts.dropped, 3, "3 of 8 spans dropped with a queue of 5");
  await exp.flush();
  t.equal(rx.got.length, 2);
  t.equal(rx.got[1].body.resourceSpans[0].scopeSpans[0].spans.length, 5);
  t.equal(exp.counts.exported, 7);
  // Batches: a full batch is sent at once, without waiting for the interval; none is larger than the batch size.
  const small = new Tracer();
  small.init("unit", "unit-3", { OTEL_EXPORTER_OTLP_ENDPOINT: rx.url, OTEL_BSP_SCHEDULE_DELAY: "60000", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2" });
  for (let i = 0; i < 5; i++) small.startSpan(`s${i}`, { parent: null }).end();
  await small.exporter!.flush();
  t.same(rx.got.slice(2).map((g) => g.body.resourceSpans[0].scopeSpans[0].spans.length), [2, 2, 1], "5 spans in batches of at most 2");
  await small.shutdown();
  // A collector that is down: the flush resolves, the spans are dropped, nothing throws.
  const dead = new Tracer();
  dead.init("unit", "unit-2", { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1", OTEL_BSP_SCHEDULE_DELAY: "60000" });
  dead.startSpan("lost", { parent: null }).end();
  await dead.exporter!.flush();
  t.equal(dead.exporter!.counts.failures, 1);
  t.equal(dead.exporter!.counts.dropped, 1);
  await dead.shutdown();
  await tr.shutdown();
  t.ok(a instanceof Span);
});
