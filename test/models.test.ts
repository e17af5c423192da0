/**
 * The generated `tiny` model set keeps the model contract (docs/models.md): it is deterministic, every
 * graph has the documented shapes, the KV cache of t2s_step reproduces t2s_prefill, batch rows are
 * independent, and loadManifest rejects altered files. Expected values are computed here from the
 * contract's formulas, not taken from the generator.
 */
import t from "tap";
import { createHash } from "node:crypto";
import { copyFile, mkdtemp, readFile, readdir, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { generateModelSet, main as genModelsMain } from "../tools/gen-models.js";
import { GRAPH_NAMES, ManifestError, loadManifest, type GraphName, type Manifest } from "../shared/manifest.js";

const SEED = 20261125;

const root = await mkdtemp(join(tmpdir(), "gsv-models-test-"));
t.teardown(() => rm(root, { recursive: true, force: true }));

const dirA = join(root, "a");
const manifest: Manifest = await generateModelSet({ out: dirA, preset: "tiny", seed: SEED });
const dims = manifest.dims;
const H = dims.t2s.hidden;
const Hh = dims.t2s.heads;
const Dh = dims.t2s.headDim;
const L = dims.t2s.layers;

// ---- helpers ------------------------------------------------------------------------------------------

/** A small deterministic PRNG for test inputs (independent of the generator's). */
function lcg(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}
const rand = lcg(12345);
const randF32 = (n: number, lo: number, hi: number): Float32Array => Float32Array.from({ length: n }, () => lo + (hi - lo) * rand());
const randInts = (n: number, max: number): number[] => Array.from({ length: n }, () => Math.floor(rand() * max));

const f32 = (data: Float32Array, shape: number[]): ort.Tensor => new ort.Tensor("float32", data, shape);
const i64 = (data: readonly number[], shape: number[]): ort.Tensor => new ort.Tensor("int64", BigInt64Array.from(data, (v) => BigInt(v)), shape);

const sessions = new Map<string, ort.InferenceSession>();
async function session(name: GraphName, dir = dirA): Promise<ort.InferenceSession> {
  const key = `${dir}/${name}`;
  let s = sessions.get(key);
  if (!s) {
    s = await ort.InferenceSession.create(join(dir, manifest.graphs[name].file), { intraOpNumThreads: 1 });
    sessions.set(key, s);
  }
  return s;
}
t.teardown(async () => {
  for (const s of sessions.values()) await s.release();
});

async function run(name: GraphName, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  return (await session(name)).run(feeds);
}

function floats(x: ort.Tensor): Float32Array {
  return x.data as Float32Array;
}
function ints(x: ort.Tensor): number[] {
  return Array.from(x.data as BigInt64Array, Number);
}
function allFinite(x: ort.Tensor): boolean {
  return floats(x).every(Number.isFinite);
}
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
/** Standard deviation, to tell "non-degenerate" from constant output. */
function std(a: Float32Array): number {
  let s = 0;
  let s2 = 0;
  for (const v of a) {
    s += v;
    s2 += v * v;
  }
  const m = s / a.length;
  return Math.sqrt(Math.max(0, s2 / a.length - m * m));
}

async function sha256(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

/** Runs t2s_encoder on random phones and bert features. */
async function encode(nr: number, nt: number): Promise<ort.Tensor> {
  const out = await run("t2s_encoder", {
    ref_seq: i64(randInts(nr, dims.t2s.phoneVocab), [1, nr]),
    text_seq: i64(randInts(nt, dims.t2s.phoneVocab), [1, nt]),
    ref_bert: f32(randF32(nr * dims.t2s.bertDim, -1, 1), [nr, dims.t2s.bertDim]),
    text_bert: f32(randF32(nt * dims.t2s.bertDim, -1, 1), [nt, dims.t2s.bertDim]),
  });
  return out.x;
}

async function prefill(x: ort.Tensor, prompts: readonly number[]): Promise<Record<string, ort.Tensor>> {
  return run("t2s_prefill", { x, prompts: i64(prompts, [1, prompts.length]) });
}

/** Copies rows [0, n) of a prefill K or V [1,Hh,n,Dh] into cache slots `slots[p]` of [Hh,Kc,Dh] at `dst`. */
function copyIntoCache(src: Float32Array, n: number, dst: Float32Array, dstOffset: number, kc: number, slots: readonly number[]): void {
  for (let h = 0; h < Hh; h++) {
    for (let p = 0; p < n; p++) {
      const from = (h * n + p) * Dh;
      const to = dstOffset + (h * kc + slots[p]) * Dh;
      dst.set(src.subarray(from, from + Dh), to);
    }
  }
}

/** One row's cache: K/V per layer [Hh,Kc,Dh] full of garbage, the live slots, and its mask. */
interface RowCache {
  k: Float32Array[];
  v: Float32Array[];
  mask: Float32Array;
  slots: number[];
  free: number[];
}

/** A cache of capacity kc holding prefill K/V in shuffled slots; every other slot holds garbage. */
function cacheFromPrefill(pre: Record<string, ort.Tensor>, n: number, kc: number, seed: number): RowCache {
  const r = lcg(seed);
  const order = Array.from({ length: kc }, (_, i) => i);
  for (let i = kc - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const slots = order.slice(0, n);
  const free = order.slice(n);
  const garbage = (): Float32Array => Float32Array.from({ length: Hh * kc * Dh }, () => (r() - 0.5) * 200);
  const k: Float32Array[] = [];
  const v: Float32Array[] = [];
  for (let l = 0; l < L; l++) {
    const kl = garbage();
    const vl = garbage();
    copyIntoCache(floats(pre[`k_${l}`]), n, kl, 0, kc, slots);
    copyIntoCache(floats(pre[`v_${l}`]), n, vl, 0, kc, slots);
    k.push(kl);
    v.push(vl);
  }
  const mask = new Float32Array(kc);
  for (const s of slots) mask[s] = 1;
  return { k, v, mask, slots, free };
}

/** Writes a step's new K/V (row `b` of [B,Hh,1,Dh]) into the row's next free slot. */
function appendToCache(c: RowCache, out: Record<string, ort.Tensor>, b: number, kc: number): void {
  const slot = c.free.shift()!;
  for (let l = 0; l < L; l++) {
    const nk = floats(out[`k_${l}`]).subarray(b * Hh * Dh, (b + 1) * Hh * Dh);
    const nv = floats(out[`v_${l}`]).subarray(b * Hh * Dh, (b + 1) * Hh * Dh);
    copyIntoCache(nk, 1, c.k[l], 0, kc, [slot]);
    copyIntoCache(nv, 1, c.v[l], 0, kc, [slot]);
  }
  c.mask[slot] = 1;
  c.slots.push(slot);
}

/** Runs t2s_step on rows (each with its cache of capacity kc). */
async function step(rows: { cache: RowCache; token: number; pos: number }[], kc: number): Promise<Record<string, ort.Tensor>> {
  const B = rows.length;
  const feeds: Record<string, ort.Tensor> = {
    token: i64(rows.map((r) => r.token), [B, 1]),
    pos: i64(rows.map((r) => r.pos), [B]),
  };
  const mask = new Float32Array(B * kc);
  rows.forEach((r, b) => mask.set(r.cache.mask, b * kc));
  feeds.past_mask = f32(mask, [B, kc]);
  for (let l = 0; l < L; l++) {
    const k = new Float32Array(B * Hh * kc * Dh);
    const v = new Float32Array(B * Hh * kc * Dh);
    rows.forEach((r, b) => {
      k.set(r.cache.k[l], b * Hh * kc * Dh);
      v.set(r.cache.v[l], b * Hh * kc * Dh);
    });
    feeds[`past_k_${l}`] = f32(k, [B, Hh, kc, Dh]);
    feeds[`past_v_${l}`] = f32(v, [B, Hh, kc, Dh]);
  }
  return run("t2s_step", feeds);
}

/** Row b, position p of a K/V [1,Hh,n,Dh] or [B,Hh,1,Dh] tensor, as [Hh·Dh]. */
function kvAt(x: ort.Tensor, b: number, p: number): Float32Array {
  const [, hh, n, dh] = x.dims as number[];
  const out = new Float32Array(hh * dh);
  for (let h = 0; h < hh; h++) out.set(floats(x).subarray(((b * hh + h) * n + p) * dh, ((b * hh + h) * n + p + 1) * dh), h * dh);
  return out;
}

// ---- 1. determinism ------------------------------------------------------------------------------------

t.test("same seed gives byte-identical files, another seed differs", async (t) => {
  const dirB = join(root, "b");
  const dirC = join(root, "c");
  const mB = await generateModelSet({ out: dirB, preset: "tiny", seed: SEED });
  const mC = await generateModelSet({ out: dirC, preset: "tiny", seed: SEED + 1 });
  t.same(Object.keys(manifest.graphs).sort(), [...GRAPH_NAMES].sort(), "the manifest names the nine graphs");
  for (const name of GRAPH_NAMES) {
    const file = manifest.graphs[name].file;
    const a = await sha256(join(dirA, file));
    t.equal(a, manifest.graphs[name].sha256, `${name}: manifest sha256 is the file's`);
    t.equal((await stat(join(dirA, file))).size, manifest.graphs[name].bytes, `${name}: manifest bytes is the file's size`);
    t.equal(await sha256(join(dirB, file)), a, `${name}: same seed, same bytes`);
    t.not(await sha256(join(dirC, mC.graphs[name].file)), a, `${name}: another seed, other bytes`);
  }
  t.equal(await readFile(join(dirB, "manifest.json"), "utf8"), await readFile(join(dirA, "manifest.json"), "utf8"), "same manifest");
  t.equal(mB.seed, SEED);
  t.equal(mC.seed, SEED + 1);
  t.same(
    (await readdir(dirA)).sort(),
    ["manifest.json", ...GRAPH_NAMES.map((n) => manifest.graphs[n].file)].sort(),
    "no temporary files are left",
  );
});

t.test("manifest follows docs/models.md", async (t) => {
  const m = loadManifest(dirA);
  t.equal(m.format, "gsv-model-set");
  t.equal(m.contract, 1);
  t.equal(m.name, "tiny");
  t.equal(m.kind, "generated");
  t.equal(m.symbols, "v2");
  t.same(m.dims.t2s, { layers: 2, heads: 4, headDim: 16, hidden: 64, ffn: 128, vocab: 1025, eos: 1024, phoneVocab: 732, bertDim: 1024 });
  t.same(m.dims.ssl, { dim: 64, sampleRate: 16000, hop: 320, window: 400 });
  t.same(m.dims.vq, { codebook: 1024 });
  t.same(m.dims.ge, { dim: 32 });
  t.same(m.dims.fea, { dim: 32 });
  t.same(m.dims.mel, { bands: 100, sampleRate: 24000, nFft: 1024, hop: 256, win: 1024, fmin: 0, fmax: null, logMin: -12, logMax: 2 });
  t.same(m.dims.spec, { sampleRate: 32000, nFft: 2048, hop: 640, win: 2048, bins: 1025, usedBins: 704 });
  t.same(m.dims.cfm, { maxFrames: 934, maxPromptFrames: 468, melPerToken: 3.75 });
  t.same(m.dims.vocoder, { upsample: 256, sampleRate: 24000 });
  t.same(m.lengthPolicy, { tokensPerPhone: 2, minTokens: 12 });
});

t.test("graph inputs and outputs are named as the contract says", async (t) => {
  const expected: Record<GraphName, [string[], string[]]> = {
    cnhubert: [["ref_audio_16k", "ref_lengths"], ["ssl_content"]],
    vq_extract: [["ssl_content"], ["prompts"]],
    ge_encoder: [["refer", "refer_lengths"], ["ge"]],
    t2s_encoder: [["ref_seq", "text_seq", "ref_bert", "text_bert"], ["x"]],
    t2s_prefill: [["x", "prompts"], ["logits", ...Array.from({ length: L }, (_, i) => [`k_${i}`, `v_${i}`]).flat()]],
    t2s_step: [
      ["token", "pos", ...Array.from({ length: L }, (_, i) => [`past_k_${i}`, `past_v_${i}`]).flat(), "past_mask"],
      ["logits", ...Array.from({ length: L }, (_, i) => [`k_${i}`, `v_${i}`]).flat()],
    ],
    sovits_encp: [["codes", "text", "ge", "speed"], ["fea"]],
    cfm_dit: [["x", "cond", "x_lens", "time", "dt_base_bootstrap", "text"], ["output"]],
    vocoder: [["x"], ["audio"]],
  };
  for (const name of GRAPH_NAMES) {
    const s = await session(name);
    t.same([...s.inputNames].sort(), [...expected[name][0]].sort(), `${name} inputs`);
    t.same([...s.outputNames].sort(), [...expected[name][1]].sort(), `${name} outputs`);
  }
});

t.test("graphs that share weights carry identical values", async (t) => {
  const initializers = async (name: GraphName): Promise<Map<string, { dims: number[]; raw: Buffer }>> => {
    const model = onnxProto.onnx.ModelProto.decode(await readFile(join(dirA, manifest.graphs[name].file)));
    t.equal(Number(model.irVersion), 8, `${name}: IR version 8`);
    t.same(model.opsetImport.map((o) => [o.domain ?? "", Number(o.version)]), [["", 17]], `${name}: opset 17`);
    return new Map(model.graph!.initializer!.map((i) => [i.name!, { dims: (i.dims ?? []).map(Number), raw: Buffer.from(i.rawData!) }]));
  };
  const prefillW = await initializers("t2s_prefill");
  const stepW = await initializers("t2s_step");
  const shared = [...stepW.keys()].filter((k) => /^(h\.layers|ar_audio|ar_predict)/.test(k));
  t.ok(shared.length >= 2 + L * 12, `t2s_step has the GPT weights (${shared.length})`);
  for (const k of shared) t.ok(prefillW.get(k)?.raw.equals(stepW.get(k)!.raw), `${k} is the same in t2s_prefill and t2s_step`);

  // vq_extract keeps the codebook transposed ([D,K]); sovits_encp looks codes up in it ([K,D])
  const vq = (await initializers("vq_extract")).get("codebook_t")!;
  const cb = (await initializers("sovits_encp")).get("quantizer.codebook")!;
  const K = dims.vq.codebook;
  const D = dims.ssl.dim;
  t.same(cb.dims, [K, D]);
  t.same(vq.dims, [D, K]);
  const a = new Float32Array(cb.raw.buffer.slice(cb.raw.byteOffset, cb.raw.byteOffset + cb.raw.length));
  const b = new Float32Array(vq.raw.buffer.slice(vq.raw.byteOffset, vq.raw.byteOffset + vq.raw.length));
  let same = true;
  for (let k = 0; k < K && same; k++) for (let j = 0; j < D; j++) if (a[k * D + j] !== b[j * K + k]) same = false;
  t.ok(same, "vq_extract and sovits_encp use the same codebook");
});

// ---- 2. shapes ------------------------------------------------------------------------------------------

t.test("voice preparation: cnhubert, vq_extract, ge_encoder", async (t) => {
  for (const S of [400, 719, 720, 16000 + 9600 + 123, 3 * 16000 + 9600]) {
    const audio = Float32Array.from({ length: S }, (_, i) => 0.5 * Math.sin(i * 0.031) + 0.2 * (rand() - 0.5));
    const { ssl_content } = await run("cnhubert", { ref_audio_16k: f32(audio, [1, S]), ref_lengths: i64([S], [1]) });
    const T50 = Math.floor((S - 400) / 320) + 1;
    t.same(ssl_content.dims, [1, dims.ssl.dim, T50], `cnhubert S16=${S} gives T50=${T50}`);
    t.ok(allFinite(ssl_content), "finite");
    t.ok(std(floats(ssl_content)) > 0.1, "not constant");

    if (T50 < 2) continue; // a reference is 3 to 10 s long; Conv k2 s2 needs two frames
    const { prompts } = await run("vq_extract", { ssl_content });
    const T25 = Math.floor(T50 / 2);
    t.equal(prompts.type, "int64");
    t.same(prompts.dims, [1, T25], `vq_extract T50=${T50} gives T25=${T25}`);
    t.ok(ints(prompts).every((c) => Number.isInteger(c) && c >= 0 && c < dims.vq.codebook), "codes within the codebook");
  }
  const long = Float32Array.from({ length: 5 * 16000 + 9600 }, (_, i) => 0.5 * Math.sin(i * 0.017 + 0.3 * Math.sin(i * 0.0011)));
  const { ssl_content } = await run("cnhubert", { ref_audio_16k: f32(long, [1, long.length]), ref_lengths: i64([long.length], [1]) });
  const codes = ints((await run("vq_extract", { ssl_content })).prompts);
  t.ok(new Set(codes).size > 5, `codes vary (${new Set(codes).size} distinct of ${codes.length})`);

  for (const Ts of [1, 57, 300]) {
    const { ge } = await run("ge_encoder", { refer: f32(randF32(dims.spec.bins * Ts, 0, 4), [1, dims.spec.bins, Ts]), refer_lengths: i64([Ts], [1]) });
    t.same(ge.dims, [1, dims.ge.dim, 1], `ge_encoder Ts=${Ts}`);
    t.ok(allFinite(ge), "finite");
  }
  // bins from usedBins on are ignored
  const Ts = 40;
  const refer = randF32(dims.spec.bins * Ts, 0, 4);
  const noisy = refer.slice();
  for (let i = dims.spec.usedBins * Ts; i < noisy.length; i++) noisy[i] = 1000 * rand();
  const a = await run("ge_encoder", { refer: f32(refer, [1, dims.spec.bins, Ts]), refer_lengths: i64([Ts], [1]) });
  const b = await run("ge_encoder", { refer: f32(noisy, [1, dims.spec.bins, Ts]), refer_lengths: i64([Ts], [1]) });
  t.equal(maxAbsDiff(floats(a.ge), floats(b.ge)), 0, "ge_encoder uses only bins 0..usedBins−1");
});

t.test("t2s_encoder: N = Nr + Nt, interleaved sinusoidal text positions", async (t) => {
  for (const [nr, nt] of [[1, 1], [5, 8], [17, 40]]) {
    const x = await encode(nr, nt);
    t.same(x.dims, [1, nr + nt, H], `Nr=${nr} Nt=${nt}`);
    t.ok(allFinite(x), "finite");
  }
  // Same phone and same bert row everywhere: x[p] − x[0] = alpha·(pe[p] − pe[0]), positions from 0 over ref+text.
  const nr = 3;
  const nt = 9;
  const n = nr + nt;
  const row = randF32(dims.t2s.bertDim, -1, 1);
  const bert = (k: number): Float32Array => {
    const b = new Float32Array(k * dims.t2s.bertDim);
    for (let i = 0; i < k; i++) b.set(row, i * dims.t2s.bertDim);
    return b;
  };
  const { x } = await run("t2s_encoder", {
    ref_seq: i64(new Array<number>(nr).fill(7), [1, nr]),
    text_seq: i64(new Array<number>(nt).fill(7), [1, nt]),
    ref_bert: f32(bert(nr), [nr, dims.t2s.bertDim]),
    text_bert: f32(bert(nt), [nt, dims.t2s.bertDim]),
  });
  const pe = (p: number, j: number): number => {
    const i = Math.floor(j / 2);
    const a = p * Math.pow(10000, (-2 * i) / H);
    return j % 2 === 0 ? Math.sin(a) : Math.cos(a);
  };
  const xs = floats(x);
  const alpha = (xs[1 * H + 0] - xs[0]) / (pe(1, 0) - pe(0, 0));
  t.ok(Number.isFinite(alpha) && Math.abs(alpha) > 0.1, `alpha ${alpha}`);
  let worst = 0;
  for (let p = 1; p < n; p++) {
    for (let j = 0; j < H; j++) worst = Math.max(worst, Math.abs(xs[p * H + j] - xs[j] - alpha * (pe(p, j) - pe(0, j))));
  }
  t.ok(worst < 1e-4, `positions follow pe[p,2i]=sin, pe[p,2i+1]=cos (worst error ${worst})`);
});

t.test("t2s_prefill shapes", async (t) => {
  const x = await encode(4, 6);
  for (const T25 of [1, 9]) {
    const out = await prefill(x, randInts(T25, dims.vq.codebook));
    t.same(out.logits.dims, [1, dims.t2s.vocab], `logits T25=${T25}`);
    t.ok(allFinite(out.logits) && std(floats(out.logits)) > 0.1, "finite, not constant");
    for (let l = 0; l < L; l++) {
      t.same(out[`k_${l}`].dims, [1, Hh, 10 + T25, Dh], `k_${l}`);
      t.same(out[`v_${l}`].dims, [1, Hh, 10 + T25, Dh], `v_${l}`);
      t.ok(allFinite(out[`k_${l}`]) && allFinite(out[`v_${l}`]), "finite");
    }
  }
});

t.test("sovits_encp frame counts", async (t) => {
  const { ge } = await run("ge_encoder", { refer: f32(randF32(dims.spec.bins * 30, 0, 4), [1, dims.spec.bins, 30]), refer_lengths: i64([30], [1]) });
  // speed as an exact fraction num/den, so T50' = ⌊2·T25·den/num⌋ + 1 is computed exactly
  const speeds: [number, number, number][] = [
    [1, 1, 1],
    [0.8, 4, 5],
    [1.25, 5, 4],
  ];
  for (const T25 of [1, 2, 10, 37, 64]) {
    const codes = i64(randInts(T25, dims.vq.codebook), [1, 1, T25]);
    const text = i64(randInts(11, dims.t2s.phoneVocab), [1, 11]);
    for (const [speed, num, den] of speeds) {
      const T50p = speed === 1 ? 2 * T25 : Math.floor((2 * T25 * den) / num) + 1;
      const Tm = Math.floor((15 * T50p) / 8); // ⌊1.875·T50'⌋
      const { fea } = await run("sovits_encp", { codes, text, ge, speed: f32(Float32Array.of(speed), [1]) });
      t.same(fea.dims, [1, dims.fea.dim, Tm], `T25=${T25} speed=${speed}: Tm=${Tm}`);
      t.ok(allFinite(fea), "finite");
    }
  }
});

t.test("cfm_dit and vocoder shapes", async (t) => {
  const F = dims.fea.dim;
  const M = dims.mel.bands;
  for (const [B, T] of [[1, 1], [1, 50], [3, 17]]) {
    const { output } = await run("cfm_dit", {
      x: f32(randF32(B * M * T, -2, 2), [B, M, T]),
      cond: f32(randF32(B * M * T, -2, 2), [B, M, T]),
      x_lens: i64(new Array<number>(B).fill(T), [B]),
      time: f32(randF32(B, 0, 1), [B]),
      dt_base_bootstrap: f32(randF32(B, 0, 0.1), [B]),
      text: f32(randF32(B * F * T, -1, 1), [B, F, T]),
    });
    t.same(output.dims, [B, T, M], `cfm_dit B=${B} T=${T}`);
    t.ok(allFinite(output), "finite");
  }
  for (const [B, Tm] of [[1, 1], [2, 7], [1, 50]]) {
    const { audio } = await run("vocoder", { x: f32(randF32(B * M * Tm, -12, 2), [B, M, Tm]) });
    t.same(audio.dims, [B, 1, 256 * Tm], `vocoder B=${B} Tm=${Tm}`);
    t.ok(allFinite(audio), "finite");
    t.ok(floats(audio).every((v) => v >= -1 && v <= 1), "within [−1, 1]");
    if (Tm > 1) t.ok(std(floats(audio)) > 0.01, "not silent");
  }
});

// ---- 3. KV cache -------------------------------------------------------------------------------------------

t.test("t2s_step continues t2s_prefill through a caller-owned cache", async (t) => {
  const nr = 5;
  const nt = 8;
  const N = nr + nt;
  const x = await encode(nr, nt);
  const T = 12;
  const prompts = randInts(T, dims.vq.codebook);
  const full = await prefill(x, prompts);
  const part = await prefill(x, prompts.slice(0, T - 1));
  const kc = N + T + 7;
  const cache = cacheFromPrefill(part, N + T - 1, kc, 99);

  const s1 = await step([{ cache, token: prompts[T - 1], pos: T - 1 }], kc);
  t.same(s1.logits.dims, [1, dims.t2s.vocab]);
  const d1 = maxAbsDiff(floats(s1.logits), floats(full.logits));
  t.ok(d1 < 1e-4, `step logits equal prefill's last logits (max diff ${d1})`);
  for (let l = 0; l < L; l++) {
    t.same(s1[`k_${l}`].dims, [1, Hh, 1, Dh]);
    const dk = maxAbsDiff(kvAt(s1[`k_${l}`], 0, 0), kvAt(full[`k_${l}`], 0, N + T - 1));
    const dv = maxAbsDiff(kvAt(s1[`v_${l}`], 0, 0), kvAt(full[`v_${l}`], 0, N + T - 1));
    t.ok(dk < 1e-4 && dv < 1e-4, `layer ${l}: step K/V equal prefill's at the new position (${dk}, ${dv})`);
  }

  // other garbage in the dead slots changes nothing
  const other = cacheFromPrefill(part, N + T - 1, kc, 99);
  for (let l = 0; l < L; l++) {
    for (const s of other.free) {
      for (let h = 0; h < Hh; h++) {
        other.k[l].fill(-1234.5, (h * kc + s) * Dh, (h * kc + s + 1) * Dh);
        other.v[l].fill(987.25, (h * kc + s) * Dh, (h * kc + s + 1) * Dh);
      }
    }
  }
  const s1b = await step([{ cache: other, token: prompts[T - 1], pos: T - 1 }], kc);
  t.ok(maxAbsDiff(floats(s1b.logits), floats(s1.logits)) < 1e-5, "dead slots are ignored");

  // a second step: append the new K/V, feed the next token at position T
  appendToCache(cache, s1, 0, kc);
  const next = 777;
  const s2 = await step([{ cache, token: next, pos: T }], kc);
  const full2 = await prefill(x, [...prompts, next]);
  const d2 = maxAbsDiff(floats(s2.logits), floats(full2.logits));
  t.ok(d2 < 1e-4, `second step equals prefill of T+1 tokens (max diff ${d2})`);

  // and a third, with the cache at capacity minus the unused slots
  appendToCache(cache, s2, 0, kc);
  const s3 = await step([{ cache, token: 3, pos: T + 1 }], kc);
  const full3 = await prefill(x, [...prompts, next, 3]);
  const d3 = maxAbsDiff(floats(s3.logits), floats(full3.logits));
  t.ok(d3 < 1e-4, `third step equals prefill of T+2 tokens (max diff ${d3})`);
});

// ---- 4. batch independence ------------------------------------------------------------------------------

t.test("t2s_step rows are independent", async (t) => {
  const xa = await encode(3, 7);
  const xb = await encode(6, 12);
  const pa = randInts(5, dims.vq.codebook);
  const pb = randInts(14, dims.vq.codebook);
  const na = 10 + 5;
  const nb = 18 + 14;
  const kc = 40;
  const ca = cacheFromPrefill(await prefill(xa, pa), na, kc, 1);
  const cb = cacheFromPrefill(await prefill(xb, pb), nb, kc, 2);
  const rowA = { cache: ca, token: 42, pos: 5 };
  const rowB = { cache: cb, token: 900, pos: 14 };
  const both = await step([rowA, rowB], kc);
  t.same(both.logits.dims, [2, dims.t2s.vocab]);
  const alone = [await step([rowA], kc), await step([rowB], kc)];
  // the same rows with other garbage in the dead slots
  const fresh = [cacheFromPrefill(await prefill(xa, pa), na, kc, 1), cacheFromPrefill(await prefill(xb, pb), nb, kc, 2)];
  for (const c of fresh) for (let l = 0; l < L; l++) for (const s of c.free) for (let h = 0; h < Hh; h++) c.k[l].fill(55, (h * kc + s) * Dh, (h * kc + s + 1) * Dh);
  for (let b = 0; b < 2; b++) {
    const V = dims.t2s.vocab;
    const d = maxAbsDiff(floats(both.logits).subarray(b * V, (b + 1) * V), floats(alone[b].logits));
    t.ok(d < 1e-5, `row ${b}: batched logits equal the row alone (max diff ${d})`);
    for (let l = 0; l < L; l++) {
      const dk = maxAbsDiff(kvAt(both[`k_${l}`], b, 0), kvAt(alone[b][`k_${l}`], 0, 0));
      t.ok(dk < 1e-5, `row ${b} layer ${l}: same new K`);
    }
  }
  const swapped = await step([{ ...rowB, cache: fresh[1] }, { ...rowA, cache: fresh[0] }], kc);
  const V = dims.t2s.vocab;
  t.ok(maxAbsDiff(floats(swapped.logits).subarray(V, 2 * V), floats(alone[0].logits)) < 1e-5, "row order and garbage do not matter");
});

t.test("t2s_step: dead slots may hold any finite value, however large", async (t) => {
  const x = await encode(4, 9);
  const prompts = randInts(6, dims.vq.codebook);
  const n = 13 + 6;
  const kc = 32;
  const clean = cacheFromPrefill(await prefill(x, prompts), n, kc, 7);
  const wild = cacheFromPrefill(await prefill(x, prompts), n, kc, 7);
  // scores of such slots overflow to ±Infinity or NaN; their weight must still be exactly 0
  const extremes = [3.4e38, -3.4e38, 1e30, -1e30];
  for (let l = 0; l < L; l++) {
    for (const s of wild.free) {
      for (let h = 0; h < Hh; h++) {
        for (let j = 0; j < Dh; j++) {
          wild.k[l][(h * kc + s) * Dh + j] = extremes[(j + h) % 4];
          wild.v[l][(h * kc + s) * Dh + j] = extremes[(j + h + 1) % 4];
        }
      }
    }
  }
  const a = await step([{ cache: clean, token: 5, pos: 6 }], kc);
  const b = await step([{ cache: wild, token: 5, pos: 6 }], kc);
  t.ok(allFinite(b.logits), "finite logits");
  const d = maxAbsDiff(floats(a.logits), floats(b.logits));
  t.ok(d < 1e-5, `same logits as with tame garbage (max diff ${d})`);
});

t.test("t2s_step reads each cache input once, in place", async (t) => {
  // The step is bound by memory traffic: a Transpose, Concat, Reshape or Slice of a cache would copy
  // all of it every step. Each past_k_i / past_v_i must feed exactly one node, a MatMul.
  const model = onnxProto.onnx.ModelProto.decode(await readFile(join(dirA, manifest.graphs.t2s_step.file)));
  const nodes = model.graph!.node!;
  for (let l = 0; l < L; l++) {
    for (const name of [`past_k_${l}`, `past_v_${l}`]) {
      const users = nodes.filter((n) => n.input!.includes(name)).map((n) => n.opType);
      t.same(users, ["MatMul"], `${name} is read by one MatMul`);
    }
  }
  const ops = new Set(nodes.map((n) => n.opType));
  t.notOk(ops.has("Transpose"), "no Transpose (heads are split and merged by Reshape)");
  t.notOk(ops.has("Identity"), "outputs are written by the nodes that compute them");
});

t.test("cfm_dit rows are independent and padding never leaks", async (t) => {
  const F = dims.fea.dim;
  const M = dims.mel.bands;
  const T = 40;
  const lens = [40, 23];
  const rows = lens.map((len) => ({
    x: randF32(M * T, -2, 2),
    cond: randF32(M * T, -2, 2),
    text: randF32(F * T, -1, 1),
    time: rand(),
    dt: 0.05 * rand(),
    len,
  }));
  // garbage in the padded frames
  const junk = (a: Float32Array, ch: number, len: number): Float32Array => {
    const out = a.slice();
    for (let c = 0; c < ch; c++) for (let f = len; f < T; f++) out[c * T + f] = 1e4 * (rand() - 0.5);
    return out;
  };
  const cat = (parts: Float32Array[]): Float32Array => {
    const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  };
  const both = await run("cfm_dit", {
    x: f32(cat(rows.map((r) => junk(r.x, M, r.len))), [2, M, T]),
    cond: f32(cat(rows.map((r) => junk(r.cond, M, r.len))), [2, M, T]),
    text: f32(cat(rows.map((r) => junk(r.text, F, r.len))), [2, F, T]),
    x_lens: i64(lens, [2]),
    time: f32(Float32Array.from(rows.map((r) => r.time)), [2]),
    dt_base_bootstrap: f32(Float32Array.from(rows.map((r) => r.dt)), [2]),
  });
  t.same(both.output.dims, [2, T, M]);
  /** channels-first [ch,T] trimmed to [ch,len] */
  const trim = (a: Float32Array, ch: number, len: number): Float32Array => {
    const out = new Float32Array(ch * len);
    for (let c = 0; c < ch; c++) out.set(a.subarray(c * T, c * T + len), c * len);
    return out;
  };
  for (let b = 0; b < 2; b++) {
    const r = rows[b];
    const alone = await run("cfm_dit", {
      x: f32(trim(r.x, M, r.len), [1, M, r.len]),
      cond: f32(trim(r.cond, M, r.len), [1, M, r.len]),
      text: f32(trim(r.text, F, r.len), [1, F, r.len]),
      x_lens: i64([r.len], [1]),
      time: f32(Float32Array.of(r.time), [1]),
      dt_base_bootstrap: f32(Float32Array.of(r.dt), [1]),
    });
    const batched = floats(both.output).subarray(b * T * M, b * T * M + r.len * M); // [len, M] of row b
    const d = maxAbsDiff(batched, floats(alone.output));
    t.ok(d < 1e-4, `row ${b} (x_len ${r.len}): batched equals alone on its valid frames (max diff ${d})`);
  }
});

// ---- 5. manifest verification ----------------------------------------------------------------------------------

t.test("loadManifest verifies the graph files", async (t) => {
  const dir = join(root, "tamper");
  await generateModelSet({ out: dir, preset: "tiny", seed: SEED });
  t.ok(loadManifest(dir), "an intact set loads");

  const victim = join(dir, manifest.graphs.vocoder.file);
  const original = await readFile(victim);
  const altered = Buffer.from(original);
  altered[altered.length - 5] ^= 0x01;
  await writeFile(victim, altered);
  t.throws(() => loadManifest(dir), { name: "ManifestError", message: /vocoder\.onnx.*sha256/ }, "one flipped bit is caught");
  try {
    loadManifest(dir);
  } catch (err) {
    t.ok(err instanceof ManifestError && err.file === victim, "the error names the file");
  }
  t.ok(loadManifest(dir, { verify: false }), "verify: false skips the check");
  t.ok(loadManifest(dir, { graphs: ["cnhubert", "t2s_step"] }), "verifying other graphs only passes");

  await writeFile(victim, original.subarray(0, original.length - 1));
  t.throws(() => loadManifest(dir), { message: /vocoder\.onnx/ }, "a truncated file is caught");
  await unlink(victim);
  t.throws(() => loadManifest(dir), { message: /vocoder\.onnx.*missing/ }, "a missing file is caught");
  await writeFile(victim, original);
  t.ok(loadManifest(dir), "restored");

  const mpath = join(dir, "manifest.json");
  const json = JSON.parse(await readFile(mpath, "utf8")) as Record<string, unknown>;
  await writeFile(mpath, JSON.stringify({ ...json, contract: 2 }));
  t.throws(() => loadManifest(dir), { message: /contract/ }, "another contract version is refused");
  await writeFile(mpath, JSON.stringify({ ...json, graphs: { ...(json.graphs as object), vocoder: { file: "../x.onnx", sha256: "0".repeat(64), bytes: 1 } } }));
  t.throws(() => loadManifest(dir), { message: /graphs\.vocoder\.file/ }, "a path outside the set is refused");
  const { vocoder: _dropped, ...eight } = json.graphs as Record<string, unknown>;
  await writeFile(mpath, JSON.stringify({ ...json, graphs: eight }));
  t.throws(() => loadManifest(dir), { message: /graphs/ }, "a manifest lacking a graph is refused");
  await writeFile(mpath, "{ not json");
  t.throws(() => loadManifest(dir), { message: /not valid JSON/ }, "broken JSON is refused");
  await unlink(mpath);
  t.throws(() => loadManifest(dir), { message: /manifest\.json not found/ }, "a missing manifest is caught");
});

t.test("gen-models --if-missing leaves an intact set alone and repairs a broken one", async (t) => {
  const dir = join(root, "cli");
  const log = console.log;
  console.log = () => {};
  try {
    t.equal(await genModelsMain(["--out", dir, "--if-missing"]), 0, "generates when absent");
    const m = loadManifest(dir);
    t.equal(m.seed, SEED, "default seed");
    t.equal(m.graphs.cfm_dit.sha256, manifest.graphs.cfm_dit.sha256, "same files as generateModelSet");
    const before = (await stat(join(dir, "cfm_dit.onnx"))).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    t.equal(await genModelsMain(["--out", dir, "--if-missing"]), 0);
    t.equal((await stat(join(dir, "cfm_dit.onnx"))).mtimeMs, before, "an intact set is not rewritten");
    await copyFile(join(dir, "vq_extract.onnx"), join(dir, "cfm_dit.onnx"));
    t.equal(await genModelsMain(["--out", dir, "--if-missing"]), 0);
    t.ok(loadManifest(dir), "a damaged set is regenerated");
    const err = console.error;
    console.error = () => {};
    try {
      t.equal(await genModelsMain(["--preset", "huge"]), 2, "an unknown preset is a usage error");
    } finally {
      console.error = err;
    }
  } finally {
    console.log = log;
  }
});
