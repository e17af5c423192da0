/**
 * npm run bench [-- --quick] [-- --model-dir DIR] [-- --steps 8] [-- --out bench-out] [-- --concurrency 1,4,16,64]
 *   [-- --skip gpt,stream,voice] (leave out the GPT batching, the streaming or the voice-preparation part)
 *
 * Measured in one run, on one set of models, so the machine's noise affects both sides alike:
 * 1. throughput (audio seconds per wall second) of the pipeline at 1, 4, 16, 64 requests in flight, and
 *    of the sequential baseline: the same graphs and stage code, one request at a time, in one process
 *    (upstream's serving model); their ratio;
 * 2. GPT tokens/s at batch 1, 4, 16, 64 (the engine alone, `bench` set when generated);
 * 3. p50/p95 latency per stage (queue + compute) and end to end;
 * 4. NATS overhead: the pipeline at one request in flight against the in-process run of the same requests.
 * 5. time to first audio against full latency for a ~20 s paragraph, per streaming_mode (tools/bench-stream.ts).
 * 6. voice preparation of many new references at once, one a call against batches (tools/bench-voice.ts).
 * Writes bench-out/report.json and bench-out/throughput.svg and prints a summary.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connect } from "nats";
import { synthesize, type SynthesisRequest, type SynthesisResult } from "../shared/client.js";
import { refAudioStore } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { loadManifest } from "../shared/manifest.js";
import type { GenParams, Timing } from "../shared/schemas.js";
import { defaultGptBenchDir, gptBatchThroughput } from "./bench-gpt.js";
import { InProcessPipeline } from "./inprocess.js";
import { startStack } from "./launch.js";
import { BENCH_TEXTS, defaultVoice } from "./loadgen.js";
import { processCpuMs } from "./proc-cpu.js";
import { streamingLatency } from "./bench-stream.js";
import { voicePrepThroughput } from "./bench-voice.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    "model-dir": { type: "string" },
    steps: { type: "string", default: "8" },
    out: { type: "string", default: "bench-out" },
    concurrency: { type: "string" },
    skip: { type: "string", default: "" },
  },
});
const quick = values.quick!;
const skip = new Set(values.skip!.split(",").filter(Boolean));
const modelDir = values["model-dir"] ?? fromRoot("models", "tiny");
const manifest = loadManifest(modelDir);
const levels = (values.concurrency ?? (quick ? "1,4,16" : "1,4,16,64")).split(",").map(Number);
const gptBatches = quick ? [1, 4, 16] : [1, 4, 16, 64];
const baselineRequests = quick ? 4 : 8;
const TEXTS = BENCH_TEXTS;
const { wav, promptText, audioSha } = defaultVoice();
const params = (i: number): GenParams => ({ topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 1000 + i, speed: 1, sampleSteps: Number(values.steps), fragmentInterval: 0.3 });
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : 0;
};
const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const log = (s: string) => console.log(s);

log(`gsv-pipeline benchmark on ${manifest.name} models (${modelDir}), sample_steps ${values.steps}${quick ? ", quick" : ""}`);

// --- sequential baseline: one process, one request at a time -------------------------------------
const inproc = await InProcessPipeline.create(modelDir);
const inprocReq = (i: number) => ({ text: TEXTS[(i + TEXTS.length) % TEXTS.length], textLang: "en", splitMethod: "cut5" as const, wav, promptText, promptLang: "en", params: params(i) });
await inproc.synthesize(inprocReq(-1)); // warm-up (voice preparation, first runs)
const cpu0 = process.cpuUsage();
let t0 = performance.now();
let baseAudio = 0;
const baseLatency: number[] = [];
for (let i = 0; i < baselineRequests; i++) {
  const r = await inproc.synthesize(inprocReq(i));
  baseAudio += r.pcm.length / r.sampleRate;
  baseLatency.push(r.totalMs);
}
const baseCpu = process.cpuUsage(cpu0);
const baseline = {
  requests: baselineRequests,
  wallMs: round(performance.now() - t0),
  audioSeconds: round(baseAudio, 2),
  throughput: round(baseAudio / ((performance.now() - t0) / 1000), 3),
  latencyP50Ms: round(pct(baseLatency, 50)),
  cpuMsPerAudioS: round((baseCpu.user + baseCpu.system) / 1000 / baseAudio),
};
await inproc.close();
log(`sequential baseline: ${baseline.throughput} audio s per s (${baselineRequests} requests, p50 ${baseline.latencyP50Ms} ms, ${baseline.cpuMsPerAudioS} CPU ms per audio s)`);

// --- the pipeline over NATS ----------------------------------------------------------------------
const stack = await startStack({ env: { GSV_LOG: "warn", ...(values["model-dir"] ? { GSV_MODEL_DIR: modelDir } : {}) } });
const nc = await connect({ servers: stack.natsUrl });
const pipeline: Record<string, unknown>[] = [];
let natsOverhead: Record<string, number> = {};
try {
  await (await refAudioStore(nc)).putBlob({ name: audioSha }, wav);
  const req = (i: number): SynthesisRequest => ({
    text: TEXTS[(i + TEXTS.length) % TEXTS.length], textLang: "en", splitMethod: "cut5", voice: { audioSha, promptText, promptLang: "en" }, params: params(i), timeoutMs: 600_000,
  });
  await synthesize(nc, req(-1));
  for (const c of levels) {
    const n = Math.max(c, quick ? 4 : 8);
    const results: SynthesisResult[] = [];
    let next = 0;
    const cpuBefore = stackCpuMs(stack);
    t0 = performance.now();
    await Promise.all(
      Array.from({ length: c }, async () => {
        while (next < n) results.push(await synthesize(nc, req(next++ % baselineRequests)));
      }),
    );
    const wallMs = performance.now() - t0;
    const cpuAfter = stackCpuMs(stack);
    const audio = results.reduce((s, r) => s + r.pcm.length / r.sampleRate, 0);
    const perStage: Record<string, { p50: number; p95: number; maxBatch: number }> = {};
    for (const stage of ["text", "gpt", "sovits", "vocoder"]) {
      const xs = results.map((r) => r.stages.find((s) => s.stage === stage)).filter(Boolean).map((s) => s!.computeMs + s!.queueMs);
      perStage[stage] = { p50: round(pct(xs, 50)), p95: round(pct(xs, 95)), maxBatch: Math.max(...results.map((r) => r.stages.find((s) => s.stage === stage)?.maxBatch ?? 0)) };
    }
    const row = {
      concurrency: c,
      requests: n,
      wallMs: round(wallMs),
      audioSeconds: round(audio, 2),
      throughput: round(audio / (wallMs / 1000), 3),
      vsBaseline: round(audio / (wallMs / 1000) / baseline.throughput, 2),
      e2eP50Ms: round(pct(results.map((r) => r.totalMs), 50)),
      e2eP95Ms: round(pct(results.map((r) => r.totalMs), 95)),
      firstAudioP50Ms: round(pct(results.map((r) => r.firstAudioMs), 50)),
      stages: perStage,
      // CPU time of the pipeline's processes (not this driver) per audio second, per process: unlike the
      // wall-clock figures it hardly depends on what else the machine runs. Linux only.
      ...(cpuBefore && cpuAfter ? { cpuMsPerAudioS: cpuPerAudio(cpuBefore, cpuAfter, audio) } : {}),
    };
    pipeline.push(row);
    log(`pipeline @${String(c).padStart(2)} in flight: ${row.throughput} audio s per s = ${row.vsBaseline}x baseline; e2e p50 ${row.e2eP50Ms} ms p95 ${row.e2eP95Ms} ms; batches ${Object.entries(perStage).map(([k, v]) => `${k}≤${v.maxBatch}`).join(" ")}`);
    if (row.cpuMsPerAudioS) log(`  CPU ms per audio s: ${Object.entries(row.cpuMsPerAudioS).map(([k, v]) => `${k} ${v}`).join(", ")} (baseline, all in one process: ${baseline.cpuMsPerAudioS})`);
    if (c === 1) {
      const pipeMean = results.reduce((s, r) => s + r.totalMs, 0) / results.length;
      const inMean = baseLatency.reduce((a, b) => a + b, 0) / baseLatency.length;
      const hops = { text: 0, gpt: 0, sovits: 0, vocoder: 0 };
      for (const r of results) for (const [k, v] of Object.entries(hopMs(r.timings))) hops[k as keyof typeof hops] += v / results.length;
      const hopMean = hops.text + hops.gpt + hops.sovits + hops.vocoder;
      natsOverhead = {
        pipelineMeanMs: round(pipeMean),
        inProcessMeanMs: round(inMean),
        overheadPct: round(((pipeMean - inMean) / pipeMean) * 100),
        ...Object.fromEntries(Object.entries(hops).map(([k, v]) => [`hop${k[0].toUpperCase()}${k.slice(1)}Ms`, round(v)])),
        hopMeanMs: round(hopMean),
        hopPct: round((hopMean / pipeMean) * 100),
        hopPctWithoutGpt: round(((hopMean - hops.gpt) / pipeMean) * 100),
      };
    }
  }
} finally {
  await nc.close();
  await stack.stop();
}
if (natsOverhead.overheadPct !== undefined) {
  log(`NATS overhead at 1 in flight: pipeline ${natsOverhead.pipelineMeanMs} ms vs in-process ${natsOverhead.inProcessMeanMs} ms per request = ${natsOverhead.overheadPct}% (negative: the pipeline overlaps the segments of one request)`);
  log(`NATS hops on the critical path at 1 in flight: text ${natsOverhead.hopTextMs} + gpt ${natsOverhead.hopGptMs} (with its encoder and prefill) + sovits ${natsOverhead.hopSovitsMs} + vocoder ${natsOverhead.hopVocoderMs} = ${natsOverhead.hopMeanMs} ms per request = ${natsOverhead.hopPct}% of e2e (${natsOverhead.hopPctWithoutGpt}% without the gpt entry)`);
}

// --- GPT batching --------------------------------------------------------------------------------
const gpt = skip.has("gpt") ? { model: "skipped", figures: [] } : await gptBatchThroughput(defaultGptBenchDir(), gptBatches, quick ? 8 : 24);
for (const f of gpt.figures) log(`GPT ${gpt.model} batch ${String(f.batch).padStart(2)}: ${round(f.tokPerS, 0)} tokens/s (${round(f.tokPerS / gpt.figures[0].tokPerS, 2)}x batch 1), ${round(f.msPerStep)} ms/step`);

// --- streaming: time to first audio (tools/bench-stream.ts) ----------------------------------------
if (!skip.has("stream")) log("time to first audio, a ~20 s paragraph, one request in flight:");
const streaming = skip.has("stream") ? "skipped" : await streamingLatency({ modelDir, steps: Number(values.steps), runs: quick ? 3 : 5, log });

// --- voice preparation: new references, one a call against batches (tools/bench-voice.ts) ----------
const voiceConfigs = [
  { batch: 1, workers: 2 },
  { batch: 4, workers: 2 },
  { batch: 8, workers: 1 },
];
const voice = skip.has("voice") ? "skipped" : await voicePrepThroughput(modelDir, quick ? 8 : 16, voiceConfigs);
if (voice !== "skipped")
  for (const f of voice.figures)
    log(`voice preparation, batches of ≤ ${f.batch} on ${f.workers} worker(s): ${round(f.refsPerS, 2)} references/s (${round(f.refsPerS / voice.figures[0].refsPerS, 2)}x one a call), ${round(f.padding, 2)} samples computed per reference sample`);

// --- report --------------------------------------------------------------------------------------
const report = {
  date: new Date().toISOString(),
  machine: { cpus: (await import("node:os")).cpus().length, node: process.version },
  models: { dir: modelDir, name: manifest.name, sampleSteps: Number(values.steps) },
  quick,
  baseline,
  pipeline,
  natsOverhead,
  gpt,
  streaming,
  voice,
};
mkdirSync(values.out!, { recursive: true });
writeFileSync(join(values.out!, "report.json"), JSON.stringify(report, null, 2));
writeFileSync(join(values.out!, "throughput.svg"), chart(pipeline as { concurrency: number; throughput: number }[], baseline.throughput));
log(`report: ${join(values.out!, "report.json")}, chart: ${join(values.out!, "throughput.svg")}`);

/** CPU ms (user + system) used so far by each process of the stack, from /proc; undefined where there is no /proc. */
function stackCpuMs(st: Awaited<ReturnType<typeof startStack>>): Record<string, number> | undefined {
  const procs: [string, number | undefined][] = [...st.services.map((s) => [s.name, s.proc.pid] as [string, number | undefined]), ["nats-server", st.nats?.proc.pid]];
  const out: Record<string, number> = {};
  for (const [name, pid] of procs) {
    if (pid === undefined) continue;
    const ms = processCpuMs(pid);
    if (ms === undefined) return undefined;
    out[name] = ms;
  }
  return out;
}

function cpuPerAudio(before: Record<string, number>, after: Record<string, number>, audio: number): Record<string, number> {
  const out: Record<string, number> = {};
  let total = 0;
  for (const k of Object.keys(after)) {
    const ms = after[k] - (before[k] ?? 0);
    total += ms;
    out[k] = round(ms / audio);
  }
  out.total = round(total / audio);
  return out;
}

/**
 * Time a request spent between stages on its critical path, per stage: the queue waits (publish,
 * JetStream, pull, decode, up to the start of compute) of the text job, then of the GPT job, the first
 * window and the last vocoder window of the segment whose audio came last. At one request in flight the
 * stages are idle, so this is the transport's cost, except that the GPT's entry also holds its encoder
 * and prefill (the engine counts a row as admitted once its prefill ran), so the sum is an upper bound.
 * The final reply to the client is not timed and not included.
 */
function hopMs(timings: Timing[]): Record<"text" | "gpt" | "sovits" | "vocoder", number> {
  const voc = timings.filter((t) => t.stage === "vocoder");
  if (!voc.length) return { text: 0, gpt: 0, sovits: 0, vocoder: 0 };
  const end = (t: Timing) => (t.at ?? 0) + t.computeMs;
  const last = voc.reduce((a, b) => (end(b) > end(a) ? b : a));
  const q = (stage: string, pred: (t: Timing) => boolean) => timings.filter((t) => t.stage === stage && pred(t)).reduce((m, t) => Math.max(m, t.queueMs), 0);
  return { text: q("text", () => true), gpt: q("gpt", (t) => t.seg === last.seg), sovits: q("sovits", (t) => t.seg === last.seg && (t.win ?? 0) === 0), vocoder: last.queueMs };
}

function chart(rows: { concurrency: number; throughput: number }[], base: number): string {
  const W = 560, H = 320, L = 60, B = 40, T = 30, R = 20;
  const maxY = Math.max(base, ...rows.map((r) => r.throughput)) * 1.15;
  const x = (i: number) => L + ((W - L - R) * (i + 0.5)) / rows.length;
  const y = (v: number) => H - B - ((H - B - T) * v) / maxY;
  const bars = rows.map((r, i) => `<rect x="${x(i) - 20}" y="${y(r.throughput)}" width="40" height="${H - B - y(r.throughput)}" fill="#3b82f6"/><text x="${x(i)}" y="${H - B + 16}" text-anchor="middle">${r.concurrency}</text><text x="${x(i)}" y="${y(r.throughput) - 4}" text-anchor="middle">${r.throughput}</text>`).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<text x="${W / 2}" y="18" text-anchor="middle" font-weight="bold">Throughput (audio s per s) vs requests in flight</text>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>
${bars}
<line x1="${L}" y1="${y(base)}" x2="${W - R}" y2="${y(base)}" stroke="#ef4444" stroke-dasharray="6 4"/><text x="${W - R}" y="${y(base) - 4}" text-anchor="end" fill="#ef4444">sequential baseline ${base}</text>
<text x="${W / 2}" y="${H - 6}" text-anchor="middle">requests in flight (pipeline)</text>
</svg>`;
}
