/**
 * The same stage code run in one process, one request at a time, without NATS: upstream's serving model
 * (api_v2 runs one request at a time in one Python process). The benchmark's sequential baseline, and
 * the reference for measuring what NATS costs.
 */
import { createHash } from "node:crypto";
import * as ort from "onnxruntime-node";
import { sessionOptions } from "../shared/ort-options.js";
import { join } from "node:path";
import { AudioAssembler } from "../shared/client.js";
import { loadManifest, type Manifest } from "../shared/manifest.js";
import { OrtPool } from "../shared/ort-pool.js";
import type { GenParams, PreparedVoice } from "../shared/schemas.js";
import { asFloat32, f32 } from "../shared/tensor.js";
import { GptEngine, type GptSessions } from "../services/gpt-semantic/engine.js";
import { decodeWindows, ditBatch, encodeSegment } from "../services/sovits-decoder/cfm.js";
import { prepareVoice } from "../services/sovits-decoder/voice-prep.js";
import { promptToPhones, textToSegments } from "../services/text-frontend/frontend.js";
import type { SplitMethod } from "../services/text-frontend/split.js";

export interface InProcessRequest {
  text: string;
  textLang: string;
  splitMethod: SplitMethod;
  wav: Uint8Array;
  promptText: string;
  promptLang: string;
  params: GenParams;
}

export interface InProcessResult {
  pcm: Float32Array;
  sampleRate: number;
  tokens: number[];
  totalMs: number;
  stageMs: Record<"text" | "gpt" | "sovits" | "vocoder", number>;
}

export class InProcessPipeline {
  #pool: OrtPool;
  #gpt: GptSessions;
  #m: Manifest;
  #voices = new Map<string, PreparedVoice>();

  private constructor(pool: OrtPool, gpt: GptSessions, m: Manifest) {
    this.#pool = pool;
    this.#gpt = gpt;
    this.#m = m;
  }

  static async create(modelDir: string, intraOpThreads = 1): Promise<InProcessPipeline> {
    const manifest = loadManifest(modelDir);
    const pool = await OrtPool.create({
      modelDir,
      manifest,
      graphs: ["cnhubert", "vq_extract", "ge_encoder", "sovits_encp", "cfm_dit", "vocoder"],
      workers: 1,
      intraOpThreads,
    });
    const gpt = {} as GptSessions;
    for (const g of ["t2s_encoder", "t2s_prefill", "t2s_step"] as const) gpt[g] = await ort.InferenceSession.create(join(modelDir, manifest.graphs[g].file), sessionOptions(intraOpThreads));
    return new InProcessPipeline(pool, gpt, manifest);
  }

  async synthesize(req: InProcessRequest): Promise<InProcessResult> {
    const t0 = performance.now();
    const stageMs = { text: 0, gpt: 0, sovits: 0, vocoder: 0 };
    let t = performance.now();
    const segments = textToSegments(req.text, req.textLang, req.splitMethod);
    const prompt = promptToPhones(req.promptText, req.promptLang);
    stageMs.text += performance.now() - t;

    t = performance.now();
    const sha = createHash("sha256").update(req.wav).digest("hex");
    let voice = this.#voices.get(sha);
    if (!voice) this.#voices.set(sha, (voice = await prepareVoice(this.#pool, this.#m, sha, req.wav)));
    stageMs.sovits += performance.now() - t;

    const pieces: Float32Array[] = [];
    const asm = new AudioAssembler((p) => pieces.push(p));
    asm.segCount = segments.length;
    const promptIds = Int32Array.from(prompt.ids);
    for (let seg = 0; seg < segments.length; seg++) {
      t = performance.now();
      const engine = new GptEngine(this.#gpt, this.#m, { maxRows: 1 });
      engine.add({
        id: "r",
        promptIds,
        textIds: Int32Array.from(segments[seg].ids),
        prompts: voice.prompts,
        sampling: { topK: req.params.topK, topP: req.params.topP, temperature: req.params.temperature, repetitionPenalty: req.params.repetitionPenalty },
        seed: (req.params.seed + seg * 0x9e3779b1) >>> 0,
      });
      let tokens: Int32Array | undefined;
      while (!tokens) for (const r of await engine.step()) tokens = r.tokens;
      stageMs.gpt += performance.now() - t;

      t = performance.now();
      const enc = await encodeSegment(this.#pool, this.#m, { prompts: voice.prompts, promptIds, tokens, textIds: Int32Array.from(segments[seg].ids), ge: voice.ge, speed: req.params.speed });
      const dit = async (input: Parameters<typeof ditBatch>[2][number]) => (await ditBatch(this.#pool, this.#m, [input]))[0];
      for await (const w of decodeWindows(dit, this.#m, { voice, enc, steps: req.params.sampleSteps, seed: req.params.seed, seg })) {
        stageMs.sovits += performance.now() - t;
        t = performance.now();
        const out = await this.#pool.run("vocoder", { x: f32(w.mel, [1, this.#m.dims.mel.bands, w.frames]) });
        const u = this.#m.dims.vocoder.upsample;
        asm.push({
          type: "audio", id: "r", seg, segCount: segments.length, win: w.win, last: w.last, sampleRate: this.#m.dims.vocoder.sampleRate,
          overlap: w.overlap * u, tail: w.tail * u, pcm: asFloat32(out.audio, "audio"), tokens: tokens.length, fragmentInterval: req.params.fragmentInterval, timings: [],
        });
        stageMs.vocoder += performance.now() - t;
        t = performance.now();
      }
    }
    let n = 0;
    for (const p of pieces) n += p.length;
    const pcm = new Float32Array(n);
    n = 0;
    for (const p of pieces) {
      pcm.set(p, n);
      n += p.length;
    }
    return { pcm, sampleRate: this.#m.dims.vocoder.sampleRate, tokens: asm.tokens, totalMs: performance.now() - t0, stageMs };
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}
