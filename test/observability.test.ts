/**
 * Observability of the real pipeline (nats-server, the five services as processes, tiny models):
 * W3C traces exported over OTLP/HTTP to a receiver in this test, Prometheus /metrics of every process
 * scraped and parsed, $SRV.PING/INFO/STATS, `gsv top --once` and `gsv profile`.
 */
import t from "tap";
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { connect, type NatsConnection } from "nats";
import { fromRoot } from "../shared/paths.js";
import { checkHistograms, parseProm, value, type Scrape } from "./helpers/prom.js";
import { startNatsServer, startService, TEST_ENV, type NatsServer, type ServiceProcess } from "./helpers/stack.js";

const run = promisify(execFile);

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: Record<string, unknown> }[];
  links: { traceId: string; spanId: string }[];
  service: string;
}

const spans: OtlpSpan[] = [];
let receiver: Server;
let rxUrl: string;
let nats: NatsServer;
let nc: NatsConnection;
const procs: ServiceProcess[] = [];
let gatewayUrl: string;
const tmp = mkdtempSync(join(tmpdir(), "gsv-obs-"));

const attr = (s: OtlpSpan, k: string) => {
  const v = s.attributes.find((a) => a.key === k)?.value;
  return v ? Object.values(v)[0] : undefined;
};

t.before(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method === "POST" && req.url === "/v1/traces") {
        const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { resourceSpans: { resource: { attributes: { key: string; value: { stringValue: string } }[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
        for (const rs of body.resourceSpans) {
          const service = rs.resource.attributes.find((a) => a.key === "service.name")!.value.stringValue;
          for (const ss of rs.scopeSpans) for (const s of ss.spans) spans.push({ ...s, service });
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", () => r()));
  const a = receiver.address();
  rxUrl = `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`;
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});

t.teardown(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await nc?.close();
  await nats?.stop();
  receiver?.close();
  rmSync(tmp, { recursive: true, force: true });
});

const env = () => ({ ...TEST_ENV, NATS_URL: nats.url, PORT: "0", GSV_METRICS_PORT: "0", OTEL_EXPORTER_OTLP_ENDPOINT: rxUrl, OTEL_BSP_SCHEDULE_DELAY: "200" });

async function tts(text: string, headers: Record<string, string> = {}, extra: Record<string, unknown> = {}): Promise<{ status: number; id: string; segments: number; tokens: number[] }> {
  const res = await fetch(`${gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify({ text, text_lang: "en", sample_steps: 4, ...extra }) });
  await res.arrayBuffer();
  return {
    status: res.status,
    id: res.headers.get("x-request-id") ?? "",
    segments: Number(res.headers.get("x-gsv-segments") ?? 0),
    tokens: (res.headers.get("x-gsv-tokens") ?? "").split(",").filter(Boolean).map(Number),
  };
}

async function waitFor<T>(what: string, f: () => T | undefined | Promise<T | undefined>, ms = 15_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

t.test("tracing - one trace per request through all five services; a GPT batch span links two requests", async (t) => {
  // Every stage but gpt-semantic first: both requests wait in the GPT queue, so when gpt-semantic
  // starts it takes them together and decodes them in the same batch.
  procs.push(...(await Promise.all((["text-frontend", "sovits-decoder", "vocoder"] as const).map((n) => startService(n, env())))));
  procs.push(await startService("gateway", env()));
  gatewayUrl = String(procs.at(-1)!.ready.url);
  const incoming = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" };
  const a = tts("Hello there this is the first request and it has quite a few more words than the second one so it decodes for longer", { traceparent: `00-${incoming.traceId}-${incoming.spanId}-01` });
  const b = tts("And this one is the second request.");
  const jsm = await nc.jetstreamManager();
  await waitFor("two jobs in the GPT queue", async () => ((await jsm.streams.info("TTS_GPT")).state.messages >= 2 ? true : undefined));
  procs.push(await startService("gpt-semantic", env()));
  const [ra, rb] = await Promise.all([a, b]);
  t.equal(ra.status, 200);
  t.equal(rb.status, 200);
  t.equal(ra.segments, 1);

  const services = ["gateway", "text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"];
  const trace = await waitFor("spans of request A from every service", () => {
    const mine = spans.filter((s) => s.traceId === incoming.traceId);
    return services.every((svc) => mine.some((s) => s.service === svc)) ? mine : undefined;
  });
  await new Promise((r) => setTimeout(r, 600)); // the last exports of this request
  const mine = spans.filter((s) => s.traceId === incoming.traceId);
  t.same([...new Set(mine.map((s) => s.service))].sort(), [...services].sort(), `request A's trace has spans from all five services (${trace.length}+ spans)`);
  const one = (svc: string, name: RegExp) => {
    const m = mine.filter((s) => s.service === svc && name.test(s.name));
    t.ok(m.length >= 1, `${svc} has a ${name} span`);
    return m;
  };
  const [gw] = one("gateway", /^POST \/tts$/);
  t.equal(gw.parentSpanId, incoming.spanId, "the gateway continues the incoming traceparent");
  t.equal(attr(gw, "gsv.request_id"), ra.id);
  const [text] = one("text-frontend", / process$/);
  const [gpt] = one("gpt-semantic", / process$/);
  const [sovits] = one("sovits-decoder", / process$/);
  const vocs = one("vocoder", / process$/);
  t.equal(text.parentSpanId, gw.spanId, "text-frontend's span is a child of the gateway's");
  t.equal(gpt.parentSpanId, text.spanId, "gpt-semantic's of text-frontend's");
  t.equal(sovits.parentSpanId, gpt.spanId, "sovits-decoder's of gpt-semantic's");
  for (const v of vocs) t.equal(v.parentSpanId, sovits.spanId, "each vocoder window's of sovits-decoder's");
  const prep = mine.filter((s) => s.name === "sovits-decoder voice.prepare");
  t.equal(prep.length, 1, "voice preparation is in the trace");
  t.equal(prep[0]?.parentSpanId, text.spanId, "as a child of text-frontend's span");
  const ids = new Set(mine.map((s) => s.spanId));
  t.equal(ids.size, mine.length, "span ids are unique");
  for (const s of mine) if (s !== gw) t.ok(ids.has(s.parentSpanId!), `${s.service} ${s.name}: its parent is in the trace`);
  for (const s of mine) t.ok(BigInt(s.endTimeUnixNano) >= BigInt(s.startTimeUnixNano), "ends after it starts");
  t.ok(BigInt(text.startTimeUnixNano) >= BigInt(gw.startTimeUnixNano) && BigInt(gpt.startTimeUnixNano) >= BigInt(text.startTimeUnixNano), "children start after their parents");
  t.equal(attr(gpt, "gsv.request_id"), ra.id);
  t.equal(gpt.kind, 5, "stage spans are CONSUMER spans");

  // Request B: its own trace, started by the gateway.
  const bGw = spans.find((s) => s.service === "gateway" && attr(s, "gsv.request_id") === rb.id)!;
  t.ok(bGw, "request B has a gateway span");
  t.not(bGw.traceId, incoming.traceId);
  t.equal(bGw.parentSpanId, undefined, "without a traceparent the gateway starts the trace");
  const bGpt = await waitFor("request B's gpt span", () => spans.find((s) => s.traceId === bGw.traceId && s.service === "gpt-semantic" && / process$/.test(s.name)));

  // The batch: a GPT decode-step span whose links are the gpt spans of both requests.
  const batch = spans.filter((s) => s.name === "gpt gpt_decode batch");
  t.ok(batch.length > 0, "GPT decode steps are recorded as batch spans");
  const both = batch.find((s) => s.links.some((l) => l.spanId === gpt.spanId && l.traceId === gpt.traceId) && s.links.some((l) => l.spanId === bGpt.spanId && l.traceId === bGpt.traceId));
  t.ok(both, "a GPT batch span links to both requests' gpt-semantic spans");
  if (both) {
    t.equal(attr(both, "gsv.batch_size"), "2", "it carried two rows");
    t.ok(Number(attr(both, "gsv.steps")) >= 1);
    t.ok(BigInt(both.startTimeUnixNano) >= BigInt(gpt.startTimeUnixNano), "the batch runs inside the request's gpt span");
  }
  t.ok(spans.some((s) => s.name === "gpt gpt_prefill batch" && s.links.some((l) => l.spanId === gpt.spanId && l.traceId === gpt.traceId)), "the GPT prefill of request A is a span linked to its gpt span");
  t.ok(spans.some((s) => s.name === "sovits cfm_dit batch" && s.links.some((l) => l.traceId === incoming.traceId)), "CFM batches link to the requests they carried");
  t.ok(spans.some((s) => s.name === "vocoder vocoder batch" && s.links.some((l) => l.traceId === incoming.traceId)), "vocoder batches too");
});

async function scrape(url: string): Promise<Scrape> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`${url}: ${res.status}`);
  const s = parseProm(await res.text());
  checkHistograms(s);
  return s;
}

async function scrapeAll(): Promise<Record<string, Scrape>> {
  const out: Record<string, Scrape> = {};
  for (const p of procs) out[p.name] = await scrape(p.name === "gateway" ? `${gatewayUrl}/metrics` : String(p.ready.metrics));
  return out;
}

let tokensTotal = 0;

t.test("metrics - every process serves /metrics; counters rise by exactly the requests made", async (t) => {
  for (const p of procs) if (p.name !== "gateway") t.match(String(p.ready.metrics), /^http:\/\/127\.0\.0\.1:\d+\/metrics$/, `${p.name} reports its metrics URL`);
  const before = await scrapeAll();
  const n = 3;
  const rs = await Promise.all(Array.from({ length: n }, (_, i) => tts(`Request number ${i + 1} is here. It has two sentences.`, {}, { seed: i + 1 })));
  t.same(rs.map((r) => r.status), [200, 200, 200]);
  const bad = await tts("   ");
  t.equal(bad.status, 400);
  // Not audio: the gateway passes it on, voice preparation refuses it, text-frontend's job fails with its code.
  const notAudio = await tts("Hello.", {}, { ref_audio_path: "README.md", prompt_text: "Some words." });
  t.equal(notAudio.status, 400);
  const segments = rs.reduce((a, r) => a + r.segments, 0);
  const tokens = rs.reduce((a, r) => a + r.tokens.reduce((x, y) => x + y, 0), 0);
  t.ok(segments >= 2 * n, `${segments} segments`);
  const after = await scrapeAll();
  const d = (svc: string, name: string, labels: Record<string, string> = {}) => value(after[svc], name, labels) - value(before[svc], name, labels);

  t.equal(d("gateway", "gsv_gateway_requests_total", { route: "/tts", status: "200" }), n, "gateway: 3 answered 200");
  t.equal(d("gateway", "gsv_gateway_errors_total", { route: "/tts", code: "MISSING_TEXT" }), 1, "gateway: errors by code");
  t.equal(d("gateway", "gsv_gateway_errors_total", { route: "/tts", code: "BAD_AUDIO" }), 1);
  t.equal(d("gateway", "gsv_gateway_requests_total", { route: "/tts", status: "400" }), 2, "gateway: 2 answered 400");
  t.equal(d("gateway", "gsv_gateway_request_seconds_count", { route: "/tts" }), n + 2);
  t.equal(d("gateway", "gsv_gateway_first_audio_seconds_count"), n);
  t.equal(d("gateway", "gsv_gateway_rtf_count"), n);
  t.ok(d("gateway", "gsv_gateway_audio_seconds_total") > 0);
  t.equal(value(after.gateway, "gsv_gateway_inflight"), 0);

  t.equal(d("text-frontend", "gsv_stage_jobs_total", { stage: "text" }), n, "text: one job per request that succeeded");
  t.equal(d("text-frontend", "gsv_stage_errors_total", { stage: "text", code: "BAD_AUDIO" }), 1, "text: the failed one, by its code");
  t.equal(d("text-frontend", "gsv_stage_compute_seconds_count", { stage: "text" }), n);
  t.equal(d("text-frontend", "gsv_stage_queue_wait_seconds_count", { stage: "text" }), n);
  t.equal(d("gpt-semantic", "gsv_stage_jobs_total", { stage: "gpt" }), segments, "gpt: one job per segment");
  t.equal(d("gpt-semantic", "gsv_stage_compute_seconds_count", { stage: "gpt" }), segments);
  t.equal(d("gpt-semantic", "gsv_tokens_generated_total", { stage: "gpt" }), tokens, `gpt: tokens generated = the tokens the responses report (${tokens})`);
  const steps = d("gpt-semantic", "gsv_batch_step_seconds_count", { stage: "gpt", op: "gpt_decode" });
  t.equal(d("gpt-semantic", "gsv_batch_size_count", { stage: "gpt", op: "gpt_decode" }), steps, "one batch-size observation per decode step");
  t.equal(d("gpt-semantic", "gsv_batch_size_sum", { stage: "gpt", op: "gpt_decode" }), tokens, "the rows of all decode steps are the tokens");
  t.ok(steps > 0 && steps <= tokens, `${steps} decode steps for ${tokens} tokens`);
  t.equal(d("gpt-semantic", "gsv_batch_step_seconds_count", { stage: "gpt", op: "gpt_prefill" }), segments, "gpt: one prefill per segment, timed");
  t.equal(d("gpt-semantic", "gsv_batch_size_sum", { stage: "gpt", op: "gpt_prefill" }), segments, "of one row each");
  t.equal(d("sovits-decoder", "gsv_stage_jobs_total", { stage: "sovits" }), segments, "sovits: one job per segment");
  const windows = d("sovits-decoder", "gsv_stage_units_total", { stage: "sovits" });
  t.ok(windows >= segments, `sovits: ${windows} mel windows`);
  t.equal(d("vocoder", "gsv_stage_jobs_total", { stage: "vocoder" }), windows, "vocoder: one job per mel window");
  t.equal(d("vocoder", "gsv_batch_size_sum", { stage: "vocoder", op: "vocoder" }), windows, "every window went through exactly one vocoder batch");
  t.equal(d("sovits-decoder", "gsv_batch_size_sum", { stage: "sovits", op: "cfm_dit" }), windows * 4, "every window took 4 DiT steps (sample_steps 4)");
  for (const [svc, stage] of [["text-frontend", "text"], ["gpt-semantic", "gpt"], ["sovits-decoder", "sovits"], ["vocoder", "vocoder"]]) {
    t.equal(value(after[svc], "gsv_stage_inflight", { stage }), 0, `${stage}: nothing in flight`);
    t.equal(value(after[svc], "gsv_stage_queue_depth", { stage }), 0, `${stage}: queue empty`);
    t.equal(after[svc].types.get("gsv_stage_queue_wait_seconds"), "histogram");
    t.equal(value(after[svc], "gsv_stage_errors_total", { stage, code: "MISSING_TEXT" }), 0);
  }
  tokensTotal = value(after["gpt-semantic"], "gsv_tokens_generated_total", { stage: "gpt" });
});

t.test("services API - $SRV.PING finds all five; $SRV.INFO has the metrics URL; $SRV.STATS carries the stage's figures", async (t) => {
  const names: string[] = [];
  for await (const m of await nc.requestMany("$SRV.PING", new Uint8Array(), { maxWait: 1000 })) names.push((JSON.parse(new TextDecoder().decode(m.data)) as { name: string }).name);
  for (const svc of ["gateway", "text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"]) t.ok(names.includes(svc), `${svc} answers $SRV.PING`);
  const info = JSON.parse(new TextDecoder().decode((await nc.request("$SRV.INFO.vocoder", new Uint8Array(), { timeout: 2000 })).data)) as { metadata: Record<string, string> };
  t.equal(info.metadata.metrics, procs.find((p) => p.name === "vocoder")!.ready.metrics, "INFO metadata says where the metrics are");
  const stats = JSON.parse(new TextDecoder().decode((await nc.request("$SRV.STATS.gpt-semantic", new Uint8Array(), { timeout: 2000 })).data)) as {
    type: string;
    endpoints: { data: { stage: string; queue: { pending: number }; figures: { jobs: number; errors: Record<string, number>; batches: Record<string, { tokens: number; steps: number; meanBatch: number }> }; engines: unknown[] } }[];
  };
  t.equal(stats.type, "io.nats.micro.v1.stats_response");
  const data = stats.endpoints[0].data;
  t.equal(data.stage, "gpt");
  t.equal(data.queue.pending, 0, "queue depth");
  t.equal(data.figures.batches.gpt_decode.tokens, tokensTotal, "tokens generated, as in /metrics");
  t.ok(data.figures.batches.gpt_decode.meanBatch >= 1, "mean batch size");
  t.ok(data.figures.jobs > 0, "jobs");
  t.same(data.figures.errors, {}, "no errors");
  t.ok(Array.isArray(data.engines), "the engine's own state");
  const gw = JSON.parse(new TextDecoder().decode((await nc.request("$SRV.STATS.gateway", new Uint8Array(), { timeout: 2000 })).data)) as { endpoints: { data: { requests: number; failed: number } }[] };
  t.ok(gw.endpoints[0].data.requests >= 6, "the gateway counts its requests");
  t.equal(gw.endpoints[0].data.failed, 2, "and the two that failed");
  const text = JSON.parse(new TextDecoder().decode((await nc.request("$SRV.STATS.text-frontend", new Uint8Array(), { timeout: 2000 })).data)) as { endpoints: { data: { figures: { errors: Record<string, number> } } }[] };
  t.same(text.endpoints[0].data.figures.errors, { BAD_AUDIO: 1 }, "text-frontend's STATS count its errors by code");
});

t.test("gsv top --once - one line per service with numbers", async (t) => {
  t.equal((await tts("One more request, so the last ten seconds have some work.")).status, 200);
  const { stdout } = await run(process.execPath, [fromRoot("dist", "tools", "cli.js"), "top", "--once", "--nats", nats.url], { timeout: 30_000 });
  const lines = stdout.trim().split("\n");
  const header = lines[1].trim().split(/\s+/);
  t.same(header.slice(0, 3), ["SERVICE", "REPL", "INFLIGHT"]);
  const rows = new Map(lines.slice(2).map((l) => {
    const cells = l.trim().split(/\s+/);
    return [cells[0], Object.fromEntries(header.map((h, i) => [h, cells[i]]))] as const;
  }));
  for (const svc of ["gateway", "text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"]) {
    const r = rows.get(svc);
    t.ok(r, `${svc} is listed`);
    if (!r) continue;
    t.equal(r.REPL, "1", `${svc}: one replica`);
    t.equal(r.INFLIGHT, "0");
    t.ok(Number(r.DONE) > 0, `${svc}: ${r.DONE} done`);
    t.match(r.ERRORS, /^\d+$/);
    if (svc !== "gateway") {
      t.equal(r.QUEUE, "0", `${svc}: queue depth`);
      t.ok(Number(r.BATCH) >= 1, `${svc}: mean batch ${r.BATCH}`);
    }
  }
  t.equal(rows.get("gateway")?.ERRORS, "2", "the gateway's failed requests");
  t.equal(rows.get("text-frontend")?.ERRORS, "1", "text-frontend's failed job");
  t.ok(Number(rows.get("gpt-semantic")?.["TOK/S"]) > 0, "gpt tokens/s over the last 10 s");
  t.ok(Number(rows.get("gpt-semantic")?.STEP_MS) > 0, "gpt step time");
  t.equal(rows.get("vocoder")?.["TOK/S"], "-", "tokens/s only for gpt");
});

t.test("gsv profile - a Gantt chart with one row per request and ordered stage bars", async (t) => {
  const out = join(tmp, "profile.svg");
  const { stdout } = await run(process.execPath, [fromRoot("dist", "tools", "cli.js"), "profile", "--requests", "3", "--steps", "4", "--url", gatewayUrl, "--nats", nats.url, "-o", out], { timeout: 120_000 });
  t.match(stdout, /wrote .*profile\.svg \(3 requests\)/);
  const svg = readFileSync(out, "utf8");
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.match(svg, /<\/svg>\n$/);
  const rows = svg.split('<g class="request"').slice(1);
  t.equal(rows.length, 3, "one row per request");
  t.equal(new Set(rows.map((r) => /data-id="([0-9a-f]+)"/.exec(r)?.[1])).size, 3, "three different requests");
  for (const row of rows) {
    const bars = [...row.matchAll(/<rect class="bar (queue|compute)" data-stage="(\w+)" data-start="([\d.-]+)" data-end="([\d.-]+)"/g)].map((m) => ({ kind: m[1], stage: m[2], start: Number(m[3]), end: Number(m[4]) }));
    const first: Record<string, number> = {};
    for (const b of bars) {
      t.ok(b.end >= b.start, "a bar ends after it starts");
      if (b.kind === "compute") first[b.stage] = Math.min(first[b.stage] ?? Infinity, b.start);
    }
    const order = ["gateway", "text", "gpt", "sovits", "vocoder"];
    t.same(Object.keys(first).sort(), [...order].sort(), "a compute bar for every stage");
    for (let k = 1; k < order.length; k++) t.ok(first[order[k]] >= first[order[k - 1]], `${order[k]} starts (${first[order[k]]}) after ${order[k - 1]} started (${first[order[k - 1]]})`);
    t.ok(bars.some((b) => b.kind === "queue"), "queue waits are drawn");
  }
  t.match(svg, /class="legend"/);
  t.match(svg, /class="axis"/);
  for (const stage of ["gateway", "text", "gpt", "sovits", "vocoder"]) t.match(svg, new RegExp(`class="total" data-stage="${stage}"`), `totals for ${stage}`);
});

t.test("metrics - a client that goes away mid-request counts as 499 CANCELLED", async (t) => {
  const before = await scrape(`${gatewayUrl}/metrics`);
  const abort = new AbortController();
  const req = fetch(`${gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: "A request that nobody waits for. It has two sentences.", text_lang: "en", sample_steps: 32 }), signal: abort.signal }).catch((e: Error) => e);
  await waitFor("the request in flight", async () => (value(await scrape(`${gatewayUrl}/metrics`), "gsv_gateway_inflight") === 1 ? true : undefined));
  abort.abort();
  t.ok((await req) instanceof Error, "the client gave up");
  const after = await waitFor("the 499", async () => {
    const s = await scrape(`${gatewayUrl}/metrics`);
    return value(s, "gsv_gateway_requests_total", { route: "/tts", status: "499" }) > value(before, "gsv_gateway_requests_total", { route: "/tts", status: "499" }) ? s : undefined;
  });
  const d = (name: string, labels: Record<string, string>) => value(after, name, labels) - value(before, name, labels);
  t.equal(d("gsv_gateway_requests_total", { route: "/tts", status: "499" }), 1);
  t.equal(d("gsv_gateway_requests_total", { route: "/tts", status: "200" }), 0, "not counted as a success");
  t.equal(d("gsv_gateway_errors_total", { route: "/tts", code: "CANCELLED" }), 1);
});
