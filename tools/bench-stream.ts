/**
 * Time to first audio against full-synthesis latency (docs/streaming.md, docs/performance.md).
 *
 *   node dist/tools/bench-stream.js [--quick] [--model-dir DIR] [--steps 8] [--out bench-out] [--runs N] [--modes 0,1,2,3]
 *
 * A paragraph of about 20 seconds of audio (20.6 s in 7 segments on the generated sets), one request in flight on a warm pipeline, through the typed NATS client:
 * for streaming_mode 0 (not streamed), 1, 2 and 3 the time until the first audio is playable in order
 * and until the last, median of several rounds (each round runs every mode once, in turn). The ratio is
 * the median TTFA over the median non-streamed latency; each round's own ratio is reported too. `npm run bench` runs it too (report field `streaming`).
 *
 * Continuity: a player that starts when the first chunk arrives and plays the chunks in order at real time
 * waits whenever the next chunk has not arrived when the one before has been played. `stallMs` is the sum
 * of those waits and `stalls` their number (median over the rounds; see `playbackStalls`).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { connect } from "nats";
import { GsvClient } from "../shared/client.js";
import { fromRoot } from "../shared/paths.js";
import type { StreamMode } from "../shared/streaming.js";
import { startStack } from "./launch.js";

export const PARAGRAPH =
  "The old lighthouse stood at the edge of the cliff for more than a century. Every night its keeper climbed the narrow stairs, " +
  "trimmed the wick, and watched the beam sweep across the dark water. Ships passing in the storm season counted on that light " +
  "to find the harbour. When the keeper finally retired, the village gathered on the rocks to thank him.";

export interface StreamingFigures {
  modelSet: string;
  sampleSteps: number;
  runs: number;
  audioSeconds: number;
  segments: number;
  /** Per mode: median ms to the first playable audio and to the end; TTFA over the non-streamed latency, and over the mode's own. */
  modes: {
    mode: StreamMode;
    ttfaMs: number;
    totalMs: number;
    ttfaRatio: number;
    ttfaOfOwnTotal: number;
    ttfaRatioPerRound: number[];
    /** Median over the rounds of the player's total wait after the first audio (ms) and of the number of waits. */
    stallMs: number;
    stalls: number;
    stallMsPerRound: number[];
    /** The last round's chunks: [ms from the request's start to arrival, ms of audio]. */
    timeline: [number, number][];
  }[];
}

/**
 * What a listener hears: chunks (arrival time in ms, duration in ms) played in order at real time from the
 * first arrival. A chunk that arrives after the one before it has finished playing is a stall of the
 * difference. Returns the total waiting time and the number of waits (waits under 1 ms are not counted).
 */
export function playbackStalls(chunks: { atMs: number; durMs: number }[]): { stallMs: number; stalls: number } {
  let stallMs = 0;
  let stalls = 0;
  let playedTo = Number.NEGATIVE_INFINITY;
  for (const c of chunks) {
    if (playedTo === Number.NEGATIVE_INFINITY) playedTo = c.atMs;
    else if (c.atMs - playedTo >= 1) {
      stallMs += c.atMs - playedTo;
      stalls++;
      playedTo = c.atMs;
    }
    playedTo += c.durMs;
  }
  return { stallMs: Math.round(stallMs), stalls };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function streamingLatency(o: { modelDir: string; steps: number; runs: number; modes?: StreamMode[]; log?: (s: string) => void }): Promise<StreamingFigures> {
  const log = o.log ?? (() => undefined);
  const stack = await startStack({ env: { GSV_MODEL_DIR: o.modelDir, GSV_LOG: "warn" } });
  const nc = await connect({ servers: stack.natsUrl });
  try {
    const client = new GsvClient(nc, { timeoutMs: 600_000 });
    const audioSha = await client.putReferenceAudio(readFileSync(fromRoot("voices", "default.wav")));
    const voice = { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" };
    const timeline = new Map<StreamMode, [number, number][]>();
    // Ordered chunks as they arrive (mode 0 too: the client hands on each segment when it is complete).
    const run = async (mode: StreamMode) => {
      const s = client.stream({ text: PARAGRAPH, voice, params: { seed: 1234, sampleSteps: o.steps }, stream: mode });
      const chunks: { atMs: number; durMs: number }[] = [];
      for await (const c of s) chunks.push({ atMs: Date.now(), durMs: (1000 * c.pcm.length) / c.sampleRate });
      const r = await s.result;
      const t0 = r.startedAt;
      timeline.set(mode, chunks.map((c) => [c.atMs - t0, Math.round(c.durMs)]));
      return { ...r, ...playbackStalls(chunks) };
    };
    await run(0); // warm every stage (sessions, dictionaries, the voice)
    // Rounds of every mode, one request each, rather than all runs of one mode and then the next: on a
    // shared machine the load drifts over minutes, and each round's ratio compares runs minutes apart at most.
    const order = o.modes ?? ([0, 1, 2, 3] as StreamMode[]);
    const ttfa = new Map<StreamMode, number[]>(order.map((m) => [m, []]));
    const total = new Map<StreamMode, number[]>(order.map((m) => [m, []]));
    const stallMs = new Map<StreamMode, number[]>(order.map((m) => [m, []]));
    const stalls = new Map<StreamMode, number[]>(order.map((m) => [m, []]));
    let audioSeconds = 0;
    let segments = 0;
    for (let i = 0; i < o.runs; i++) {
      for (const mode of order) {
        const r = await run(mode);
        ttfa.get(mode)!.push(r.firstAudioMs);
        total.get(mode)!.push(r.totalMs);
        stallMs.get(mode)!.push(r.stallMs);
        stalls.get(mode)!.push(r.stalls);
        audioSeconds = r.pcm.length / r.sampleRate;
        segments = r.segments;
      }
      log(`  round ${i + 1}: ` + order.map((m) => `mode ${m} ${ttfa.get(m)![i]}/${total.get(m)![i]} ms, stalls ${stallMs.get(m)![i]} ms in ${stalls.get(m)![i]}`).join("; ") + " (first audio/last)");
    }
    const full = median(total.get(order[0])!);
    const r3 = (x: number) => Math.round(1000 * x) / 1000;
    const modes: StreamingFigures["modes"] = order.map((mode) => {
      const f = ttfa.get(mode)!;
      const t = total.get(mode)!;
      const m = { mode, ttfaMs: median(f), totalMs: median(t), ttfaRatio: r3(median(f) / full), ttfaOfOwnTotal: r3(median(f) / median(t)), ttfaRatioPerRound: f.map((x, i) => r3(x / total.get(order[0])![i])), stallMs: median(stallMs.get(mode)!), stalls: median(stalls.get(mode)!), stallMsPerRound: stallMs.get(mode)!, timeline: timeline.get(mode) ?? [] };
      log(`  streaming_mode ${mode}: first audio ${m.ttfaMs} ms, last ${m.totalMs} ms (runs: ${f.join("/")} ms), stalls ${m.stallMs} ms in ${m.stalls} (runs: ${m.stallMsPerRound.join("/")} ms)`);
      return m;
    });
    const name = (JSON.parse(readFileSync(join(o.modelDir, "manifest.json"), "utf8")) as { name: string }).name;
    return { modelSet: name, sampleSteps: o.steps, runs: o.runs, audioSeconds: Math.round(audioSeconds * 100) / 100, segments, modes };
  } finally {
    await nc.close();
    await stack.stop();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      "model-dir": { type: "string" },
      steps: { type: "string", default: "8" },
      out: { type: "string", default: "bench-out" },
      runs: { type: "string" },
      modes: { type: "string", default: "0,1,2,3" },
    },
  });
  const modelDir = values["model-dir"] ?? fromRoot("models", "tiny");
  console.log(`time to first audio, ${modelDir}, sample_steps ${values.steps}`);
  const modes = values.modes!.split(",").map(Number) as StreamMode[];
  if (modes[0] !== 0) throw new Error("--modes must start with 0 (the non-streamed latency the ratios divide by)");
  const figures = await streamingLatency({ modelDir, steps: Number(values.steps), runs: Number(values.runs ?? (values.quick ? 3 : 5)), modes, log: console.log });
  console.log(`  ${figures.audioSeconds} s of audio in ${figures.segments} segments`);
  for (const m of figures.modes)
    console.log(`  mode ${m.mode}: TTFA ${m.ttfaMs} ms = ${(100 * m.ttfaRatio).toFixed(1)} % of the non-streamed ${figures.modes[0].totalMs} ms (${(100 * m.ttfaOfOwnTotal).toFixed(1)} % of its own ${m.totalMs} ms; per round ${m.ttfaRatioPerRound.map((x) => (100 * x).toFixed(1)).join("/")} %); stalls ${m.stallMs} ms in ${m.stalls}`);
  mkdirSync(values.out!, { recursive: true });
  writeFileSync(join(values.out!, "streaming.json"), JSON.stringify(figures, null, 2));
}
