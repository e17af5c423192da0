/**
 * Generates a model set with the topology of GPT-SoVITS v3 and random weights (docs/models.md,
 * "The generated sets"). The `tiny` set is what the tests and a fresh checkout run; `bench` has the
 * GPT at full size, for timing, and is only made on demand.
 *
 *   node dist/tools/gen-models.js [--out DIR] [--preset tiny|bench] [--seed N] [--if-missing]
 *
 * The same preset and seed always give byte-identical files.
 */
import { fromRoot } from "../shared/paths.js";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  GRAPH_NAMES,
  MANIFEST_FILE,
  loadManifest,
  parseManifest,
  type GraphEntry,
  type GraphName,
  type Manifest,
  type ModelDims,
} from "../shared/manifest.js";
import {
  GraphBuilder,
  MASK_VALUE,
  ParamFactory,
  Rng,
  type AttentionP,
  type LayerNormP,
  type LinearP,
  type Tensor,
} from "./onnx-builder.js";

export const PRESETS = ["tiny", "bench"] as const;
export type PresetName = (typeof PRESETS)[number];
export const DEFAULT_SEED = 20261125;

/** Sizes inside the graphs that the contract does not fix (not in the manifest). */
interface Internals {
  hubert: { channels: number; layers: number; heads: number; ffn: number; posConvKernel: number; posConvGroups: number };
  ge: { hidden: number; heads: number };
  encp: { hidden: number; heads: number; ffn: number; bridge: number; wnHidden: number; wnLayers: number; wnKernel: number };
  cfm: { dim: number; heads: number; blocks: number; ffn: number; freqDim: number; convKernel: number; convGroups: number };
  vocoder: { channels: [number, number, number, number, number] };
}

interface Preset {
  description: string;
  dims: ModelDims;
  internals: Internals;
}

const FIXED_DIMS = {
  mel: { bands: 100, sampleRate: 24000, nFft: 1024, hop: 256, win: 1024, fmin: 0, fmax: null, logMin: -12, logMax: 2 },
  spec: { sampleRate: 32000, nFft: 2048, hop: 640, win: 2048, bins: 1025, usedBins: 704 },
  cfm: { maxFrames: 934, maxPromptFrames: 468, melPerToken: 3.75 },
  vocoder: { upsample: 256, sampleRate: 24000 },
  ssl: { sampleRate: 16000, hop: 320, window: 400 },
} as const;

function presetOf(name: PresetName): Preset {
  if (name === "tiny") {
    return {
      description:
        "Random weights in the GPT-SoVITS v3 graph topology at small dims (tools/gen-models.ts, preset tiny), " +
        "for tests and development: every graph runs and keeps the contract, and the speech is noise.",
      dims: {
        t2s: { layers: 2, heads: 4, headDim: 16, hidden: 64, ffn: 128, vocab: 1025, eos: 1024, phoneVocab: 732, bertDim: 1024 },
        ssl: { dim: 64, ...FIXED_DIMS.ssl },
        vq: { codebook: 1024 },
        ge: { dim: 32 },
        fea: { dim: 32 },
        mel: { ...FIXED_DIMS.mel },
        spec: { ...FIXED_DIMS.spec },
        cfm: { ...FIXED_DIMS.cfm },
        vocoder: { ...FIXED_DIMS.vocoder },
      },
      internals: {
        hubert: { channels: 32, layers: 1, heads: 4, ffn: 128, posConvKernel: 16, posConvGroups: 4 },
        ge: { hidden: 64, heads: 2 },
        encp: { hidden: 48, heads: 2, ffn: 96, bridge: 32, wnHidden: 32, wnLayers: 2, wnKernel: 5 },
        cfm: { dim: 64, heads: 4, blocks: 2, ffn: 128, freqDim: 64, convKernel: 31, convGroups: 16 },
        vocoder: { channels: [32, 16, 8, 8, 4] },
      },
    };
  }
  return {
    description:
      "Random weights in the GPT-SoVITS v3 graph topology (tools/gen-models.ts, preset bench): the GPT at full " +
      "size (24 layers, 16 heads, 512 wide), the CFM DiT reduced to 256 wide and 4 blocks, the other graphs " +
      "modest. For timing the pipeline; the speech is noise.",
    dims: {
      t2s: { layers: 24, heads: 16, headDim: 32, hidden: 512, ffn: 2048, vocab: 1025, eos: 1024, phoneVocab: 732, bertDim: 1024 },
      ssl: { dim: 768, ...FIXED_DIMS.ssl },
      vq: { codebook: 1024 },
      ge: { dim: 512 },
      fea: { dim: 512 },
      mel: { ...FIXED_DIMS.mel },
      spec: { ...FIXED_DIMS.spec },
      cfm: { ...FIXED_DIMS.cfm },
      vocoder: { ...FIXED_DIMS.vocoder },
    },
    internals: {
      hubert: { channels: 128, layers: 2, heads: 8, ffn: 1024, posConvKernel: 32, posConvGroups: 16 },
      ge: { hidden: 128, heads: 2 },
      encp: { hidden: 192, heads: 2, ffn: 768, bridge: 512, wnHidden: 192, wnLayers: 4, wnKernel: 5 },
      cfm: { dim: 256, heads: 4, blocks: 4, ffn: 512, freqDim: 256, convKernel: 31, convGroups: 16 },
      vocoder: { channels: [128, 64, 32, 16, 8] },
    },
  };
}

const LENGTH_POLICY = { tokensPerPhone: 2, minTokens: 12 };

// ---- shared pieces ---------------------------------------------------------------------------------

/** Post-norm residual: LN(x + delta). */
function postNorm(g: GraphBuilder, x: string, delta: string, ln: LayerNormP): string {
  return g.layerNorm(g.add(x, delta), ln);
}

interface FfnP {
  up: LinearP;
  down: LinearP;
}
function ffnParams(P: ParamFactory, name: string, dim: number, hidden: number, gain = Math.SQRT2): FfnP {
  return { up: P.linear(`${name}.up`, dim, hidden, { gain }), down: P.linear(`${name}.down`, hidden, dim) };
}
function ffn(g: GraphBuilder, x: string, p: FfnP, act: "relu" | "gelu"): string {
  const h = g.linear(x, p.up);
  return g.linear(act === "relu" ? g.relu(h) : g.gelu(h), p.down);
}

/** Post-norm transformer layer (attention, then FFN) over [B,T,dim]. */
interface EncoderLayerP {
  attn: AttentionP;
  ln1: LayerNormP;
  ffn: FfnP;
  ln2: LayerNormP;
}
function encoderLayerParams(P: ParamFactory, name: string, dim: number, heads: number, ffnDim: number): EncoderLayerP {
  return {
    attn: P.attention(`${name}.attn`, dim, heads),
    ln1: P.layerNorm(`${name}.ln1`, dim),
    ffn: ffnParams(P, `${name}.ffn`, dim, ffnDim),
    ln2: P.layerNorm(`${name}.ln2`, dim),
  };
}
function encoderLayer(g: GraphBuilder, x: string, p: EncoderLayerP, act: "relu" | "gelu", allowed?: string): string {
  x = postNorm(g, x, g.selfAttention(x, p.attn, allowed), p.ln1);
  return postNorm(g, x, ffn(g, x, p.ffn, act), p.ln2);
}

/** Post-norm conv FFN block over [B,T,dim] (VITS attentions.Encoder's FFN: conv k3, relu, conv k3). */
function convFfnBlock(g: GraphBuilder, P: ParamFactory, name: string, x: string, dim: number, hidden: number): string {
  const c1 = P.conv1d(`${name}.conv1`, dim, hidden, 3, { pad: 1, gain: Math.SQRT2 });
  const c2 = P.conv1d(`${name}.conv2`, hidden, dim, 3, { pad: 1 });
  const ln = P.layerNorm(`${name}.ln`, dim);
  const y = g.conv1d(g.relu(g.conv1d(g.swapTC(x), c1)), c2);
  return postNorm(g, x, g.swapTC(y), ln);
}

// ---- cnhubert ---------------------------------------------------------------------------------------

function buildCnhubert(P: ParamFactory, d: ModelDims, c: Internals["hubert"]): GraphBuilder {
  const g = new GraphBuilder("cnhubert");
  const D = d.ssl.dim;
  // A batch of references padded to the longest; ref_lengths[b] is row b's own sample count. Every frame a
  // row has alone is computed from that row's samples only, so it equals the frame computed alone.
  const audio = g.input("ref_audio_16k", "f32", ["B", "S16"]);
  const lengths = g.input("ref_lengths", "i64", ["B"]);
  // wav2vec2/HuBERT feature extractor: receptive field 400, stride 320
  const kernels = [10, 3, 3, 3, 3, 2, 2];
  const strides = [5, 2, 2, 2, 2, 2, 2];
  let x = g.unsqueeze(audio, [1]); // [B,1,S]
  let inC = 1;
  let len = lengths; // valid frames of x per row, [B]
  kernels.forEach((k, i) => {
    x = g.conv1d(x, P.conv1d(`fe.conv${i}`, inC, c.channels, k, { stride: strides[i], bias: false, gain: Math.SQRT2 }));
    len = g.add(g.div(g.sub(len, g.i64(k)), g.i64(strides[i])), g.i64(1)); // ⌊(n − k)/s⌋ + 1 (n ≥ k)
    if (i === 0) {
      // GroupNorm with one group per channel (InstanceNormalization alone), over each row's own frames
      const n = P.layerNorm("fe.norm0", c.channels);
      x = maskedInstanceNorm(g, x, validMask(g, x, 2, len), n, 1e-5);
    }
    x = g.gelu(x);
    inC = c.channels;
  });
  const valid = validMask(g, x, 2, len); // [B,1,T50]
  let h = g.swapTC(x); // [B,T50,C]
  h = g.layerNorm(h, P.layerNorm("fp.ln", c.channels));
  h = g.linear(h, P.linear("fp.proj", c.channels, D));
  // convolutional relative position embedding (SamePad drops the last frame of the even kernel); it sees
  // neighbours, so a row's padding frames are zeroed first, as the conv's own zero padding is alone
  const pc = P.conv1d("enc.pos_conv", D, D, c.posConvKernel, { pad: c.posConvKernel / 2, groups: c.posConvGroups, gain: 0.5 });
  let p = g.conv1d(g.mul(g.swapTC(h), valid), pc);
  p = g.gelu(g.slice(p, [0], [-1], [2]));
  h = g.add(h, g.swapTC(p));
  h = g.layerNorm(h, P.layerNorm("enc.ln", D));
  const keyAllowed = g.unsqueeze(g.op("Greater", [valid, g.f32(0.5)]), [1]); // [B,1,1,T50]
  for (let i = 0; i < c.layers; i++) h = encoderLayer(g, h, encoderLayerParams(P, `enc.layer${i}`, D, c.heads, c.ffn), "gelu", keyAllowed);
  g.output(g.swapTC(h), "ssl_content", "f32", ["B", D, "T50"]);
  return g;
}

/** 1 where the frame along `axis` of x is below the row's length, else 0: f32 [B,1,T] (axis 2 of [B,C,T]). */
function validMask(g: GraphBuilder, x: string, axis: number, lengths: string): string {
  const frames = g.unsqueeze(g.arange(g.dim(x, axis)), [0]); // [1,T]
  return g.unsqueeze(g.cast(g.op("Less", [frames, g.unsqueeze(lengths, [1])]), "f32"), [1]); // [B,1,T]
}

/**
 * InstanceNormalization of x [B,C,T] over each row's valid frames only (mask [B,1,T] of 0/1). The masked
 * sums are MatMuls with the mask as a column (one read of x, no masked copy), and the affine map is folded
 * into one scale and shift per channel, so x [B,C,T] (the largest tensor of the graph) is read and
 * written as few times as possible.
 */
function maskedInstanceNorm(g: GraphBuilder, x: string, mask: string, n: LayerNormP, eps: number): string {
  const col = g.swapTC(mask); // [B,T,1]
  const count = g.op("ReduceSum", [mask, g.i64([2])], { keepdims: 1 }); // [B,1,1]
  const mean = g.div(g.matmul(x, col), count); // [B,C,1]
  const centred = g.sub(x, mean);
  const variance = g.div(g.matmul(g.mul(centred, centred), col), count);
  const C = n.g.dims[0];
  const scale = g.mul(g.reshape(g.param(n.g), [C, 1]), g.op("Reciprocal", [g.op("Sqrt", [g.add(variance, g.f32(eps))])])); // [B,C,1]
  return g.add(g.mul(centred, scale), g.reshape(g.param(n.b), [C, 1]));
}

// ---- vq_extract ---------------------------------------------------------------------------------------

function buildVqExtract(P: ParamFactory, d: ModelDims, codebook: Tensor): GraphBuilder {
  const g = new GraphBuilder("vq_extract");
  const D = d.ssl.dim;
  const K = d.vq.codebook;
  // Rows of a batch may be padded at the end: the k2 s2 conv and the nearest code are per frame pair.
  const ssl = g.input("ssl_content", "f32", ["B", D, "T50"]);
  const y = g.swapTC(g.conv1d(ssl, P.conv1d("ssl_proj", D, D, 2, { stride: 2 }))); // [B,T25,D]
  // nearest code: argmin over k of |c_k|² − 2·x·c_k (|x|² is the same for every k)
  const cT = new Float32Array(D * K);
  const norms = new Float32Array(K);
  for (let k = 0; k < K; k++) {
    let s = 0;
    for (let j = 0; j < D; j++) {
      const v = codebook.data[k * D + j];
      cT[j * K + k] = v;
      s += v * v;
    }
    norms[k] = s;
  }
  const dot = g.matmul(y, g.param({ name: "codebook_t", dims: [D, K], data: cT }));
  const dist = g.sub(g.param({ name: "codebook_norm2", dims: [K], data: norms }), g.mul(dot, g.f32(2)));
  const codes = g.op("ArgMin", [dist], { axis: -1, keepdims: 0 });
  g.output(codes, "prompts", "i64", ["B", "T25"]);
  return g;
}

// ---- ge_encoder ---------------------------------------------------------------------------------------

function buildGeEncoder(P: ParamFactory, d: ModelDims, c: Internals["ge"]): GraphBuilder {
  const g = new GraphBuilder("ge_encoder");
  const Hd = c.hidden;
  // A batch of spectrograms padded to the longest; refer_lengths[b] is row b's own frame count. Padding
  // frames are zeroed before every conv (as the conv's zero padding is alone), masked as keys and left
  // out of the mean, so each row's ge equals its ge alone.
  const refer = g.input("refer", "f32", ["B", d.spec.bins, "Ts"]);
  const lengths = g.input("refer_lengths", "i64", ["B"]);
  const valid = g.swapTC(validMask(g, refer, 2, lengths)); // [B,Ts,1]
  let x = g.swapTC(g.slice(refer, [0], [d.spec.usedBins], [1])); // [B,Ts,704]
  // MelStyleEncoder: spectral (linear, mish ×2), temporal (Conv1dGLU ×2), self-attention, fc, mean over time
  x = g.mish(g.linear(x, P.linear("spectral.0", d.spec.usedBins, Hd, { gain: 1.5 })));
  x = g.mul(g.mish(g.linear(x, P.linear("spectral.1", Hd, Hd, { gain: 1.5 }))), valid);
  for (let i = 0; i < 2; i++) {
    const y = g.conv1d(g.swapTC(x), P.conv1d(`temporal.${i}`, Hd, 2 * Hd, 5, { pad: 2 }));
    const glu = g.mul(g.slice(y, [0], [Hd], [1]), g.sigmoid(g.slice(y, [Hd], [2 * Hd], [1])));
    x = g.mul(g.add(x, g.swapTC(glu)), valid);
  }
  const keyAllowed = g.unsqueeze(g.op("Greater", [g.swapTC(valid), g.f32(0.5)]), [1]); // [B,1,1,Ts]
  x = g.add(x, g.selfAttention(x, P.attention("slf_attn", Hd, c.heads), keyAllowed));
  x = g.mul(g.linear(x, P.linear("fc", Hd, d.ge.dim)), valid);
  const count = g.op("ReduceSum", [valid, g.i64([1])], { keepdims: 0 }); // [B,1]
  const mean = g.div(g.op("ReduceSum", [x, g.i64([1])], { keepdims: 0 }), count); // [B,ge]
  g.output(g.unsqueeze(mean, [2]), "ge", "f32", ["B", d.ge.dim, 1]);
  return g;
}

// ---- t2s (GPT) -------------------------------------------------------------------------------------------

interface T2SWeights {
  phoneEmb: Tensor;
  bertProj: LinearP;
  textAlpha: Tensor;
  audioEmb: Tensor;
  audioAlpha: Tensor;
  layers: EncoderLayerP[];
  predict: LinearP;
}

function t2sWeights(P: ParamFactory, d: ModelDims): T2SWeights {
  const t = d.t2s;
  const H = t.hidden;
  const predict = P.linear("ar_predict_layer", H, t.vocab, { bias: false });
  // The EOS logit is held at 0 while the others spread around it with unit-ish variance: random weights
  // cannot decide when to stop, so generated sets stop by manifest.lengthPolicy, not by chance.
  for (let i = 0; i < H; i++) predict.w.data[i * t.vocab + t.eos] = 0;
  return {
    phoneEmb: P.embedding("ar_text_embedding", t.phoneVocab, H),
    bertProj: P.linear("bert_proj", t.bertDim, H),
    textAlpha: P.scalar("ar_text_position.alpha", 1, 0.2),
    audioEmb: P.embedding("ar_audio_embedding", t.vocab, H),
    audioAlpha: P.scalar("ar_audio_position.alpha", 1, 0.2),
    layers: Array.from({ length: t.layers }, (_, i) => encoderLayerParams(P, `h.layers.${i}`, H, t.heads, t.ffn)),
    predict,
  };
}

function buildT2sEncoder(d: ModelDims, w: T2SWeights): GraphBuilder {
  const g = new GraphBuilder("t2s_encoder");
  const t = d.t2s;
  const refSeq = g.input("ref_seq", "i64", [1, "Nr"]);
  const textSeq = g.input("text_seq", "i64", [1, "Nt"]);
  const refBert = g.input("ref_bert", "f32", ["Nr", t.bertDim]);
  const textBert = g.input("text_bert", "f32", ["Nt", t.bertDim]);
  const seq = g.concat([refSeq, textSeq], 1); // [1,N]
  const emb = g.gather(g.param(w.phoneEmb), seq); // [1,N,H]
  const bert = g.unsqueeze(g.linear(g.concat([refBert, textBert], 0), w.bertProj), [0]);
  const pos = g.cast(g.arange(g.dim(seq, 1)), "f32"); // text positions from 0
  const pe = g.mul(g.sinusoidalInterleaved(pos, 1, t.hidden), g.param(w.textAlpha));
  g.output(g.add(g.add(emb, bert), pe), "x", "f32", [1, "N", t.hidden]);
  return g;
}

function buildT2sPrefill(d: ModelDims, w: T2SWeights): GraphBuilder {
  const g = new GraphBuilder("t2s_prefill");
  const t = d.t2s;
  const x = g.input("x", "f32", [1, "N", t.hidden]);
  const prompts = g.input("prompts", "i64", [1, "T25"]);
  const posA = g.cast(g.arange(g.dim(prompts, 1)), "f32"); // audio positions from 0
  const y = g.add(g.gather(g.param(w.audioEmb), prompts), g.mul(g.sinusoidalInterleaved(posA, 1, t.hidden), g.param(w.audioAlpha)));
  let xy = g.concat([x, y], 1); // [1,M,H]

  // upstream mask: text rows see all text and no audio; audio rows see all text and audio up to themselves
  const N = g.dim(x, 1);
  const idx = g.arange(g.dim(xy, 1));
  const rows = g.unsqueeze(idx, [1]); // [M,1]
  const cols = g.unsqueeze(idx, [0]); // [1,M]
  const textCol = g.op("Less", [cols, N]);
  const audioRow = g.op("GreaterOrEqual", [rows, N]);
  const causal = g.op("LessOrEqual", [cols, rows]);
  const allowed = g.op("Or", [textCol, g.op("And", [audioRow, causal])]); // [M,M]

  const Dh = t.headDim;
  w.layers.forEach((L, i) => {
    g.scope(`layer${i}`, () => {
      const qkv = g.linear(xy, L.attn.qkv);
      const q = g.splitHeads(g.slice(qkv, [0], [t.hidden], [-1]), t.heads, Dh);
      const k = g.splitHeads(g.slice(qkv, [t.hidden], [2 * t.hidden], [-1]), t.heads, Dh);
      const v = g.splitHeads(g.slice(qkv, [2 * t.hidden], [3 * t.hidden], [-1]), t.heads, Dh);
      g.output(k, `k_${i}`, "f32", [1, t.heads, "N+T25", Dh], { direct: true });
      g.output(v, `v_${i}`, "f32", [1, t.heads, "N+T25", Dh], { direct: true });
      const a = g.linear(g.mergeHeads(g.sdpa(q, k, v, Dh, allowed)), L.attn.o);
      xy = postNorm(g, xy, a, L.ln1);
      xy = postNorm(g, xy, ffn(g, xy, L.ffn, "relu"), L.ln2);
    });
  });
  const last = g.slice(xy, [-1], [null], [1]); // [1,1,H]
  g.output(g.reshape(g.linear(last, w.predict), [0, -1]), "logits", "f32", [1, t.vocab], { direct: true });
  return g;
}

/**
 * One decode step for B rows. Shaped for a CPU where the step is bound by memory traffic (the weights,
 * then the caches) and, past that, by the count of small ops:
 * - The hidden state is 2-D [B,H] (the step has one position per row), so every projection is one Gemm
 *   with its bias (the FFN's first one a FusedGemm with its ReLU) and splitting or merging heads is a
 *   Reshape: [B,H] and [B,Hh,1,Dh] have the same layout, so no Transpose runs anywhere.
 * - Each cache input is read once, in place, by one MatMul: scores = past_k_i · q as a column
 *   [B,Hh,Kc,1] (no transpose of the cache) and past_v_i weighted by the slot probabilities. Nothing
 *   reshapes, concatenates or copies a cache.
 * - The new token is attended separately (its score q·k by one MatMul of k_i with that column) and joins
 *   the cache slots in one softmax over Kc + 1 scores; one Split gives both parts back.
 * - k_i, v_i and logits are written by the nodes computing them (no Identity copies).
 */
function buildT2sStep(d: ModelDims, w: T2SWeights): GraphBuilder {
  const g = new GraphBuilder("t2s_step");
  const t = d.t2s;
  const Hh = t.heads;
  const Dh = t.headDim;
  const H = t.hidden;
  const token = g.input("token", "i64", ["B", 1]);
  const pos = g.input("pos", "i64", ["B"]);
  const pastK: string[] = [];
  const pastV: string[] = [];
  for (let i = 0; i < t.layers; i++) {
    pastK.push(g.input(`past_k_${i}`, "f32", ["B", Hh, "Kc", Dh]));
    pastV.push(g.input(`past_v_${i}`, "f32", ["B", Hh, "Kc", Dh]));
  }
  const pastMask = g.input("past_mask", "f32", ["B", "Kc"]);

  const pe = g.mul(g.sinusoidalInterleaved(g.cast(pos, "f32"), 1, H), g.param(w.audioAlpha)); // [B,H]
  let y = g.add(g.gather(g.param(w.audioEmb), g.reshape(token, [-1])), pe); // [B,H]
  const live = g.unsqueeze(g.op("Greater", [pastMask, g.f32(0.5)]), [1, 2]); // [B,1,1,Kc]
  const parts = g.concat([g.dim(pastMask, 1), g.i64([1])], 0); // [Kc, 1]: cache slots, new token
  const thirds = g.i64([H, H, H]);
  const scale = g.f32(1 / Math.sqrt(Dh));
  const mask = g.f32(MASK_VALUE);
  const heads = (x: string): string => g.reshape(x, [0, Hh, 1, Dh]); // [B,H] → [B,Hh,1,Dh], no copy

  w.layers.forEach((L, i) => {
    g.scope(`layer${i}`, () => {
      const [q, k, v] = g.opN("Split", [g.gemm(y, L.attn.qkv), thirds], 3, { axis: -1 }); // [B,H] each
      const kh = g.output(heads(k), `k_${i}`, "f32", ["B", Hh, 1, Dh], { direct: true });
      const vh = g.output(heads(v), `v_${i}`, "f32", ["B", Hh, 1, Dh], { direct: true });
      const qCol = g.reshape(g.mul(q, scale), [0, Hh, Dh, 1]); // [B,Hh,Dh,1]
      const past = g.reshape(g.matmul(pastK[i], qCol), [0, Hh, 1, -1]); // [B,Hh,Kc,1] → [B,Hh,1,Kc]
      const self = g.matmul(kh, qCol); // [B,Hh,1,1]
      const p = g.softmax(g.concat([g.where(live, past, mask), self], -1), -1); // one softmax over Kc + 1
      const [pPast, pSelf] = g.opN("Split", [p, parts], 2, { axis: -1 });
      const o = g.add(g.matmul(pPast, pastV[i]), g.mul(pSelf, vh)); // [B,Hh,1,Dh]
      y = g.layerNorm(g.add(y, g.gemm(g.reshape(o, [0, H]), L.attn.o)), L.ln1);
      y = g.layerNorm(g.add(y, g.gemm(g.relu(g.gemm(y, L.ffn.up)), L.ffn.down)), L.ln2);
    });
  });
  g.output(g.linear(y, w.predict), "logits", "f32", ["B", t.vocab], { direct: true });
  return g;
}

// ---- sovits_encp ------------------------------------------------------------------------------------------

function buildSovitsEncp(P: ParamFactory, d: ModelDims, c: Internals["encp"], codebook: Tensor): GraphBuilder {
  const g = new GraphBuilder("sovits_encp");
  const D = d.ssl.dim;
  const h = c.hidden;
  const codes = g.input("codes", "i64", [1, 1, "T25"]);
  const text = g.input("text", "i64", [1, "N"]);
  const ge = g.input("ge", "f32", [1, d.ge.dim, 1]);
  const speed = g.input("speed", "f32", [1]);

  // quantizer.decode, then nearest ×2 to 50 Hz
  const q = g.squeeze(g.gather(g.param(codebook), codes), [1]); // [1,T25,D]
  const q2 = g.op("Expand", [g.unsqueeze(q, [2]), g.i64([1, 1, 2, 1])]); // [1,T25,2,D]
  let x = g.reshape(q2, [0, -1, D]); // [1,T50,D]

  // TextEncoder: ssl_proj + encoder_ssl, text embedding + encoder_text, MRTE
  x = g.linear(x, P.linear("enc_p.ssl_proj", D, h));
  x = convFfnBlock(g, P, "enc_p.encoder_ssl", x, h, c.ffn);
  let tx = g.gather(g.param(P.embedding("enc_p.text_embedding", d.t2s.phoneVocab, h)), text); // [1,N,h]
  tx = encoderLayer(g, tx, encoderLayerParams(P, "enc_p.encoder_text", h, c.heads, c.ffn), "relu");
  const geH = g.linear(g.swapTC(ge), P.linear("enc_p.mrte.ge_proj", d.ge.dim, h)); // [1,1,h]
  const cross = g.crossAttention(x, tx, P.crossAttention("enc_p.mrte.cross_attention", h, h, c.heads));
  x = g.linear(g.add(g.add(x, cross), geH), P.linear("enc_p.mrte.c_post", h, h));

  // speed: linear resize to ⌊T50/speed⌋+1 frames (computed in float64 with a 1e-3 guard, so a decimal
  // speed such as 0.8 gives the frame count of the exact decimal quotient despite its f32 rounding)
  const T50 = g.dim(x, 1);
  const quotient = g.div(g.cast(T50, "f64"), g.cast(speed, "f64"));
  const stretched = g.add(g.cast(g.op("Floor", [g.add(quotient, g.f64(1e-3))]), "i64"), g.i64([1]));
  const T50p = g.where(g.op("Equal", [speed, g.f32([1])]), T50, stretched); // [1]
  const sizes = g.concat([g.i64([1, h, 1]), T50p], 0);
  const xr = g.op("Resize", [g.unsqueeze(g.swapTC(x), [2]), "", "", sizes], {
    mode: "linear",
    coordinate_transformation_mode: "pytorch_half_pixel",
  });
  x = g.swapTC(g.squeeze(xr, [2])); // [1,T50',h]
  x = convFfnBlock(g, P, "enc_p.encoder2", x, h, c.ffn);

  // bridge, nearest ×1.875 (torch: src = ⌊dst/1.875⌋), Tm = ⌊1.875·T50'⌋ = ⌊15·T50'/8⌋
  let f = g.relu(g.conv1d(g.swapTC(x), P.conv1d("bridge", h, c.bridge, 1, { gain: Math.SQRT2 }))); // [1,bridge,T50']
  const Tm = g.div(g.mul(T50p, g.i64([15])), g.i64([8]));
  const src = g.cast(g.op("Floor", [g.div(g.cast(g.arange(Tm), "f32"), g.f32(1.875))]), "i64");
  f = g.gather(f, src, 2); // [1,bridge,Tm]

  // wns1: WaveNet encoder conditioned on ge (pre 1×1, gated dilated convs, skip sum, proj 1×1)
  const W = c.wnHidden;
  let wx = g.conv1d(f, P.conv1d("wns1.pre", c.bridge, W, 1));
  const gcond = g.conv1d(ge, P.conv1d("wns1.cond", d.ge.dim, 2 * W * c.wnLayers, 1)); // [1,2W·L,1]
  let skip = "";
  for (let i = 0; i < c.wnLayers; i++) {
    const xin = g.conv1d(wx, P.conv1d(`wns1.in${i}`, W, 2 * W, c.wnKernel, { pad: (c.wnKernel - 1) / 2 }));
    const s = g.add(xin, g.slice(gcond, [2 * W * i], [2 * W * (i + 1)], [1]));
    const acts = g.mul(g.tanh(g.slice(s, [0], [W], [1])), g.sigmoid(g.slice(s, [W], [2 * W], [1])));
    const last = i === c.wnLayers - 1;
    const rs = g.conv1d(acts, P.conv1d(`wns1.res_skip${i}`, W, last ? W : 2 * W, 1));
    if (!last) wx = g.add(wx, g.slice(rs, [0], [W], [1]));
    const sk = last ? rs : g.slice(rs, [W], [2 * W], [1]);
    skip = skip ? g.add(skip, sk) : sk;
  }
  const fea = g.conv1d(skip, P.conv1d("wns1.proj", W, d.fea.dim, 1));
  g.output(fea, "fea", "f32", [1, d.fea.dim, "Tm"]);
  return g;
}

// ---- cfm_dit --------------------------------------------------------------------------------------------------

function buildCfmDit(P: ParamFactory, d: ModelDims, c: Internals["cfm"]): GraphBuilder {
  const g = new GraphBuilder("cfm_dit");
  const M = d.mel.bands;
  const F = d.fea.dim;
  const dim = c.dim;
  const x = g.input("x", "f32", ["B", M, "T"]);
  const cond = g.input("cond", "f32", ["B", M, "T"]);
  const xLens = g.input("x_lens", "i64", ["B"]);
  const time = g.input("time", "f32", ["B"]);
  const dt = g.input("dt_base_bootstrap", "f32", ["B"]);
  const text = g.input("text", "f32", ["B", F, "T"]);

  // frames at or after x_lens[b] are padding: zeroed on input, before and after every conv, and masked as keys
  const frames = g.arange(g.dim(x, 2));
  const valid = g.op("Less", [g.unsqueeze(frames, [0]), g.unsqueeze(xLens, [1])]); // [B,T]
  const validBT1 = g.unsqueeze(valid, [2]); // [B,T,1]
  const zero = g.f32(0);
  const masked = (v: string): string => g.where(validBT1, v, zero);

  const inp = masked(g.swapTC(g.concat([x, cond, text], 1))); // [B,T,2M+F]
  let h = g.linear(inp, P.linear("input_embed.proj", 2 * M + F, dim));
  // ConvPositionEmbedding: grouped conv, mish, grouped conv, mish
  const cp1 = P.conv1d("input_embed.conv_pos.0", dim, dim, c.convKernel, { pad: (c.convKernel - 1) / 2, groups: c.convGroups });
  const cp2 = P.conv1d("input_embed.conv_pos.1", dim, dim, c.convKernel, { pad: (c.convKernel - 1) / 2, groups: c.convGroups });
  let p = masked(g.swapTC(g.mish(g.conv1d(g.swapTC(masked(h)), cp1))));
  p = masked(g.swapTC(g.mish(g.conv1d(g.swapTC(p), cp2))));
  h = g.add(h, p);

  // time embedding: MLP(sinusoidal(1000·time)) + MLP(sinusoidal(1000·dt))
  const tMlp = (name: string, v: string): string => {
    const s = g.sinusoidalConcat(v, c.freqDim, 1000);
    return g.linear(g.silu(g.linear(s, P.linear(`${name}.0`, c.freqDim, dim))), P.linear(`${name}.2`, dim, dim));
  };
  const temb = g.add(tMlp("time_embed", time), tMlp("d_embed", dt)); // [B,dim]
  const tact = g.unsqueeze(g.silu(temb), [1]); // [B,1,dim]

  const rope = g.rope(h, dim / c.heads);
  const keyAllowed = g.unsqueeze(valid, [1, 2]); // [B,1,1,T]
  const plainLn = P.layerNorm("ln_plain", dim, false);
  const one = g.f32(1);
  const modulate = (v: string, shift: string, scale: string): string =>
    g.add(g.mul(g.layerNorm(v, plainLn), g.add(scale, one)), shift);
  for (let i = 0; i < c.blocks; i++) {
    g.scope(`block${i}`, () => {
      const mod = g.linear(tact, P.linear(`transformer_blocks.${i}.attn_norm`, dim, 6 * dim, { gain: 0.5 })); // [B,1,6dim]
      const part = (j: number): string => g.slice(mod, [j * dim], [(j + 1) * dim], [-1]);
      const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = [0, 1, 2, 3, 4, 5].map(part);
      const a = g.selfAttention(modulate(h, shiftMsa, scaleMsa), P.attention(`transformer_blocks.${i}.attn`, dim, c.heads), keyAllowed, rope);
      h = g.add(h, g.mul(gateMsa, a));
      const ff = ffn(g, modulate(h, shiftMlp, scaleMlp), ffnParams(P, `transformer_blocks.${i}.ff`, dim, c.ffn), "gelu");
      h = g.add(h, g.mul(gateMlp, ff));
    });
  }
  const fin = g.linear(tact, P.linear("norm_out", dim, 2 * dim, { gain: 0.5 }));
  h = modulate(h, g.slice(fin, [dim], [2 * dim], [-1]), g.slice(fin, [0], [dim], [-1]));
  g.output(g.linear(h, P.linear("proj_out", dim, M)), "output", "f32", ["B", "T", M]);
  return g;
}

// ---- vocoder --------------------------------------------------------------------------------------------------

function buildVocoder(P: ParamFactory, d: ModelDims, c: Internals["vocoder"]): GraphBuilder {
  const g = new GraphBuilder("vocoder");
  const ch = c.channels;
  const x = g.input("x", "f32", ["B", d.mel.bands, "Tm"]);
  // log-mel in [logMin, logMax]: map it to about ±1 so the first conv sees values around 0
  const centre = (d.mel.logMin + d.mel.logMax) / 2;
  const halfRange = (d.mel.logMax - d.mel.logMin) / 2;
  const xn = g.mul(g.sub(x, g.f32(centre)), g.f32(1 / halfRange));
  let h = g.conv1d(xn, P.conv1d("conv_pre", d.mel.bands, ch[0], 7, { pad: 3 }));
  for (let i = 0; i < 4; i++) {
    h = g.convTranspose1d(g.leakyRelu(h, 0.1), P.convTranspose1d(`ups.${i}`, ch[i], ch[i + 1], 8, 4, 2, Math.SQRT2));
    const r = g.conv1d(g.leakyRelu(h, 0.1), P.conv1d(`resblocks.${i}`, ch[i + 1], ch[i + 1], 3, { pad: 1, gain: 0.5 }));
    h = g.add(h, r);
  }
  const y = g.tanh(g.conv1d(g.leakyRelu(h, 0.1), P.conv1d("conv_post", ch[4], 1, 7, { pad: 3, gain: 0.5 })));
  g.output(y, "audio", "f32", ["B", 1, "Tm*256"]);
  return g;
}

// ---- the set -------------------------------------------------------------------------------------------------------

export interface GenerateOptions {
  out: string;
  preset: PresetName;
  seed?: number;
  /** Called after each graph is written. */
  onGraph?: (name: GraphName, entry: GraphEntry) => void;
}

/** Builds the nine graphs of a preset (lazily, one at a time, to bound memory for `bench`). */
function* graphBuilders(preset: Preset, seed: number): Generator<[GraphName, () => GraphBuilder]> {
  const d = preset.dims;
  const c = preset.internals;
  const factory = (stream: string): ParamFactory => new ParamFactory(new Rng(seed, stream));
  const codebook = factory("codebook").embedding("quantizer.codebook", d.vq.codebook, d.ssl.dim);
  let t2s: T2SWeights | undefined;
  const t2sW = (): T2SWeights => (t2s ??= t2sWeights(factory("t2s"), d));
  yield ["cnhubert", () => buildCnhubert(factory("cnhubert"), d, c.hubert)];
  yield ["vq_extract", () => buildVqExtract(factory("vq_extract"), d, codebook)];
  yield ["ge_encoder", () => buildGeEncoder(factory("ge_encoder"), d, c.ge)];
  yield ["t2s_encoder", () => buildT2sEncoder(d, t2sW())];
  yield ["t2s_prefill", () => buildT2sPrefill(d, t2sW())];
  yield ["t2s_step", () => buildT2sStep(d, t2sW())];
  t2s = undefined;
  yield ["sovits_encp", () => buildSovitsEncp(factory("sovits_encp"), d, c.encp, codebook)];
  yield ["cfm_dit", () => buildCfmDit(factory("cfm_dit"), d, c.cfm)];
  yield ["vocoder", () => buildVocoder(factory("vocoder"), d, c.vocoder)];
}

function checkSeed(seed: number): number {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`seed must be an integer in 0..2^32−1, got ${seed}`);
  return seed;
}

/**
 * Writes the nine graphs of `preset` and manifest.json into `out` (created if needed) and returns the
 * manifest. Each file is written under a temporary name and renamed; the manifest comes last, so an
 * interrupted run never leaves a manifest naming half-written graphs. Refuses to overwrite a set whose
 * manifest says it was exported.
 */
export async function generateModelSet(opts: GenerateOptions): Promise<Manifest> {
  if (!(PRESETS as readonly string[]).includes(opts.preset)) throw new Error(`unknown preset ${opts.preset} (tiny or bench)`);
  const seed = checkSeed(opts.seed ?? DEFAULT_SEED);
  const preset = presetOf(opts.preset);
  const out = resolve(opts.out);
  const manifestPath = join(out, MANIFEST_FILE);
  if (existsSync(manifestPath)) {
    let kind: unknown;
    try {
      kind = (JSON.parse(readFileSync(manifestPath, "utf8")) as { kind?: unknown }).kind;
    } catch {
      kind = undefined;
    }
    if (kind === "exported") throw new Error(`${out} holds an exported model set; refusing to overwrite it`);
  }
  await mkdir(out, { recursive: true });
  await rm(manifestPath, { force: true });

  const graphs: Partial<Record<GraphName, GraphEntry>> = {};
  for (const [name, build] of graphBuilders(preset, seed)) {
    const bytes = build().build(`GPT-SoVITS v3 ${name}, random weights (gsv-pipeline preset ${opts.preset}, seed ${seed})`);
    const file = `${name}.onnx`;
    const tmp = join(out, `.${file}.tmp`);
    await writeFile(tmp, bytes);
    await rename(tmp, join(out, file));
    const entry: GraphEntry = { file, sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length };
    graphs[name] = entry;
    opts.onGraph?.(name, entry);
  }
  const manifest = parseManifest({
    format: "gsv-model-set",
    contract: 1,
    name: opts.preset,
    kind: "generated",
    description: preset.description,
    seed,
    symbols: "v2",
    dims: preset.dims,
    lengthPolicy: LENGTH_POLICY,
    graphs: Object.fromEntries(GRAPH_NAMES.map((n) => [n, graphs[n]])),
  });
  const tmp = join(out, `.${MANIFEST_FILE}.tmp`);
  await writeFile(tmp, JSON.stringify(manifest, null, 2) + "\n");
  await rename(tmp, manifestPath);
  return manifest;
}

/** True when `dir` holds a manifest whose graph files all exist with the recorded sha256. */
export function isModelSetIntact(dir: string): boolean {
  try {
    loadManifest(dir, { verify: true });
    return true;
  } catch {
    return false;
  }
}

/** The default directory of a preset's set: models/<preset> under the repository root. */
export function defaultOutDir(preset: PresetName): string {
  return fromRoot("models", preset);
}

const USAGE = "usage: gen-models [--out DIR] [--preset tiny|bench] [--seed N] [--if-missing]";

export interface CliOptions {
  out: string;
  preset: PresetName;
  seed?: number;
  ifMissing: boolean;
}

export function parseArgs(argv: readonly string[]): CliOptions {
  let out: string | undefined;
  let preset: PresetName = "tiny";
  let seed: number | undefined;
  let ifMissing = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    switch (flag) {
      case "--out":
        out = value();
        break;
      case "--preset": {
        const v = value();
        if (!(PRESETS as readonly string[]).includes(v)) throw new Error(`unknown preset ${v}\n${USAGE}`);
        preset = v as PresetName;
        break;
      }
      case "--seed": {
        const v = value();
        if (!/^\d+$/.test(v)) throw new Error(`--seed must be a non-negative integer\n${USAGE}`);
        seed = checkSeed(Number(v));
        break;
      }
      case "--if-missing":
        ifMissing = true;
        break;
      case "-h":
      case "--help":
        throw new Error(USAGE);
      default:
        throw new Error(`unknown argument ${arg}\n${USAGE}`);
    }
  }
  return { out: out !== undefined ? resolve(out) : defaultOutDir(preset), preset, seed, ifMissing };
}

export async function main(argv: readonly string[]): Promise<number> {
  let opts: CliOptions;
  try {
    opts = parseArgs(argv);
  } catch (err) {
    console.error((err as Error).message);
    return 2;
  }
  if (opts.ifMissing && isModelSetIntact(opts.out)) {
    console.log(`gen-models: ${opts.out} is present and intact; nothing to do`);
    return 0;
  }
  const started = performance.now();
  const manifest = await generateModelSet({
    out: opts.out,
    preset: opts.preset,
    seed: opts.seed,
    onGraph: (name, e) => console.log(`  ${e.file.padEnd(18)} ${(e.bytes / 1024).toFixed(0).padStart(8)} KiB`),
  });
  const total = Object.values(manifest.graphs).reduce((s, e) => s + e.bytes, 0);
  const secs = ((performance.now() - started) / 1000).toFixed(2);
  console.log(`gen-models: wrote ${opts.preset} set (seed ${manifest.seed}) to ${opts.out}: ${(total / 1048576).toFixed(1)} MiB in ${secs} s`);
  return 0;
}

function isMain(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return realpathSync(resolve(entry)) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(`gen-models: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    },
  );
}
