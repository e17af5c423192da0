/**
 * Soak, short: 300 requests on the tiny set through the full stack; every one completes with the audio of
 * an undisturbed run, and no process's resident memory grows by more than 64 MB after the warm-up.
 * tools/soak.ts runs the long version (10,000 requests); figures in docs/operations.md.
 */
import t from "tap";
import { runSoak } from "../tools/soak.js";

t.setTimeout(300_000); // a few minutes on a shared 2-core machine

t.test("soak - 300 requests: no failures, RSS drift within 64 MB per process", async (t) => {
  const r = await runSoak({ requests: 300, concurrency: 4, warmup: 80, log: (s) => t.comment(s) });
  t.comment(JSON.stringify(r.rss));
  t.equal(r.requests, 300, "all requests were sent");
  t.equal(r.counts.completed, 300, `every request completed with the expected audio (${JSON.stringify(r.counts)})`);
  for (const e of r.examples) t.comment(e);
  for (const [name, m] of Object.entries(r.rss)) {
    t.ok(Number.isFinite(m.start) && m.start > 0, `${name}: RSS sampled (${m.start} MB)`);
    t.ok(m.drift <= 64, `${name}: RSS ${m.start} → ${m.end} MB, drift ${m.drift} MB (bound 64)`);
  }
});
