/**
 * A small ONNX graph builder on top of `onnx-proto`, used by tools/gen-models.ts to write the generated
 * model sets. Graphs are built value by value (`g.op("MatMul", [a, b])` returns the output's name); the
 * helpers at the end (linear, layerNorm, conv1d, attention, sinusoidal encodings, …) keep graph code
 * short. Weights are plain `Tensor`s (Float32Array + dims) made by a `ParamFactory` from a seeded `Rng`,
 * so one set of weights can be written into several graphs (t2s_prefill and t2s_step share theirs).
 *
 * Output: IR version 8, default-domain opset 17, tensors stored as little-endian `rawData`, symbolic
 * dims as `dimParam`. Building is deterministic: the same calls give byte-identical files.
 */
import onnxProto from "onnx-proto";
import type { onnx as O } from "onnx-proto";
import { endianness } from "node:os";

const { onnx } = onnxProto;

export const IR_VERSION = 8;
export const OPSET = 17;

/** Element types used by the generated graphs. */
export type DType = "f32" | "f64" | "i64" | "i32" | "bool";
const ELEM: Record<DType, number> = { f32: 1, i32: 6, i64: 7, bool: 9, f64: 11 };

/** A static size or a symbolic one (written as `dimParam`). */
export type Dim = number | string;

/** A weight: fp32 values in row-major order. */
export interface Tensor {
  dims: number[];
  data: Float32Array;
  /** Initializer name hint; the builder makes it unique within a graph. */
  name?: string;
}

export type AttrValue = number | string | number[] | { ints: number[] } | { floats: number[] } | { tensor: O.ITensorProto };
export type Attrs = Record<string, AttrValue | undefined>;

/** Weight of a fully connected layer: `w` is [in, out] (so y = x·w + b). */
export interface LinearP {
  w: Tensor;
  b?: Tensor;
}
/** 1-D convolution: `w` is [out, in/groups, k] (ConvTranspose: [in, out/groups, k]). */
export interface ConvP {
  w: Tensor;
  b?: Tensor;
  stride?: number;
  pad?: number | [number, number];
  dilation?: number;
  groups?: number;
}
export interface LayerNormP {
  g: Tensor;
  b: Tensor;
  eps?: number;
}
/** Multi-head attention with a fused q/k/v projection ([dim, 3·dim]) and an output projection. */
export interface AttentionP {
  qkv: LinearP;
  o: LinearP;
  heads: number;
}
/** Separate projections, for cross attention (queries and keys/values from different sequences). */
export interface CrossAttentionP {
  q: LinearP;
  kv: LinearP;
  o: LinearP;
  heads: number;
}

const INT64_MAX = 9223372036854775807n;
/**
 * The score that replaces a masked attention score (via Where, so whatever the masked key holds, its
 * weight is exactly 0). Finite, so a row with every key masked still gives finite weights.
 */
export const MASK_VALUE = -1e9;

const littleEndian = endianness() === "LE";

function rawBytes(arr: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array): Uint8Array {
  const view = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  if (littleEndian || arr.BYTES_PER_ELEMENT === 1) return view;
  const out = new Uint8Array(view.length);
  const w = arr.BYTES_PER_ELEMENT;
  for (let i = 0; i < view.length; i += w) for (let j = 0; j < w; j++) out[i + j] = view[i + w - 1 - j];
  return out;
}

function product(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

function valueInfo(name: string, type: DType, shape: readonly Dim[]): O.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM[type],
        shape: { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, v: AttrValue): O.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === "string") return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === "number") {
    // integral numbers are INT; float attributes with integral values go through GraphBuilder.opF
    if (Number.isInteger(v) && !Object.is(v, -0)) return { name, type: T.INT, i: v };
    return { name, type: T.FLOAT, f: v };
  }
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ("ints" in v) return { name, type: T.INTS, ints: v.ints };
  if ("floats" in v) return { name, type: T.FLOATS, floats: v.floats };
  return { name, type: T.TENSOR, t: v.tensor };
}

export class GraphBuilder {
  readonly name: string;
  private readonly nodes: O.INodeProto[] = [];
  private readonly initializers: O.ITensorProto[] = [];
  private readonly inputs: O.IValueInfoProto[] = [];
  private readonly outputs: O.IValueInfoProto[] = [];
  private readonly names = new Set<string>();
  private readonly params = new Map<Tensor, string>();
  private readonly consts = new Map<string, string>();
  /** Values renamed by `output(…, { direct: true })`: old name → graph output name. */
  private readonly aliases = new Map<string, string>();
  private readonly scopes: string[] = [];
  private counter = 0;

  constructor(name: string) {
    this.name = name;
  }

  // ---- naming -------------------------------------------------------------------------------------

  private unique(base: string): string {
    let name = base;
    for (let i = 1; this.names.has(name); i++) name = `${base}_${i}`;
    this.names.add(name);
    return name;
  }

  private fresh(hint: string): string {
    const prefix = this.scopes.length ? this.scopes.join("/") + "/" : "";
    return this.unique(`${prefix}${hint}_${this.counter++}`);
  }

  /** Runs `fn` with `name` prepended to the names of the values and weights it creates. */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  // ---- graph interface -----------------------------------------------------------------------------

  input(name: string, type: DType, shape: readonly Dim[]): string {
    if (this.names.has(name)) throw new Error(`${this.name}: duplicate value name ${name}`);
    this.names.add(name);
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  /**
   * Declares `value` as a graph output called `name` and returns `name`. When the names differ the
   * output goes through an Identity node, unless `direct` is set and `value` is the output of a node of
   * this graph that is not yet a graph output: then that node writes `name` itself (no Identity, so no
   * copy at run time), and `value` stays usable as an alias of `name` in later calls.
   */
  output(value: string, name: string, type: DType, shape: readonly Dim[], opts: { direct?: boolean } = {}): string {
    value = this.aliases.get(value) ?? value;
    if (value !== name) {
      if (this.names.has(name)) throw new Error(`${this.name}: duplicate value name ${name}`);
      this.names.add(name);
      const producer = opts.direct ? this.nodes.find((n) => n.output!.includes(value)) : undefined;
      if (producer && !this.outputs.some((o) => o.name === value)) {
        for (const n of this.nodes) {
          n.output = n.output!.map((v) => (v === value ? name : v));
          n.input = n.input!.map((v) => (v === value ? name : v));
        }
        this.aliases.set(value, name);
      } else {
        this.nodes.push({ opType: "Identity", input: [value], output: [name], name: this.fresh("Identity") });
      }
    }
    this.outputs.push(valueInfo(name, type, shape));
    return name;
  }

  /** The initializer holding `t` (written once per graph however often it is used). */
  param(t: Tensor): string {
    const known = this.params.get(t);
    if (known) return known;
    if (t.data.length !== product(t.dims)) throw new Error(`${this.name}: weight ${t.name} has ${t.data.length} values for dims ${t.dims}`);
    const prefix = this.scopes.length ? this.scopes.join("/") + "/" : "";
    const name = this.unique(t.name ?? `${prefix}w${this.counter++}`);
    this.initializers.push({ name, dims: t.dims, dataType: ELEM.f32, rawData: rawBytes(t.data) });
    this.params.set(t, name);
    return name;
  }

  private constant(type: DType, values: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array, dims: readonly number[]): string {
    if (values.length !== product(dims)) throw new Error(`${this.name}: constant has ${values.length} values for dims ${dims}`);
    // small constants are shared within a graph (keyed by type, dims and values)
    const key = values.length <= 64 ? `${type}|${dims.join(",")}|${Array.from(values as ArrayLike<number | bigint>, String).join(",")}` : undefined;
    const known = key && this.consts.get(key);
    if (known) return known;
    const name = this.fresh(`c_${type}`);
    this.initializers.push({ name, dims: [...dims], dataType: ELEM[type], rawData: rawBytes(values) });
    if (key) this.consts.set(key, name);
    return name;
  }

  /** An fp32 constant; a number gives a scalar unless `dims` says otherwise. */
  f32(values: number | readonly number[] | Float32Array, dims?: readonly number[]): string {
    const arr = typeof values === "number" ? Float32Array.of(values) : Float32Array.from(values);
    return this.constant("f32", arr, dims ?? (typeof values === "number" ? [] : [arr.length]));
  }

  f64(values: number | readonly number[], dims?: readonly number[]): string {
    const arr = typeof values === "number" ? Float64Array.of(values) : Float64Array.from(values);
    return this.constant("f64", arr, dims ?? (typeof values === "number" ? [] : [arr.length]));
  }

  /** An int64 constant; a number gives a scalar unless `dims` says otherwise. */
  i64(values: number | bigint | readonly (number | bigint)[], dims?: readonly number[]): string {
    const list = typeof values === "number" || typeof values === "bigint" ? [values] : values;
    const arr = BigInt64Array.from(list, (v) => BigInt(v));
    return this.constant("i64", arr, dims ?? (typeof values === "number" || typeof values === "bigint" ? [] : [arr.length]));
  }

  /** Adds a node with one output and returns the output's name. */
  op(type: string, inputs: readonly string[], attrs: Attrs = {}, hint?: string): string {
    return this.opN(type, inputs, 1, attrs, hint)[0];
  }

  /** Adds a node with `n` outputs. An input of "" is an omitted optional input. */
  opN(type: string, inputs: readonly string[], n: number, attrs: Attrs = {}, hint?: string): string[] {
    const outputs = Array.from({ length: n }, () => this.fresh(hint ?? type));
    const attribute_: O.IAttributeProto[] = [];
    for (const [k, v] of Object.entries(attrs)) if (v !== undefined) attribute_.push(attribute(k, v));
    const input = inputs.map((v) => this.aliases.get(v) ?? v);
    this.nodes.push({ opType: type, input, output: outputs, name: this.fresh(`node_${type}`), attribute: attribute_ });
    return outputs;
  }

  /** Like `op`, forcing the listed attributes to FLOAT even when integral (ONNX float attributes). */
  opF(type: string, inputs: readonly string[], attrs: Attrs, floatAttrs: Record<string, number>, hint?: string): string {
    const out = this.op(type, inputs, attrs, hint);
    const node = this.nodes[this.nodes.length - 1];
    for (const [k, v] of Object.entries(floatAttrs)) {
      node.attribute!.push({ name: k, type: onnx.AttributeProto.AttributeType.FLOAT, f: v });
    }
    return out;
  }

  /** The serialised ModelProto. */
  build(docString = ""): Uint8Array {
    for (const o of this.outputs) if (!this.names.has(o.name!)) throw new Error(`${this.name}: output ${o.name} is never produced`);
    const model: O.IModelProto = {
      irVersion: IR_VERSION,
      opsetImport: [{ domain: "", version: OPSET }],
      producerName: "gsv-pipeline tools/gen-models",
      producerVersion: "1",
      docString,
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    };
    return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  }

  // ---- elementwise and shape helpers ----------------------------------------------------------------

  add(a: string, b: string): string {
    return this.op("Add", [a, b]);
  }
  sub(a: string, b: string): string {
    return this.op("Sub", [a, b]);
  }
  mul(a: string, b: string): string {
    return this.op("Mul", [a, b]);
  }
  div(a: string, b: string): string {
    return this.op("Div", [a, b]);
  }
  matmul(a: string, b: string): string {
    return this.op("MatMul", [a, b]);
  }
  relu(x: string): string {
    return this.op("Relu", [x]);
  }
  sigmoid(x: string): string {
    return this.op("Sigmoid", [x]);
  }
  tanh(x: string): string {
    return this.op("Tanh", [x]);
  }
  leakyRelu(x: string, alpha: number): string {
    return this.opF("LeakyRelu", [x], {}, { alpha });
  }
  /** x·sigmoid(x). */
  silu(x: string): string {
    return this.mul(x, this.sigmoid(x));
  }
  /** Exact GELU, x·½·(1 + erf(x/√2)) (opset 17 has no Gelu op). */
  gelu(x: string): string {
    const e = this.op("Erf", [this.mul(x, this.f32(Math.SQRT1_2))]);
    return this.mul(this.mul(x, this.f32(0.5)), this.add(e, this.f32(1)));
  }
  /** x·tanh(softplus(x)) (opset 17 has no Mish op). */
  mish(x: string): string {
    return this.mul(x, this.tanh(this.op("Softplus", [x])));
  }
  softmax(x: string, axis = -1): string {
    return this.op("Softmax", [x], { axis });
  }
  transpose(x: string, perm: number[]): string {
    return this.op("Transpose", [x], { perm });
  }
  reshape(x: string, shape: readonly number[]): string {
    return this.op("Reshape", [x, this.i64(shape)]);
  }
  unsqueeze(x: string, axes: readonly number[]): string {
    return this.op("Unsqueeze", [x, this.i64(axes)]);
  }
  squeeze(x: string, axes: readonly number[]): string {
    return this.op("Squeeze", [x, this.i64(axes)]);
  }
  concat(xs: readonly string[], axis: number): string {
    return this.op("Concat", [...xs], { axis });
  }
  cast(x: string, to: DType): string {
    return this.op("Cast", [x], { to: ELEM[to] });
  }
  gather(data: string, indices: string, axis = 0): string {
    return this.op("Gather", [data, indices], { axis });
  }
  where(cond: string, a: string, b: string): string {
    return this.op("Where", [cond, a, b]);
  }
  /** Slice along the given axes; `null` as an end means "to the end". */
  slice(x: string, starts: readonly number[], ends: readonly (number | null)[], axes: readonly number[], steps?: readonly number[]): string {
    const e = ends.map((v) => (v === null ? INT64_MAX : BigInt(v)));
    const inputs = [x, this.i64(starts), this.i64(e), this.i64(axes)];
    if (steps) inputs.push(this.i64(steps));
    return this.op("Slice", inputs);
  }
  /** Slice with dynamic (tensor) starts/ends, each an int64 [1]. */
  sliceDyn(x: string, start: string, end: string, axis: number): string {
    return this.op("Slice", [x, start, end, this.i64([axis])]);
  }
  /** The size of `x` along `axis`, as an int64 [1]. */
  dim(x: string, axis: number): string {
    return this.op("Shape", [x], { start: axis, end: axis === -1 ? undefined : axis + 1 });
  }
  /** An int64 [1] tensor as a scalar. */
  scalar(x: string): string {
    return this.squeeze(x, [0]);
  }
  /** 0, 1, …, n−1 as int64, from an int64 [1] or scalar length. */
  arange(n: string, isScalar = false): string {
    return this.op("Range", [this.i64(0), isScalar ? n : this.scalar(n), this.i64(1)]);
  }
  reduceMean(x: string, axes: number[], keepdims = true): string {
    return this.op("ReduceMean", [x], { axes, keepdims: keepdims ? 1 : 0 });
  }

  // ---- layers ------------------------------------------------------------------------------------

  /** x·w (+ b) over the last axis. */
  linear(x: string, p: LinearP): string {
    const y = this.matmul(x, this.param(p.w));
    return p.b ? this.add(y, this.param(p.b)) : y;
  }

  /**
   * x·w + b as one Gemm, for a 2-D x [rows, in]. ORT runs it on pre-packed weights with the bias folded
   * in, and fuses a following Relu into it (FusedGemm), where MatMul + Add over a 3-D x stays two ops.
   */
  gemm(x: string, p: LinearP): string {
    const inputs = [x, this.param(p.w)];
    if (p.b) inputs.push(this.param(p.b));
    return this.op("Gemm", inputs);
  }

  /** LayerNormalization over the last axis. */
  layerNorm(x: string, p: LayerNormP): string {
    return this.opF("LayerNormalization", [x, this.param(p.g), this.param(p.b)], { axis: -1 }, { epsilon: p.eps ?? 1e-5 });
  }

  /** Conv over [B, C, T]. */
  conv1d(x: string, p: ConvP): string {
    const [, , k] = p.w.dims;
    const dilation = p.dilation ?? 1;
    const pad = p.pad ?? 0;
    const pads = typeof pad === "number" ? [pad, pad] : pad;
    const inputs = [x, this.param(p.w)];
    if (p.b) inputs.push(this.param(p.b));
    return this.op("Conv", inputs, {
      kernel_shape: [k],
      strides: [p.stride ?? 1],
      pads,
      dilations: [dilation],
      group: p.groups ?? 1,
    });
  }

  /** ConvTranspose over [B, C, T]; `w` is [in, out/groups, k]. */
  convTranspose1d(x: string, p: ConvP): string {
    const [, , k] = p.w.dims;
    const pad = p.pad ?? 0;
    const pads = typeof pad === "number" ? [pad, pad] : pad;
    const inputs = [x, this.param(p.w)];
    if (p.b) inputs.push(this.param(p.b));
    return this.op("ConvTranspose", inputs, { kernel_shape: [k], strides: [p.stride ?? 1], pads, group: p.groups ?? 1 });
  }

  /** [B, T, C] ↔ [B, C, T]. */
  swapTC(x: string): string {
    return this.transpose(x, [0, 2, 1]);
  }

  /** [B, T, H·D] → [B, H, T, D]. */
  splitHeads(x: string, heads: number, headDim: number): string {
    return this.transpose(this.reshape(x, [0, 0, heads, headDim]), [0, 2, 1, 3]);
  }
  /** [B, H, T, D] → [B, T, H·D]. */
  mergeHeads(x: string): string {
    return this.reshape(this.transpose(x, [0, 2, 1, 3]), [0, 0, -1]);
  }

  /**
   * Scaled dot-product attention over heads: q [B,H,Tq,D], k/v [B,H,Tk,D]. `allowed` is a bool tensor
   * broadcastable to [B,H,Tq,Tk]; scores where it is false are replaced by MASK_VALUE (so whatever a
   * masked key holds, its weight is exactly 0). Returns [B,H,Tq,D].
   */
  sdpa(q: string, k: string, v: string, headDim: number, allowed?: string): string {
    const qs = this.mul(q, this.f32(1 / Math.sqrt(headDim)));
    let scores = this.matmul(qs, this.transpose(k, [0, 1, 3, 2]));
    if (allowed) scores = this.where(allowed, scores, this.f32(MASK_VALUE));
    return this.matmul(this.softmax(scores, -1), v);
  }

  /** Self-attention with a fused q/k/v projection; x [B,T,dim] → [B,T,dim]. */
  selfAttention(x: string, p: AttentionP, allowed?: string, rope?: Rope): string {
    const dim = p.o.w.dims[0];
    const headDim = dim / p.heads;
    const qkv = this.linear(x, p.qkv);
    let q = this.splitHeads(this.slice(qkv, [0], [dim], [-1]), p.heads, headDim);
    let k = this.splitHeads(this.slice(qkv, [dim], [2 * dim], [-1]), p.heads, headDim);
    const v = this.splitHeads(this.slice(qkv, [2 * dim], [3 * dim], [-1]), p.heads, headDim);
    if (rope) {
      q = this.applyRope(q, rope);
      k = this.applyRope(k, rope);
    }
    return this.linear(this.mergeHeads(this.sdpa(q, k, v, headDim, allowed)), p.o);
  }

  /** Cross attention: queries from x [B,Tq,dim], keys and values from ctx [B,Tk,dimCtx]. */
  crossAttention(x: string, ctx: string, p: CrossAttentionP, allowed?: string): string {
    const dim = p.o.w.dims[0];
    const headDim = dim / p.heads;
    const q = this.splitHeads(this.linear(x, p.q), p.heads, headDim);
    const kv = this.linear(ctx, p.kv);
    const k = this.splitHeads(this.slice(kv, [0], [dim], [-1]), p.heads, headDim);
    const v = this.splitHeads(this.slice(kv, [dim], [2 * dim], [-1]), p.heads, headDim);
    return this.linear(this.mergeHeads(this.sdpa(q, k, v, headDim, allowed)), p.o);
  }

  /**
   * Interleaved sinusoidal encoding of positions computed in-graph: `pos` is fp32 of rank `rank`;
   * returns [...pos.shape, dim] with pe[p, 2i] = sin(p·10000^(−2i/dim)), pe[p, 2i+1] = cos(same).
   */
  sinusoidalInterleaved(pos: string, rank: number, dim: number): string {
    const freqs = new Float32Array(dim / 2);
    for (let i = 0; i < dim / 2; i++) freqs[i] = Math.pow(10000, (-2 * i) / dim);
    const angle = this.mul(this.unsqueeze(pos, [rank]), this.f32(freqs, [dim / 2]));
    const s = this.unsqueeze(this.op("Sin", [angle]), [rank + 1]);
    const c = this.unsqueeze(this.op("Cos", [angle]), [rank + 1]);
    const both = this.concat([s, c], rank + 1); // [..., dim/2, 2]
    return this.reshape(both, [...new Array<number>(rank).fill(0), -1]);
  }

  /**
   * F5-TTS's timestep encoding: for t of shape [B], emb = t·scale·exp(−ln(10000)·i/(half−1)),
   * returns concat(sin(emb), cos(emb)) [B, dim].
   */
  sinusoidalConcat(t: string, dim: number, scale: number): string {
    const half = dim / 2;
    const freqs = new Float32Array(half);
    for (let i = 0; i < half; i++) freqs[i] = scale * Math.exp((-Math.log(10000) * i) / (half - 1));
    const angle = this.mul(this.unsqueeze(t, [1]), this.f32(freqs, [half]));
    return this.concat([this.op("Sin", [angle]), this.op("Cos", [angle])], 1);
  }

  /** Rotary tables for frame positions 0..T−1 of `like` [B,T,…] (interleaved pairs, as x-transformers). */
  rope(like: string, headDim: number, base = 10000): Rope {
    const t = this.cast(this.arange(this.dim(like, 1)), "f32");
    const freqs = new Float32Array(headDim);
    for (let i = 0; i < headDim / 2; i++) freqs[2 * i] = freqs[2 * i + 1] = Math.pow(base, (-2 * i) / headDim);
    const angle = this.mul(this.unsqueeze(t, [1]), this.f32(freqs, [headDim])); // [T, headDim]
    // rotate_half(x) = x·R with R[2i+1, 2i] = −1, R[2i, 2i+1] = 1: (x0, x1) → (−x1, x0)
    const R = new Float32Array(headDim * headDim);
    for (let i = 0; i < headDim / 2; i++) {
      R[(2 * i + 1) * headDim + 2 * i] = -1;
      R[2 * i * headDim + 2 * i + 1] = 1;
    }
    return { cos: this.op("Cos", [angle]), sin: this.op("Sin", [angle]), rot: this.f32(R, [headDim, headDim]) };
  }

  /** x·cos + rotate_half(x)·sin for x [B,H,T,D]. */
  applyRope(x: string, r: Rope): string {
    return this.add(this.mul(x, r.cos), this.mul(this.matmul(x, r.rot), r.sin));
  }
}

export interface Rope {
  cos: string;
  sin: string;
  rot: string;
}

// ---- deterministic weights ----------------------------------------------------------------------

/** 32-bit string hash (FNV-1a), to derive independent streams from one seed. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * sfc32 seeded through splitmix32: fast, 128-bit state, and only integer arithmetic, so the same seed
 * gives the same numbers on every platform and Node version.
 */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream = "") {
    let s = (seed ^ hash32(stream)) >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** n values uniform in [−bound, bound). */
  uniform(n: number, bound: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (2 * (this.u32() / 4294967296) - 1) * bound;
    return out;
  }
}

/**
 * Makes the weights of common layers from an Rng. Weights are uniform with standard deviation
 * gain/√fan_in (so activations keep their scale through a layer), biases uniform in ±0.5/√fan_in,
 * layer-norm gains 1 ± 0.1 and offsets ± 0.1, embeddings of unit variance.
 */
export class ParamFactory {
  constructor(
    readonly rng: Rng,
    readonly prefix = "",
  ) {}

  private named(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  /** A factory for a sub-module: its weight names get `name.` prepended. */
  sub(name: string): ParamFactory {
    return new ParamFactory(this.rng, this.named(name));
  }

  tensor(name: string, dims: number[], data: Float32Array): Tensor {
    return { name: this.named(name), dims, data };
  }
  uniform(name: string, dims: number[], bound: number): Tensor {
    return this.tensor(name, dims, this.rng.uniform(product(dims), bound));
  }
  /** Uniform with std gain/√fanIn. */
  weight(name: string, dims: number[], fanIn: number, gain = 1): Tensor {
    return this.uniform(name, dims, (gain * Math.sqrt(3)) / Math.sqrt(fanIn));
  }
  bias(name: string, dims: number[], fanIn: number): Tensor {
    return this.uniform(name, dims, 0.5 / Math.sqrt(fanIn));
  }
  filled(name: string, dims: number[], value: number): Tensor {
    return this.tensor(name, dims, new Float32Array(product(dims)).fill(value));
  }
  /** A scalar around `center` (e.g. the learned alpha of a positional encoding). */
  scalar(name: string, center: number, spread: number): Tensor {
    const v = this.rng.uniform(1, spread);
    v[0] += center;
    return this.tensor(name, [1], v);
  }
  /** Unit-variance embedding table [n, dim]. */
  embedding(name: string, n: number, dim: number, std = 1): Tensor {
    return this.uniform(name, [n, dim], std * Math.sqrt(3));
  }
  linear(name: string, inDim: number, outDim: number, opts: { bias?: boolean; gain?: number } = {}): LinearP {
    return {
      w: this.weight(`${name}.w`, [inDim, outDim], inDim, opts.gain ?? 1),
      b: opts.bias === false ? undefined : this.bias(`${name}.b`, [outDim], inDim),
    };
  }
  conv1d(
    name: string,
    inC: number,
    outC: number,
    k: number,
    opts: { stride?: number; pad?: number | [number, number]; dilation?: number; groups?: number; bias?: boolean; gain?: number } = {},
  ): ConvP {
    const groups = opts.groups ?? 1;
    const fanIn = (inC / groups) * k;
    return {
      w: this.weight(`${name}.w`, [outC, inC / groups, k], fanIn, opts.gain ?? 1),
      b: opts.bias === false ? undefined : this.bias(`${name}.b`, [outC], fanIn),
      stride: opts.stride,
      pad: opts.pad,
      dilation: opts.dilation,
      groups: opts.groups,
    };
  }
  /** ConvTranspose weight [in, out, k]; each output sees about in·k/stride inputs. */
  convTranspose1d(name: string, inC: number, outC: number, k: number, stride: number, pad: number, gain = 1): ConvP {
    const fanIn = (inC * k) / stride;
    return {
      w: this.weight(`${name}.w`, [inC, outC, k], fanIn, gain),
      b: this.bias(`${name}.b`, [outC], fanIn),
      stride,
      pad,
    };
  }
  layerNorm(name: string, dim: number, affine = true): LayerNormP {
    if (!affine) return { g: this.filled(`${name}.g`, [dim], 1), b: this.filled(`${name}.b`, [dim], 0) };
    const g = this.rng.uniform(dim, 0.1);
    for (let i = 0; i < dim; i++) g[i] += 1;
    return { g: this.tensor(`${name}.g`, [dim], g), b: this.uniform(`${name}.b`, [dim], 0.1) };
  }
  attention(name: string, dim: number, heads: number): AttentionP {
    return { qkv: this.linear(`${name}.qkv`, dim, 3 * dim), o: this.linear(`${name}.o`, dim, dim), heads };
  }
  crossAttention(name: string, dim: number, ctxDim: number, heads: number): CrossAttentionP {
    return {
      q: this.linear(`${name}.q`, dim, dim),
      kv: this.linear(`${name}.kv`, ctxDim, 2 * dim),
      o: this.linear(`${name}.o`, dim, dim),
      heads,
    };
  }
}
