/**
 * The cost-model backend (shared/cost-model.ts): for every graph, its outputs have the names, dtypes
 * and shapes the real tiny graphs return for the same inputs (both are run here); its values are
 * deterministic and valid for the consumers; its time function grows with batch and length; its
 * simulated device runs one call at a time; and the real GPT engine and OrtPool run on it unchanged.
 */
import t from "tap";
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { loadManifest, GRAPH_NAMES, type GraphName } from "../shared/manifest.js";
import { fromRoot } from "../shared/paths.js";
import { SimDevice, callTimeMs, costDilation, costModelOutputs, costModelSessions, encpFrames, ortBackend } from "../shared/cost-model.js";
import { OrtPool } from "../shared/ort-pool.js";
import type { TensorLike } from "../shared/tensor.js";
import { GptEngine, tokenLimit, type GptResult, type GptSessions } from "../services/gpt-semantic/engine.js";

const dir = fromRoot("models", "tiny");
const manifest = loadManifest(dir);
const d = manifest.dims;

let seed = 7;
const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const f32 = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rnd() * 2 - 1) * scale);
const F = (dims: number[], scale = 1): TensorLike => ({ type: "float32", data: f32(dims.reduce((a, b) => a * b, 1), scale), dims });
const I = (values: number[], dims: number[]): TensorLike => ({ type: "int64", data: BigInt64Array.from(values, (v) => BigInt(v)), dims });
const ints = (n: number, max: number) => Array.from({ length: n }, () => Math.floor(rnd() * max));

/** Two or more input sets per graph, of different batch and length. */
function cases(g: GraphName): Record<string, TensorLike>[] {
  const { t2s } = d;
  switch (g) {
    case "cnhubert":
      return [
        { ref_audio_16k: F([1, 16000 * 3 + 9600], 0.3), ref_lengths: I([16000 * 3 + 9600], [1]) },
        { ref_audio_16k: F([2, 50_017], 0.3), ref_lengths: I([50_017, 40_000], [2]) },
      ];
    case "vq_extract":
      return [[1, 151], [1, 40], [3, 7]].map(([b, t50]) => ({ ssl_content: F([b, d.ssl.dim, t50]) }));
    case "ge_encoder":
      return [
        { refer: F([1, d.spec.bins, 100], 2), refer_lengths: I([100], [1]) },
        { refer: F([2, d.spec.bins, 37], 2), refer_lengths: I([37, 30], [2]) },
      ];
    case "t2s_encoder":
      return [
        [5, 9],
        [3, 20],
      ].map(([nr, nt]) => ({ ref_seq: I(ints(nr, t2s.phoneVocab), [1, nr]), text_seq: I(ints(nt, t2s.phoneVocab), [1, nt]), ref_bert: F([nr, t2s.bertDim], 0), text_bert: F([nt, t2s.bertDim], 0) }));
    case "t2s_prefill":
      return [
        [12, 30],
        [20, 9],
      ].map(([n, t25]) => ({ x: F([1, n, t2s.hidden]), prompts: I(ints(t25, t2s.vocab - 1), [1, t25]) }));
    case "t2s_step":
      return [
        [3, 8],
        [1, 16],
      ].map(([b, kc]) => {
        const feeds: Record<string, TensorLike> = {
          token: I(ints(b, t2s.vocab - 1), [b, 1]),
          pos: I(ints(b, 20), [b]),
          past_mask: { type: "float32", data: Float32Array.from({ length: b * kc }, (_, i) => (i % kc < kc / 2 ? 1 : 0)), dims: [b, kc] },
        };
        for (let l = 0; l < t2s.layers; l++) {
          feeds[`past_k_${l}`] = F([b, t2s.heads, kc, t2s.headDim], 0.5);
          feeds[`past_v_${l}`] = F([b, t2s.heads, kc, t2s.headDim], 0.5);
        }
        return feeds;
      });
    case "sovits_encp":
      return [
        [10, 8, 1],
        [10, 8, 0.8],
        [23, 15, 1.25],
        [7, 4, 0.5],
      ].map(([t25, n, speed]) => ({
        codes: I(ints(t25, d.vq.codebook), [1, 1, t25]),
        text: I(ints(n, t2s.phoneVocab), [1, n]),
        ge: F([1, d.ge.dim, 1], 0.1),
        speed: { type: "float32", data: new Float32Array([speed]), dims: [1] },
      }));
    case "cfm_dit":
      return [
        [2, 50],
        [1, 17],
      ].map(([b, tt]) => ({
        x: F([b, d.mel.bands, tt]),
        cond: F([b, d.mel.bands, tt]),
        x_lens: I(Array.from({ length: b }, (_, i) => tt - i), [b]),
        time: F([b]),
        dt_base_bootstrap: F([b], 0.1),
        text: F([b, d.fea.dim, tt]),
      }));
    case "vocoder":
      return [
        [2, 20],
        [1, 7],
      ].map(([b, tm]) => ({ x: F([b, d.mel.bands, tm], 3) }));
  }
}

const sessions = new Map<GraphName, ort.InferenceSession>();
t.teardown(async () => {
  for (const s of sessions.values()) await s.release();
});
async function runReal(g: GraphName, feeds: Record<string, TensorLike>): Promise<Record<string, { type: string; dims: readonly number[] }>> {
  let s = sessions.get(g);
  if (!s) sessions.set(g, (s = await ort.InferenceSession.create(join(dir, manifest.graphs[g].file), { intraOpNumThreads: 1 })));
  const ortFeeds: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = new ort.Tensor(v.type, v.data, v.dims);
  return s.run(ortFeeds);
}

t.test("every graph: the cost model's outputs have the real graph's names, dtypes and shapes", async (t) => {
  for (const g of GRAPH_NAMES) {
    for (const [i, feeds] of cases(g).entries()) {
      const real = await runReal(g, feeds);
      const sim = costModelOutputs(g, feeds, manifest);
      t.same(Object.keys(sim).sort(), Object.keys(real).sort(), `${g} case ${i}: output names`);
      for (const name of Object.keys(real)) {
        t.equal(sim[name]?.type, real[name].type, `${g} case ${i}: ${name} dtype`);
        t.same(sim[name]?.dims, [...real[name].dims], `${g} case ${i}: ${name} dims ${real[name].dims.join("x")}`);
        t.equal(sim[name]?.data.length, real[name].dims.reduce((a, b) => a * b, 1), `${g} case ${i}: ${name} element count`);
      }
    }
  }
});

t.test("sovits_encp frames follow the contract's formula (independent of both implementations)", async (t) => {
  // T50' = 2·T25 at speed 1, else ⌊2·T25/speed⌋+1 in decimal; Tm = ⌊1.875·T50'⌋.
  t.equal(encpFrames(10, 1), Math.floor(1.875 * 20));
  t.equal(encpFrames(10, 0.8), Math.floor(1.875 * 26)); // 20/0.8 = 25 exactly → 26, not 25
  t.equal(encpFrames(23, 1.25), Math.floor(1.875 * (Math.floor(46 / 1.25) + 1)));
});

t.test("outputs are deterministic and valid for their consumers", async (t) => {
  for (const g of GRAPH_NAMES) {
    const feeds = cases(g)[0];
    const a = costModelOutputs(g, feeds, manifest);
    const b = costModelOutputs(g, feeds, manifest);
    for (const name of Object.keys(a)) {
      t.same(Buffer.from(a[name].data.buffer), Buffer.from(b[name].data.buffer), `${g}.${name} is the same on a second call`);
      if (a[name].data instanceof Float32Array) t.ok((a[name].data as Float32Array).every(Number.isFinite), `${g}.${name} is finite`);
    }
    t.equal(callTimeMs(g, feeds), callTimeMs(g, feeds), `${g}: same time on a second call`);
  }
  const prompts = costModelOutputs("vq_extract", cases("vq_extract")[0], manifest).prompts.data as BigInt64Array;
  t.ok(prompts.every((v) => v >= 0n && v < BigInt(d.vq.codebook)), "semantic ids are below the codebook size");
  const audio = costModelOutputs("vocoder", cases("vocoder")[0], manifest).audio.data as Float32Array;
  t.ok(audio.every((v) => Math.abs(v) <= 0.1), "audio stays within ±0.1");
  for (const g of ["t2s_prefill", "t2s_step"] as const) {
    const out = costModelOutputs(g, cases(g)[0], manifest);
    const logits = out.logits.data as Float32Array;
    const rows = out.logits.dims[0];
    for (let r = 0; r < rows; r++) {
      const row = logits.subarray(r * d.t2s.vocab, (r + 1) * d.t2s.vocab);
      let best = 0;
      for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
      t.not(best, d.t2s.eos, `${g} row ${r}: EOS is not the best token`);
    }
  }
  // Different rows (tokens, positions) get different logits, so decoding is not one repeated token.
  const step = cases("t2s_step")[0];
  const logits = costModelOutputs("t2s_step", step, manifest).logits.data as Float32Array;
  t.notSame(logits.subarray(0, d.t2s.vocab), logits.subarray(d.t2s.vocab, 2 * d.t2s.vocab), "rows differ");
});

t.test("the time function grows strictly with batch and with length", async (t) => {
  const step = (b: number, kc: number) => ({ token: { dims: [b, 1] }, pos: { dims: [b] }, past_mask: { dims: [b, kc] } });
  const dit = (b: number, tt: number) => ({ x: { dims: [b, 100, tt] } });
  const voc = (b: number, tm: number) => ({ x: { dims: [b, 100, tm] } });
  const grid = [1, 2, 4, 8, 16, 64];
  const lengths = [16, 100, 467, 934];
  for (const [name, fn] of [
    ["t2s_step", (b: number, l: number) => callTimeMs("t2s_step", step(b, l))],
    ["cfm_dit", (b: number, l: number) => callTimeMs("cfm_dit", dit(b, l))],
    ["vocoder", (b: number, l: number) => callTimeMs("vocoder", voc(b, l))],
  ] as const) {
    for (const l of lengths)
      for (let i = 1; i < grid.length; i++) t.ok(fn(grid[i], l) > fn(grid[i - 1], l), `${name}: batch ${grid[i]} > batch ${grid[i - 1]} at length ${l}`);
    for (const b of grid)
      for (let i = 1; i < lengths.length; i++) t.ok(fn(b, lengths[i]) > fn(b, lengths[i - 1]), `${name}: length ${lengths[i]} > ${lengths[i - 1]} at batch ${b}`);
  }
  // Batching pays per row where a floor dominates (the GPT step), and the DiT is compute-bound.
  t.ok(callTimeMs("t2s_step", step(16, 512)) < 2 * callTimeMs("t2s_step", step(1, 512)), "GPT: batch 16 costs < 2× batch 1");
  t.ok(callTimeMs("cfm_dit", dit(8, 934)) > 4 * callTimeMs("cfm_dit", dit(1, 934)), "DiT: batch 8 costs > 4× batch 1 at a full window (compute-bound)");
  // Lengths the other graphs depend on.
  const len = (g: GraphName, a: Record<string, { dims: number[] }>, b: Record<string, { dims: number[] }>) => t.ok(callTimeMs(g, b) > callTimeMs(g, a), `${g} grows with length`);
  len("t2s_prefill", { x: { dims: [1, 10, 64] }, prompts: { dims: [1, 50] } }, { x: { dims: [1, 10, 64] }, prompts: { dims: [1, 51] } });
  len("t2s_encoder", { ref_seq: { dims: [1, 5] }, text_seq: { dims: [1, 9] } }, { ref_seq: { dims: [1, 5] }, text_seq: { dims: [1, 10] } });
  len("cnhubert", { ref_audio_16k: { dims: [1, 60000] } }, { ref_audio_16k: { dims: [1, 60320] } });
  len("vq_extract", { ssl_content: { dims: [1, 64, 100] } }, { ssl_content: { dims: [1, 64, 101] } });
  len("ge_encoder", { refer: { dims: [1, 1025, 100] } }, { refer: { dims: [1, 1025, 101] } });
  len("sovits_encp", { codes: { dims: [1, 1, 100] } }, { codes: { dims: [1, 1, 101] } });
  t.throws(() => callTimeMs("cfm_dit", {}), /needs input x/);
});

t.test("a simulated device runs one call at a time, each for callTimeMs × dilation", async (t) => {
  const slept: number[] = [];
  const releases: (() => void)[] = [];
  const dev = new SimDevice({ manifest, dilation: 3, sleep: (ms) => new Promise<void>((r) => (slept.push(ms), releases.push(r))) });
  const a = cases("vocoder")[0];
  const b = cases("cfm_dit")[0];
  const pa = dev.run("vocoder", a);
  const pb = dev.run("cfm_dit", b);
  t.equal(dev.queued, 2);
  await new Promise((r) => setImmediate(r));
  t.same(slept, [3 * callTimeMs("vocoder", a)], "only the first call is waiting on the device");
  releases[0]();
  const outA = await pa;
  t.same(outA.audio.dims, costModelOutputs("vocoder", a, manifest).audio.dims);
  await new Promise((r) => setImmediate(r));
  t.same(slept, [3 * callTimeMs("vocoder", a), 3 * callTimeMs("cfm_dit", b)], "the second starts when the first ends");
  releases[1]();
  await pb;
  t.equal(dev.stats.calls, 2);
  t.equal(dev.queued, 0);
  t.ok(Math.abs(dev.stats.busyMs - callTimeMs("vocoder", a) - callTimeMs("cfm_dit", b)) < 1e-9, "busy time is the simulated time");
  await t.rejects(dev.run("vocoder", {}), /needs input x/, "bad inputs reject");
});

t.test("the real GPT engine on the cost model stops every request at the length policy", async (t) => {
  const device = new SimDevice({ manifest, dilation: 0 });
  const sessions = costModelSessions(["t2s_encoder", "t2s_prefill", "t2s_step"], device) as unknown as GptSessions;
  const engine = new GptEngine(sessions, manifest, { maxRows: 4, initialCapacity: 32 });
  const reqs = Array.from({ length: 6 }, (_, i) => ({
    id: `r${i}`,
    promptIds: Int32Array.from({ length: 4 + i }, (_, k) => (k * 5 + i) % 700),
    textIds: Int32Array.from({ length: 3 + 4 * i }, (_, k) => (k * 7 + i) % 700),
    prompts: Int32Array.from({ length: 20 + i }, (_, k) => (k * 11) % 1024),
    sampling: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35 },
    seed: 100 + i,
  }));
  for (const r of reqs) engine.add(r);
  const done = new Map<string, GptResult>();
  for (let it = 0; !engine.idle && it < 10_000; it++) for (const r of await engine.step()) done.set(r.id, r);
  t.equal(done.size, reqs.length, "every request finished");
  for (const r of reqs) {
    const res = done.get(r.id)!;
    t.equal(res.stoppedBy, "length-policy", `${r.id} stopped by the length policy`);
    t.equal(res.tokens.length, tokenLimit(manifest, r.textIds.length).limit, `${r.id}: ⌈2·Nt⌉ tokens, at least 12`);
    t.ok(res.tokens.every((x) => x >= 0 && x < d.t2s.eos), `${r.id}: semantic ids in range`);
  }
  t.ok(Math.max(...[...done.values()].map((r) => r.maxBatch)) > 1, "rows were batched");
  t.ok(device.stats.calls > 0, "the engine's calls went to the simulated device");
});

t.test("GSV_BACKEND selects the backend of OrtPool; the default stays onnx", async (t) => {
  t.equal(ortBackend({}), "onnx");
  t.equal(ortBackend({ GSV_BACKEND: "onnx" }), "onnx");
  t.equal(ortBackend({ GSV_BACKEND: "cost-model" }), "cost-model");
  t.throws(() => ortBackend({ GSV_BACKEND: "tensorrt" }), /GSV_BACKEND must be/);
  t.equal(costDilation({}), 1);
  t.equal(costDilation({ GSV_COST_DILATION: "0" }), 0);
  t.throws(() => costDilation({ GSV_COST_DILATION: "-2" }), /GSV_COST_DILATION/);

  const saved = { b: process.env.GSV_BACKEND, d: process.env.GSV_COST_DILATION };
  process.env.GSV_BACKEND = "cost-model";
  process.env.GSV_COST_DILATION = "0";
  t.teardown(() => {
    if (saved.b === undefined) delete process.env.GSV_BACKEND;
    else process.env.GSV_BACKEND = saved.b;
    if (saved.d === undefined) delete process.env.GSV_COST_DILATION;
    else process.env.GSV_COST_DILATION = saved.d;
  });
  const pool = await OrtPool.create({ modelDir: dir, manifest, graphs: ["vocoder", "cfm_dit"], workers: 2, intraOpThreads: 1 });
  t.equal(pool.size, 2, "two simulated devices");
  const feeds = cases("vocoder")[0];
  const out = await pool.run("vocoder", feeds);
  const real = await runReal("vocoder", feeds);
  t.same(out.audio.dims, [...real.audio.dims], "pool output has the real shape");
  await t.rejects(pool.run("cfm_dit", {}), { code: "MODEL_ERROR" }, "a bad call is a MODEL_ERROR, as from onnxruntime");
  await pool.close();
});
