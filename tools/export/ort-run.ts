/**
 * The ONNX side of tools/export/parity.py: runs exported graphs with onnxruntime-node, exactly as the
 * services load them, reading inputs and writing outputs as .npy files (Debian has no Python
 * onnxruntime). Not part of the product.
 *
 *   node dist/tools/export/ort-run.js graph <model.onnx> <inDir> <outDir>
 *       every <inDir>/<name>.npy is the input <name>; every output is written to <outDir>/<name>.npy
 *   node dist/tools/export/ort-run.js t2s <setDir> <inDir> <outDir>
 *       teacher-forced GPT decoding as gpt-semantic runs it: t2s_encoder, t2s_prefill, then one
 *       t2s_step per token of tokens.npy over a masked KV cache of capacity Kc whose dead slots hold
 *       garbage; writes logits.npy [1+steps, vocab] (prefill, then each step)
 *   node dist/tools/export/ort-run.js manifest <setDir> <unused> <outDir>
 *       shared/manifest.ts loadManifest on the set; writes manifest.json {ok, dims, graphs} or {ok: false, error}
 *   node dist/tools/export/ort-run.js gpt <setDir> <inDir> <outDir>
 *       the gpt-semantic engine (services/gpt-semantic/engine.ts) with greedy sampling (top_k 1,
 *       upstream's repetition penalty 1.35): writes tokens.npy
 *   node dist/tools/export/ort-run.js pipeline <setDir> <inDir> <outDir>
 *       the stage code of gpt-semantic and sovits-decoder in one process (as tools/inprocess.ts runs it,
 *       through the services' OrtPool): the reference's conditioning (ref.wav), the greedy GPT engine on
 *       the given prompt tokens and phones, encodeSegment, then decodeWindows (the CFM loop, window
 *       plan and prefix hand-over of sovits-decoder). Writes the tokens, spec, ge, ref_mel, fea_ref,
 *       fea_todo, the initial noise of each CFM window (noise_<k>.npy, [bands, T], prefix zeroed, as the
 *       first DiT call of the window sees it) and mel.npy, the de-normalised mel the vocoder would get,
 *       windows joined without their overlap frames
 *   node dist/tools/export/ort-run.js bert <setDir> <inDir> <outDir>
 *       the text-frontend's zh BERT features (services/text-frontend/bert.ts bertFeatures: the set's
 *       bert_zh_vocab.txt, one padded batch through bert_zh.onnx) for the zh runs of <inDir>/runs.json
 *       ([{normText, word2ph}], one segment each); writes feat_<i>.npy [phones, dim]
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { loadManifest, type Manifest } from "../../shared/manifest.js";
import { sessionOptions } from "../../shared/ort-options.js";
import { GptEngine, type GptResult } from "../../services/gpt-semantic/engine.js";
import { decodeWindows, ditBatch, encodeSegment, type DitInput } from "../../services/sovits-decoder/cfm.js";
import { referenceConditioning } from "../../services/sovits-decoder/voice-prep.js";
import { OrtPool } from "../../shared/ort-pool.js";
import { decodeWav } from "../../shared/dsp/index.js";
import { bertFeatures, loadVocab, type BertRunner } from "../../services/text-frontend/bert.js";

type Arr = { dtype: "float32" | "int64" | "int32" | "float64"; shape: number[]; data: Float32Array | BigInt64Array | Int32Array | Float64Array };

const DESCR: Record<string, Arr["dtype"]> = { "<f4": "float32", "<i8": "int64", "<i4": "int32", "<f8": "float64" };

export function readNpy(path: string): Arr {
  const buf = readFileSync(path);
  if (buf.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString("latin1", hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1] ?? "";
  const dtype = DESCR[descr];
  if (!dtype) throw new Error(`${path}: dtype ${descr} not supported`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path}: Fortran order not supported`);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const off = hstart + hlen;
  const bytes = buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + buf.length);
  const data =
    dtype === "float32" ? new Float32Array(bytes) : dtype === "int64" ? new BigInt64Array(bytes) : dtype === "int32" ? new Int32Array(bytes) : new Float64Array(bytes);
  return { dtype, shape, data };
}

export function writeNpy(path: string, a: Arr): void {
  const descr = Object.entries(DESCR).find(([, v]) => v === a.dtype)![0];
  const shape = a.shape.length === 1 ? `(${a.shape[0]},)` : `(${a.shape.join(", ")})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const pre = Buffer.alloc(10);
  pre.write("\x93NUMPY", 0, "latin1");
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  writeFileSync(path, Buffer.concat([pre, Buffer.from(header, "latin1"), Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength)]));
}

const toTensor = (a: Arr): ort.Tensor => new ort.Tensor(a.dtype, a.data as Float32Array, a.shape);
const fromTensor = (t: ort.Tensor): Arr => ({ dtype: t.type as Arr["dtype"], shape: [...t.dims], data: t.data as Float32Array });

function readInputs(inDir: string): Record<string, Arr> {
  const out: Record<string, Arr> = {};
  for (const f of readdirSync(inDir)) if (f.endsWith(".npy")) out[f.slice(0, -4)] = readNpy(join(inDir, f));
  return out;
}

/** The GPT dims from <inDir>/t2s.json (the set may not hold all nine graphs yet while parity runs). */
function gptDims(inDir: string): Manifest["dims"]["t2s"] {
  return JSON.parse(readFileSync(join(inDir, "t2s.json"), "utf8")) as Manifest["dims"]["t2s"];
}

async function session(path: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path, sessionOptions(2));
}

async function runGraph(model: string, inDir: string, outDir: string): Promise<void> {
  const s = await session(model);
  const feeds: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(readInputs(inDir))) feeds[k] = toTensor(v);
  const out = await s.run(feeds);
  for (const [k, v] of Object.entries(out)) writeNpy(join(outDir, `${k}.npy`), fromTensor(v));
}

/** Teacher-forced decoding: the logits of the prefill and of a step per given token. */
async function runT2s(setDir: string, inDir: string, outDir: string): Promise<void> {
  const d = gptDims(inDir);
  const inp = readInputs(inDir);
  const enc = await session(join(setDir, "t2s_encoder.onnx"));
  const pre = await session(join(setDir, "t2s_prefill.onnx"));
  const step = await session(join(setDir, "t2s_step.onnx"));
  const x = await enc.run({
    ref_seq: toTensor(inp.ref_seq),
    text_seq: toTensor(inp.text_seq),
    ref_bert: toTensor(inp.ref_bert),
    text_bert: toTensor(inp.text_bert),
  });
  writeNpy(join(outDir, "x.npy"), fromTensor(x.x));
  const p = await pre.run({ x: x.x, prompts: toTensor(inp.prompts) });
  const tokens = inp.tokens.data as BigInt64Array;
  const t25 = inp.prompts.shape[1];
  const n = x.x.dims[1] + t25;
  const steps = tokens.length;
  // capacity with room to spare; dead slots hold large garbage that the mask must hide
  const cap = n + steps + 7;
  const per = d.heads * cap * d.headDim;
  const K = Array.from({ length: d.layers }, () => new Float32Array(per).fill(1e4));
  const V = Array.from({ length: d.layers }, () => new Float32Array(per).fill(-1e4));
  const mask = new Float32Array(cap);
  // write the prefill's [1,Hh,n,Dh] into slots laid out in reverse order (slot order is irrelevant to the graph)
  const slotOf = (posIdx: number): number => cap - 1 - posIdx;
  const put = (l: number, pos: number, k: Float32Array, v: Float32Array, len: number, at: number): void => {
    for (let h = 0; h < d.heads; h++) {
      const src = (h * len + at) * d.headDim;
      const dst = (h * cap + slotOf(pos)) * d.headDim;
      K[l].set(k.subarray(src, src + d.headDim), dst);
      V[l].set(v.subarray(src, src + d.headDim), dst);
    }
  };
  for (let l = 0; l < d.layers; l++) {
    const k = p[`k_${l}`].data as Float32Array;
    const v = p[`v_${l}`].data as Float32Array;
    for (let i = 0; i < n; i++) put(l, i, k, v, n, i);
  }
  for (let i = 0; i < n; i++) mask[slotOf(i)] = 1;
  const logits = new Float32Array((1 + steps) * d.vocab);
  logits.set(p.logits.data as Float32Array, 0);
  for (let s = 0; s < steps; s++) {
    const feeds: Record<string, ort.Tensor> = {
      token: new ort.Tensor("int64", BigInt64Array.of(tokens[s]), [1, 1]),
      pos: new ort.Tensor("int64", BigInt64Array.of(BigInt(t25 + s)), [1]),
      past_mask: new ort.Tensor("float32", mask, [1, cap]),
    };
    for (let l = 0; l < d.layers; l++) {
      feeds[`past_k_${l}`] = new ort.Tensor("float32", K[l], [1, d.heads, cap, d.headDim]);
      feeds[`past_v_${l}`] = new ort.Tensor("float32", V[l], [1, d.heads, cap, d.headDim]);
    }
    const o = await step.run(feeds);
    logits.set(o.logits.data as Float32Array, (1 + s) * d.vocab);
    for (let l = 0; l < d.layers; l++) put(l, n + s, o[`k_${l}`].data as Float32Array, o[`v_${l}`].data as Float32Array, 1, 0);
    mask[slotOf(n + s)] = 1;
  }
  writeNpy(join(outDir, "logits.npy"), { dtype: "float32", shape: [1 + steps, d.vocab], data: logits });
}

/** The gpt-semantic engine with greedy sampling; BERT features are zero there (as in the service). */
async function runGpt(setDir: string, inDir: string, outDir: string): Promise<void> {
  const inp = readInputs(inDir);
  // the engine reads only dims.t2s and lengthPolicy (null in an exported set: stop on EOS or at 1500)
  const m = { dims: { t2s: gptDims(inDir) }, lengthPolicy: null } as unknown as Manifest;
  const maxTokens = Number((inp.max_tokens?.data as BigInt64Array | undefined)?.[0] ?? 0n);
  const { tokens, stoppedBy } = await greedyTokens(setDir, m, inp, maxTokens);
  writeNpy(join(outDir, "tokens.npy"), { dtype: "int64", shape: [tokens.length], data: BigInt64Array.from(tokens, (v) => BigInt(v)) });
  writeFileSync(join(outDir, "gpt.json"), JSON.stringify({ stoppedBy, n: tokens.length }));
}

/**
 * Greedy tokens of the gpt-semantic engine, stopped after maxTokens when given (an abort lands between
 * steps, so the engine may sample past maxTokens: only the first maxTokens are kept).
 */
async function greedyTokens(setDir: string, m: Manifest, inp: Record<string, Arr>, maxTokens: number): Promise<{ tokens: Int32Array; stoppedBy: string }> {
  const sessions = {
    t2s_encoder: await session(join(setDir, "t2s_encoder.onnx")),
    t2s_prefill: await session(join(setDir, "t2s_prefill.onnx")),
    t2s_step: await session(join(setDir, "t2s_step.onnx")),
  };
  const engine = new GptEngine(sessions, m, { maxRows: 4 });
  const i32 = (a: Arr): Int32Array => Int32Array.from(a.data as BigInt64Array, (v) => Number(v));
  engine.add({
    id: "parity",
    promptIds: i32(inp.ref_seq),
    textIds: i32(inp.text_seq),
    prompts: i32(inp.prompts),
    sampling: { topK: 1, topP: 1, temperature: 1, repetitionPenalty: 1.35 },
    seed: 1,
  });
  let result: GptResult | undefined;
  for (let i = 0; !result && i < 1600; i++) {
    result = (await engine.step())[0];
    if (!result && maxTokens && i >= maxTokens) engine.abort("parity");
  }
  if (!result) throw new Error("engine did not finish");
  return { tokens: maxTokens ? result.tokens.subarray(0, maxTokens) : result.tokens, stoppedBy: result.stoppedBy };
}

/** GPT tokens, then the sovits-decoder's mel, from the stage code (see the header). */
async function runPipeline(setDir: string, inDir: string, outDir: string): Promise<void> {
  const inp = readInputs(inDir);
  const params = JSON.parse(readFileSync(join(inDir, "params.json"), "utf8")) as { steps: number; seed: number; speed: number; maxTokens: number };
  const dims = JSON.parse(readFileSync(join(inDir, "dims.json"), "utf8")) as Manifest["dims"];
  const graphs = ["ge_encoder", "sovits_encp", "cfm_dit"] as const;
  // the set holds only some graphs (no manifest yet): the services' pool reads nothing else of the manifest
  const m = { name: "parity", dims, lengthPolicy: null, graphs: Object.fromEntries(graphs.map((g) => [g, { file: `${g}.onnx` }])) } as unknown as Manifest;
  const i32 = (a: Arr): Int32Array => Int32Array.from(a.data as BigInt64Array, (v) => Number(v));
  const put = (name: string, data: Float32Array | BigInt64Array, shape: number[]): void =>
    writeNpy(join(outDir, `${name}.npy`), { dtype: data instanceof Float32Array ? "float32" : "int64", shape, data });

  const gpt = await greedyTokens(setDir, m, inp, params.maxTokens);
  put("tokens", BigInt64Array.from(gpt.tokens, (v) => BigInt(v)), [gpt.tokens.length]);

  const pool = await OrtPool.create({ modelDir: setDir, manifest: m, graphs, workers: 1, intraOpThreads: 2 });
  try {
    const { samples, sampleRate } = decodeWav(readFileSync(join(inDir, "ref.wav")));
    const cond = await referenceConditioning(pool, m, samples, sampleRate);
    put("spec", cond.spec.data, [dims.spec.bins, cond.spec.frames]);
    put("ge", cond.ge, [dims.ge.dim]);
    put("ref_mel", cond.refMel, [dims.mel.bands, cond.refMelFrames]);
    const prompts = i32(inp.prompts);
    const promptIds = i32(inp.ref_seq);
    const textIds = i32(inp.text_seq);
    const enc = await encodeSegment(pool, m, { prompts, promptIds, tokens: gpt.tokens, textIds, ge: cond.ge, speed: params.speed });
    put("fea_ref", enc.feaRef, [dims.fea.dim, enc.tRef]);
    put("fea_todo", enc.feaTodo, [dims.fea.dim, enc.tTodo]);
    const voice = { audioSha: "parity", prompts, ge: cond.ge, refMel: cond.refMel, refMelFrames: cond.refMelFrames, seconds: samples.length / sampleRate };
    let windows = 0;
    const dit = async (input: DitInput): Promise<Float32Array> => {
      if (input.time === 0) put(`noise_${windows++}`, Float32Array.from(input.x), [dims.mel.bands, input.t]);
      return (await ditBatch(pool, m, [input]))[0];
    };
    const bands = dims.mel.bands;
    const parts: { mel: Float32Array; frames: number; overlap: number }[] = [];
    for await (const w of decodeWindows(dit, m, { voice, enc, steps: params.steps, seed: params.seed, seg: 0 })) parts.push(w);
    const total = parts.reduce((n, w) => n + w.frames - w.overlap, 0);
    const mel = new Float32Array(bands * total);
    let at = 0;
    for (const w of parts) {
      const n = w.frames - w.overlap;
      for (let c = 0; c < bands; c++) mel.set(w.mel.subarray(c * w.frames + w.overlap, (c + 1) * w.frames), c * total + at);
      at += n;
    }
    put("mel", mel, [bands, total]);
    writeFileSync(join(outDir, "pipeline.json"), JSON.stringify({ stoppedBy: gpt.stoppedBy, windows: parts.map((w) => w.frames - w.overlap) }));
  } finally {
    await pool.close();
  }
}

/** zh BERT features as the text-frontend computes them, from the set's bert_zh graph and vocabulary. */
async function runBert(setDir: string, inDir: string, outDir: string): Promise<void> {
  const runs = JSON.parse(readFileSync(join(inDir, "runs.json"), "utf8")) as { normText: string; word2ph: number[] }[];
  const s = await session(join(setDir, "bert_zh.onnx"));
  let dim = 0;
  const runner: BertRunner = async ({ input_ids, attention_mask, token_type_ids, dims }) => {
    const o = await s.run({
      input_ids: new ort.Tensor("int64", input_ids, dims),
      attention_mask: new ort.Tensor("int64", attention_mask, dims),
      token_type_ids: new ort.Tensor("int64", token_type_ids, dims),
    });
    dim = o.hidden_m3.dims[2];
    return { data: o.hidden_m3.data as Float32Array, dims: o.hidden_m3.dims };
  };
  // the graph's width, from a one-token call, so bertFeatures checks the batch's output against it
  await runner({ input_ids: BigInt64Array.of(0n), attention_mask: BigInt64Array.of(1n), token_type_ids: BigInt64Array.of(0n), dims: [1, 1] });
  const segments = runs.map((r) => {
    const phones = r.word2ph.flatMap((k, i) => Array.from({ length: k }, (_, j) => `p${i}.${j}`));
    return { phones, runs: [{ lang: "zh", text: r.normText, normText: r.normText, phones, word2ph: r.word2ph }] };
  });
  const feats = await bertFeatures(segments, { runner, vocab: loadVocab(join(setDir, "bert_zh_vocab.txt")), dim });
  feats.forEach((f, i) => writeNpy(join(outDir, `feat_${i}.npy`), { dtype: "float32", shape: [segments[i].phones.length, dim], data: f }));
}

async function main(argv: string[]): Promise<void> {
  const [mode, a, inDir, outDir] = argv;
  if (!mode || !a || !inDir || !outDir) throw new Error("usage: ort-run graph|t2s|gpt|pipeline|bert|manifest <model|setDir> <inDir> <outDir>");
  mkdirSync(outDir, { recursive: true });
  if (mode === "graph") await runGraph(a, inDir, outDir);
  else if (mode === "t2s") await runT2s(a, inDir, outDir);
  else if (mode === "gpt") await runGpt(a, inDir, outDir);
  else if (mode === "pipeline") await runPipeline(a, inDir, outDir);
  else if (mode === "bert") await runBert(a, inDir, outDir);
  else if (mode === "manifest") {
    // loadManifest as every service calls it: schema, then size and sha256 of each graph file
    let result: Record<string, unknown>;
    try {
      const m = loadManifest(a);
      result = { ok: true, name: m.name, kind: m.kind, dims: m.dims, graphs: Object.keys(m.graphs) };
    } catch (err) {
      result = { ok: false, error: (err as Error).message };
    }
    writeFileSync(join(outDir, "manifest.json"), JSON.stringify(result, null, 2));
  }
  else throw new Error(`unknown mode ${mode}`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  console.error(`ort-run: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});
