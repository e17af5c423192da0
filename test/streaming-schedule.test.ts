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
import { GptEngine, type GptPartial, type GptSessions } from "../services/gpt-semantic/engine.js";

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
