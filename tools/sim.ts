/**
 * npm run sim [-- --replicas 1,2,4,8,32] [-- --dilation 8] [-- --steps 32] [-- --out bench-out]
 *
 * Simulated scaling beyond one machine: the real stack (nats-server, gateway, every stage as its own
 * process, started by tools/launch.ts) with GSV_BACKEND=cost-model, so each replica's graphs run on a
 * simulated GPU (shared/cost-model.ts) that waits in timers instead of computing. Only the graph
 * execution is replaced: services, JetStream queues, MicroBatcher and the GPT engine are the real ones.
 *
 * 1. Calibration: one replica of every stage under saturating load; the stage whose queue backs up is
 *    the bottleneck (the cost model's per-replica capacities are printed beside it).
 * 2. For each replica count n of the bottleneck, a fresh stack: n bottleneck replicas, the other stages
 *    sized from the cost model with 1.5× headroom; a closed loop of 6·n requests in flight (NATS client in
 *    this process); after a warm-up, audio received from the vocoders per simulated second, per-process
 *    CPU, queue depths (JetStream consumer info, as tts.v1.status.* reports it), batch histograms from
 *    tts.v1.status.*; efficiency(n) = throughput(n) / (n · throughput(1)).
 * Time: GSV_COST_DILATION = max(--dilation, 1.5·n) wall seconds per simulated second, so that the wall-clock
 * load on this machine stays about the same at every level; throughputs are per simulated second.
 * --warmup and --measure are simulated seconds (the window shrinks as 12/√n, at least 3).
 * Writes bench-out/sim.json and bench-out/sim.svg.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "nats";
import { synthesize, type SynthesisRequest } from "../shared/client.js";
import { decode } from "../shared/codec.js";
import { REFERENCE, callTimeMs } from "../shared/cost-model.js";
import { loadManifest } from "../shared/manifest.js";
import { refAudioStore } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import type { GenParams } from "../shared/schemas.js";
import { PREFIX, ServiceNames, WorkQueues, type Stage } from "../shared/subjects.js";
import { startNatsServer, startService, type NatsServer, type ServiceName, type ServiceProcess } from "./launch.js";
import { BENCH_TEXTS, defaultVoice } from "./loadgen.js";
import { processCpuMs } from "./proc-cpu.js";

const { values } = parseArgs({
  options: {
    replicas: { type: "string", default: "1,2,4,8,32" },
    dilation: { type: "string", default: "8" },
    "dilation-per-replica": { type: "string", default: "1.5" },
    steps: { type: "string", default: "32" },
    warmup: { type: "string", default: "6" },
    measure: { type: "string", default: "12" },
    "min-measure": { type: "string", default: "3" },
    "per-replica": { type: "string", default: "6" },
    stage: { type: "string", default: "auto" },
    out: { type: "string", default: "bench-out" },
  },
});
const levels = values.replicas!.split(",").map(Number);
const nMax = Math.max(...levels);
const D0 = Number(values.dilation);
const dPerReplica = Number(values["dilation-per-replica"]);
/** Dilation of a level: grows with the replica count so that the wall-clock load on this machine stays about constant. */
const dilationFor = (n: number) => Math.max(D0, Math.round(dPerReplica * n));
/** Measured window, simulated seconds: more replicas finish more segments per second, so a shorter window holds as many. */
const measureFor = (n: number) => Math.max(Number(values["min-measure"]), Number(values.measure) / Math.sqrt(n));
const steps = Number(values.steps);
const warmupSim = Number(values.warmup);
const perReplica = Number(values["per-replica"]);
const modelDir = fromRoot("models", "tiny");
const manifest = loadManifest(modelDir);
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
const log = (s: string) => console.log(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const TEXTS = BENCH_TEXTS;
const { wav, promptText, audioSha } = defaultVoice();
// fragmentInterval 0: only generated speech is counted, no inserted pauses.
const params = (i: number): GenParams => ({ topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 1000 + i, speed: 1, sampleSteps: steps, fragmentInterval: 0 });

// ─── processes ───────────────────────────────────────────────────────────────────────────────────

const STAGE_SERVICE: Record<Stage, ServiceName> = { text: "text-frontend", gpt: "gpt-semantic", sovits: "sovits-decoder", vocoder: "vocoder" };

/** One stack: nats-server and every service as its own process, all simulated GPUs at dilation `d`. */
interface SimStack {
  nats: NatsServer;
  nc: NatsConnection;
  d: number;
  procs: { role: ServiceName; proc: ServiceProcess }[];
  stop(): Promise<void>;
}
let current: SimStack | undefined;
async function startSimStack(plan: Record<ServiceName, number>, d: number): Promise<SimStack> {
  const nats = await startNatsServer();
  const env: Record<string, string> = { NATS_URL: nats.url, PORT: "0", GSV_LOG: "warn", GSV_BACKEND: "cost-model", GSV_COST_DILATION: String(d) };
  const procs: SimStack["procs"] = [];
  const stack: SimStack = {
    nats,
    nc: undefined as unknown as NatsConnection,
    d,
    procs,
    async stop() {
      await stack.nc?.close().catch(() => undefined);
      await Promise.all(procs.map((p) => p.proc.stop()));
      await nats.stop();
    },
  };
  current = stack;
  const start = (role: ServiceName, n: number) =>
    Array.from({ length: n }, (_, i) => startService(role, { ...env, GSV_REPLICA: `${role}-${i}` }, { timeoutMs: 300_000 }).then((p) => void procs.push({ role, proc: p })));
  const stages = (Object.keys(plan) as ServiceName[]).filter((r) => r !== "gateway");
  const started = await Promise.allSettled(stages.flatMap((r) => start(r, plan[r])));
  const bad = started.find((r) => r.status === "rejected");
  if (bad) {
    await stack.stop();
    throw (bad as PromiseRejectedResult).reason;
  }
  await Promise.all(start("gateway", plan.gateway));
  stack.nc = await connect({ servers: nats.url, name: "sim-driver" });
  // Audio as it arrives from the vocoders, before the client puts windows in order: the pipeline's output rate.
  stack.nc.subscribe(`${PREFIX}.reply.*`, {
    callback: (_err, m) => {
      const ev = decode(m.data) as { type?: string; pcm?: Float32Array; overlap?: number };
      if (ev.type === "audio" && ev.pcm) received += ev.pcm.length - (ev.overlap ?? 0);
    },
  });
  await (await refAudioStore(stack.nc)).putBlob({ name: audioSha }, wav);
  return stack;
}
process.on("SIGINT", () => void (current?.stop() ?? Promise.resolve()).then(() => process.exit(130)));

/** utime + stime of a process, in seconds (0 where /proc cannot tell). */
const cpuSeconds = (pid: number | undefined): number => (processCpuMs(pid) ?? 0) / 1000;
function cpuSnapshot(st: SimStack): Map<string, { role: string; s: number }> {
  const m = new Map<string, { role: string; s: number }>();
  for (const p of st.procs) m.set(String(p.proc.proc.pid), { role: p.role, s: cpuSeconds(p.proc.proc.pid) });
  m.set(String(st.nats.proc.pid), { role: "nats-server", s: cpuSeconds(st.nats.proc.pid) });
  const u = process.cpuUsage();
  m.set("driver", { role: "driver (this process)", s: (u.user + u.system) / 1e6 });
  return m;
}
function cpuDelta(a: Map<string, { role: string; s: number }>, b: Map<string, { role: string; s: number }>, wallS: number) {
  const byRole: Record<string, { processes: number; cpuPct: number; maxProcessPct: number }> = {};
  for (const [k, v] of b) {
    const pct = ((v.s - (a.get(k)?.s ?? 0)) / wallS) * 100;
    const r = (byRole[v.role] ??= { processes: 0, cpuPct: 0, maxProcessPct: 0 });
    r.processes++;
    r.cpuPct = round(r.cpuPct + pct, 1);
    r.maxProcessPct = round(Math.max(r.maxProcessPct, pct), 1);
  }
  return byRole;
}

// ─── load ────────────────────────────────────────────────────────────────────────────────────────

let delivered = 0; // audio samples the clients have put in order
let received = 0; // audio samples received from the vocoders (overlaps counted once)
let completed = 0;
let failed = 0;
const failures = new Map<string, number>();
let tokensSeen = 0;
let segmentsSeen = 0;

/** Closed loop: `c` virtual clients, each sending its next request when the previous one ends. */
function drive(nc: NatsConnection, c: number): { stop: () => void } {
  let stopping = false;
  let next = 0;
  const loops = Array.from({ length: c }, async () => {
    while (!stopping) {
      const i = next++;
      const req: SynthesisRequest = {
        text: TEXTS[i % TEXTS.length],
        textLang: "en",
        splitMethod: "cut5",
        voice: { audioSha, promptText, promptLang: "en" },
        params: params(i),
        timeoutMs: 3_600_000,
        onAudio: (pcm) => (delivered += pcm.length),
      };
      try {
        const r = await synthesize(nc, req);
        completed++;
        segmentsSeen += r.segments;
        tokensSeen += r.tokens.reduce((s, t) => s + t, 0);
      } catch (err) {
        failed++;
        const m = (err as Error).message.slice(0, 80);
        failures.set(m, (failures.get(m) ?? 0) + 1);
        await sleep(100);
      }
    }
  });
  return {
    // Stops sending; requests still in flight end when the stack stops (they are not counted).
    stop: () => {
      stopping = true;
      void Promise.all(loops);
    },
  };
}

async function queues(nc: NatsConnection, tries = 3): Promise<Record<Stage, { pending: number; ackPending: number; delivered: number }>> {
  for (let i = 1; ; i++) {
    try {
      return await queuesOnce(nc);
    } catch (err) {
      if (i >= tries) throw err;
    }
  }
}
async function queuesOnce(nc: NatsConnection): Promise<Record<Stage, { pending: number; ackPending: number; delivered: number }>> {
  const out = {} as Record<Stage, { pending: number; ackPending: number; delivered: number }>;
  const jsm = await nc.jetstreamManager({ timeout: 20_000 });
  for (const s of Object.keys(WorkQueues) as Stage[]) {
    const i = await jsm.consumers.info(WorkQueues[s].stream, WorkQueues[s].consumer);
    out[s] = { pending: i.num_pending, ackPending: i.num_ack_pending, delivered: i.delivered.stream_seq };
  }
  return out;
}

/** Every replica's status (tts.v1.status.<service>): batch histograms of a stage, summed. */
async function statusOf(nc: NatsConnection, service: string): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  try {
    const it = await nc.requestMany(`${PREFIX}.status.${service}`, new Uint8Array(), { maxWait: 5000 });
    for await (const m of it) out.push(decode(m.data) as Record<string, unknown>);
  } catch {
    // a replica that did not answer in time is left out of the histogram
  }
  return out;
}
function sumHist(rows: Record<string, unknown>[], key: string): Record<string, number> {
  const h: Record<string, number> = {};
  for (const r of rows) {
    let v = r[key] as Record<string, number> | Record<string, number>[] | undefined;
    if (key === "engines") v = undefined;
    if (v && !Array.isArray(v)) for (const [b, n] of Object.entries(v)) h[b] = (h[b] ?? 0) + n;
  }
  if (key === "engines") for (const r of rows) for (const e of (r.engines as { batchHistogram: Record<string, number> }[]) ?? []) for (const [b, n] of Object.entries(e.batchHistogram)) h[b] = (h[b] ?? 0) + n;
  return h;
}
const histKey: Record<Stage, string> = { text: "", gpt: "engines", sovits: "ditBatches", vocoder: "batches" };
const diffHist = (a: Record<string, number>, b: Record<string, number>) => {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v - (a[k] ?? 0) > 0) out[k] = v - (a[k] ?? 0);
  return out;
};
const rowsOf = (h: Record<string, number>) => Object.entries(h).reduce((s, [b, c]) => s + Number(b) * c, 0);
const meanBatch = (h: Record<string, number>) => {
  let n = 0, s = 0;
  for (const [b, c] of Object.entries(h)) (n += c), (s += Number(b) * c);
  return n ? round(s / n, 2) : 0;
};

/** One measured level on a running stack: warm up, then count audio for `measureSim` simulated seconds. */
async function level(st: SimStack, c: number, measureSim: number, label: string) {
  const { nc, d: D } = st;
  failures.clear();
  const load = drive(nc, c);
  await sleep(warmupSim * D * 1000);
  const hist0: Record<string, Record<string, number>> = {};
  for (const s of ["gpt", "sovits", "vocoder"] as Stage[]) hist0[s] = sumHist(await statusOf(nc, ServiceNames[s]), histKey[s]);
  const q0 = await queues(nc);
  const cpu0 = cpuSnapshot(st);
  const ns0 = nc.stats();
  const r0 = received, a0 = delivered, c0 = completed, f0 = failed, seg0 = segmentsSeen, tok0 = tokensSeen;
  const t0 = performance.now();
  const depth: Record<Stage, { pending: number[]; ackPending: number[] }> = { text: { pending: [], ackPending: [] }, gpt: { pending: [], ackPending: [] }, sovits: { pending: [], ackPending: [] }, vocoder: { pending: [], ackPending: [] } };
  const end = t0 + measureSim * D * 1000;
  while (performance.now() < end) {
    await sleep(Math.min(1000, Math.max(0, end - performance.now())));
    const q = await queues(nc, 1).catch(() => undefined); // a sample lost to a slow JetStream API is skipped
    if (q) for (const s of Object.keys(q) as Stage[]) depth[s].pending.push(q[s].pending), depth[s].ackPending.push(q[s].ackPending);
  }
  const wallS = (performance.now() - t0) / 1000;
  const audioS = (received - r0) / manifest.dims.vocoder.sampleRate;
  const orderedS = (delivered - a0) / manifest.dims.vocoder.sampleRate;
  const cpu1 = cpuSnapshot(st);
  const q1 = await queues(nc);
  const ns1 = nc.stats();
  const simS = wallS / D;
  const batches: Record<string, { histogram: Record<string, number>; mean: number; rowsPerSimS: number }> = {};
  for (const s of ["gpt", "sovits", "vocoder"] as Stage[]) {
    const h = diffHist(hist0[s], sumHist(await statusOf(nc, ServiceNames[s]), histKey[s]));
    batches[s] = { histogram: h, mean: meanBatch(h), rowsPerSimS: round(rowsOf(h) / simS, 1) };
  }
  const mean = (xs: number[]) => (xs.length ? round(xs.reduce((a, b) => a + b, 0) / xs.length, 1) : 0);
  const row = {
    label,
    dilation: D,
    inFlight: c,
    wallS: round(wallS, 1),
    simulatedS: round(simS, 2),
    audioSeconds: round(audioS, 1),
    throughput: round(audioS / simS, 2), // audio s per simulated s
    throughputWall: round(audioS / wallS, 2),
    /** The same, counting only audio the clients could already play in order (coarser: a segment waits for the one before). */
    throughputInOrder: round(orderedS / simS, 2),
    requestsCompleted: completed - c0,
    segmentsCompleted: segmentsSeen - seg0,
    failed: failed - f0,
    tokensPerSegment: segmentsSeen - seg0 ? round((tokensSeen - tok0) / (segmentsSeen - seg0), 1) : 0,
    queues: Object.fromEntries((Object.keys(depth) as Stage[]).map((s) => [s, { pendingMean: mean(depth[s].pending), inFlightMean: mean(depth[s].ackPending), msgsPerSimS: round((q1[s].delivered - q0[s].delivered) / simS, 1) }])),
    batches,
    cpu: cpuDelta(cpu0, cpu1, wallS),
    cpuMsPerAudioS: 0,
    driverNats: { inMsgsPerWallS: round((ns1.inMsgs - ns0.inMsgs) / wallS, 1), inMBPerWallS: round((ns1.inBytes - ns0.inBytes) / wallS / 1e6, 2) },
    failures: Object.fromEntries(failures),
  };
  load.stop();
  return row;
}

// ─── the run ─────────────────────────────────────────────────────────────────────────────────────

/** Cost-model capacity of one replica, audio seconds per simulated second, for segments of `tokens` tokens. */
function predictedCapacity(tokens: number, refMelFrames: number) {
  const d = manifest.dims;
  const secPerToken = (d.cfm.melPerToken * d.vocoder.upsample) / d.vocoder.sampleRate; // 0.04 s
  const audio = tokens * secPerToken;
  const tm = Math.floor(tokens * d.cfm.melPerToken);
  const t = Math.min(d.cfm.maxFrames, Math.min(refMelFrames, d.cfm.maxPromptFrames) + tm);
  const gptRows = 16, kc = 512, cfmB = 8, vocB = 8;
  const dims = (...x: number[]) => ({ dims: x });
  const gptMs = (tokens / gptRows) * callTimeMs("t2s_step", { token: dims(gptRows, 1), past_mask: dims(gptRows, kc) }) + callTimeMs("t2s_prefill", { x: dims(1, 60, 512), prompts: dims(1, 150) }) + callTimeMs("t2s_encoder", { ref_seq: dims(1, 30), text_seq: dims(1, 30) });
  const sovitsMs = 2 * callTimeMs("sovits_encp", { codes: dims(1, 1, tokens) }) / 1 + (steps * callTimeMs("cfm_dit", { x: dims(cfmB, 100, t) })) / cfmB;
  const vocMs = callTimeMs("vocoder", { x: dims(vocB, 100, tm) }) / vocB;
  return { gpt: round(audio / (gptMs / 1000), 1), sovits: round(audio / (sovitsMs / 1000), 1), vocoder: round(audio / (vocMs / 1000), 1) };
}

const started = new Date().toISOString();
const report: Record<string, unknown> = {
  date: started,
  machine: { cpus: cpus().length, node: process.version },
  command: `node dist/tools/sim.js ${process.argv.slice(2).join(" ")}`.trim(),
  costModel: { reference: REFERENCE, sampleSteps: steps, modelSetForShapes: manifest.name },
};
/** CPU ms each role spends per audio second delivered (what a role would need per simulated audio second on any host). */
function cpuPerAudio(row: Awaited<ReturnType<typeof level>>): Record<string, number> {
  const out: Record<string, number> = {};
  const audioPerWallS = row.throughputWall;
  for (const [role, v] of Object.entries(row.cpu)) out[role] = audioPerWallS > 0 ? round((v.cpuPct / 100 / audioPerWallS) * 1000, 1) : 0;
  return out;
}
try {
  log(`gsv-pipeline simulated scaling: cost model (${REFERENCE.device}), sample_steps ${steps}, ${cpus().length} CPUs; dilation max(${D0}, ${dPerReplica}·n)`);

  // 1. Calibration: one replica of every stage.
  const one: Record<ServiceName, number> = { "text-frontend": 1, "gpt-semantic": 1, "sovits-decoder": 1, vocoder: 1, gateway: 1 };
  let st = await startSimStack(one, D0);
  let calib;
  try {
    calib = await level(st, perReplica, measureFor(1), "calibration: 1 replica of every stage");
  } finally {
    await st.stop();
  }
  const refMelFrames = Math.round((6.05 * 24000) / 256);
  const predicted = predictedCapacity(Math.round(calib.tokensPerSegment || 60), refMelFrames);
  const backlog = (Object.keys(calib.queues) as Stage[]).map((s) => [s, calib.queues[s].pendingMean] as const).sort((a, b) => b[1] - a[1]);
  const bottleneck = (values.stage !== "auto" ? values.stage : backlog[0][1] > 0 ? backlog[0][0] : (Object.entries(predicted).sort((a, b) => a[1] - b[1])[0][0] as Stage)) as Stage;
  log(`calibration: ${calib.throughput} audio s per simulated s; mean queue backlog ${backlog.map(([s, p]) => `${s} ${p}`).join(", ")}; cost-model capacity per replica (audio s/s) ${JSON.stringify(predicted)}`);
  log(`bottleneck: ${bottleneck} (${STAGE_SERVICE[bottleneck]})`);

  // 2. For each level: n replicas of the bottleneck, the other stages sized with 1.5× headroom, a fresh stack.
  const need = (s: "gpt" | "sovits" | "vocoder", n: number) => Math.max(1, Math.ceil((1.5 * n * predicted[bottleneck as "gpt" | "sovits" | "vocoder"]) / predicted[s]));
  const planFor = (n: number): Record<ServiceName, number> => ({
    "text-frontend": Math.max(1, Math.ceil(n / 16)),
    "gpt-semantic": bottleneck === "gpt" ? n : need("gpt", n),
    "sovits-decoder": bottleneck === "sovits" ? n : need("sovits", n),
    vocoder: bottleneck === "vocoder" ? n : need("vocoder", n),
    gateway: 1,
  });
  const rows: ({ replicas: number; efficiency: number; workEfficiency: number; plan: Record<ServiceName, number>; cpuMsPerAudioS: Record<string, number> } & Omit<Awaited<ReturnType<typeof level>>, "cpuMsPerAudioS">)[] = [];
  for (const n of levels) {
    const plan = planFor(n);
    const d = dilationFor(n);
    let row;
    if (n === 1 && d === D0 && Object.values(plan).every((x) => x === 1)) row = { ...calib, label: `1 × ${STAGE_SERVICE[bottleneck]} (the calibration run)` };
    else {
      st = await startSimStack(plan, d);
      try {
        row = await level(st, perReplica * n, measureFor(n), `${n} × ${STAGE_SERVICE[bottleneck]}`);
      } finally {
        await st.stop();
      }
    }
    const base: number = rows.length ? rows[0].throughput / rows[0].replicas : row.throughput / n;
    const work = (x: { batches: Record<string, { rowsPerSimS: number }> }) => x.batches[bottleneck]?.rowsPerSimS ?? 0;
    const baseWork: number = rows.length ? work(rows[0]) / rows[0].replicas : work(row) / n;
    const r = {
      replicas: n,
      plan,
      ...row,
      cpuMsPerAudioS: cpuPerAudio(row),
      efficiency: round(row.throughput / (n * base), 3),
      /** The same ratio for the bottleneck's work rate (batch rows per second), a finer-grained cross-check. */
      workEfficiency: baseWork ? round(work(row) / (n * baseWork), 3) : 0,
    };
    rows.push(r);
    const top = Object.entries(row.cpu).sort((a, b) => b[1].cpuPct - a[1].cpuPct).slice(0, 4).map(([k, v]) => `${k} ${v.cpuPct}%`).join(", ");
    log(`${String(n).padStart(2)} × ${bottleneck} (dilation ${d}, ${JSON.stringify(plan)}): ${r.throughput} audio s per simulated s, efficiency ${r.efficiency} (work ${r.workEfficiency}, in order ${row.throughputInOrder}); ${row.inFlight} in flight; ${bottleneck} batch mean ${row.batches[bottleneck]?.mean ?? "-"}, rows/s ${row.batches[bottleneck]?.rowsPerSimS ?? "-"}; queue pending ${Object.entries(row.queues).map(([s, q]) => `${s} ${q.pendingMean}`).join(" ")}; CPU ${top}`);
  }
  Object.assign(report, { calibration: { ...calib, cpuMsPerAudioS: cpuPerAudio(calib) }, predictedCapacityPerReplica: predicted, bottleneck, levels: rows, failures: Object.fromEntries(failures) });
} finally {
  await current?.stop().catch(() => undefined);
}
mkdirSync(values.out!, { recursive: true });
writeFileSync(join(values.out!, "sim.json"), JSON.stringify(report, null, 2));
writeFileSync(join(values.out!, "sim.svg"), chart(report.levels as { replicas: number; throughput: number; efficiency: number }[], String(report.bottleneck)));
log(`report: ${join(values.out!, "sim.json")}, chart: ${join(values.out!, "sim.svg")}`);
process.exit(0);

function chart(rows: { replicas: number; throughput: number; efficiency: number }[], stage: string): string {
  const W = 600, H = 340, L = 64, B = 44, T = 34, R = 24;
  const ideal = rows.length ? rows[0].throughput / rows[0].replicas : 0;
  const maxY = Math.max(...rows.map((r) => Math.max(r.throughput, ideal * r.replicas))) * 1.12 || 1;
  const x = (i: number) => L + ((W - L - R) * (i + 0.5)) / rows.length;
  const y = (v: number) => H - B - ((H - B - T) * v) / maxY;
  const bars = rows
    .map((r, i) => `<rect x="${x(i) - 22}" y="${y(r.throughput)}" width="44" height="${H - B - y(r.throughput)}" fill="#3b82f6"/><rect x="${x(i) - 24}" y="${y(ideal * r.replicas)}" width="48" height="2" fill="#ef4444"/><text x="${x(i)}" y="${H - B + 16}" text-anchor="middle">${r.replicas}</text><text x="${x(i)}" y="${y(r.throughput) - 18}" text-anchor="middle">${r.throughput}</text><text x="${x(i)}" y="${y(r.throughput) - 5}" text-anchor="middle" fill="#555">eff ${r.efficiency}</text>`)
    .join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<text x="${W / 2}" y="18" text-anchor="middle" font-weight="bold">Simulated throughput (audio s per simulated s) vs ${stage} replicas</text>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>
${bars}
<text x="${W - R}" y="${T + 4}" text-anchor="end" fill="#ef4444">red: n × throughput(1)</text>
<text x="${W / 2}" y="${H - 8}" text-anchor="middle">${stage} replicas (cost-model backend, real services and NATS)</text>
</svg>`;
}
