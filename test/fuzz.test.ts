/**
 * Fuzz, bounded (over 10,000 cases; tools/fuzz.ts runs longer): hostile HTTP requests, raw malformed HTTP,
 * and hostile messages on every NATS subject the services consume, from a seeded PRNG (the seed is in the
 * output; GSV_FUZZ_SEED replays it). No service exits, every answer is audio or a coded error, a secret
 * WAV outside the voices directory is never served, and a normal request succeeds afterwards.
 */
import t from "tap";
import { runFuzz } from "../tools/fuzz.js";

t.setTimeout(300_000); // about a minute alone, longer on a shared 2-core machine

t.test("fuzz - HTTP API and every consumed NATS subject", async (t) => {
  const seed = Number(process.env.GSV_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
  t.comment(`fuzz seed ${seed} (replay: GSV_FUZZ_SEED=${seed})`);
  const r = await runFuzz({ seed, httpCases: 8500, rawCases: 200, natsCases: 1400, fast: true, concurrency: 8, log: (s) => t.comment(s) });
  t.comment(JSON.stringify(r.outcomes));
  t.comment(JSON.stringify(r.natsReplies));
  const total = r.cases.http + r.cases.raw + r.cases.nats;
  t.ok(total >= 10_000, `${total} cases`);
  t.same(r.violations, [], `seed ${seed}: no violations`);
  t.ok(r.afterwardsOk, "a normal request succeeds afterwards");
  // The cases reached deep: validation errors of several kinds, path refusals, stage error events.
  for (const k of ["400 BAD_PARAMETER", "403 PATH_NOT_ALLOWED", "404 NOT_FOUND", "400 BAD_REQUEST"]) t.ok((r.outcomes[k] ?? 0) > 0, `seen: ${k}`);
  t.ok((r.natsReplies["event error MALFORMED_MESSAGE"] ?? 0) > 0, "stages answered malformed work with error events");
});
