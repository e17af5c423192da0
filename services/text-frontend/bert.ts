/**
 * zh BERT features, upstream `TextPreprocessor.get_bert_feature` / `get_bert_inf`: the normalised text of a
 * zh run, tokenised character by character ([CLS] chars [SEP], as chinese-roberta's BertTokenizer does for
 * Han characters and punctuation), through chinese-roberta-wwm-ext-large; `hidden_states[-3]` with CLS and
 * SEP dropped; each character's vector repeated word2ph times. Every other language (en, ja, ko, and yue,
 * as upstream) gets zeros, and so does everything when no BERT model is configured.
 *
 * The graph (optional, `bert_zh` in docs/models.md): inputs `input_ids`, `attention_mask`,
 * `token_type_ids` i64 [B,L]; output `hidden_m3` f32 [B,L,D] (D = 1024 for the real model). Rows are
 * independent and padding (attention_mask 0) never changes a real position, so all zh runs of a request
 * (every segment and the prompt) go through it in one padded batch.
 *
 * Output layout: `bertFeatures` gives one Float32Array per segment, phone-major [N_phones, D], which is
 * what the t2s_encoder graph's `ref_bert` / `text_bert` inputs take; `bertCompact` gives the form the GPT
 * job carries (one vector per zh character plus a phone → vector index; gpt-semantic expands it with
 * `expandBert`), about word2ph (~2-3×) times smaller.
 */
import { readFileSync } from "node:fs";
import type { Run } from "./frontend.js";

export const BERT_DIM = 1024;

/** Runs a BERT graph: feeds i64 [B,L], returns hidden_m3 f32 [B,L,D] (data and dims). */
export type BertRunner = (feeds: { input_ids: BigInt64Array; attention_mask: BigInt64Array; token_type_ids: BigInt64Array; dims: [number, number] }) => Promise<{ data: Float32Array; dims: readonly number[] }>;

export interface BertVocab {
  ids: ReadonlyMap<string, number>;
  cls: number;
  sep: number;
  unk: number;
}

/** A BERT vocab.txt (one token per line, id = line number). */
export function parseVocab(text: string): BertVocab {
  const ids = new Map<string, number>();
  text.split(/\r?\n/).forEach((tok, i) => {
    if (tok !== "" && !ids.has(tok)) ids.set(tok, i);
  });
  const need = (t: string) => {
    const id = ids.get(t);
    if (id === undefined) throw new Error(`BERT vocab has no ${t}`);
    return id;
  };
  return { ids, cls: need("[CLS]"), sep: need("[SEP]"), unk: need("[UNK]") };
}

export function loadVocab(path: string): BertVocab {
  return parseVocab(readFileSync(path, "utf8"));
}

/** [CLS] + one token per character + [SEP] (BertTokenizer lower-cases; normText holds no letters). */
export function tokenizeChars(normText: string, vocab: BertVocab): number[] {
  const out = [vocab.cls];
  for (const ch of normText) out.push(vocab.ids.get(ch.toLowerCase()) ?? vocab.unk);
  out.push(vocab.sep);
  return out;
}

/** The pieces a request needs features for: each segment's runs (and the prompt's, as one more segment). */
export interface BertSegment {
  phones: readonly string[];
  runs: readonly Run[];
}

/** A segment's features, compact: one vector per zh character ([n, dim]) and, per phone, its vector (-1: zeros). */
export interface CompactBert {
  dim: number;
  vecs: Float32Array;
  index: Int32Array;
}

/**
 * Compact features for every segment: zh runs through the model in one batch; a segment with no zh run
 * (or every segment, when `model` is null) gets null, meaning all rows zero. A character with word2ph 0
 * has no phone and takes no vector.
 */
export async function bertCompact(segments: readonly BertSegment[], model: { runner: BertRunner; vocab: BertVocab; dim?: number } | null): Promise<(CompactBert | null)[]> {
  const dim = model?.dim ?? BERT_DIM;
  const out: (CompactBert | null)[] = segments.map(() => null);
  if (!model) return out;
  // Collect the zh runs and where their phones start in their segment.
  const items: { seg: number; offset: number; tokens: number[]; word2ph: number[] }[] = [];
  segments.forEach((s, si) => {
    let offset = 0;
    for (const r of s.runs) {
      if (r.lang === "zh" && r.word2ph && r.phones.length > 0) {
        if (r.word2ph.length !== Array.from(r.normText).length) throw new Error(`word2ph has ${r.word2ph.length} entries for ${Array.from(r.normText).length} characters`);
        items.push({ seg: si, offset, tokens: tokenizeChars(r.normText, model.vocab), word2ph: r.word2ph });
      }
      offset += r.phones.length;
    }
  });
  if (items.length === 0) return out;
  const B = items.length;
  const L = Math.max(...items.map((it) => it.tokens.length));
  const ids = new BigInt64Array(B * L);
  const mask = new BigInt64Array(B * L);
  items.forEach((it, b) => {
    it.tokens.forEach((id, j) => {
      ids[b * L + j] = BigInt(id);
      mask[b * L + j] = 1n;
    });
  });
  const res = await model.runner({ input_ids: ids, attention_mask: mask, token_type_ids: new BigInt64Array(B * L), dims: [B, L] });
  if (res.dims.length !== 3 || res.dims[0] !== B || res.dims[1] !== L || res.dims[2] !== dim) {
    throw new Error(`BERT graph returned hidden_m3 of shape [${res.dims.join(",")}], expected [${B},${L},${dim}]`);
  }
  segments.forEach((s, si) => {
    const mine = items.map((it, b) => ({ it, b })).filter(({ it }) => it.seg === si);
    if (mine.length === 0) return;
    const n = mine.reduce((acc, { it }) => acc + it.word2ph.filter((k) => k > 0).length, 0);
    const vecs = new Float32Array(n * dim);
    const index = new Int32Array(s.phones.length).fill(-1);
    let v = 0;
    for (const { it, b } of mine) {
      let row = it.offset;
      it.word2ph.forEach((k, c) => {
        if (k <= 0) return;
        // Character c is token c + 1 (token 0 is [CLS]).
        vecs.set(res.data.subarray((b * L + c + 1) * dim, (b * L + c + 2) * dim), v * dim);
        index.fill(v, row, row + k);
        row += k;
        v++;
      });
    }
    out[si] = { dim, vecs, index };
  });
  return out;
}

/** Phone-major rows [phones, dim] from compact features (null: zeros), the layout of ref_bert / text_bert. */
export function expandBert(c: CompactBert | null | undefined, phones: number, dim: number): Float32Array {
  const out = new Float32Array(phones * dim);
  if (!c) return out;
  if (c.index.length !== phones || c.dim !== dim) throw new Error(`BERT rows for ${c.index.length} phones of dim ${c.dim}, expected ${phones} of ${dim}`);
  for (let p = 0; p < phones; p++) {
    const v = c.index[p];
    if (v >= 0) out.set(c.vecs.subarray(v * dim, (v + 1) * dim), p * dim);
  }
  return out;
}

/**
 * Features for every segment: zh runs through the model in one batch, everything else zeros.
 * With no model (`runner` null) every segment is zeros, as upstream without a zh run.
 */
export async function bertFeatures(segments: readonly BertSegment[], model: { runner: BertRunner; vocab: BertVocab; dim?: number } | null): Promise<Float32Array[]> {
  const dim = model?.dim ?? BERT_DIM;
  const compact = await bertCompact(segments, model);
  return compact.map((c, i) => expandBert(c, segments[i].phones.length, dim));
}
