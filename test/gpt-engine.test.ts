/**
 * Continuous batching in the GPT stage: a request's tokens in a mixed, changing batch equal its tokens
 * when it runs alone with the same seed. Real onnxruntime sessions on the tiny set.
 */
import t from "tap";
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { loadManifest } from "../shared/manifest.js";
import { fromRoot } from "../shared/paths.js";
import { GptEngine, runPrefill, type GptRequest, type GptResult, type GptSessions, type PrefillOut } from "../services/gpt-semantic/engine.js";
import { EngineClient } from "../services/gpt-semantic/engine-client.js";

const dir = fromRoot("models", "tiny");
const manifest = loadManifest(dir);
const sessions = {} as GptSessions;
for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) sessions[g] = await ort.InferenceSession.create(join(dir, manifest.graphs[g].file), { intraOpNumThreads: 1 });

function request(i: number): GptRequest {
  const nt = 5 + ((i * 7) % 23); // different text lengths → different token limits → rows leave at different steps
  return {
    id: `r${i}`,
    promptIds: Int32Array.from({ length: 3 + (i % 5) }, (_, k) => (k * 31 + i) % 732),
    textIds: Int32Array.from({ length: nt }, (_, k) => (k * 13 + i * 3) % 732),
    prompts: Int32Array.from({ length: 40 + ((i * 11) % 90) }, (_, k) => (k * 17 + i) % 1024),
    sampling: { topK: 1 + (i % 20), topP: i % 3 === 0 ? 0.8 : 1, temperature: 0.6 + (i % 4) * 0.3, repetitionPenalty: i % 2 ? 1.35 : 1 },
    seed: 1000 + i,
  };
}

async function drain(engine: GptEngine, feed: Map<number, GptRequest[]> = new Map()): Promise<Map<string, GptResult>> {
  const out = new Map<string, GptResult>();
  for (let it = 0; !engine.idle || [...feed.keys()].some((k) => k >= it); it++) {
    for (const r of feed.get(it) ?? []) engine.add(r);
    for (const r of await engine.step()) out.set(r.id, r);
    if (it > 100_000) throw new Error("engine did not finish");
  }
  return out;
}

const N = 12;
const alone = new Map<string, GptResult>();
t.before(async () => {
  for (let i = 0; i < N; i++) {
    const e = new GptEngine(sessions, manifest, { maxRows: 1 });
    e.add(request(i));
    for (const [k, v] of await drain(e)) alone.set(k, v);
  }
});

t.test("gpt engine - requests joining and leaving a running batch get the same tokens as alone", async (t) => {
  // Requests arrive at different iterations; capacity starts tiny so the cache grows mid-batch.
  const feed = new Map<number, GptRequest[]>();
  for (let i = 0; i < N; i++) feed.set(i * 3, [...(feed.get(i * 3) ?? []), request(i)]);
  const engine = new GptEngine(sessions, manifest, { maxRows: 5, initialCapacity: 16, admitPerStep: 2 });
  const batched = await drain(engine, feed);
  t.equal(batched.size, N);
  let sawBatch = 0;
  for (let i = 0; i < N; i++) {
    const a = alone.get(`r${i}`)!;
    const b = batched.get(`r${i}`)!;
    t.ok(a.tokens.length >= 11, `r${i}: ${a.tokens.length} tokens alone`);
    t.same(Array.from(b.tokens), Array.from(a.tokens), `r${i}: same tokens in a batch (max batch ${b.maxBatch})`);
    t.equal(b.stoppedBy, a.stoppedBy);
    sawBatch = Math.max(sawBatch, b.maxBatch);
  }
  t.equal(sawBatch, 5, "the batch filled up to maxRows");
  const hist = engine.stats.batchHistogram;
  t.ok([...hist.keys()].length >= 3, `several batch sizes were used: ${JSON.stringify(Object.fromEntries(hist))}`);
});

t.test("gpt engine - an aborted request leaves at the next step and its row is reused", async (t) => {
  const engine = new GptEngine(sessions, manifest, { maxRows: 2 });
  engine.add(request(0));
  engine.add(request(1));
  engine.add(request(2));
  await engine.step();
  await engine.step();
  t.equal(engine.running, 2);
  t.equal(engine.waiting, 1, "the third request waits for a row");
  engine.abort("r0");
  const done = await engine.step();
  const aborted = done.find((r) => r.id === "r0");
  t.equal(aborted?.stoppedBy, "aborted");
  const rest = await drain(engine);
  t.same(Array.from(rest.get("r2")!.tokens), Array.from(alone.get("r2")!.tokens), "the waiting request took the freed row and decoded normally");
  t.same(Array.from(rest.get("r1")!.tokens), Array.from(alone.get("r1")!.tokens));
});

t.test("gpt engine - admission waits when the KV budget is spent, instead of overflowing", async (t) => {
  const probe = new GptEngine(sessions, manifest, { maxRows: 4, initialCapacity: 256 });
  const budget = probe.kvBytes; // exactly what capacity 256 costs
  const engine = new GptEngine(sessions, manifest, { maxRows: 4, initialCapacity: 256, kvBudgetBytes: budget });
  const long: GptRequest = { ...request(3), id: "long", prompts: Int32Array.from({ length: 300 }, (_, k) => k % 1024) };
  engine.add(request(1));
  engine.add(long); // needs capacity 512: over budget while r1 runs
  await engine.step();
  t.equal(engine.running, 1);
  t.equal(engine.waiting, 1, "the long request waits");
  const all = await drain(engine);
  t.equal(all.size, 2, "it runs once the first one finished");
  t.ok(engine.kvBytes <= budget || engine.idle);
});

t.test("gpt engine - a row that fails to sample ends alone; the rows beside it are unharmed", async (t) => {
  const engine = new GptEngine(sessions, manifest, { maxRows: 3 });
  const bad = { ...request(3), id: "bad", textIds: Int32Array.from(request(3).textIds), prompts: Int32Array.from([1, 2, 2000]) };
  engine.add(request(1));
  engine.add(bad); // a history token outside the vocabulary: the repetition penalty throws for this row
  engine.add(request(2));
  const out = await drain(engine);
  t.ok(out.get("bad")?.error, "the bad row ends with an error");
  t.equal(out.get("bad")?.stoppedBy, "aborted");
  for (const id of ["r1", "r2"]) t.same(Array.from(out.get(id)!.tokens), Array.from(alone.get(id)!.tokens), `${id}: same tokens as alone`);
  engine.add(request(4));
  const again = await drain(engine);
  t.same(Array.from(again.get("r4")!.tokens), Array.from(alone.get("r4")!.tokens), "the engine serves the next request normally");
});

/**
 * Deferred prefill (EngineOptions.prefill, run by prefill-worker.ts in the service): a prefill that is
 * still running does not stop the batch, and the row joins when it is done, with the same tokens.
 */
function gatedPrefill(): { prefill: (req: GptRequest) => Promise<PrefillOut>; release: (id: string) => void; started: string[] } {
  const gates = new Map<string, () => void>();
  const started: string[] = [];
  return {
    started,
    release: (id) => gates.get(id)?.(),
    prefill: async (req) => {
      started.push(req.id);
      const gate = new Promise<void>((resolve) => gates.set(req.id, resolve)); // set before the first await
      const out = await runPrefill(sessions, manifest, req);
      await gate;
      return out;
    },
  };
}

t.test("gpt engine - deferred prefill: running rows decode while a newcomer is prefilled, tokens equal alone", async (t) => {
  const g = gatedPrefill();
  const engine = new GptEngine({ t2s_step: sessions.t2s_step }, manifest, { maxRows: 4, prefill: g.prefill });
  engine.add(request(0));
  const first = engine.step(); // nothing to decode: the step waits for r0's prefill
  await new Promise((r) => setImmediate(r));
  t.equal(engine.prefilling, 1, "r0 is being prefilled");
  g.release("r0");
  await first;
  t.equal(engine.running, 1, "r0 joined when its prefill was done");
  engine.add(request(1));
  const steps0 = engine.stats.steps;
  for (let i = 0; i < 5; i++) await engine.step();
  t.same(g.started, ["r0", "r1"], "r1's prefill started");
  t.equal(engine.prefilling, 1, "r1 is still being prefilled");
  t.equal(engine.running, 1, "only r0 decodes meanwhile");
  t.equal(engine.stats.steps - steps0, 5, "the batch did not wait for r1's prefill: five decode steps ran");
  g.release("r1");
  const out = await drain(engine);
  for (const id of ["r0", "r1"]) t.same(Array.from(out.get(id)!.tokens), Array.from(alone.get(id)!.tokens), `${id}: same tokens as alone`);
  t.equal(out.get("r1")!.maxBatch, 2, "r1 decoded beside r0");
});

t.test("gpt engine - deferred prefill: staggered arrivals and prefills of different durations give the alone tokens", async (t) => {
  // Each prefill finishes after a request-dependent number of the engine's steps (or at once when
  // nothing decodes); a poller between the engine's steps releases them.
  let waits: Array<{ at: number; go: () => void }> = [];
  const e = new GptEngine({ t2s_step: sessions.t2s_step }, manifest, {
    maxRows: 5,
    initialCapacity: 16,
    prefill: async (req) => {
      const i = Number(req.id.slice(1));
      const gate = new Promise<void>((go) => waits.push({ at: e.stats.steps + ((i * 5) % 7), go }));
      const out = await runPrefill(sessions, manifest, req);
      await gate;
      return out;
    },
  });
  let polling = true;
  const poll = (): void => {
    const due = waits.filter((w) => w.at <= e.stats.steps || e.running === 0);
    waits = waits.filter((w) => !due.includes(w));
    for (const w of due) w.go();
    if (polling) setImmediate(poll);
  };
  poll();
  t.teardown(() => void (polling = false));
  const feed = new Map<number, GptRequest[]>();
  for (let i = 0; i < N; i++) feed.set(i * 3, [...(feed.get(i * 3) ?? []), request(i)]);
  const out = await drain(e, feed);
  polling = false;
  t.equal(out.size, N);
  for (let i = 0; i < N; i++) t.same(Array.from(out.get(`r${i}`)!.tokens), Array.from(alone.get(`r${i}`)!.tokens), `r${i}: same tokens as alone (max batch ${out.get(`r${i}`)!.maxBatch})`);
  t.ok(Math.max(...[...out.values()].map((r) => r.maxBatch)) >= 3, "rows decoded together");
});

t.test("gpt engine - deferred prefill: a failed prefill ends its request with the error; an aborted one never joins", async (t) => {
  const g = gatedPrefill();
  const prefill = (req: GptRequest) => (req.id === "r2" ? Promise.reject(new Error("prefill thread stopped: test")) : g.prefill(req));
  const engine = new GptEngine({ t2s_step: sessions.t2s_step }, manifest, { maxRows: 4, prefill });
  engine.add(request(1));
  const s = engine.step();
  await new Promise((r) => setImmediate(r));
  g.release("r1");
  await s;
  engine.add(request(2));
  engine.add(request(3));
  const done: GptResult[] = [];
  done.push(...(await engine.step()), ...(await engine.step()));
  const failed = done.find((r) => r.id === "r2");
  t.equal(failed?.stoppedBy, "aborted");
  t.match(failed?.error, /prefill thread stopped/, "the request ends with the prefill's error");
  engine.abort("r3"); // aborted while its prefill runs
  g.release("r3");
  const out = await drain(engine);
  t.equal(out.get("r3")?.stoppedBy, "aborted", "the aborted request ended without decoding");
  t.equal(out.get("r3")?.tokens.length, 0);
  t.same(Array.from(out.get("r1")!.tokens), Array.from(alone.get("r1")!.tokens), "the running row was unharmed");
  t.ok(engine.idle);
});

t.test("gpt engine - the service's engine with its prefill thread gives the tokens of the engine without it", async (t) => {
  const clients = await Promise.all(
    [false, true].map((prefillThread) => EngineClient.create({ modelDir: dir, manifest, workers: 1, intraOpThreads: 1, engine: { maxRows: 4 }, prefillThread })),
  );
  t.teardown(() => Promise.all(clients.map((c) => c.close())));
  const runs = await Promise.all(clients.map((c) => Promise.all(Array.from({ length: 6 }, (_, i) => c.decode(request(i))))));
  for (let i = 0; i < 6; i++) {
    t.same(Array.from(runs[1][i].tokens), Array.from(alone.get(`r${i}`)!.tokens), `r${i}: with a prefill thread, same tokens as alone`);
    t.same(Array.from(runs[0][i].tokens), Array.from(alone.get(`r${i}`)!.tokens), `r${i}: without, too`);
  }
  const [without, withThread] = await Promise.all(clients.map((c) => c.stats()));
  t.equal(withThread[0].prefills, 6, "the engine counted six prefills (done by its thread)");
  t.equal(without[0].prefills, 6);
  t.ok(Math.max(...runs[1].map((r) => r.maxBatch)) >= 2, "rows decoded together with the prefill thread");
});

t.test("gpt engine - the KV capacity follows the longest running row, up and down, and the tokens stay the alone ones", async (t) => {
  const long: GptRequest = { ...request(5), id: "long", prompts: Int32Array.from({ length: 400 }, (_, k) => (k * 17 + 5) % 1024) };
  const solo = new GptEngine(sessions, manifest, { maxRows: 1 });
  solo.add(long);
  const longAlone = (await drain(solo)).get("long")!;
  const positions = (r: GptRequest) => r.promptIds.length + r.textIds.length + r.prompts.length;
  // 64: the buffers must grow (copied over) while rows run; 1024: the capacity moves inside them, in place.
  for (const initialCapacity of [64, 1024]) {
    const engine = new GptEngine(sessions, manifest, { maxRows: 3, initialCapacity });
    for (const r of [request(0), long, request(2)]) engine.add(r);
    const out = new Map<string, GptResult>();
    const seen: Array<{ cap: number; ids: string[] }> = [];
    while (!engine.idle) {
      for (const r of await engine.step()) out.set(r.id, r);
      seen.push({ cap: engine.capacity, ids: engine.rowIds });
    }
    t.same(Array.from(out.get("long")!.tokens), Array.from(longAlone.tokens), `initial ${initialCapacity}: long, same tokens as alone`);
    for (const id of ["r0", "r2"]) t.same(Array.from(out.get(id)!.tokens), Array.from(alone.get(id)!.tokens), `initial ${initialCapacity}: ${id}, same tokens as alone`);
    const withLong = seen.filter((s) => s.ids.includes("long"));
    const after = seen.filter((s) => !s.ids.includes("long") && s.ids.length > 0 && seen.indexOf(s) > seen.indexOf(withLong[withLong.length - 1]));
    t.ok(withLong.length > 0 && after.length > 0, "the long row left while another still ran");
    t.ok(withLong.every((s) => s.cap >= positions(long) + 1 && s.cap % 32 === 0), `while the long row ran, the capacity covered it (${withLong[0].cap}..${withLong[withLong.length - 1].cap})`);
    const r2 = request(2);
    const r2Max = positions(r2) + alone.get("r2")!.tokens.length;
    t.ok(after.every((s) => s.cap <= Math.ceil(r2Max / 32) * 32 + 64), `after it left, the capacity shrank to the rest (${after[0].cap} ≤ ${Math.ceil(r2Max / 32) * 32 + 64}, long needed ${positions(long)})`);
    t.ok(after[0].cap < positions(long), "smaller than the long row needed");
  }
});

t.test("gpt engine - deferred prefill: a streamed request's later segment is prefilled while the batch waits", async (t) => {
  // Its prefill beside the steps would take CPU from the request's first window downstream; pacing
  // counts it as a stall of the playing segment. Other requests' prefills do not stop the batch (above).
  const g = gatedPrefill();
  const engine = new GptEngine({ t2s_step: sessions.t2s_step }, manifest, { maxRows: 4, prefill: g.prefill });
  const seg = (i: number, order: number): GptRequest => ({ ...request(i), id: `s${order}`, group: "g", order, emitAt: [4, 1000] });
  engine.add(seg(0, 0));
  engine.add(seg(1, 1));
  const first = engine.step();
  await new Promise((r) => setImmediate(r));
  g.release("s0");
  await first;
  while (engine.running === 1 && engine.stats.steps < 4) await engine.step(); // segment 0 to its first window
  t.same(g.started, ["s0"], "segment 1 waited for segment 0's first window");
  const steps = engine.stats.steps;
  const admitting = engine.step();
  let settled = false;
  void admitting.then(() => (settled = true));
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  t.same(g.started, ["s0", "s1"], "segment 1's prefill started");
  t.notOk(settled, "the step waits for it");
  t.equal(engine.stats.steps, steps, "no decode step ran meanwhile");
  g.release("s1");
  await admitting;
  t.equal(engine.running, 2, "segment 1 joined in that step");
  const out = await drain(engine);
  t.same(Array.from(out.get("s1")!.tokens), Array.from(alone.get("r1")!.tokens), "segment 1: the alone tokens");
  t.same(Array.from(out.get("s0")!.tokens), Array.from(alone.get("r0")!.tokens), "segment 0: the alone tokens");
});

t.test("gpt engine - a prefill of the wrong shape ends its request with a clear error and is not counted", async (t) => {
  const prefill = async (req: GptRequest): Promise<PrefillOut> => {
    const out = await runPrefill(sessions, manifest, req);
    return req.id === "r2" ? { ...out, k: out.k.map((x) => x.subarray(1)) } : out;
  };
  const engine = new GptEngine({ t2s_step: sessions.t2s_step }, manifest, { maxRows: 4, prefill });
  engine.add(request(1));
  engine.add(request(2));
  const out = await drain(engine);
  t.equal(out.get("r2")?.stoppedBy, "aborted");
  t.match(out.get("r2")?.error, /prefill gave k of the wrong shape/);
  t.same(Array.from(out.get("r1")!.tokens), Array.from(alone.get("r1")!.tokens), "the other request decoded normally");
  t.equal(engine.stats.prefills, 1, "only the good prefill counted");
});
