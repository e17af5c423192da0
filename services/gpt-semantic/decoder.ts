/**
 * Semantic-token generation for one segment: t2s_encoder, t2s_prefill, then t2s_step until EOS,
 * sampling in TypeScript in upstream's order. Cross-request batching builds on the same pieces.
 */
import type { Manifest } from "../../shared/manifest.js";
import type { OrtPool } from "../../shared/ort-pool.js";
import { Rng, sampleToken, type SamplingParams } from "../../shared/sampling.js";
import { asFloat32, f32, i64 } from "../../shared/tensor.js";
import { KvCache } from "./kv-cache.js";

/** Upstream's hard cap on generated tokens per segment (60 s of audio). */
export const MAX_TOKENS = 1500;

export interface DecodeInput {
  promptIds: Int32Array;
  textIds: Int32Array;
  prompts: Int32Array;
  sampling: SamplingParams;
  seed: number;
  /** Called between steps; throw to stop (cancel, deadline). */
  checkAlive?: () => void;
}

export interface DecodeResult {
  tokens: Int32Array;
  steps: number;
  stoppedBy: "eos" | "length-policy" | "max-tokens";
}

export function tokenLimit(manifest: Manifest, textPhones: number): { limit: number; byPolicy: boolean } {
  const p = manifest.lengthPolicy;
  if (!p) return { limit: MAX_TOKENS, byPolicy: false };
  return { limit: Math.min(MAX_TOKENS, Math.max(p.minTokens, Math.ceil(p.tokensPerPhone * textPhones))), byPolicy: true };
}

export async function decodeSegment(pool: OrtPool, manifest: Manifest, input: DecodeInput): Promise<DecodeResult> {
  const d = manifest.dims.t2s;
  const nr = input.promptIds.length;
  const nt = input.textIds.length;
  const enc = await pool.run("t2s_encoder", {
    ref_seq: i64(input.promptIds, [1, nr]),
    text_seq: i64(input.textIds, [1, nt]),
    ref_bert: f32(new Float32Array(nr * d.bertDim), [nr, d.bertDim]),
    text_bert: f32(new Float32Array(nt * d.bertDim), [nt, d.bertDim]),
  });
  const x = asFloat32(enc.x, "x");
  const n = nr + nt;
  const t25 = input.prompts.length;
  const pre = await pool.run("t2s_prefill", {
    x: f32(x, [1, n, d.hidden]),
    prompts: i64(input.prompts, [1, t25]),
  });
  const { limit, byPolicy } = tokenLimit(manifest, nt);
  const cache = new KvCache(d.layers, d.heads, d.headDim, n + t25 + Math.min(limit, 256) + 1);
  const ks: Float32Array[] = [];
  const vs: Float32Array[] = [];
  for (let l = 0; l < d.layers; l++) {
    ks.push(asFloat32(pre[`k_${l}`], `k_${l}`));
    vs.push(asFloat32(pre[`v_${l}`], `v_${l}`));
  }
  cache.append(ks, vs, n + t25);

  const rng = new Rng(input.seed);
  const history: number[] = Array.from(input.prompts);
  const generated: number[] = [];
  let logits = asFloat32(pre.logits, "logits");
  for (let idx = 0; ; idx++) {
    if (generated.length >= limit) return { tokens: Int32Array.from(generated), steps: idx, stoppedBy: byPolicy ? "length-policy" : "max-tokens" };
    const { token, argmax } = sampleToken(logits, history, idx, input.sampling, rng, d.eos);
    if (token === d.eos || argmax === d.eos) return { tokens: Int32Array.from(generated), steps: idx + 1, stoppedBy: "eos" };
    generated.push(token);
    history.push(token);
    input.checkAlive?.();
    const feeds: Parameters<OrtPool["run"]>[1] = {
      token: i64([token], [1, 1]),
      pos: i64([t25 + idx], [1]),
      past_mask: f32(cache.mask, [1, cache.capacity]),
    };
    for (let l = 0; l < d.layers; l++) {
      feeds[`past_k_${l}`] = f32(cache.k[l], [1, d.heads, cache.capacity, d.headDim]);
      feeds[`past_v_${l}`] = f32(cache.v[l], [1, d.heads, cache.capacity, d.headDim]);
    }
    const out = await pool.run("t2s_step", feeds);
    logits = asFloat32(out.logits, "logits");
    for (let l = 0; l < d.layers; l++) {
      ks[l] = asFloat32(out[`k_${l}`], `k_${l}`);
      vs[l] = asFloat32(out[`v_${l}`], `v_${l}`);
    }
    cache.append(ks, vs, 1);
  }
}
