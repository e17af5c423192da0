/**
 * A tiny random BERT-shaped graph in the `bert_zh` contract (docs/models.md), for the BERT tests:
 * embeddings, one masked self-attention layer, projection to `dim`; and
 * a model set that is the tiny set plus this graph and its vocab.
 */
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { GraphBuilder, ParamFactory, Rng } from "../../tools/onnx-builder.js";
import { MANIFEST_FILE } from "../../shared/manifest.js";

const HIDDEN = 16;
/** Specials, then the characters the tests use (others tokenise to [UNK]). */
export const TINY_BERT_CHARS = Array.from("，。！？,.!?…-今天气很好我们一起去银行取钱你世界学生老师");
export const TINY_BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ...TINY_BERT_CHARS].join("\n");

export function buildTinyBert(dim: number, seed = 7): Uint8Array {
  const g = new GraphBuilder("bert_zh");
  const P = new ParamFactory(new Rng(seed, "bert"));
  const ids = g.input("input_ids", "i64", ["B", "L"]);
  const mask = g.input("attention_mask", "i64", ["B", "L"]);
  const types = g.input("token_type_ids", "i64", ["B", "L"]);
  let x = g.add(g.gather(g.param(P.embedding("word", 5 + TINY_BERT_CHARS.length, HIDDEN)), ids), g.gather(g.param(P.embedding("type", 2, HIDDEN)), types));
  const allowed = g.unsqueeze(g.cast(mask, "bool"), [1, 2]); // [B,1,1,L]: keys that are real tokens
  x = g.add(x, g.selfAttention(x, P.attention("attn", HIDDEN, 2), allowed));
  const h = g.linear(x, P.linear("out", HIDDEN, dim));
  g.output(h, "hidden_m3", "f32", ["B", "L", dim]);
  return g.build();
}

const entry = (dir: string, file: string) => {
  const bytes = readFileSync(join(dir, file));
  return { file, sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length };
};

/** Copies the model set `from` into `to` and adds bert_zh (bert_zh.onnx, bert_zh_vocab.txt) to its manifest. */
export function makeBertModelSet(from: string, to: string): void {
  for (const f of readdirSync(from)) copyFileSync(join(from, f), join(to, f));
  const m = JSON.parse(readFileSync(join(from, MANIFEST_FILE), "utf8"));
  writeFileSync(join(to, "bert_zh.onnx"), buildTinyBert(m.dims.t2s.bertDim));
  writeFileSync(join(to, "bert_zh_vocab.txt"), TINY_BERT_VOCAB);
  m.graphs.bert_zh = { ...entry(to, "bert_zh.onnx"), vocab: entry(to, "bert_zh_vocab.txt") };
  writeFileSync(join(to, MANIFEST_FILE), JSON.stringify(m, null, 2));
}
