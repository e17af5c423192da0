/**
 * gsv: the command line.
 *   gsv up                         start nats-server (unless NATS_URL), the four stages and the gateway
 *   gsv say "text" -o out.wav      speak a sentence to a WAV through the full pipeline
 *   gsv vocode in.wav -o out.wav   copy synthesis through the real MB-MelGAN vocoder service
 *   gsv profile / gsv top          per-stage timings as a Gantt chart; live per-stage load
 * Run `gsv help` for every option.
 */
import { parseArgs } from "node:util";
import { startStack } from "./launch.js";
import { natsConfigCli, provisionCli } from "./nats-config.js";
import { say } from "./say.js";
import { vocodeCli } from "./vocode.js";
import { PROFILE_HELP, profileCli } from "./profile.js";
import { TOP_HELP, topCli } from "./top.js";

const HELP = `gsv — GPT-SoVITS v3 inference over NATS

Usage:
  gsv up [--port 9880]
      Start nats-server (or use NATS_URL), text-frontend, gpt-semantic, sovits-decoder, vocoder and the
      HTTP gateway; print one ready line; Ctrl-C stops everything.
  gsv say "TEXT" [-o out.wav|-] [--lang en] [--split cut5] [--ref voice.wav --prompt-text "..."]
          [--seed N] [--steps 32] [--speed 1] [--stream [--mode 2|3]] [--format wav|raw] [-q]
          [--nats nats://host:4222 [--model-set NAME|GPT/SOVITS] | --url http://host:port]
      Speak TEXT to a WAV file (-o - for stdout), with a progress bar on stderr. Without --nats, NATS_URL
      or --url it starts a private pipeline, speaks over NATS, and stops it. --stream asks for early
      audio (streaming_mode 2, or --mode 3) and writes it as it arrives. Without --ref the bundled
      default voice is used (its transcript is the .txt beside it). --model-set runs the request on
      model sets under GSV_MODELS_ROOT (one name for both halves, or GPT/SOVITS).
  gsv g2p [--lang en|zh|ja|ko|yue|auto|auto_yue|all_zh|all_ja|all_ko|all_yue] [--split cut5] "TEXT"
      Print the text frontend's segments as JSON: language, normalised text, phones, ids, word2ph,
      and the language runs of each segment.
  gsv chaos [--concurrency 4] [--deadline-ms 20000] [--gap-ms 3000] [--seed N] [--no-nats-restart]
      Faults under load on loopback: SIGKILL a replica of each stage, then nats-server; print the counts
      (completed, failed by code, lost, duplicated); exit 1 on a violation. See docs/operations.md.
  gsv vocode IN.wav [-o out.wav] [--url nats://host:4222] [--vocoder mb-melgan-ljspeech] [--rate 22050]
      Copy synthesis with a real, trained vocoder: WAV (any rate) → 22,050 Hz → LJSpeech mel → the
      vocoder service (GSV_VOCODER=NAME, subject tts.v1.vocode.NAME) → WAV. Without --url it starts
      its own nats-server and vocoder service, and stops them after.
  ${PROFILE_HELP}
  ${TOP_HELP}
  gsv nats-config [--auth-only] [-o FILE]
      Print the secure nats-server configuration derived from shared/subjects.ts: one user per service,
      each allowed only its own subjects (infra/nats-server.secure.conf; --auth-only: infra/k8s/nats-auth.conf).
  gsv cluster
      Run the 3-node NATS cluster of infra/nats-cluster on loopback (free ports) and print the NATS_URL
      that lists its nodes; Ctrl-C stops it. Then e.g. NATS_URL=... GSV_STREAM_REPLICAS=3 gsv up.
  gsv provision
      Create the work queues, voices bucket and reference-audio store on NATS_URL (as NATS_USER, e.g. the
      admin user of the secure configuration) with GSV_STREAM_REPLICAS replicas; run before the services.
`;

async function up(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { port: { type: "string" } } });
  const port = Number(values.port ?? process.env.PORT ?? 9880);
  // Each stage serves Prometheus metrics on a free port unless GSV_METRICS_PORT says otherwise.
  const stack = await startStack({ natsUrl: process.env.NATS_URL, port, logs: "inherit", env: { GSV_METRICS_PORT: process.env.GSV_METRICS_PORT ?? "0" } });
  console.log(`gsv-pipeline ready: ${stack.gatewayUrl}/tts  (NATS ${stack.natsUrl}; Ctrl-C to stop)`);
  console.log(`metrics: ${[`gateway ${stack.gatewayUrl}/metrics`, ...stack.services.filter((s) => s.ready.metrics).map((s) => `${s.name} ${s.ready.metrics}`)].join(", ")}`);
  console.log(`live load: npx gsv top --nats ${stack.natsUrl}   timelines: npx gsv profile --nats ${stack.natsUrl} --url ${stack.gatewayUrl} --requests 4`);
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    console.log("stopping…");
    stack.stop().then(() => process.exit(0), () => process.exit(1));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  for (const s of stack.services)
    s.proc.once("exit", (code) => {
      if (!stopping) console.error(`${s.name} exited (${code}); the pipeline is degraded until it is restarted`);
    });
}

/** Pronunciation debugging: the frontend's segments as JSON, without starting anything. */
async function g2p(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { lang: { type: "string", default: "en" }, split: { type: "string", default: "cut5" } } });
  const { textToSegments } = await import("../services/text-frontend/frontend.js");
  const { isSplitMethod } = await import("../services/text-frontend/split.js");
  if (!isSplitMethod(values.split!)) throw new Error(`--split must be cut0..cut5, got ${values.split}`);
  const segments = textToSegments(positionals.join(" "), values.lang!, values.split);
  console.log(JSON.stringify({ lang: values.lang, segments: segments.map((s) => ({ text: s.text, lang: s.lang, normText: s.normText, phones: s.phones, ids: s.ids, word2ph: s.word2ph, runs: s.runs.map((r) => ({ lang: r.lang, text: r.text, normText: r.normText, phones: r.phones.join(" "), word2ph: r.word2ph })) })) }, null, 2));
}

/** A local 3-node NATS cluster until Ctrl-C. */
async function clusterCli(): Promise<void> {
  const { startNatsCluster } = await import("./cluster.js");
  const cluster = await startNatsCluster();
  console.log(`NATS cluster ready (${cluster.nodes.map((n) => n.name).join(", ")}); Ctrl-C stops it`);
  console.log(`NATS_URL=${cluster.url}`);
  const stop = () => cluster.stop().then(() => process.exit(0), () => process.exit(1));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

const [cmd, ...rest] = process.argv.slice(2);
try {
  if (cmd === "up") await up(rest);
  else if (cmd === "say") await say(rest);
  else if (cmd === "vocode") await vocodeCli(rest);
  else if (cmd === "g2p") await g2p(rest);
  else if (cmd === "profile") await profileCli(rest);
  else if (cmd === "top") await topCli(rest);
  else if (cmd === "nats-config") await natsConfigCli(rest);
  else if (cmd === "provision") await provisionCli();
  else if (cmd === "cluster") await clusterCli();
  else if (cmd === "chaos") process.exitCode = await (await import("./chaos.js")).chaosCli(rest);
  else {
    console.log(HELP);
    if (cmd && cmd !== "help" && cmd !== "--help") process.exitCode = 2;
  }
} catch (err) {
  console.error(`gsv: ${(err as Error).message}`);
  process.exitCode = 1;
}
