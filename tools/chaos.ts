/**
 * gsv chaos: faults under load, on loopback. Starts nats-server, two replicas of every stage and the
 * gateway; drives steady load through the gateway; SIGKILLs one replica of each stage in turn (and
 * restarts it), then SIGKILLs nats-server and starts it again on the same port and JetStream store.
 *
 * Every request must end by its deadline (+ a grace for HTTP) with audio equal to an undisturbed run of the
 * same body (same seed: same tokens, length = the expected formula, same samples), or with a coded JSON
 * error. Lost (no answer), duplicated (longer audio), mismatched audio, uncoded answers and INTERNAL
 * errors are violations: the counts are printed and the exit status is 1.
 *
 *   node dist/tools/chaos.js [--concurrency 4] [--deadline-ms 20000] [--gap-ms 3000] [--seed N] [--no-nats-restart]
 */
import { once } from "node:events";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { defaultOutDir, generateModelSet, isModelSetIntact } from "./gen-models.js";
import { startNatsServer, startService, type NatsServer, type ServiceName, type ServiceProcess } from "./launch.js";
import { checkAudio, prng, Tally, ttsCall, VARIANTS, type Outcome } from "./loadgen.js";

export interface ChaosOptions {
  /** Requests in flight at once (each client sends its next request when the last one ended). */
  concurrency: number;
  /** timeout_ms of every request. */
  deadlineMs: number;
  /** Load time between faults, and how long a killed replica stays down. */
  gapMs: number;
  downMs: number;
  seed: number;
  natsRestart: boolean;
  /** Extra environment for every service. */
  env?: Record<string, string>;
  log?: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  counts: Record<string, unknown>;
  violations: string[];
  events: string[];
  durationMs: number;
  /** A request sent after the last fault completed. */
  recovered: boolean;
  examples: string[];
}

const STAGES: ServiceName[] = ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"];
/** After the deadline: time for the gateway to write its 504 and for HTTP to carry it. */
const GRACE_MS = 3000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? ((s: string) => console.log(s));
  const t0 = Date.now();
  if (!o.env?.GSV_MODEL_DIR && !isModelSetIntact(defaultOutDir("tiny"))) await generateModelSet({ out: defaultOutDir("tiny"), preset: "tiny" });
  const dir = mkdtempSync(join(tmpdir(), "gsv-chaos-"));
  let nats: NatsServer = await startNatsServer({ dir });
  const port = Number(new URL(nats.url).port);
  const env = { NATS_URL: nats.url, PORT: "0", GSV_ACK_WAIT_MS: "1500", GSV_LOG: "error", GSV_MAX_INFLIGHT: "256", ...o.env };
  const replicas = new Map<ServiceName, ServiceProcess[]>();
  const all: ServiceProcess[] = [];
  const events: string[] = [];
  const event = (s: string) => {
    const line = `+${((Date.now() - t0) / 1000).toFixed(1)}s ${s}`;
    events.push(line);
    log(line);
  };
  const tally = new Tally();
  const violations: string[] = [];
  let stopLoad = false;
  const workers: Promise<void>[] = [];
  try {
    const started = await Promise.all(STAGES.flatMap((n) => [0, 1].map(() => startService(n, env))));
    for (const p of started) {
      all.push(p);
      replicas.set(p.name, [...(replicas.get(p.name) ?? []), p]);
    }
    const gateway = await startService("gateway", env);
    all.push(gateway);
    const url = String(gateway.ready.url);
    event(`stack up: nats ${nats.url}, 2 replicas per stage, gateway ${url}`);

    // Undisturbed runs of every variant: what each request under chaos must reproduce.
    const baselines: Extract<Outcome, { kind: "completed" }>[] = [];
    for (const v of VARIANTS) {
      const r = await ttsCall(url, { ...v, timeout_ms: 60_000 }, 65_000);
      if (r.kind !== "completed") throw new Error(`baseline ${JSON.stringify(v)} failed: ${JSON.stringify(r).slice(0, 300)}`);
      baselines.push(r);
    }
    event(`baselines: ${baselines.map((b) => `${b.tokens.join("+")} tokens ${b.ms} ms`).join(", ")}`);

    const rand = prng(o.seed);
    const client = async (c: number) => {
      for (let n = 0; !stopLoad; n++) {
        const vi = Math.floor(rand() * VARIANTS.length);
        const r = await ttsCall(url, { ...VARIANTS[vi], timeout_ms: o.deadlineMs }, o.deadlineMs + GRACE_MS);
        const tag = `client ${c} request ${n} (variant ${vi})`;
        if (r.kind === "completed") {
          const check = checkAudio(r, baselines[vi]);
          if (check === "ok") tally.completed++;
          else if (check === "duplicated") {
            tally.duplicated++;
            tally.note(`${tag}: duplicated audio, ${r.samples.length} samples, baseline ${baselines[vi].samples.length}`);
          } else {
            tally.mismatched++;
            tally.note(`${tag}: audio differs from the undisturbed run (tokens ${r.tokens} vs ${baselines[vi].tokens})`);
          }
          if (r.ms > o.deadlineMs + GRACE_MS) tally.late++;
        } else if (r.kind === "failed") {
          tally.failed[r.code] = (tally.failed[r.code] ?? 0) + 1;
          if (r.code === "INTERNAL") tally.note(`${tag}: INTERNAL ${r.message}`);
          if (r.ms > o.deadlineMs + GRACE_MS) tally.late++;
        } else if (r.kind === "lost") {
          tally.lost++;
          tally.note(`${tag}: lost after ${r.ms} ms: ${r.message}`);
        } else {
          tally.unclear++;
          tally.note(`${tag}: unclear answer ${r.status}: ${r.body}`);
        }
      }
    };
    for (let c = 0; c < o.concurrency; c++) workers.push(client(c));
    event(`load: ${o.concurrency} concurrent clients, timeout_ms ${o.deadlineMs}, seed ${o.seed}`);

    await sleep(o.gapMs);
    for (const name of STAGES) {
      const list = replicas.get(name)!;
      const victim = list[0];
      victim.proc.kill("SIGKILL");
      await once(victim.proc, "exit").catch(() => undefined);
      event(`SIGKILL ${name} (pid ${victim.proc.pid})`);
      await sleep(o.downMs);
      const back = await startService(name, env);
      list[0] = back;
      all.push(back);
      event(`restarted ${name} (pid ${back.proc.pid})`);
      await sleep(o.gapMs);
    }
    if (o.natsRestart) {
      nats.proc.kill("SIGKILL");
      await once(nats.proc, "exit").catch(() => undefined);
      event("SIGKILL nats-server");
      await sleep(o.downMs);
      for (const f of readdirSync(dir)) if (f.endsWith(".ports")) rmSync(join(dir, f)); // left by the killed server
      nats = await startNatsServer({ dir, port });
      event(`restarted nats-server on port ${port} with the same store dir`);
      await sleep(2 * o.gapMs);
    }
    stopLoad = true;
    await Promise.all(workers);
    event(`load stopped: ${JSON.stringify(tally.summary())}`);

    // Recovery: the stack serves again on its own (retryable refusals allowed while queues are re-declared).
    let recovered = false;
    for (let i = 0; i < 10 && !recovered; i++) {
      const r = await ttsCall(url, { ...VARIANTS[0], timeout_ms: 30_000 }, 35_000);
      if (r.kind === "completed" && checkAudio(r, baselines[0]) === "ok") recovered = true;
      else if (r.kind === "failed" && ["STAGE_UNAVAILABLE", "OVERLOADED", "DEADLINE_EXCEEDED"].includes(r.code)) await sleep(1000);
      else {
        tally.note(`recovery request: ${JSON.stringify(r).slice(0, 300)}`);
        break;
      }
    }
    event(recovered ? "a new request completes after the faults" : "the stack did not recover");

    const survivors = [...replicas.values()].flat().concat(gateway);
    for (const p of survivors) if (p.proc.exitCode !== null || p.proc.signalCode !== null) violations.push(`${p.name} (pid ${p.proc.pid}) exited by itself (${p.proc.exitCode ?? p.proc.signalCode})`);
    if (tally.lost) violations.push(`${tally.lost} requests lost (no answer by their deadline + ${GRACE_MS} ms)`);
    if (tally.duplicated) violations.push(`${tally.duplicated} requests with duplicated audio`);
    if (tally.mismatched) violations.push(`${tally.mismatched} requests whose audio differs from the undisturbed run`);
    if (tally.unclear) violations.push(`${tally.unclear} answers without an error code`);
    if (tally.late) violations.push(`${tally.late} answers after their deadline + grace`);
    if (tally.failed.INTERNAL) violations.push(`${tally.failed.INTERNAL} INTERNAL errors`);
    if (!recovered) violations.push("no request completed after the faults");
    if (tally.completed === 0) violations.push("no request completed under load");
    return { seed: o.seed, counts: tally.summary(), violations, events, durationMs: Date.now() - t0, recovered, examples: tally.samples };
  } finally {
    stopLoad = true;
    await Promise.all(workers).catch(() => undefined);
    await Promise.all(all.map((p) => p.stop().catch(() => null)));
    if (nats.proc.exitCode === null && nats.proc.signalCode === null) {
      nats.proc.kill("SIGTERM");
      await once(nats.proc, "exit").catch(() => undefined);
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function chaosCli(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      concurrency: { type: "string", default: "4" },
      "deadline-ms": { type: "string", default: "20000" },
      "gap-ms": { type: "string", default: "3000" },
      "down-ms": { type: "string", default: "1000" },
      seed: { type: "string" },
      "no-nats-restart": { type: "boolean", default: false },
    },
  });
  const seed = values.seed ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  console.log(`chaos: seed ${seed} (replay with --seed ${seed})`);
  const r = await runChaos({
    concurrency: Number(values.concurrency),
    deadlineMs: Number(values["deadline-ms"]),
    gapMs: Number(values["gap-ms"]),
    downMs: Number(values["down-ms"]),
    seed,
    natsRestart: !values["no-nats-restart"],
  });
  console.log(`chaos: ${JSON.stringify(r.counts)} in ${(r.durationMs / 1000).toFixed(1)} s`);
  for (const e of r.examples) console.log(`  ${e}`);
  if (r.violations.length) {
    for (const v of r.violations) console.log(`VIOLATION: ${v}`);
    return 1;
  }
  console.log("chaos: no violations");
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  chaosCli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`chaos: ${(err as Error).stack}`);
      process.exit(2);
    },
  );
}
