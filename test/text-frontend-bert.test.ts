/**
 * zh BERT feature path (services/text-frontend/bert.ts) with a tiny random BERT-shaped graph
 * (test/helpers/tiny-bert.ts: embeddings, one masked self-attention layer, projection to 1024): zeros without a model and for non-zh
 * runs; for zh runs each character's hidden vector repeated word2ph times; one padded batch over several
 * sentences equals each sentence run alone and unpadded.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import * as ort from "onnxruntime-node";
import { BERT_DIM, bertFeatures, parseVocab, tokenizeChars, type BertRunner } from "../services/text-frontend/bert.js";
import { promptToPhones, textToSegments } from "../services/text-frontend/frontend.js";
import { buildTinyBert, TINY_BERT_CHARS as CHARS, TINY_BERT_VOCAB } from "./helpers/tiny-bert.js";

const vocab = parseVocab(TINY_BERT_VOCAB);

const dir = mkdtempSync(join(tmpdir(), "gsv-bert-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, "bert_zh.onnx");
writeFileSync(file, buildTinyBert(BERT_DIM));

let calls = 0;
let lastBatch = 0;
async function makeRunner(): Promise<BertRunner> {
  const session = await ort.InferenceSession.create(file);
  return async ({ input_ids, attention_mask, token_type_ids, dims }) => {
    calls++;
    lastBatch = dims[0];
    const out = await session.run({
      input_ids: new ort.Tensor("int64", input_ids, dims),
      attention_mask: new ort.Tensor("int64", attention_mask, dims),
      token_type_ids: new ort.Tensor("int64", token_type_ids, dims),
    });
    const h = out.hidden_m3;
    return { data: h.data as Float32Array, dims: h.dims };
  };
}

/** The graph's output for one text alone (B = 1, no padding), rows [L, D]. */
async function alone(runner: BertRunner, normText: string): Promise<Float32Array> {
  const tokens = tokenizeChars(normText, vocab);
  const L = tokens.length;
  const r = await runner({
    input_ids: BigInt64Array.from(tokens.map(BigInt)),
    attention_mask: new BigInt64Array(L).fill(1n),
    token_type_ids: new BigInt64Array(L),
    dims: [1, L],
  });
  return r.data;
}

t.test("bert - tokenizer: [CLS] + one id per character + [SEP], unknown characters are [UNK]", async (t) => {
  t.same(tokenizeChars("你好,", vocab), [2, 5 + CHARS.indexOf("你"), 5 + CHARS.indexOf("好"), 5 + CHARS.indexOf(","), 3]);
  t.same(tokenizeChars("龘", vocab), [2, 1, 3]);
});

t.test("bert - no model: zeros of [phones, 1024] for every segment, zh included", async (t) => {
  const segs = textToSegments("今天天气很好。Hello world.", "zh", "cut5");
  const feats = await bertFeatures(segs, null);
  t.equal(feats.length, segs.length);
  segs.forEach((s, i) => {
    t.equal(feats[i].length, s.phones.length * BERT_DIM);
    t.ok(feats[i].every((v) => v === 0));
  });
});

t.test("bert - zh rows are the character's vector repeated word2ph times; en rows zero; one batch", async (t) => {
  const runner = await makeRunner();
  const model = { runner, vocab };
  const segs = textToSegments("今天天气很好。我们一起去银行取钱！你好世界。", "zh", "cut5");
  const prompt = promptToPhones("学生老师你好。", "zh");
  const mixed = textToSegments("你好世界 Hello world.", "zh", "cut0");
  const all = [...segs, prompt, ...mixed];
  calls = 0;
  const feats = await bertFeatures(all, model);
  t.equal(calls, 1, "one graph call for the whole request");
  t.equal(lastBatch, all.flatMap((s) => s.runs).filter((r) => r.lang === "zh").length, "every zh run in the batch");
  for (let si = 0; si < all.length; si++) {
    const s = all[si];
    t.equal(feats[si].length, s.phones.length * BERT_DIM, `segment ${si} size`);
    let row = 0;
    for (const r of s.runs) {
      if (r.lang !== "zh") {
        t.ok(feats[si].subarray(row * BERT_DIM, (row + r.phones.length) * BERT_DIM).every((v) => v === 0), `${r.text}: ${r.lang} rows are zero`);
        row += r.phones.length;
        continue;
      }
      // Reference: the run alone, unpadded; character c is token c+1; repeated word2ph[c] times.
      const ref = await alone(runner, r.normText);
      let maxDiff = 0;
      r.word2ph!.forEach((n, c) => {
        for (let k = 0; k < n; k++) {
          for (let d = 0; d < BERT_DIM; d++) maxDiff = Math.max(maxDiff, Math.abs(feats[si][(row + k) * BERT_DIM + d] - ref[(c + 1) * BERT_DIM + d]));
        }
        row += n;
      });
      t.ok(maxDiff < 1e-4, `${r.normText}: batched equals alone (max diff ${maxDiff.toExponential(2)})`);
      t.ok(feats[si].some((v) => v !== 0), `${r.normText}: features are not zero`);
    }
    t.equal(row, s.phones.length, `segment ${si}: rows cover every phone`);
  }
});

t.test("bert - yue and ja runs get zeros, as upstream", async (t) => {
  const runner = await makeRunner();
  const feats = await bertFeatures([...textToSegments("你好世界。", "yue", "cut5"), ...textToSegments("こんにちは。", "ja", "cut5")], { runner, vocab });
  t.ok(feats.every((f) => f.every((v) => v === 0)));
});
