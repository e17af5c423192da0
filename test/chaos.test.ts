/**
 * Chaos, bounded: two replicas per stage under steady load through the gateway; one replica of each stage
 * is SIGKILLed and restarted, then nats-server is SIGKILLed and restarted on the same port and store.
 * No request may be lost, duplicated, answered with other audio than an undisturbed run of the same
 * seed, or answered without an error code; the stack must serve again afterwards. tools/chaos.ts is the
 * longer, configurable version (`npx gsv chaos`).
 */
import t from "tap";
import { runChaos } from "../tools/chaos.js";

t.test("chaos - SIGKILL a replica of every stage, then nats-server, under load", async (t) => {
  const seed = Number(process.env.GSV_CHAOS_SEED ?? 20261125);
  const r = await runChaos({ concurrency: 3, deadlineMs: 12_000, gapMs: 1500, downMs: 500, seed, natsRestart: true, log: (s) => t.comment(s) });
  t.comment(`seed ${seed}: ${JSON.stringify(r.counts)} in ${r.durationMs} ms`);
  for (const e of r.examples) t.comment(e);
  t.same(r.violations, [], "no request lost, duplicated, mismatched, uncoded or late; no service died by itself");
  t.ok((r.counts.completed as number) > 0, `requests completed under faults (${r.counts.completed})`);
  t.ok(r.recovered, "a request after the faults completes with the undisturbed audio");
  for (const s of ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder", "nats-server"]) {
    t.ok(r.events.some((e) => e.includes(`SIGKILL ${s}`)), `${s} was killed`);
    t.ok(r.events.some((e) => e.includes(`restarted ${s}`)), `${s} was restarted`);
  }
});
