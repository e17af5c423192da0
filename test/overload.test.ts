/**
 * Overload: at three times the gateway's capacity the excess is shed at once with 503 OVERLOADED and a
 * Retry-After (a coded JSON error), every admitted request succeeds with audio of the expected length,
 * and the gateway's memory does not grow with repeated bursts. The admission signals (in-flight cap,
 * queue depth from JetStream, latency against the deadline) are also tested one by one.
 */
import t from "tap";
import { EventEmitter } from "node:events";
import type { ServerResponse } from "node:http";
import { encode } from "../shared/codec.js";
import { GsvError } from "../shared/errors.js";
import { ensureAllQueues } from "../shared/nats.js";
import { WorkQueues } from "../shared/subjects.js";
import { Admission } from "../services/gateway/admission.js";
import { startStack } from "../tools/launch.js";
import { expectedSamples, rssMb, ttsCall } from "../tools/loadgen.js";
import { TEST_ENV, withNats } from "./helpers/stack.js";

const CAP = 4;

t.test("overload - 3x capacity at once: the excess is shed before any admitted request ends; all admitted succeed", async (t) => {
  const stack = await startStack({ env: { ...TEST_ENV, GSV_MAX_INFLIGHT: String(CAP) } });
  t.teardown(() => stack.stop());
  const gateway = stack.services.find((s) => s.name === "gateway")!;
  // Long enough (several segments, 8 CFM steps) that an admitted request outlasts the burst's arrival.
  const body = { text: "First sentence here. Second one follows. Third comes next. And the fourth ends it.", text_lang: "en", sample_steps: 8, timeout_ms: 120_000 };
  const warm = await ttsCall(stack.gatewayUrl, { ...body, seed: 1 }, 130_000);
  t.equal(warm.kind, "completed", "warm-up request");
  const rssBefore = rssMb(gateway.proc.pid);

  for (let round = 0; round < 3; round++) {
    const order: string[] = [];
    const results = await Promise.all(
      Array.from({ length: 3 * CAP }, async (_, i) => {
        const r = await ttsCall(stack.gatewayUrl, { ...body, seed: 10 + i }, 130_000);
        order.push(r.kind === "completed" ? "ok" : r.kind === "failed" ? r.code : r.kind);
        return r;
      }),
    );
    const shed = results.filter((r) => r.kind === "failed" && r.code === "OVERLOADED");
    const ok = results.filter((r) => r.kind === "completed");
    t.equal(ok.length, CAP, `round ${round}: ${CAP} admitted requests completed`);
    t.equal(shed.length, 2 * CAP, `round ${round}: the other ${2 * CAP} were shed`);
    for (const r of shed) {
      if (r.kind !== "failed") continue;
      t.equal(r.status, 503, "503");
      t.match(r.retryAfter ?? "", /^[1-9]\d*$/, `Retry-After ${r.retryAfter} is a positive whole number of seconds`);
      t.match(r.message, /in flight/, "the message says why");
    }
    t.same(order.slice(0, 2 * CAP), Array(2 * CAP).fill("OVERLOADED"), `round ${round}: every refusal came back before the first admitted request finished`);
    for (const r of ok) if (r.kind === "completed") t.equal(r.samples.length, expectedSamples(r.tokens), "admitted: audio of the expected length");
  }
  const health = (await (await fetch(`${stack.gatewayUrl}/health`)).json()) as { inflight: number };
  t.equal(health.inflight, 0, "nothing is left in flight");
  const rssAfter = rssMb(gateway.proc.pid);
  t.ok(rssAfter - rssBefore < 64, `gateway RSS ${rssBefore.toFixed(1)} → ${rssAfter.toFixed(1)} MB over three bursts (bound 64 MB)`);
});

function caught(f: () => void): GsvError | undefined {
  try {
    f();
  } catch (err) {
    if (err instanceof GsvError) return err;
    throw err;
  }
  return undefined;
}

/** The parts of a ServerResponse that Admission uses. */
function fakeResponse(): ServerResponse & { headers: Record<string, string> } {
  const res = new EventEmitter() as unknown as ServerResponse & { headers: Record<string, string> };
  res.headers = {};
  res.statusCode = 200;
  res.setHeader = ((k: string, v: string) => {
    res.headers[k] = v;
    return res;
  }) as ServerResponse["setHeader"];
  return res;
}

t.test("admission - work waiting in the stage queues sheds new requests, wherever it came from", async (t) => {
  const env = await withNats();
  t.teardown(() => env.stop());
  await ensureAllQueues(env.nc);
  const adm = new Admission({ maxInflight: 100, maxQueued: 5, pollMs: 50 }).watchQueues(env.nc);
  t.teardown(() => adm.stop());
  const res0 = fakeResponse();
  adm.admit(res0, 10_000);
  t.equal(adm.state.inflight, 1, "admitted while the queues are empty");
  res0.emit("finish");
  t.equal(adm.state.inflight, 0, "released when the response finishes");
  // Another client publishes straight to NATS (no stage runs, so it stays queued).
  for (let i = 0; i < 5; i++) await env.nc.jetstream().publish(WorkQueues.gpt.subject, encode({ i }));
  for (let i = 0; i < 100 && adm.state.queued < 5; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal(adm.state.queued, 5, "the queue depth was read from JetStream");
  const res = fakeResponse();
  const e = caught(() => adm.admit(res, 10_000));
  t.equal(e?.code, "OVERLOADED", "shed");
  t.match(e?.message, /queued/, e?.message);
  t.match(res.headers["Retry-After"], /^\d+$/, "Retry-After set");
  t.equal(adm.state.shed, 1);
});

t.test("admission - requests whose deadline is shorter than the current latency are shed while busy", async (t) => {
  const adm = new Admission({ maxInflight: 10, maxQueued: 0 });
  const a = fakeResponse();
  adm.admit(a, 60_000);
  await new Promise((r) => setTimeout(r, 120));
  a.emit("finish");
  t.ok(adm.state.latencyMs >= 100, `latency measured (${adm.state.latencyMs} ms)`);
  const b = fakeResponse();
  adm.admit(b, 50); // idle: admitted even with a short deadline, so the latency figure can recover
  const c = fakeResponse();
  const e = caught(() => adm.admit(c, 50));
  t.equal(e?.code, "OVERLOADED", "busy and slower than the deadline: shed");
  t.match(e?.message, /deadline/, e?.message);
  adm.admit(c, 60_000);
  t.equal(adm.state.inflight, 2, "a request with a long enough deadline is admitted");
  b.emit("close");
  c.emit("close");
  t.equal(adm.state.inflight, 0);
  t.equal(adm.retryAfter(), 1, "Retry-After is at least one second");
});
