/**
 * npm run bench: the whole pipeline on this machine (real processes, real NATS, the tiny set unless
 * GSV_MODEL_DIR says otherwise). Reports, measured in one run so the machine's noise cancels out:
 * - latency of one request alone (total, first audio) and where it went per stage;
 * - throughput of N requests sent at once against the same N sent one after another (the ratio is what
 *   stage pipelining buys: stages of different requests overlap).
 * Options: --requests N (default 6), --steps S (CFM steps, default 8), --text "..."
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { connect } from "nats";
import { synthesize, type SynthesisRequest, type SynthesisResult } from "../shared/client.js";
import { refAudioStore } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { startStack } from "./launch.js";

const { values } = parseArgs({ options: { requests: { type: "string", default: "6" }, steps: { type: "string", default: "8" }, text: { type: "string" } } });
const n = Number(values.requests);
const text = values.text ?? "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.";

const stack = await startStack({ env: { GSV_LOG: "warn" } });
const nc = await connect({ servers: stack.natsUrl });
try {
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const audioSha = createHash("sha256").update(wav).digest("hex");
  await (await refAudioStore(nc)).putBlob({ name: audioSha }, wav);
  const req = (i: number): SynthesisRequest => ({
    text,
    textLang: "en",
    splitMethod: "cut5",
    voice: { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" },
    params: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 1000 + i, speed: 1, sampleSteps: Number(values.steps), fragmentInterval: 0.3 },
    timeoutMs: 600_000,
  });
  await synthesize(nc, req(-1)); // warm-up: voice preparation, session first runs

  const audioSeconds = (r: SynthesisResult) => r.pcm.length / r.sampleRate;
  const one = await synthesize(nc, req(0));
  console.log(`single request: ${one.totalMs} ms total, first audio after ${one.firstAudioMs} ms, ${audioSeconds(one).toFixed(2)} s of audio (RTF ${(one.totalMs / 1000 / audioSeconds(one)).toFixed(3)})`);
  for (const s of one.stages) console.log(`  ${s.stage.padEnd(8)} compute ${String(s.computeMs).padStart(6)} ms  queue ${String(s.queueMs).padStart(6)} ms  units ${s.units}  max batch ${s.maxBatch}`);

  let t0 = Date.now();
  let audio = 0;
  for (let i = 0; i < n; i++) audio += audioSeconds(await synthesize(nc, req(i)));
  const serialMs = Date.now() - t0;

  t0 = Date.now();
  const rs = await Promise.all(Array.from({ length: n }, (_, i) => synthesize(nc, req(i))));
  const concurrentMs = Date.now() - t0;
  const firsts = rs.map((r) => r.firstAudioMs).sort((a, b) => a - b);
  console.log(`${n} requests one after another: ${serialMs} ms (${(audio / (serialMs / 1000)).toFixed(2)} s of audio per s)`);
  console.log(`${n} requests at once:            ${concurrentMs} ms (${(audio / (concurrentMs / 1000)).toFixed(2)} s of audio per s), first audio median ${firsts[Math.floor(n / 2)]} ms`);
  console.log(`pipelining speed-up (same run): ${(serialMs / concurrentMs).toFixed(2)}x`);
} finally {
  await nc.close();
  await stack.stop();
}
