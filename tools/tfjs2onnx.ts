/**
 * tfjs graph model → ONNX (opset 17, IR version 8), for the convolutional vocoders TensorFlowTTS exports
 * (MB-MelGAN): written for vocoders/mb-melgan-ljspeech, general enough for graphs with the same op set.
 *
 *   node dist/tools/tfjs2onnx.js <tfjs model folder> <out.onnx> [--fp32] [--no-check]
 *
 * The folder holds model.json (graph + weight manifest) and its weight shards. Weights quantised to
 * uint8/uint16 by the tfjs converter are value = q·scale + min (per tensor). By default they are stored
 * as they are (uint8) and dequantised in the graph by Cast → Mul(scale) → Add(min), which onnxruntime
 * folds into constants at load: the file stays about as small as the shard (2.7 MB instead of 10 MB).
 * `--fp32` stores the dequantised float32 values instead.
 *
 * Translation (TensorFlow tensors are NHWC / [B,T,C]; the ONNX graph keeps that layout and wraps each
 * convolution in Transpose pairs, which onnxruntime's transpose optimiser cancels):
 *   Placeholder → graph input          Identity → graph output (renamed `audio` when `--output-name`)
 *   Conv2D, _FusedConv2D (BiasAdd [+ Relu/LeakyRelu/Tanh…]) → Transpose · Conv · Transpose [· activation]
 *   Conv2DBackpropInput → ConvTranspose with TF's SAME/VALID pads (output size = input·stride for SAME;
 *     the graph's own output-size subgraph is not translated)
 *   SpaceToBatchND → ExpandDims → Conv2D → Squeeze → BatchToSpaceND (how TF writes a dilated conv1d)
 *     → one Conv with dilations; the subgraph computing the S2B paddings/crops is not translated
 *   MirrorPad REFLECT → Pad reflect; Pad/PadV2 → Pad constant; ExpandDims → Unsqueeze; Squeeze
 *   BiasAdd/AddV2/Add → Add; Sub, Mul; LeakyRelu, Relu, Tanh, Sigmoid; ConcatV2 (float)
 * Translation is demand-driven from the output, so shape arithmetic (Shape, StridedSlice, Pack,
 * FloorMod…) that only feeds the replaced patterns is never reached; anything else unsupported that IS
 * reached is an error naming the node.
 *
 * After writing, the model is loaded with onnxruntime-node and run on a small random input to check
 * that it loads, gives finite values and the expected output shape (`--no-check` skips it).
 */
import { IR_VERSION, OPSET } from "./onnx-builder.js";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import onnxProto from "onnx-proto";
import type { onnx as O } from "onnx-proto";

const { onnx } = onnxProto;

export { IR_VERSION, OPSET };

// ─── tfjs model.json ─────────────────────────────────────────────────────────

interface TfAttr {
  s?: string;
  i?: string | number;
  f?: number;
  b?: boolean;
  type?: string;
  list?: { i?: (string | number)[]; s?: string[]; f?: number[] };
}
interface TfNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, TfAttr>;
}
interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; min?: number; scale?: number; original_dtype?: string };
}
interface TfModelJson {
  format?: string;
  generatedBy?: string;
  convertedBy?: string;
  signature?: {
    inputs?: Record<string, { name: string; tensorShape?: { dim?: { size: string }[] } }>;
    outputs?: Record<string, { name: string; tensorShape?: { dim?: { size: string }[] } }>;
  };
  modelTopology: { node: TfNode[] };
  weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
}

/** A constant of the tfjs graph: integers as they are, floats either quantised (q·scale+min) or plain. */
type ConstVal =
  | { kind: "int"; shape: number[]; data: Int32Array }
  | { kind: "float"; shape: number[]; data: Float32Array }
  | { kind: "quant"; shape: number[]; q: Uint8Array | Uint16Array; scale: number; min: number };

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Read every weight of the manifest; groups are the concatenation of their shard files in order. */
export function readWeights(dir: string, model: TfModelJson): Map<string, ConstVal> {
  const out = new Map<string, ConstVal>();
  for (const group of model.weightsManifest) {
    const parts = group.paths.map((p) => readFileSync(join(dir, p)));
    const buf = Buffer.concat(parts);
    let off = 0;
    for (const w of group.weights) {
      const n = size(w.shape);
      const q = w.quantization;
      if (q) {
        if (q.dtype !== "uint8" && q.dtype !== "uint16") throw new Error(`weight ${w.name}: quantisation ${q.dtype} is not supported`);
        if (typeof q.scale !== "number" || typeof q.min !== "number") throw new Error(`weight ${w.name}: quantisation without min/scale`);
        if (w.dtype !== "float32") throw new Error(`weight ${w.name}: quantised ${w.dtype} is not supported`);
        const bytes = q.dtype === "uint8" ? 1 : 2;
        const raw = buf.subarray(off, off + n * bytes);
        if (raw.length !== n * bytes) throw new Error(`weight ${w.name} runs past the end of the shards`);
        const data = bytes === 1 ? new Uint8Array(raw) : new Uint16Array(new Uint8Array(raw).buffer);
        out.set(w.name, { kind: "quant", shape: w.shape, q: data, scale: q.scale, min: q.min });
        off += n * bytes;
      } else if (w.dtype === "float32" || w.dtype === "int32") {
        const raw = new Uint8Array(buf.subarray(off, off + n * 4)).buffer;
        if (raw.byteLength !== n * 4) throw new Error(`weight ${w.name} runs past the end of the shards`);
        out.set(w.name, w.dtype === "int32" ? { kind: "int", shape: w.shape, data: new Int32Array(raw) } : { kind: "float", shape: w.shape, data: new Float32Array(raw) });
        off += n * 4;
      } else {
        throw new Error(`weight ${w.name}: dtype ${w.dtype} is not supported`);
      }
    }
    if (off !== buf.length) throw new Error(`weights manifest covers ${off} bytes, the shards hold ${buf.length}`);
  }
  return out;
}

/** q·scale + min as tfjs computes it (double arithmetic, one rounding to float32). */
export function dequantise(c: ConstVal): Float32Array {
  if (c.kind === "float") return c.data;
  if (c.kind === "int") return Float32Array.from(c.data);
  const out = new Float32Array(c.q.length);
  for (let i = 0; i < out.length; i++) out[i] = c.q[i] * c.scale + c.min;
  return out;
}

/** Row-major transpose of `data` with `shape` by `perm` (output dim i = input dim perm[i]). */
export function permute<T extends Float32Array | Uint8Array | Uint16Array | Int32Array>(data: T, shape: readonly number[], perm: readonly number[]): { data: T; shape: number[] } {
  const r = shape.length;
  if (perm.length !== r) throw new Error(`permutation ${perm} does not fit shape ${shape}`);
  const outShape = perm.map((p) => shape[p]);
  const inStride = new Array<number>(r);
  let s = 1;
  for (let i = r - 1; i >= 0; i--) {
    inStride[i] = s;
    s *= shape[i];
  }
  const out = new (data.constructor as new (n: number) => T)(data.length);
  const idx = new Array<number>(r).fill(0);
  const strideOfOut = perm.map((p) => inStride[p]);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let i = 0; i < r; i++) src += idx[i] * strideOfOut[i];
    out[o] = data[src];
    for (let i = r - 1; i >= 0; i--) {
      if (++idx[i] < outShape[i]) break;
      idx[i] = 0;
    }
  }
  return { data: out, shape: outShape };
}

function attrStr(n: TfNode, key: string, dflt?: string): string {
  const a = n.attr?.[key];
  if (a?.s === undefined) {
    if (dflt !== undefined) return dflt;
    throw new Error(`${n.op} ${n.name}: attribute ${key} is missing`);
  }
  return Buffer.from(a.s, "base64").toString("utf8");
}
function attrInts(n: TfNode, key: string, dflt?: number[]): number[] {
  const l = n.attr?.[key]?.list?.i;
  if (!l || l.length === 0) {
    if (dflt) return dflt;
    throw new Error(`${n.op} ${n.name}: attribute ${key} is missing`);
  }
  return l.map(Number);
}
function attrFloat(n: TfNode, key: string, dflt: number): number {
  const f = n.attr?.[key]?.f;
  return f === undefined ? dflt : Number(f);
}
function attrStrList(n: TfNode, key: string): string[] {
  return (n.attr?.[key]?.list?.s ?? []).map((s) => Buffer.from(s, "base64").toString("utf8"));
}

// ─── ONNX graph under construction ──────────────────────────────────────────

const ELEM = { float: 1, uint8: 2, uint16: 4, int32: 6, int64: 7 } as const;

type OAttr = number | string | number[];

class OnnxGraph {
  nodes: O.INodeProto[] = [];
  initializers: O.ITensorProto[] = [];
  #names = new Set<string>();
  #n = 0;

  unique(hint: string): string {
    const base = hint.replace(/^StatefulPartitionedCall\//, "").replace(/[^A-Za-z0-9_./:-]/g, "_") || "v";
    let name = base;
    while (this.#names.has(name)) name = `${base}_${++this.#n}`;
    this.#names.add(name);
    return name;
  }

  op(type: string, inputs: string[], attrs: Record<string, OAttr | undefined> = {}, hint = type): string {
    const out = this.unique(hint);
    const T = onnx.AttributeProto.AttributeType;
    const attribute: O.IAttributeProto[] = [];
    for (const [name, v] of Object.entries(attrs)) {
      if (v === undefined) continue;
      if (typeof v === "string") attribute.push({ name, type: T.STRING, s: new TextEncoder().encode(v) });
      else if (Array.isArray(v)) attribute.push({ name, type: T.INTS, ints: v });
      else if (name === "alpha") attribute.push({ name, type: T.FLOAT, f: v });
      else if (Number.isInteger(v)) attribute.push({ name, type: T.INT, i: v });
      else attribute.push({ name, type: T.FLOAT, f: v });
    }
    this.nodes.push({ opType: type, name: out, input: inputs, output: [out], attribute });
    return out;
  }

  init(hint: string, type: keyof typeof ELEM, dims: readonly number[], data: Float32Array | Uint8Array | Uint16Array | Int32Array | BigInt64Array): string {
    const name = this.unique(hint);
    const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.initializers.push({ name, dims: [...dims], dataType: ELEM[type], rawData: new Uint8Array(raw) });
    return name;
  }

  i64(hint: string, values: readonly number[]): string {
    return this.init(hint, "int64", [values.length], BigInt64Array.from(values.map((v) => BigInt(v))));
  }
  f32(hint: string, value: number): string {
    return this.init(hint, "float", [], Float32Array.of(value));
  }
}

function valueInfo(name: string, elem: number, dims: (number | string)[]): O.IValueInfoProto {
  return { name, type: { tensorType: { elemType: elem, shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } } };
}

// ─── Translation ─────────────────────────────────────────────────────────────

export interface ConvertOptions {
  /** Store dequantised float32 weights instead of uint8 + Cast/Mul/Add. */
  fp32?: boolean;
  /** Names for the graph input and output (default: the tfjs signature's, `mels` / `audio`). */
  inputName?: string;
  outputName?: string;
  /** Extra metadata_props. */
  metadata?: Record<string, string>;
}

export interface ConvertResult {
  bytes: Uint8Array;
  inputName: string;
  outputName: string;
  inputDims: (number | string)[];
  outputDims: (number | string)[];
  parameters: number;
  ops: Record<string, number>;
  storage: "uint8" | "fp32";
}

/** Convert the tfjs graph model in `dir` to ONNX bytes. */
export function convertTfjs(dir: string, opts: ConvertOptions = {}): ConvertResult {
  const modelJsonText = readFileSync(join(dir, "model.json"), "utf8");
  const model = JSON.parse(modelJsonText) as TfModelJson;
  if (model.format && model.format !== "graph-model") throw new Error(`${dir}/model.json is a ${model.format}, not a graph-model`);
  const weights = readWeights(dir, model);
  const nodes = new Map<string, TfNode>();
  for (const n of model.modelTopology.node) nodes.set(n.name, n);

  const g = new OnnxGraph();
  const memo = new Map<string, string>();
  const matCache = new Map<string, string>();
  let parameters = 0;
  const counted = new Set<string>();

  const parseRef = (ref: string): { node: string; index: number } => {
    const m = /^(.*?)(?::(\d+))?$/.exec(ref)!;
    return { node: m[1], index: m[2] === undefined ? 0 : Number(m[2]) };
  };
  const nodeOf = (ref: string): TfNode => {
    const n = nodes.get(parseRef(ref).node);
    if (!n) throw new Error(`tensor ${ref} has no producing node`);
    return n;
  };
  const constOf = (ref: string): ConstVal | undefined => {
    const n = nodeOf(ref);
    return n.op === "Const" ? weights.get(n.name) : undefined;
  };
  const constInts = (ref: string, what: string): number[] => {
    const c = constOf(ref);
    if (!c || c.kind !== "int") throw new Error(`${what}: ${ref} must be a constant integer tensor`);
    return Array.from(c.data);
  };
  const inputs = (n: TfNode) => (n.input ?? []).filter((s) => !s.startsWith("^"));

  /** A float constant as an ONNX value, optionally permuted; uint8 stays uint8 unless --fp32. */
  const material = (ref: string, perm?: number[]): string => {
    const key = `${ref}|${perm?.join(",") ?? ""}`;
    const hit = matCache.get(key);
    if (hit) return hit;
    const c = constOf(ref);
    if (!c || c.kind === "int") throw new Error(`${ref} must be a float constant`);
    const name = parseRef(ref).node;
    if (!counted.has(name)) {
      counted.add(name);
      parameters += size(c.shape);
    }
    let out: string;
    if (c.kind === "quant" && !opts.fp32 && c.q instanceof Uint8Array) {
      const p = perm ? permute(c.q, c.shape, perm) : { data: c.q, shape: c.shape };
      const q = g.init(`${name}/q`, "uint8", p.shape, p.data);
      const f = g.op("Cast", [q], { to: ELEM.float }, `${name}/f`);
      const scaled = g.op("Mul", [f, g.f32(`${name}/scale`, c.scale)], {}, `${name}/scaled`);
      out = g.op("Add", [scaled, g.f32(`${name}/min`, c.min)], {}, `${name}/value`);
    } else {
      const p = perm ? permute(dequantise(c), c.shape, perm) : { data: dequantise(c), shape: c.shape };
      out = g.init(name, "float", p.shape, p.data);
    }
    matCache.set(key, out);
    return out;
  };

  const toNchw = (x: string) => g.op("Transpose", [x], { perm: [0, 3, 1, 2] }, "to_nchw");
  const toNhwc = (x: string) => g.op("Transpose", [x], { perm: [0, 2, 3, 1] }, "to_nhwc");

  const activation = (x: string, kind: string, n: TfNode): string => {
    switch (kind) {
      case "Relu":
        return g.op("Relu", [x], {}, `${n.name}/relu`);
      case "LeakyRelu":
        return g.op("LeakyRelu", [x], { alpha: attrFloat(n, "leakyrelu_alpha", 0.2) }, `${n.name}/leaky_relu`);
      case "Tanh":
        return g.op("Tanh", [x], {}, `${n.name}/tanh`);
      case "Sigmoid":
        return g.op("Sigmoid", [x], {}, `${n.name}/sigmoid`);
      default:
        throw new Error(`${n.op} ${n.name}: fused op ${kind} is not supported`);
    }
  };

  /** Conv2D / _FusedConv2D on an NHWC value; `dilations` overrides the node's (for S2B/B2S patterns). */
  const conv = (n: TfNode, xNhwc: string, dilationsHW?: [number, number]): string => {
    if (attrStr(n, "data_format", "NHWC") !== "NHWC") throw new Error(`${n.op} ${n.name}: only NHWC is supported`);
    const [filterRef] = inputs(n).slice(1, 2);
    const fc = constOf(filterRef);
    if (!fc || fc.kind === "int" || fc.shape.length !== 4) throw new Error(`${n.op} ${n.name}: the filter must be a constant [kh,kw,in,out] tensor`);
    const [kh, kw] = fc.shape;
    const strides = attrInts(n, "strides", [1, 1, 1, 1]);
    const dil = attrInts(n, "dilations", [1, 1, 1, 1]);
    const d: [number, number] = dilationsHW ?? [dil[1], dil[2]];
    if (dilationsHW && (dil[1] !== 1 || dil[2] !== 1)) throw new Error(`${n.op} ${n.name}: a dilated conv inside SpaceToBatchND`);
    const s: [number, number] = [strides[1], strides[2]];
    const padding = attrStr(n, "padding");
    const w = material(filterRef, [3, 2, 0, 1]); // [kh,kw,in,out] → [out,in,kh,kw]
    const convInputs = [toNchw(xNhwc), w];
    const fused = n.op === "_FusedConv2D" ? attrStrList(n, "fused_ops") : [];
    if (fused.length > 0) {
      if (fused[0] !== "BiasAdd") throw new Error(`${n.op} ${n.name}: fused ops ${fused.join("+")} are not supported`);
      if (Number(n.attr?.num_args?.i ?? 1) !== 1) throw new Error(`${n.op} ${n.name}: num_args ${n.attr?.num_args?.i}`);
      convInputs.push(material(inputs(n)[2]));
    }
    const attrs: Record<string, OAttr> = { kernel_shape: [kh, kw], strides: s, dilations: d };
    if (padding === "VALID") attrs.pads = [0, 0, 0, 0];
    else if (padding === "SAME") {
      if (s[0] === 1 && s[1] === 1) {
        const th = (kh - 1) * d[0];
        const tw = (kw - 1) * d[1];
        attrs.pads = [th >> 1, tw >> 1, th - (th >> 1), tw - (tw >> 1)];
      } else attrs.auto_pad = "SAME_UPPER";
    } else if (padding === "EXPLICIT") {
      const e = attrInts(n, "explicit_paddings");
      attrs.pads = [e[2], e[4], e[3], e[5]];
    } else throw new Error(`${n.op} ${n.name}: padding ${padding}`);
    let y = toNhwc(g.op("Conv", convInputs, attrs, n.name));
    for (const act of fused.slice(1)) y = activation(y, act, n);
    return y;
  };

  /** Conv2DBackpropInput(input_sizes, filter [kh,kw,out,in], x) → ConvTranspose. */
  const convTranspose = (n: TfNode): string => {
    if (attrStr(n, "data_format", "NHWC") !== "NHWC") throw new Error(`${n.op} ${n.name}: only NHWC is supported`);
    const [, filterRef, xRef] = inputs(n);
    const fc = constOf(filterRef);
    if (!fc || fc.kind === "int" || fc.shape.length !== 4) throw new Error(`${n.op} ${n.name}: the filter must be a constant [kh,kw,out,in] tensor`);
    const [kh, kw] = fc.shape;
    const strides = attrInts(n, "strides", [1, 1, 1, 1]);
    const dil = attrInts(n, "dilations", [1, 1, 1, 1]);
    if (dil.some((v) => v !== 1)) throw new Error(`${n.op} ${n.name}: dilated transposed conv is not supported`);
    const s = [strides[1], strides[2]];
    const padding = attrStr(n, "padding");
    const pads = [0, 0, 0, 0];
    const outPad = [0, 0];
    if (padding === "SAME") {
      // TF: output = input·stride; the forward SAME conv over it pads max(k − s, 0) in total, half
      // (rounded down) before. ConvTranspose crops those pads; output_padding covers k < s.
      [kh, kw].forEach((k, i) => {
        const total = Math.max(k - s[i], 0);
        pads[i] = total >> 1;
        pads[i + 2] = total - (total >> 1);
        outPad[i] = Math.max(s[i] - k, 0);
      });
    } else if (padding !== "VALID") throw new Error(`${n.op} ${n.name}: padding ${padding}`);
    const w = material(filterRef, [3, 2, 0, 1]); // [kh,kw,out,in] → [in,out,kh,kw]
    const attrs: Record<string, OAttr> = { kernel_shape: [kh, kw], strides: s, pads };
    if (outPad.some((v) => v > 0)) attrs.output_padding = outPad;
    return toNhwc(g.op("ConvTranspose", [toNchw(val(xRef)), w], attrs, n.name));
  };

  /** The first entry of a [1,2] paddings/crops tensor: constant, or ExpandDims(Pack(const, …)). */
  const leadingPad = (ref: string, what: string): number => {
    const c = constOf(ref);
    if (c) {
      if (c.kind !== "int") throw new Error(`${what}: ${ref} is not integer`);
      return c.data[0];
    }
    let n = nodeOf(ref);
    if (n.op === "ExpandDims") n = nodeOf(inputs(n)[0]);
    if (n.op !== "Pack") throw new Error(`${what}: cannot read ${ref} (${n.op})`);
    return constInts(inputs(n)[0], what)[0];
  };

  /** BatchToSpaceND(Squeeze(Conv2D(ExpandDims(SpaceToBatchND(x, [d], pads))))) → dilated Conv. */
  const dilatedConv = (b2s: TfNode): string => {
    const what = `BatchToSpaceND ${b2s.name}`;
    const [sqRef, blockRef, cropsRef] = inputs(b2s);
    const sq = nodeOf(sqRef);
    const cv = sq.op === "Squeeze" ? nodeOf(inputs(sq)[0]) : undefined;
    const ed = cv && (cv.op === "Conv2D" || cv.op === "_FusedConv2D") ? nodeOf(inputs(cv)[0]) : undefined;
    const s2b = ed?.op === "ExpandDims" ? nodeOf(inputs(ed)[0]) : undefined;
    if (!cv || !ed || !s2b || s2b.op !== "SpaceToBatchND") {
      throw new Error(`${what}: only the SpaceToBatchND → ExpandDims → Conv2D → Squeeze → BatchToSpaceND pattern (a dilated conv1d) is supported`);
    }
    const block = constInts(blockRef, what);
    const block2 = constInts(inputs(s2b)[1], what);
    if (block.length !== 1 || block2.length !== 1 || block[0] !== block2[0]) throw new Error(`${what}: block shapes ${block} / ${block2}`);
    if (attrStr(cv, "padding") !== "VALID") throw new Error(`${what}: the inner conv must be VALID`);
    if (attrInts(cv, "strides", [1, 1, 1, 1]).some((v) => v !== 1)) throw new Error(`${what}: the inner conv must have stride 1`);
    if (leadingPad(inputs(s2b)[2], what) !== 0 || leadingPad(cropsRef, what) !== 0) {
      throw new Error(`${what}: non-zero base paddings/crops are not supported`);
    }
    // [B,T,C] → ExpandDims(axis) → 4-D; T lands in H or W.
    let axis = constInts(inputs(ed)[1], what)[0];
    if (axis < 0) axis += 4;
    const tAt = axis <= 1 ? 2 : 1;
    const d = block[0];
    const x = g.op("Unsqueeze", [val(inputs(s2b)[0]), g.i64(`${ed.name}/axes`, [axis])], {}, ed.name);
    const y = conv(cv, x, tAt === 2 ? [1, d] : [d, 1]);
    const sqDims = attrInts(sq, "squeeze_dims", []);
    return g.op("Squeeze", sqDims.length ? [y, g.i64(`${sq.name}/axes`, sqDims)] : [y], {}, b2s.name);
  };

  const translate = (n: TfNode): string => {
    const ins = inputs(n);
    switch (n.op) {
      case "Placeholder":
        throw new Error(`placeholder ${n.name} is not the model input`);
      case "Identity":
        return val(ins[0]);
      case "Const": {
        return material(n.name);
      }
      case "MirrorPad":
      case "Pad":
      case "PadV2": {
        const p = constInts(ins[1], `${n.op} ${n.name}`);
        const r = p.length / 2;
        const pads = [...Array.from({ length: r }, (_, i) => p[2 * i]), ...Array.from({ length: r }, (_, i) => p[2 * i + 1])];
        const args = [val(ins[0]), g.i64(`${n.name}/pads`, pads)];
        if (n.op === "MirrorPad") {
          const mode = attrStr(n, "mode");
          if (mode !== "REFLECT") throw new Error(`MirrorPad ${n.name}: mode ${mode} has no ONNX equivalent`);
          return g.op("Pad", args, { mode: "reflect" }, n.name);
        }
        if (n.op === "PadV2") args.push(val(ins[2]));
        return g.op("Pad", args, { mode: "constant" }, n.name);
      }
      case "ExpandDims":
        return g.op("Unsqueeze", [val(ins[0]), g.i64(`${n.name}/axes`, constInts(ins[1], `ExpandDims ${n.name}`))], {}, n.name);
      case "Squeeze": {
        const dims = attrInts(n, "squeeze_dims", []);
        return g.op("Squeeze", dims.length ? [val(ins[0]), g.i64(`${n.name}/axes`, dims)] : [val(ins[0])], {}, n.name);
      }
      case "BiasAdd":
        if (attrStr(n, "data_format", "NHWC") !== "NHWC") throw new Error(`BiasAdd ${n.name}: only NHWC is supported`);
        return g.op("Add", [val(ins[0]), val(ins[1])], {}, n.name);
      case "Add":
      case "AddV2":
        return g.op("Add", [val(ins[0]), val(ins[1])], {}, n.name);
      case "Sub":
        return g.op("Sub", [val(ins[0]), val(ins[1])], {}, n.name);
      case "Mul":
        return g.op("Mul", [val(ins[0]), val(ins[1])], {}, n.name);
      case "LeakyRelu":
        return g.op("LeakyRelu", [val(ins[0])], { alpha: attrFloat(n, "alpha", 0.2) }, n.name);
      case "Relu":
      case "Tanh":
      case "Sigmoid":
        return g.op(n.op, [val(ins[0])], {}, n.name);
      case "ConcatV2": {
        const axis = constInts(ins[ins.length - 1], `ConcatV2 ${n.name}`)[0];
        return g.op("Concat", ins.slice(0, -1).map(val), { axis }, n.name);
      }
      case "Conv2D":
      case "_FusedConv2D":
        return conv(n, val(ins[0]));
      case "Conv2DBackpropInput":
        return convTranspose(n);
      case "BatchToSpaceND":
        return dilatedConv(n);
      default:
        throw new Error(`op ${n.op} (node ${n.name}) is not supported by this converter`);
    }
  };

  function val(ref: string): string {
    const { node, index } = parseRef(ref);
    if (index !== 0) throw new Error(`tensor ${ref}: only the first output of a node is supported`);
    const hit = memo.get(node);
    if (hit) return hit;
    const out = translate(nodeOf(node));
    memo.set(node, out);
    return out;
  }

  // Input and output from the signature (the graph has exactly one of each).
  const sigIn = Object.entries(model.signature?.inputs ?? {});
  const sigOut = Object.entries(model.signature?.outputs ?? {});
  if (sigIn.length !== 1 || sigOut.length !== 1) throw new Error(`expected one input and one output in the signature, got ${sigIn.length}/${sigOut.length}`);
  const [inKey, inSpec] = sigIn[0];
  const [, outSpec] = sigOut[0];
  const inputName = opts.inputName ?? inKey;
  const outputName = opts.outputName ?? "audio";
  const inputNode = parseRef(inSpec.name).node;
  if (nodeOf(inputNode).op !== "Placeholder") throw new Error(`${inputNode} is not a Placeholder`);
  memo.set(inputNode, inputName);
  const dimsOf = (spec: { tensorShape?: { dim?: { size: string }[] } }, names: string[]) =>
    (spec.tensorShape?.dim ?? []).map((d, i) => (Number(d.size) >= 0 ? Number(d.size) : names[i] ?? `d${i}`));
  const inputDims = dimsOf(inSpec, ["batch", "frames"]);
  const outputDims = dimsOf(outSpec, ["batch", "samples"]);

  const last = val(outSpec.name);
  g.nodes.push({ opType: "Identity", name: outputName, input: [last], output: [outputName] });

  const ops: Record<string, number> = {};
  for (const n of g.nodes) ops[n.opType!] = (ops[n.opType!] ?? 0) + 1;

  const sha = (b: Uint8Array | string) => createHash("sha256").update(b).digest("hex");
  const shards = model.weightsManifest.flatMap((gr) => gr.paths);
  const metadata: Record<string, string> = {
    converter: "gsv-pipeline tools/tfjs2onnx.ts",
    "source.generatedBy": String(model.generatedBy ?? ""),
    "source.convertedBy": String(model.convertedBy ?? ""),
    "source.model.json.sha256": sha(modelJsonText),
    ...Object.fromEntries(shards.map((p) => [`source.${p}.sha256`, sha(readFileSync(join(dir, p)))])),
    "weights.storage": opts.fp32 ? "fp32" : "uint8 (q*scale+min via Cast/Mul/Add)",
    ...opts.metadata,
  };

  const graph: O.IGraphProto = {
    name: basename(resolve(dir)),
    node: g.nodes,
    initializer: g.initializers,
    input: [valueInfo(inputName, ELEM.float, inputDims)],
    output: [valueInfo(outputName, ELEM.float, outputDims)],
  };
  const proto: O.IModelProto = {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: "", version: OPSET }],
    producerName: "gsv-pipeline tfjs2onnx",
    producerVersion: "1",
    graph,
    metadataProps: Object.entries(metadata).map(([key, value]) => ({ key, value })),
  };
  const bytes = onnx.ModelProto.encode(onnx.ModelProto.create(proto)).finish();
  return { bytes, inputName, outputName, inputDims, outputDims, parameters, ops, storage: opts.fp32 ? "fp32" : "uint8" };
}

/** Load the written model and run it on a small random input: shape, finiteness, samples per frame. */
export async function checkOnnx(path: string, inputName: string, outputName: string, channels: number, frames = 16): Promise<{ dims: number[]; perFrame: number; peak: number }> {
  const ort = await import("onnxruntime-node");
  const session = await ort.InferenceSession.create(path, { graphOptimizationLevel: "all" });
  const x = new Float32Array(frames * channels);
  let seed = 12345;
  for (let i = 0; i < x.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    x[i] = (seed / 2 ** 32) * 2 - 1;
  }
  const out = (await session.run({ [inputName]: new ort.Tensor("float32", x, [1, frames, channels]) }))[outputName];
  const data = out.data as Float32Array;
  let peak = 0;
  for (const v of data) {
    if (!Number.isFinite(v)) throw new Error("the converted model gives non-finite output");
    peak = Math.max(peak, Math.abs(v));
  }
  await session.release();
  return { dims: [...out.dims], perFrame: out.dims[1] / frames, peak };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { fp32: { type: "boolean", default: false }, "no-check": { type: "boolean", default: false } },
  });
  if (positionals.length !== 2) {
    console.error("usage: node dist/tools/tfjs2onnx.js <tfjs model folder> <out.onnx> [--fp32] [--no-check]");
    process.exitCode = 2;
    return;
  }
  const [dir, out] = positionals;
  const r = convertTfjs(dir, { fp32: values.fp32 });
  mkdirSync(dirname(resolve(out)), { recursive: true });
  writeFileSync(out, r.bytes);
  console.log(
    JSON.stringify({
      out,
      bytes: r.bytes.length,
      sha256: createHash("sha256").update(r.bytes).digest("hex"),
      storage: r.storage,
      parameters: r.parameters,
      input: { name: r.inputName, dims: r.inputDims },
      output: { name: r.outputName, dims: r.outputDims },
      ops: r.ops,
    }),
  );
  if (!values["no-check"]) {
    const channels = r.inputDims[r.inputDims.length - 1];
    if (typeof channels !== "number") throw new Error("cannot check: the input's last dimension is not fixed");
    const c = await checkOnnx(out, r.inputName, r.outputName, channels);
    console.log(JSON.stringify({ check: "ok", outputDims: c.dims, samplesPerFrame: c.perFrame, peak: c.peak }));
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`tfjs2onnx: ${(err as Error).message}`);
    process.exitCode = 1;
  });
}
