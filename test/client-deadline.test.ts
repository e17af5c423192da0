/**
 * Regression: a deadline that passes while the job is still being published (timeout_ms 1) rejected a
 * promise nobody listened to yet, and Node ended the gateway process on the unhandled rejection (found by
 * test/fuzz.test.ts). Each request must instead fail alone with DEADLINE_EXCEEDED.
 */
import t from "tap";
import { synthesize } from "../shared/client.js";
import { GsvError } from "../shared/errors.js";
import { ensureAllQueues } from "../shared/nats.js";
import { withNats } from "./helpers/stack.js";

t.test("client - a deadline shorter than the publish fails the request, not the process", async (t) => {
  const env = await withNats();
  t.teardown(() => env.stop());
  await ensureAllQueues(env.nc);
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  process.on("unhandledRejection", onUnhandled);
  t.teardown(() => process.off("unhandledRejection", onUnhandled));
  const codes = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      synthesize(env.nc, {
        text: "Hi.",
        textLang: "en",
        splitMethod: "cut5",
        voice: { audioSha: "0".repeat(64), promptText: "x", promptLang: "en" },
        params: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: i, speed: 1, sampleSteps: 1, fragmentInterval: 0.3 },
        timeoutMs: 1,
      }).then(
        () => "completed",
        (e: unknown) => (e instanceof GsvError ? e.code : String(e)),
      ),
    ),
  );
  await new Promise((r) => setTimeout(r, 100));
  t.same([...new Set(codes)], ["DEADLINE_EXCEEDED"], "every request failed with DEADLINE_EXCEEDED");
  t.same(unhandled, [], "no unhandled rejection");
});
