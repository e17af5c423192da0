/**
 * The arithmetic streamed segments rely on: token/frame counts against the encoder's rule counted by
 * brute force, the window schedule of each mode, the noise generator's state carried between
 * processes, and the GPT engine reporting the tokens so far at the requested counts.
 */
import t from "tap";
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { loadManifest } from "../shared/manifest.js";
import { fromRoot } from "../shared/paths.js";
import { Rng } from "../shared/sampling.js";
import { emitPoints, LOOKAHEAD_TOKENS, makeSchedule, melFrames, tokensFor, tokensNeeded, toStreamMode, windowEnd, windowFrames } from "../shared/streaming.js";
import { GptEngine, type GptPartial, type GptRequest, type GptSessions } from "../services/gpt-semantic/engine.js";

/** A GPT request from `seed`; with `stream`, a segment of a streamed request reporting its tokens at `emitAt`. */
function segmentRequest(id: string, seed: number, emitAt: number[], stream?: { group: string; order: number; speed?: number }): GptRequest {
  return {
    id,
    promptIds: Int32Array.from({ length: 6 }, (_, k) => (k * 31 + seed) % 732),
    textIds: Int32Array.from({ length: 20 }, (_, k) => (k * 13 + 5 + seed) % 732),
    prompts: Int32Array.from({ length: 50 }, (_, k) => (k * 17 + seed) % 1024),
    sampling: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35 },
    seed,
    ...(stream ? { emitAt, ...stream } : {}),
  };
}

t.test("streaming schedule - melFrames follows docs/models.md, tokensFor is its least inverse", async (t) => {
  // docs/models.md: T50' = 2·T25 at speed 1, else ⌊2·T25/speed⌋+1 (decimal); Tm = ⌊1.875·T50'⌋.
  t.equal(melFrames(10, 1), 37);
  t.equal(melFrames(10, 0.8), Math.floor(1.875 * 26));
  t.equal(melFrames(100, 1), 375);
  let bad = 0;
  for (const speed of [1, 0.5, 0.8, 1.25, 2, 4])
    for (let frames = 1; frames < 2000; frames += 7) {
      const n = tokensFor(frames, speed);
      if (!(melFrames(n, speed) >= frames && (n === 0 || melFrames(n - 1, speed) < frames))) bad++;
    }
  t.equal(bad, 0, "the fewest tokens covering each frame count, at six speeds");
});

t.test("streaming schedule - windows per mode", async (t) => {
  const cfm = { maxFrames: 934, maxPromptFrames: 468 };
  const s1 = makeSchedule(1, cfm, 600, 200, 1); // a long reference: prefix 468, chunk 466 (upstream)
  t.equal(s1.prefix, 468);
  t.same([0, 1, 2].map((w) => windowFrames(s1, w)), [466, 466, 466], "mode 1: the non-streaming windows");
  const s3 = makeSchedule(3, cfm, 600, 200, 1);
  t.same([0, 1, 2, 3, 4].map((w) => windowFrames(s3, w)), [60, 120, 240, 466, 466], "mode 3: 16 tokens, doubling up to the full window");
  const s2 = makeSchedule(2, cfm, 300, 200, 1); // a short reference: prefix 300, chunk 634
  t.same([0, 1, 2, 3].map((w) => windowFrames(s2, w)), [120, 240, 480, 634], "mode 2: 32 tokens, doubling");
  t.equal(windowEnd(s3, 2), 420);
  t.equal(tokensNeeded(s3, 0), 16 + LOOKAHEAD_TOKENS, "window 0 of mode 3 waits for 16 tokens and the lookahead");
  const pts = emitPoints(s3, 1500);
  t.ok(pts.every((p, i) => i === 0 || p > pts[i - 1]) && pts[pts.length - 1] <= 1500, "emit points ascend within the cap");
  t.same([false, true, 0, 1, 2, 3, 4].map((v) => toStreamMode(v)), [0, 1, 0, 1, 2, 3, undefined]);
});

t.test("streaming schedule - a generator continued from its carried state draws what the original draws", async (t) => {
  const a = new Rng(77);
  for (let i = 0; i < 1001; i++) a.normal(); // odd: a Box–Muller spare is pending
  const b = Rng.fromState(JSON.parse(JSON.stringify(a.getState())));
  const xs = Array.from({ length: 50 }, () => a.normal());
  const ys = Array.from({ length: 50 }, () => b.normal());
  t.same(ys, xs);
});

t.test("streaming schedule - the GPT engine reports the tokens so far at the requested counts", async (t) => {
  const dir = fromRoot("models", "tiny");
  const manifest = loadManifest(dir);
  const sessions = {} as GptSessions;
  for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) sessions[g] = await ort.InferenceSession.create(join(dir, manifest.graphs[g].file), { intraOpNumThreads: 1 });
  const engine = new GptEngine(sessions, manifest, { maxRows: 2 });
  const req = (id: string, emitAt?: number[]) => ({
    id,
    promptIds: Int32Array.from({ length: 6 }, (_, k) => (k * 31) % 732),
    textIds: Int32Array.from({ length: 20 }, (_, k) => (k * 13 + 5) % 732),
    prompts: Int32Array.from({ length: 50 }, (_, k) => (k * 17) % 1024),
    sampling: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35 },
    seed: 9,
    ...(emitAt ? { emitAt } : {}),
  });
  engine.add(req("streamed", [5, 12, 30, 100000]));
  engine.add(req("plain"));
  const partials: GptPartial[] = [];
  const done = new Map<string, Int32Array>();
  while (!engine.idle) {
    for (const r of await engine.step()) done.set(r.id, r.tokens);
    partials.push(...engine.takePartials());
  }
  const final = done.get("streamed")!;
  t.same(done.get("plain"), final, "emitting changes no token");
  t.same(partials.map((p) => p.id), ["streamed", "streamed", "streamed"], "only the streamed row reports, once per count reached");
  t.same(partials.map((p) => p.tokens.length), [5, 12, 30]);
  for (const p of partials) t.same(p.tokens, final.subarray(0, p.tokens.length), `the first ${p.tokens.length} tokens`);
});

t.test("streaming schedule - the GPT engine gets segment 0 of a streamed request to its first window before the request's other segments", async (t) => {
  const dir = fromRoot("models", "tiny");
  const manifest = loadManifest(dir);
  const sessions = {} as GptSessions;
  for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) sessions[g] = await ort.InferenceSession.create(join(dir, manifest.graphs[g].file), { intraOpNumThreads: 1 });
  const req = (id: string, seed: number, stream?: { group: string; order: number }) => segmentRequest(id, seed, [6, 20, 100000], stream);
  const reqs = [
    req("s.1", 1, { group: "s", order: 1 }), // arrives before segment 0
    req("plain", 2), // not streamed: never held
    req("s.0", 3, { group: "s", order: 0 }),
    req("s.2", 4, { group: "s", order: 2 }),
    req("t.1", 5, { group: "t", order: 1 }), // a request whose segment 0 is elsewhere: not held
  ];
  const alone = new Map<string, Int32Array>();
  for (const r of reqs) {
    const e = new GptEngine(sessions, manifest, { maxRows: 1 });
    e.add(r);
    while (!e.idle) for (const d of await e.step()) alone.set(d.id, d.tokens);
  }
  const engine = new GptEngine(sessions, manifest, { maxRows: 8, admitPerStep: 2 });
  for (const r of reqs) engine.add(r);
  const admittedAt = new Map<string, number>();
  const firstPartialAt = new Map<string, number>();
  const done = new Map<string, Int32Array>();
  for (let step = 0; !engine.idle; step++) {
    for (const d of await engine.step()) done.set(d.id, d.tokens);
    for (const id of engine.rowIds) if (!admittedAt.has(id)) admittedAt.set(id, step);
    for (const p of engine.takePartials()) if (!firstPartialAt.has(p.id)) firstPartialAt.set(p.id, step);
  }
  t.same([admittedAt.get("s.0"), admittedAt.get("plain"), admittedAt.get("t.1")], [0, 0, 1], "2 prefills a step in arrival order, segment 1 held: plain and segment 0 first, then the other request's segment (not held)");
  const first = firstPartialAt.get("s.0")!;
  t.ok(admittedAt.get("s.1")! >= first && admittedAt.get("s.2")! >= first, `segments 1 and 2 start once segment 0 has its first window's tokens (step ${first}); admitted at ${admittedAt.get("s.1")}, ${admittedAt.get("s.2")}`);
  t.ok(firstPartialAt.get("s.1")! > first && firstPartialAt.get("s.2")! > first, "segment 0's first tokens reach sovits-decoder before the others'");
  t.ok(Math.abs(admittedAt.get("s.2")! - admittedAt.get("s.1")!) <= 1, "segment 1 does not hold segment 2 back in turn (no chain)");
  for (const r of reqs) t.same(done.get(r.id), alone.get(r.id), `${r.id}: the same tokens as alone`);
});

t.test("streaming schedule - with pacing, the GPT engine admits a streamed request's later segments only while the playing one stays ahead of playback", async (t) => {
  const dir = fromRoot("models", "tiny");
  const manifest = loadManifest(dir);
  const real = {} as GptSessions;
  for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) real[g] = await ort.InferenceSession.create(join(dir, manifest.graphs[g].file), { intraOpNumThreads: 1 });
  // A fake clock advanced by the graphs' calls, as on a slow CPU: a prefill costs 300 ms, a decode step
  // 12 ms per row (three rows outpace their audio, 40 ms a token; four do not). No real time is read.
  let clock = 0;
  const cost: Record<keyof GptSessions, (feeds: Record<string, ort.Tensor>) => number> = {
    t2s_encoder: () => 0,
    t2s_prefill: () => 300,
    t2s_step: (feeds) => 12 * feeds.token.dims[0],
  };
  const sessions = {} as GptSessions;
  for (const g of Object.keys(real) as (keyof GptSessions)[])
    sessions[g] = { run: async (feeds: Record<string, ort.Tensor>) => ((clock += cost[g](feeds)), real[g].run(feeds)) } as unknown as ort.InferenceSession;
  // Partials at every count from 6 on: the test sees each row's tokens step by step.
  const every = Array.from({ length: 200 }, (_, k) => 6 + k);
  const req = (id: string, seed: number, stream?: { group: string; order: number; speed?: number }) => segmentRequest(id, seed, every, stream);
  const reqs = (speed?: number) => [
    ...[3, 1, 4, 6].map((seed, order) => req(`s.${order}`, seed, { group: "s", order, ...(speed ? { speed } : {}) })),
    req("plain", 2),
    req("u.1", 5, { group: "u", order: 1 }),
  ];
  // speed: the speed_factor the audio plays at (a token lasts 40 / speed ms); tell: whether the requests say so.
  const run = async (pacing: boolean, maxHoldMs = 60_000, speed = 1, tell = true) => {
    clock = 0;
    const engine = new GptEngine(sessions, manifest, { maxRows: 8, admitPerStep: 2, now: () => clock, ...(pacing ? { pacing: { maxHoldMs } } : {}) });
    for (const r of reqs(speed === 1 || !tell ? undefined : speed)) engine.add(r);
    const tokens = new Map<string, number>(); // tokens so far of each segment of "s"
    const done = new Map<string, Int32Array>();
    const admittedAt = new Map<string, number>();
    let playStart: number | undefined;
    let behindMs = 0; // the most the played audio ever ran past the tokens decoded in order
    for (let step = 0; !engine.idle; step++) {
      for (const d of await engine.step()) {
        done.set(d.id, d.tokens);
        tokens.set(d.id, d.tokens.length);
      }
      for (const id of engine.rowIds) if (!admittedAt.has(id)) admittedAt.set(id, step);
      for (const p of engine.takePartials()) {
        tokens.set(p.id, p.tokens.length);
        if (p.id === "s.0" && playStart === undefined) playStart = clock;
      }
      if (playStart === undefined) continue;
      // Tokens playable in order: finished segments, then the first unfinished one's tokens so far.
      let ready = 0;
      for (const id of ["s.0", "s.1", "s.2", "s.3"]) {
        ready += tokens.get(id) ?? 0;
        if (!done.has(id)) break;
      }
      if (!done.has("s.3")) behindMs = Math.max(behindMs, clock - playStart - (40 / speed) * ready);
    }
    return { done, admittedAt, behindMs, totalMs: clock };
  };
  const plain = await run(false);
  const paced = await run(true);
  t.ok(plain.behindMs > 0, `without pacing, the segments admitted at segment 0's first window put playback behind (by ${plain.behindMs} ms of fake time)`);
  t.equal(paced.behindMs, 0, "with pacing, playback never runs past the decoded tokens");
  t.ok(paced.admittedAt.get("s.1")! > plain.admittedAt.get("s.1")!, `segment 1 waited for a lead (step ${paced.admittedAt.get("s.1")} against ${plain.admittedAt.get("s.1")})`);
  t.equal(paced.admittedAt.get("plain"), plain.admittedAt.get("plain"), "a request that does not stream is admitted as before");
  t.equal(paced.admittedAt.get("s.0"), plain.admittedAt.get("s.0"), "segment 0 too");
  t.equal(paced.admittedAt.get("u.1"), plain.admittedAt.get("u.1"), "and a streamed request whose segment 0 is not here (no playback start known)");
  for (const r of reqs()) t.same(paced.done.get(r.id), plain.done.get(r.id), `${r.id}: pacing changes no token`);
  // At speed_factor 2 a token plays 20 ms: the rule must count that, not 40 ms. (Some wait is left here
  // whatever the rule: segment 0 ends before its lead covers a 300 ms prefill at this pace.)
  const fastPlain = await run(false, 60_000, 2);
  const fastBlind = await run(true, 60_000, 2, false);
  const fastPaced = await run(true, 60_000, 2);
  t.ok(fastPaced.behindMs < fastBlind.behindMs, `at speed 2, pacing that knows the speed falls behind less (${fastPaced.behindMs} ms) than pacing at 40 ms a token (${fastBlind.behindMs} ms)`);
  t.ok(fastPaced.behindMs < fastPlain.behindMs, `and less than no pacing (${fastPlain.behindMs} ms)`);
  t.ok(fastPaced.admittedAt.get("s.1")! > fastBlind.admittedAt.get("s.1")!, `segment 1 waits longer for its lead (step ${fastPaced.admittedAt.get("s.1")} against ${fastBlind.admittedAt.get("s.1")})`);
  for (const r of reqs()) t.same(fastPaced.done.get(r.id), plain.done.get(r.id), `${r.id}: the same tokens at speed 2`);
  const unheld = await run(true, 0);
  t.same(["s.1", "s.2", "s.3"].map((id) => unheld.admittedAt.get(id)), ["s.1", "s.2", "s.3"].map((id) => plain.admittedAt.get(id)), "the hold limit bounds the hold: at 0 ms, admitted as without pacing");
});

t.test("streaming schedule - DiT steps: earliest deadline first, and a streamed item leads a batch of its limit", async (t) => {
  const { MicroBatcher } = await import("../shared/batcher.js");
  type It = { name: string; prio: number[]; streamed: boolean };
  const calls: string[][] = [];
  let release: (() => void) | undefined;
  const b = new MicroBatcher<It, string>(
    async (items) => {
      calls.push(items.map((i) => i.name));
      if (calls.length === 1) await new Promise<void>((r) => (release = r));
      return items.map((i) => i.name);
    },
    { maxBatch: 4, concurrency: 1, priority: (i) => i.prio, batchLimit: (i) => (i.streamed ? 1 : 4) },
  );
  const busy = b.submit({ name: "busy", prio: [0], streamed: false });
  const rest = [
    { name: "late-a", prio: [200, 0, 0], streamed: false },
    { name: "s-seg1", prio: [100, 1, 0], streamed: true },
    { name: "late-b", prio: [200, 1, 0], streamed: false },
    { name: "s-seg0-win1", prio: [100, 0, 1], streamed: true },
    { name: "s-seg0-win0", prio: [100, 0, 0], streamed: true },
  ].map((i) => b.submit(i));
  release!();
  await Promise.all([busy, ...rest]);
  t.same(calls, [["busy"], ["s-seg0-win0"], ["s-seg0-win1"], ["s-seg1"], ["late-a", "late-b"]]);
});
