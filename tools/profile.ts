/**
 * `gsv profile`: where did each request's milliseconds go? A Gantt chart (SVG): one row per request, in it
 * one lane per stage (gateway, text, gpt, sovits, vocoder) with a pale bar for each unit's queue wait and
 * a solid bar for its compute, on a common time axis, so stages of different requests overlapping in time
 * and the stage where work piles up (the bottleneck) are visible.
 *
 * Data: every gateway keeps its recent requests with every stage's timing entries (each entry carries its
 * compute start `at`, epoch ms) and answers them on tts.v1.recent.gateway (services/gateway/observe.ts).
 * Times come from each process's clock: on one machine they agree; across machines they are as good as NTP.
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "nats";
import { decode, encode } from "../shared/codec.js";
import { ServiceNames, Subjects } from "../shared/subjects.js";
import type { RequestRecord } from "../services/gateway/observe.js";
import { startStack, type Stack } from "./launch.js";

export const LANES = ["gateway", "text", "gpt", "sovits", "vocoder"] as const;
export type Lane = (typeof LANES)[number];

export const COLOURS: Record<Lane, string> = { gateway: "#7f7f7f", text: "#1f77b4", gpt: "#d62728", sovits: "#2ca02c", vocoder: "#9467bd" };

export interface Bar {
  lane: Lane;
  kind: "queue" | "compute";
  /** Epoch ms. */
  start: number;
  end: number;
  seg?: number;
  win?: number;
  batch?: number;
  replica?: string;
}

/** The bars of one request: the gateway's own part, then each timed unit's queue wait and compute. */
export function barsOf(r: RequestRecord): Bar[] {
  const bars: Bar[] = [];
  if (r.queuedAt !== undefined) bars.push({ lane: "gateway", kind: "compute", start: r.receivedAt, end: r.queuedAt });
  for (const t of r.timings) {
    if (t.at === undefined || !(LANES as readonly string[]).includes(t.stage)) continue;
    const lane = t.stage as Lane;
    const base = { lane, seg: t.seg, ...(t.win === undefined ? {} : { win: t.win }), batch: t.batch, replica: t.replica };
    if (t.queueMs > 0) bars.push({ ...base, kind: "queue", start: t.at - t.queueMs, end: t.at });
    bars.push({ ...base, kind: "compute", start: t.at, end: t.at + t.computeMs });
  }
  return bars;
}

export interface StageTotals {
  lane: Lane;
  units: number;
  queueMs: number;
  computeMs: number;
}

/** Per stage over all requests: units, summed queue wait and compute. */
export function totals(records: RequestRecord[]): StageTotals[] {
  const by = new Map<Lane, StageTotals>(LANES.map((l) => [l, { lane: l, units: 0, queueMs: 0, computeMs: 0 }]));
  for (const r of records)
    for (const b of barsOf(r)) {
      const s = by.get(b.lane)!;
      if (b.kind === "queue") s.queueMs += b.end - b.start;
      else {
        s.computeMs += b.end - b.start;
        s.units++;
      }
    }
  return [...by.values()];
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function niceStep(span: number, ticks: number): number {
  const raw = span / ticks;
  const p = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-9)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/** The Gantt chart as a standalone SVG. */
export function renderGantt(records: RequestRecord[], o: { title?: string } = {}): string {
  const rows = [...records].sort((a, b) => a.receivedAt - b.receivedAt);
  // Loops, not Math.min(...): thousands of bars would overflow the argument list.
  let t0 = Infinity;
  let t1 = -Infinity;
  for (const r of rows) {
    t0 = Math.min(t0, r.receivedAt);
    t1 = Math.max(t1, r.doneAt);
    for (const b of barsOf(r)) {
      t0 = Math.min(t0, b.start);
      t1 = Math.max(t1, b.end);
    }
  }
  const span = Math.max(1, t1 - t0);
  const left = 190;
  const width = 1000;
  const laneH = 12;
  const rowH = LANES.length * laneH + 10;
  const top = 70;
  const plotH = rows.length * rowH;
  const sum = totals(rows);
  const legendY = top + plotH + 30;
  const height = legendY + 40 + sum.length * 16 + 20;
  const x = (t: number) => left + ((t - t0) / span) * width;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${left + width + 30}" height="${height}" font-family="sans-serif" font-size="11" data-requests="${rows.length}" data-t0="${t0}">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="10" y="20" font-size="15" font-weight="bold">${esc(o.title ?? `gsv profile: ${rows.length} request${rows.length === 1 ? "" : "s"}, ${Math.round(span)} ms`)}</text>`);
  // Time axis.
  const step = niceStep(span, 10);
  out.push(`<g class="axis">`);
  for (let t = 0; t <= span + 1e-9; t += step) {
    const xx = x(t0 + t).toFixed(1);
    out.push(`<line x1="${xx}" y1="${top - 8}" x2="${xx}" y2="${top + plotH}" stroke="#ddd"/>`);
    out.push(`<text x="${xx}" y="${top - 12}" text-anchor="middle" fill="#444">${Math.round(t)} ms</text>`);
  }
  out.push(`</g>`);
  // Rows.
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const total = r.doneAt - r.receivedAt;
    out.push(`<g class="request" data-id="${esc(r.id)}" data-status="${r.status}"${r.traceId ? ` data-trace-id="${r.traceId}"` : ""} data-start="${r.receivedAt - t0}" data-end="${r.doneAt - t0}">`);
    if (i % 2 === 0) out.push(`<rect x="0" y="${y - 2}" width="${left + width + 30}" height="${rowH}" fill="#f6f6f6"/>`);
    out.push(`<text x="10" y="${y + 14}">${esc(r.id.slice(0, 12))}</text>`);
    out.push(`<text x="10" y="${y + 28}" fill="#555">${total} ms${r.code ? ` ${esc(r.code)}` : ""}${r.segments ? `, ${r.segments} seg` : ""}</text>`);
    LANES.forEach((lane, li) => out.push(`<text x="${left - 6}" y="${y + li * laneH + laneH - 1}" text-anchor="end" font-size="8" fill="#888">${lane}</text>`));
    // The whole request, receipt to the end of the response.
    out.push(`<line class="span" x1="${x(r.receivedAt).toFixed(1)}" x2="${x(r.doneAt).toFixed(1)}" y1="${y + rowH - 8}" y2="${y + rowH - 8}" stroke="#333" stroke-width="1"/>`);
    const bars = barsOf(r);
    // Segments of one request run side by side: each gets its own slice of the lane.
    const segs = Math.max(1, ...bars.map((b) => (b.seg ?? -1) + 1));
    for (const b of bars) {
      const li = LANES.indexOf(b.lane);
      const slice = b.seg !== undefined && b.seg >= 0 ? (laneH - 2) / segs : laneH - 2;
      const by = y + li * laneH + (b.seg !== undefined && b.seg >= 0 ? b.seg * slice : 0);
      const bx = x(b.start);
      const bw = Math.max(0.8, x(b.end) - bx);
      const label = `${b.lane} ${b.kind} ${Math.round(b.end - b.start)} ms${b.seg !== undefined && b.seg >= 0 ? ` seg ${b.seg}` : ""}${b.win !== undefined ? ` win ${b.win}` : ""}${b.batch ? ` batch ${b.batch}` : ""}${b.replica ? ` (${b.replica})` : ""}`;
      out.push(
        `<rect class="bar ${b.kind}" data-stage="${b.lane}" data-start="${(b.start - t0).toFixed(1)}" data-end="${(b.end - t0).toFixed(1)}" x="${bx.toFixed(1)}" y="${by.toFixed(2)}" width="${bw.toFixed(1)}" height="${Math.max(1, slice).toFixed(2)}" fill="${COLOURS[b.lane]}" fill-opacity="${b.kind === "queue" ? 0.3 : 0.9}"${b.kind === "queue" ? ` stroke="${COLOURS[b.lane]}" stroke-width="0.5"` : ""}><title>${esc(label)}</title></rect>`,
      );
    }
    out.push(`</g>`);
  });
  // Legend and per-stage totals; the stage with the most queue wait is where work piles up.
  out.push(`<g class="legend">`);
  let lx = 10;
  for (const lane of LANES) {
    out.push(`<rect x="${lx}" y="${legendY - 9}" width="14" height="9" fill="${COLOURS[lane]}" fill-opacity="0.9"/><rect x="${lx + 16}" y="${legendY - 9}" width="14" height="9" fill="${COLOURS[lane]}" fill-opacity="0.3" stroke="${COLOURS[lane]}" stroke-width="0.5"/><text x="${lx + 34}" y="${legendY}">${lane}</text>`);
    lx += 110;
  }
  out.push(`<text x="${lx}" y="${legendY}" fill="#444">solid: compute, pale: queue wait; line: whole request</text>`);
  out.push(`</g>`);
  const worst = [...sum].sort((a, b) => b.queueMs - a.queueMs)[0];
  out.push(`<g class="totals">`);
  out.push(`<text x="10" y="${legendY + 24}" font-weight="bold">per stage over these requests (units, compute, queue wait)${worst && worst.queueMs > 0 ? ` - most queue wait: ${worst.lane}` : ""}</text>`);
  sum.forEach((s, i) => {
    out.push(`<text class="total" data-stage="${s.lane}" x="10" y="${legendY + 42 + i * 16}">${s.lane}: ${s.units} units, compute ${Math.round(s.computeMs)} ms, queue ${Math.round(s.queueMs)} ms${s.units ? ` (mean ${Math.round(s.computeMs / s.units)} + ${Math.round(s.queueMs / s.units)} ms per unit)` : ""}</text>`);
  });
  out.push(`</g>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/** Every gateway replica's recent requests (those with `ids`, or the newest `last`). */
export async function collectRecent(nc: NatsConnection, q: { ids?: string[]; last?: number }, maxWait = 1000): Promise<RequestRecord[]> {
  const by = new Map<string, RequestRecord>();
  const it = await nc.requestMany(Subjects.recentRequests(ServiceNames.gateway), encode(q), { maxWait });
  for await (const m of it) {
    const r = decode(m.data) as { requests?: RequestRecord[] };
    for (const rec of r.requests ?? []) by.set(rec.id, rec);
  }
  const all = [...by.values()].sort((a, b) => a.receivedAt - b.receivedAt);
  return q.last && !q.ids ? all.slice(-q.last) : all;
}

/** N concurrent POST /tts; returns their request ids (and statuses). */
export async function generate(url: string, n: number, body: Record<string, unknown>): Promise<{ id: string; status: number }[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const res = await fetch(`${url}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, seed: i + 1 }) });
      await res.arrayBuffer();
      return { id: res.headers.get("x-request-id") ?? "", status: res.status };
    }),
  );
}

export const PROFILE_HELP = `gsv profile [--requests N] [-o profile.svg] [--url http://gateway] [--nats nats://host:4222]
            [--last N] [--text "..."] [--steps 32] [--json]
    A Gantt chart (SVG) of requests: one row per request, one lane per stage, queue wait pale and
    compute solid. With --requests N it sends N concurrent requests and draws them; otherwise it draws
    the newest --last N (default 20) requests the gateways remember. Without --nats/NATS_URL and --url
    it starts a private pipeline, sends --requests (default 4) requests, draws them and stops it.`;

export async function profileCli(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      requests: { type: "string" },
      out: { type: "string", short: "o", default: "profile.svg" },
      url: { type: "string" },
      nats: { type: "string" },
      last: { type: "string" },
      text: { type: "string", default: "Hello world. This request went through five processes over NATS, and this chart shows where its time went." },
      lang: { type: "string", default: "en" },
      steps: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  const natsUrl = values.nats ?? process.env.NATS_URL;
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  try {
    let url = values.url;
    let n = values.requests !== undefined ? Number(values.requests) : undefined;
    if (n !== undefined && !(Number.isInteger(n) && n >= 1 && n <= 1000)) throw new Error(`--requests must be 1..1000, got ${values.requests}`);
    if (!natsUrl) {
      if (url) throw new Error("gsv profile reads timings over NATS: give --nats (or NATS_URL) with --url");
      stack = await startStack({ env: { GSV_LOG: "warn" } });
      url = stack.gatewayUrl;
      n ??= 4;
    }
    nc = await connect({ servers: natsUrl ?? stack!.natsUrl });
    let records: RequestRecord[];
    if (n !== undefined) {
      if (!url) throw new Error("--requests needs the gateway: --url http://host:port");
      const body: Record<string, unknown> = { text: values.text, text_lang: values.lang };
      if (values.steps) body.sample_steps = Number(values.steps);
      const sent = await generate(url, n, body);
      const failed = sent.filter((s) => s.status !== 200);
      if (failed.length) console.error(`gsv profile: ${failed.length} of ${n} requests failed (${[...new Set(failed.map((f) => f.status))].join(", ")})`);
      records = await collectRecent(nc, { ids: sent.map((s) => s.id).filter(Boolean) });
    } else {
      records = await collectRecent(nc, { last: Number(values.last ?? 20) });
    }
    if (records.length === 0) throw new Error("no requests to draw: the gateways remember none (send some, or use --requests N)");
    if (values.json) writeFileSync(values.out!, JSON.stringify(records, null, 2));
    else writeFileSync(values.out!, renderGantt(records));
    console.log(`wrote ${values.out} (${records.length} requests)`);
    for (const s of totals(records)) console.log(`  ${s.lane.padEnd(8)} ${String(s.units).padStart(4)} units  compute ${String(Math.round(s.computeMs)).padStart(7)} ms  queue ${String(Math.round(s.queueMs)).padStart(7)} ms`);
  } finally {
    await nc?.close();
    await stack?.stop();
  }
}
