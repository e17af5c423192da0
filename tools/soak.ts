/**
 * gsv soak: many requests on the tiny model set through the full stack (nats-server, the four stages,
 * the gateway), sampling every process's resident memory (VmRSS from /proc/<pid>/status) after a warm-up
 * and at the end, to find leaks: the drift per service should stay within 64 MB.
 *
 *   node dist/tools/soak.js [--requests 10000] [--concurrency 4] [--warmup 200] [--max-minutes M] [--json out.json]
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { startStack } from "./launch.js";
import { checkAudio, rssMb, Tally, ttsCall, VARIANTS, type Outcome } from "./loadgen.js";

export interface SoakOptions {
  requests: number;
  concurrency: number;
  warmup: number;
  /** Stop early (with an honest count) after this long. */
  maxMs?: number;
  log?: (line: string) => void;
}

export interface SoakReport {
  requests: number;
  counts: Record<string, unknown>;
  /** MB per process: after warm-up, at the end, and the difference. */
  rss: Record<string, { start: number; end: number; drift: number; peak: number }>;
  durationMs: number;
  perSecond: number;
  /** RSS samples along the run, per process, for a curve. */
  samples: { done: number; rss: Record<string, number> }[];
  examples: string[];
}

export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const log = o.log ?? ((s: string) => console.log(s));
  const stack = await startStack({ env: { GSV_LOG: "error", GSV_MAX_INFLIGHT: "256" } });
  try {
    const procs: { name: string; pid: number | undefined }[] = stack.services.map((s) => ({ name: s.name, pid: s.proc.pid }));
    if (stack.nats) procs.push({ name: "nats-server", pid: stack.nats.proc.pid });
    const sample = () => Object.fromEntries(procs.map((p) => [p.name, Math.round(rssMb(p.pid) * 10) / 10]));
    const url = stack.gatewayUrl;
    const baselines: Extract<Outcome, { kind: "completed" }>[] = [];
    for (const v of VARIANTS) {
      const r = await ttsCall(url, { ...v, timeout_ms: 60_000 }, 65_000);
      if (r.kind !== "completed") throw new Error(`baseline failed: ${JSON.stringify(r).slice(0, 300)}`);
      baselines.push(r);
    }
    // Warm up at the load's concurrency: onnxruntime's memory arenas grow to the largest batch shapes
    // the load makes, once; sampling before that would count the arenas as drift.
    // First the largest batches the load can make: every client sends the same body at once, for each body.
    for (const v of VARIANTS) {
      for (let round = 0; round < 2; round++) await Promise.all(Array.from({ length: o.concurrency }, () => ttsCall(url, { ...v, timeout_ms: 60_000 }, 65_000)));
    }
    let w = 0;
    await Promise.all(Array.from({ length: o.concurrency }, async () => {
      while (w < o.warmup) {
        const i = w++;
        await ttsCall(url, { ...VARIANTS[i % VARIANTS.length], timeout_ms: 60_000 }, 65_000);
      }
    }));
    const start = sample();
    const peak: Record<string, number> = { ...start };
    const samples: SoakReport["samples"] = [{ done: 0, rss: start }];
    log(`soak: warm (${o.warmup} requests); RSS MB ${JSON.stringify(start)}`);
    const tally = new Tally();
    const t0 = Date.now();
    let next = 0;
    let done = 0;
    const every = Math.max(1, Math.floor(o.requests / 20));
    await Promise.all(
      Array.from({ length: o.concurrency }, async () => {
        while (next < o.requests && (o.maxMs === undefined || Date.now() - t0 < o.maxMs)) {
          const i = next++;
          const vi = i % VARIANTS.length;
          const r = await ttsCall(url, { ...VARIANTS[vi], timeout_ms: 60_000 }, 65_000);
          if (r.kind === "completed") {
            const c = checkAudio(r, baselines[vi]);
            if (c === "ok") tally.completed++;
            else {
              if (c === "duplicated") tally.duplicated++;
              else tally.mismatched++;
              tally.note(`request ${i}: ${c}`);
            }
          } else if (r.kind === "failed") {
            tally.failed[r.code] = (tally.failed[r.code] ?? 0) + 1;
            tally.note(`request ${i}: ${r.code} ${r.message}`);
          } else if (r.kind === "lost") {
            tally.lost++;
            tally.note(`request ${i}: lost ${r.message}`);
          } else {
            tally.unclear++;
            tally.note(`request ${i}: ${r.status} ${r.body}`);
          }
          done++;
          if (done % every === 0) {
            const s = sample();
            for (const [k, v] of Object.entries(s)) peak[k] = Math.max(peak[k] ?? 0, v);
            samples.push({ done, rss: s });
            log(`soak: ${done}/${o.requests} in ${((Date.now() - t0) / 1000).toFixed(0)} s; RSS MB ${JSON.stringify(s)}`);
          }
        }
      }),
    );
    const durationMs = Date.now() - t0;
    const end = sample();
    const rss: SoakReport["rss"] = {};
    for (const p of procs) rss[p.name] = { start: start[p.name], end: end[p.name], drift: Math.round((end[p.name] - start[p.name]) * 10) / 10, peak: Math.max(peak[p.name] ?? 0, end[p.name]) };
    return { requests: done, counts: tally.summary(), rss, durationMs, perSecond: Math.round((done / durationMs) * 1000 * 10) / 10, samples, examples: tally.samples };
  } finally {
    await stack.stop();
  }
}

export async function soakCli(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { requests: { type: "string", default: "10000" }, concurrency: { type: "string", default: "4" }, warmup: { type: "string", default: "200" }, "max-minutes": { type: "string" }, json: { type: "string" } } });
  const r = await runSoak({ requests: Number(values.requests), concurrency: Number(values.concurrency), warmup: Number(values.warmup), maxMs: values["max-minutes"] ? Number(values["max-minutes"]) * 60_000 : undefined });
  console.log(`soak: ${r.requests} requests in ${(r.durationMs / 1000).toFixed(0)} s (${r.perSecond}/s): ${JSON.stringify(r.counts)}`);
  for (const [name, m] of Object.entries(r.rss)) console.log(`  ${name.padEnd(15)} RSS ${m.start} → ${m.end} MB (drift ${m.drift >= 0 ? "+" : ""}${m.drift} MB, peak ${m.peak})`);
  for (const e of r.examples) console.log(`  ${e}`);
  if (values.json) writeFileSync(values.json, JSON.stringify(r, null, 1));
  const bad = Object.entries(r.rss).filter(([, m]) => m.drift > 64);
  const failed = r.requests - (r.counts.completed as number);
  if (bad.length || failed) {
    console.log(`soak: ${failed} requests did not complete; drift over 64 MB: ${bad.map(([n]) => n).join(", ") || "none"}`);
    return 1;
  }
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  soakCli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`soak: ${(err as Error).stack}`);
      process.exit(2);
    },
  );
}
