import t from "tap";
import { AudioAssembler, pauseSamples, summarise } from "../shared/client.js";
import type { ReplyEvent } from "../shared/schemas.js";

type Audio = Extract<ReplyEvent, { type: "audio" }>;
const win = (seg: number, w: number, last: boolean, pcm: number[], overlap: number, tail: number, segCount = 2): Audio => ({
  type: "audio", id: "r", seg, segCount, win: w, last, sampleRate: 24000, overlap, tail, pcm: Float32Array.from(pcm), tokens: 5, fragmentInterval: 0, timings: [],
});

t.test("assembler - windows in any order, duplicates dropped, seams cross-faded, segments in order", async (t) => {
  const out: number[] = [];
  const asm = new AudioAssembler((p) => out.push(...p));
  asm.segCount = 2;
  // Segment 0: two windows; window 1 repeats window 0's last 2 samples (overlap = tail = 2).
  const s0w0 = win(0, 0, false, [1, 1, 1, 1, 10, 10], 0, 2);
  const s0w1 = win(0, 1, true, [20, 20, 2, 2], 2, 0);
  const s1w0 = win(1, 0, true, [3, 3, 3], 0, 0);
  t.equal(asm.push(s1w0), true, "a later segment is buffered");
  t.same(out, [], "nothing is emitted out of order");
  t.equal(asm.push(s0w1), true);
  t.same(out, []);
  t.equal(asm.push(s0w0), true);
  t.equal(asm.push(s0w0), false, "a redelivered window is a duplicate");
  // Cross-fade of tail [10,10] with head [20,20], weights (i+0.5)/2 = 0.25, 0.75.
  t.same(out, [1, 1, 1, 1, 10 * 0.75 + 20 * 0.25, 10 * 0.25 + 20 * 0.75, 2, 2, 3, 3, 3]);
  t.equal(asm.done, true);
  t.same(asm.tokens, [5, 5]);
});

t.test("assembler - a cross-fade of two identical renderings is seamless", async (t) => {
  const sig = Float32Array.from({ length: 4000 }, (_, i) => Math.sin(i / 7));
  const out: number[] = [];
  const asm = new AudioAssembler((p) => out.push(...p));
  const ov = 512;
  asm.push(win(0, 0, false, Array.from(sig.subarray(0, 2000)), 0, ov, 1));
  asm.push(win(0, 1, true, Array.from(sig.subarray(2000 - ov)), ov, 0, 1));
  t.equal(out.length, sig.length, "no sample gained or lost at the seam");
  let maxErr = 0;
  for (let i = 0; i < sig.length; i++) maxErr = Math.max(maxErr, Math.abs(out[i] - sig[i]));
  t.ok(maxErr < 1e-6, `max error ${maxErr}`);
});

t.test("assembler - the pause after each segment follows upstream's 32 kHz quirk", async (t) => {
  t.equal(pauseSamples(0.3), 9600);
  t.equal(pauseSamples(0), 0);
  const out: number[] = [];
  const asm = new AudioAssembler((p) => out.push(...p));
  asm.push({ ...win(0, 0, true, [1, 2], 0, 0, 1), fragmentInterval: 0.001 });
  t.same(out, [1, 2, ...new Array(32).fill(0)]);
});

t.test("summarise - a timing carried along with every window counts once", async (t) => {
  const text = { stage: "text", replica: "a", queueMs: 1, computeMs: 5, batch: 1, seg: -1 };
  const gpt = { stage: "gpt", replica: "b", queueMs: 2, computeMs: 50, batch: 4, seg: 0 };
  const s = summarise([text, gpt, { stage: "vocoder", replica: "c", queueMs: 1, computeMs: 3, batch: 2, seg: 0, win: 0 }, text, gpt, { stage: "vocoder", replica: "c", queueMs: 1, computeMs: 4, batch: 1, seg: 0, win: 1 }]);
  t.same(s.map((x) => [x.stage, x.computeMs, x.units, x.maxBatch]), [["text", 5, 1, 1], ["gpt", 50, 1, 4], ["vocoder", 7, 2, 2]]);
});
