/**
 * The cost-model backend: a stand-in for onnxruntime that runs no graph. With GSV_BACKEND=cost-model a
 * call returns outputs with the names, dtypes and shapes of docs/models.md (derived from the inputs as
 * the real graphs derive them; values deterministic and valid for the consumers) after waiting the time
 * the call would take on a GPU: `callTimeMs(graph, feeds)` × GSV_COST_DILATION. The wait is a timer, so a
 * simulated device costs no CPU and many replicas fit on one small machine.
 *
 * The time function models full-size GPT-SoVITS v3 (GPT 24 × 512, DiT 22 × 1024, BigVGAN v2 112 M) on an
 * A100-class GPU run through onnxruntime's CUDA provider (fp16, no CUDA graphs), whatever the dims of the
 * model set that gives the shapes. Each term and the figure it is fitted to are in docs/performance.md
 * ("Beyond one machine"). Every term is floor + work / rate, so time grows strictly with batch and length.
 */
import type { GraphName, Manifest } from "./manifest.js";
import type { TensorLike } from "./tensor.js";

export type Backend = "onnx" | "cost-model";

/** GSV_BACKEND: "onnx" (default) runs the graphs; "cost-model" simulates them. Anything else is refused. */
export function ortBackend(env: NodeJS.ProcessEnv = process.env): Backend {
  const v = env.GSV_BACKEND ?? "";
  if (v === "" || v === "onnx") return "onnx";
  if (v === "cost-model") return "cost-model";
  throw new Error(`GSV_BACKEND must be "onnx" or "cost-model", got ${JSON.stringify(v)}`);
}

/** GSV_COST_DILATION: wall ms per simulated ms (default 1). 10 runs the simulated GPUs ten times slower. */
export function costDilation(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.GSV_COST_DILATION;
  if (v === undefined || v === "") return 1;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`GSV_COST_DILATION must be a number >= 0, got ${JSON.stringify(v)}`);
  return n;
}

/**
 * Constants of the reference device and models. Sources (docs/performance.md, "Beyond one machine"):
 * - stepFloorMs: batch-1 decode step of the GPT-SoVITS T2S under onnxruntime on a GPU, 172.4 tok/s
 *   (GPT-SoVITS_minimal_inference README, RTX 2080 Ti fp16) = 5.8 ms; launch-bound, so nearly the same on
 *   any recent GPU (upstream issues report 55–400 it/s on RTX 3090 Ti/4080/4090 depending on the host CPU).
 * - layerFloorMs: that floor per transformer layer (5.8 / 24), used for the other graphs' kernel launches.
 * - ditTflops: achieved dense fp16 rate of the F5-TTS DiT (the v3 CFM backbone) in PyTorch, RTF 0.1467
 *   at 16 NFE with CFG on an L20 (F5-TTS runtime README) = 15.8 TFLOPS, scaled by peak to an A100
 *   (312 / 119.5) = 41 TFLOPS; used for every compute-bound graph.
 * - ditGflopAt934: one DiT pass over a full 934-frame window, 345 GFLOP linear + 79 GFLOP attention
 *   (team reference dit-cpu-cost.md).
 * - vocoderRealtime: BigVGAN v2 24 kHz 100-band on an A100 in PyTorch, 70–82× real time (BigVGAN README).
 * - hbmGBps: A100 40 GB HBM2 bandwidth; gptWeightBytes / kvBytesPerToken: 77.6 M params and 24 × 2 × 512
 *   values per cached position, fp16 (team reference peers.md §0, §4.1).
 */
export const REFERENCE = {
  device: "A100-class GPU, onnxruntime CUDA provider, fp16",
  stepFloorMs: 5.8,
  layerFloorMs: 5.8 / 24,
  gptLayers: 24,
  ditBlocks: 22,
  hubertLayers: 12,
  ditTflops: 41,
  ditLinearGflopAt934: 345,
  ditAttentionGflopAt934: 79,
  vocoderRealtime: 76,
  vocoderFloorMs: 1,
  melFps: 93.75,
  hbmGBps: 1555,
  gptParams: 77.6e6,
  gptWeightBytes: 77.6e6 * 2,
  kvBytesPerToken: 24 * 2 * 512 * 2,
  hubertParams: 94.7e6,
  encpParams: 25e6,
} as const;

type Dims = { dims: readonly number[] };
type FeedShapes = Record<string, Dims | undefined>;

function dim(feeds: FeedShapes, name: string, i: number, graph: string): number {
  const t = feeds[name];
  if (!t) throw new Error(`cost model: ${graph} needs input ${name}`);
  const v = t.dims[i];
  if (!Number.isInteger(v) || v < 0) throw new Error(`cost model: ${graph} input ${name} has no dimension ${i}`);
  return v;
}

const R = REFERENCE;
const computeMs = (flop: number) => flop / (R.ditTflops * 1e12) * 1e3;

/** DiT FLOP of one row over T frames: linear layers grow with T, attention with T². */
export function ditFlop(t: number): number {
  const r = t / 934;
  return (R.ditLinearGflopAt934 * r + R.ditAttentionGflopAt934 * r * r) * 1e9;
}

/**
 * Simulated GPU time of one call, in ms (before dilation): f(graph, batch, length) as read from the
 * shapes of the inputs. Strictly increasing in batch and in every length the graph depends on.
 */
export function callTimeMs(graph: GraphName, feeds: FeedShapes): number {
  switch (graph) {
    case "t2s_step": {
      // Launch-bound floor + one read of the weights and of every row's cache (all Kc slots are read).
      const b = dim(feeds, "token", 0, graph);
      const kc = dim(feeds, "past_mask", 1, graph);
      return R.stepFloorMs + ((R.gptWeightBytes + b * kc * R.kvBytesPerToken) / (R.hbmGBps * 1e9)) * 1e3;
    }
    case "t2s_prefill": {
      const n = dim(feeds, "x", 1, graph) + dim(feeds, "prompts", 1, graph);
      return R.stepFloorMs + computeMs(2 * R.gptParams * n);
    }
    case "t2s_encoder": {
      const n = dim(feeds, "ref_seq", 1, graph) + dim(feeds, "text_seq", 1, graph);
      return 2 * R.layerFloorMs + computeMs(2 * 1024 * 512 * n);
    }
    case "cnhubert": {
      // a batch is padded to its longest reference: every row costs the longest one's frames
      const b = dim(feeds, "ref_audio_16k", 0, graph);
      const s = dim(feeds, "ref_audio_16k", 1, graph);
      const t50 = Math.max(1, Math.floor((s - 400) / 320) + 1);
      return (R.hubertLayers + 7) * R.layerFloorMs + computeMs(2 * R.hubertParams * t50 * b);
    }
    case "vq_extract":
      return R.layerFloorMs + computeMs(2 * 768 * 768 * 2 * dim(feeds, "ssl_content", 2, graph) * dim(feeds, "ssl_content", 0, graph));
    case "ge_encoder":
      return 4 * R.layerFloorMs + computeMs(2 * 2e6 * dim(feeds, "refer", 2, graph) * dim(feeds, "refer", 0, graph));
    case "sovits_encp": {
      const t25 = dim(feeds, "codes", 2, graph);
      return 8 * R.layerFloorMs + computeMs(2 * R.encpParams * 2 * t25);
    }
    case "cfm_dit": {
      const b = dim(feeds, "x", 0, graph);
      const t = dim(feeds, "x", 2, graph);
      return R.ditBlocks * R.layerFloorMs + computeMs(b * ditFlop(t));
    }
    case "vocoder": {
      const b = dim(feeds, "x", 0, graph);
      const tm = dim(feeds, "x", 2, graph);
      return R.vocoderFloorMs + (b * tm * 1e3) / (R.melFps * R.vocoderRealtime);
    }
  }
}

// ─── outputs ────────────────────────────────────────────────────────────────────────────────────

/** A fixed table of values in [-1, 1) (xorshift32 from a constant seed); outputs are cyclic reads of it. */
const TABLE_SIZE = 4099;
const TABLE = (() => {
  const t = new Float32Array(TABLE_SIZE * 2);
  let s = 0x9e3779b9;
  for (let i = 0; i < TABLE_SIZE; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    t[i] = ((s >>> 0) / 2 ** 32) * 2 - 1;
  }
  t.copyWithin(TABLE_SIZE, 0, TABLE_SIZE); // doubled, so any window of TABLE_SIZE is contiguous
  return t;
})();

/** A 32-bit mix of integers (murmur3 finaliser), for seeds derived from inputs. */
export function mix(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x | 0), 0x01000193);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
  }
  return h >>> 0;
}

/** The table times a scale, made once per scale (outputs are copies of it: no per-element work). */
const scaledTables = new Map<number, Float32Array>([[1, TABLE]]);
function pattern(n: number, seed: number, scale = 1): Float32Array {
  let table = scaledTables.get(scale);
  if (!table) scaledTables.set(scale, (table = TABLE.map((v) => v * scale)));
  const out = new Float32Array(n);
  let off = seed % TABLE_SIZE;
  for (let i = 0; i < n; i += TABLE_SIZE) {
    const len = Math.min(TABLE_SIZE, n - i);
    out.set(table.subarray(off, off + len), i);
    off = (off + 7) % TABLE_SIZE;
  }
  return out;
}

const f32 = (data: Float32Array, dims: number[]): TensorLike => ({ type: "float32", data, dims });

function concatRows(rows: readonly Float32Array[]): Float32Array {
  if (rows.length === 1) return rows[0];
  const out = new Float32Array(rows.reduce((n, r) => n + r.length, 0));
  let at = 0;
  for (const r of rows) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

function firstInt(feeds: Record<string, { data?: unknown } | undefined>, name: string): number {
  const d = feeds[name]?.data;
  if (d instanceof BigInt64Array) return d.length ? Number(d[0]) : 0;
  if (d instanceof Float32Array) return d.length ? Math.round(d[0] * 1000) : 0;
  return 0;
}

type Feeds = Record<string, (Dims & { data?: unknown }) | undefined>;

/** Frames out of sovits_encp, as the graph computes them (docs/models.md, "Speed"). */
export function encpFrames(t25: number, speed: number): number {
  const t50 = 2 * t25;
  const s = Math.fround(speed);
  const t50p = s === 1 ? t50 : Math.floor(t50 / s + 1e-3) + 1;
  return Math.floor((t50p * 15) / 8);
}

/**
 * The outputs a graph of this model set would return for these inputs: the right names, dtypes and
 * shapes, deterministic values. GPT logits never make EOS the best token, so decoding ends by the set's
 * length policy; semantic ids are below the codebook size; audio stays within ±0.1.
 */
export function costModelOutputs(graph: GraphName, feeds: Feeds, manifest: Manifest): Record<string, TensorLike> {
  const d = manifest.dims;
  const t = d.t2s;
  switch (graph) {
    case "cnhubert": {
      // batched as the generator's contract: [B,S16] padded, each row's own length in ref_lengths
      const b = dim(feeds, "ref_audio_16k", 0, graph);
      const s = dim(feeds, "ref_audio_16k", 1, graph);
      const t50 = Math.floor((s - 400) / 320) + 1;
      const lengths = feeds.ref_lengths?.data as BigInt64Array | undefined;
      const rows = Array.from({ length: b }, (_, r) => pattern(d.ssl.dim * t50, mix(1, lengths ? Number(lengths[r]) : s)));
      return { ssl_content: f32(concatRows(rows), [b, d.ssl.dim, t50]) };
    }
    case "vq_extract": {
      const b = dim(feeds, "ssl_content", 0, graph);
      const t25 = Math.floor(dim(feeds, "ssl_content", 2, graph) / 2);
      const ids = new BigInt64Array(b * t25);
      for (let i = 0; i < b * t25; i++) ids[i] = BigInt(mix(2, i % t25) % d.vq.codebook);
      return { prompts: { type: "int64", data: ids, dims: [b, t25] } };
    }
    case "ge_encoder": {
      const b = dim(feeds, "refer", 0, graph);
      const lengths = feeds.refer_lengths?.data as BigInt64Array | undefined;
      const rows = Array.from({ length: b }, (_, r) => pattern(d.ge.dim, mix(3, lengths ? Number(lengths[r]) : dim(feeds, "refer", 2, graph)), 0.1));
      return { ge: f32(concatRows(rows), [b, d.ge.dim, 1]) };
    }
    case "t2s_encoder": {
      const n = dim(feeds, "ref_seq", 1, graph) + dim(feeds, "text_seq", 1, graph);
      return { x: f32(pattern(n * t.hidden, mix(4, n)), [1, n, t.hidden]) };
    }
    case "t2s_prefill": {
      const n = dim(feeds, "x", 1, graph);
      const t25 = dim(feeds, "prompts", 1, graph);
      const out: Record<string, TensorLike> = { logits: f32(logitsRows(1, (r) => mix(5, n, t25, r), t), [1, t.vocab]) };
      const len = n + t25;
      for (let l = 0; l < t.layers; l++) {
        out[`k_${l}`] = f32(pattern(t.heads * len * t.headDim, mix(6, l, len), 0.5), [1, t.heads, len, t.headDim]);
        out[`v_${l}`] = f32(pattern(t.heads * len * t.headDim, mix(7, l, len), 0.5), [1, t.heads, len, t.headDim]);
      }
      return out;
    }
    case "t2s_step": {
      const b = dim(feeds, "token", 0, graph);
      const tok = feeds.token?.data;
      const pos = feeds.pos?.data;
      const at = (a: unknown, i: number) => (a instanceof BigInt64Array ? Number(a[i]) : 0);
      const out: Record<string, TensorLike> = { logits: f32(logitsRows(b, (r) => mix(8, at(tok, r), at(pos, r)), t), [b, t.vocab]) };
      for (let l = 0; l < t.layers; l++) {
        out[`k_${l}`] = f32(pattern(b * t.hidden, mix(9, l, b), 0.5), [b, t.heads, 1, t.headDim]);
        out[`v_${l}`] = f32(pattern(b * t.hidden, mix(10, l, b), 0.5), [b, t.heads, 1, t.headDim]);
      }
      return out;
    }
    case "sovits_encp": {
      const t25 = dim(feeds, "codes", 2, graph);
      const sp = feeds.speed?.data;
      const speed = sp instanceof Float32Array && sp.length ? sp[0] : 1;
      const tm = encpFrames(t25, speed);
      return { fea: f32(pattern(d.fea.dim * tm, mix(11, t25, firstInt(feeds, "codes"))), [1, d.fea.dim, tm]) };
    }
    case "cfm_dit": {
      const b = dim(feeds, "x", 0, graph);
      const tt = dim(feeds, "x", 2, graph);
      return { output: f32(pattern(b * tt * d.mel.bands, mix(12, b, tt, firstInt(feeds, "time")), 0.5), [b, tt, d.mel.bands]) };
    }
    case "vocoder": {
      const b = dim(feeds, "x", 0, graph);
      const tm = dim(feeds, "x", 2, graph);
      const n = d.vocoder.upsample * tm;
      return { audio: f32(pattern(b * n, mix(13, b, tm), 0.1), [b, 1, n]) };
    }
  }
}

/** B rows of logits from the table, each row's EOS logit far below the rest. */
function logitsRows(b: number, seed: (row: number) => number, t: Manifest["dims"]["t2s"]): Float32Array {
  const out = new Float32Array(b * t.vocab);
  for (let r = 0; r < b; r++) {
    out.set(pattern(t.vocab, seed(r), 3), r * t.vocab);
    out[r * t.vocab + t.eos] = -1e4;
  }
  return out;
}

// ─── the simulated device ───────────────────────────────────────────────────────────────────────

export interface SimDeviceOptions {
  manifest: Manifest;
  /** Wall ms per simulated ms (GSV_COST_DILATION). */
  dilation: number;
  /** How to wait; a timer by default. */
  sleep?: (ms: number) => Promise<void>;
}

const timerSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * One simulated GPU: runs one call at a time, in arrival order, each taking callTimeMs × dilation of
 * wall time spent in a timer. Counts its calls and busy time.
 */
export class SimDevice {
  readonly #o: Required<SimDeviceOptions>;
  #tail: Promise<unknown> = Promise.resolve();
  #queued = 0;
  readonly stats = { calls: 0, busyMs: 0 };

  constructor(opts: SimDeviceOptions) {
    this.#o = { sleep: timerSleep, ...opts };
  }

  /** Calls waiting or running on this device. */
  get queued(): number {
    return this.#queued;
  }

  run(graph: GraphName, feeds: Feeds): Promise<Record<string, TensorLike>> {
    let ms: number;
    let out: Record<string, TensorLike>;
    try {
      ms = callTimeMs(graph, feeds);
      out = costModelOutputs(graph, feeds, this.#o.manifest);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#queued++;
    const done = this.#tail.then(async () => {
      const wall = ms * this.#o.dilation;
      if (wall > 0) await this.#o.sleep(wall);
      this.stats.calls++;
      this.stats.busyMs += ms;
      this.#queued--;
      return out;
    });
    this.#tail = done;
    return done;
  }
}

/** Cost-model stand-ins for onnxruntime sessions (the GPT engine calls `session.run(feeds)`), sharing one device. */
export function costModelSessions<G extends GraphName>(graphs: readonly G[], device: SimDevice): Record<G, { run(feeds: Feeds): Promise<Record<string, TensorLike>> }> {
  const out = {} as Record<G, { run(feeds: Feeds): Promise<Record<string, TensorLike>> }>;
  for (const g of graphs) out[g] = { run: (feeds) => device.run(g, feeds) };
  return out;
}
