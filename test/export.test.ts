/**
 * The exporter's parts that need neither torch nor a GPT-SoVITS checkout (tools/export, docs/export.md):
 * every Python file compiles; the contract writer (tools/export/contract.py, standard library only)
 * writes a manifest that shared/manifest.ts accepts, with dims derived here from the contract's rules;
 * the writer refuses an incomplete set; and both scripts explain a missing checkout instead of failing
 * obscurely.
 */
import t from "tap";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { GRAPH_NAMES, ManifestError, loadManifest } from "../shared/manifest.js";
import { fromRoot } from "../shared/paths.js";

const PY = process.env.GSV_PYTHON ?? "python3";
const EXPORT_DIR = fromRoot("tools", "export");
const tmp = mkdtempSync(join(tmpdir(), "gsv-export-test-"));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

function pyFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...pyFiles(p));
    else if (e.endsWith(".py")) out.push(p);
  }
  return out.sort();
}

function py(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(PY, args, { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

t.test("every Python file of the exporter compiles", async (t) => {
  const files = pyFiles(EXPORT_DIR);
  const names = files.map((f) => relative(EXPORT_DIR, f));
  for (const must of ["export_v3.py", "parity.py", "contract.py", "t2s.py", "sovits.py", "vocoder.py", "hubert.py", "bert.py"]) {
    t.ok(names.includes(must), `${must} is there`);
  }
  // py_compile with the byte code written to the temporary folder, not into the repository
  const compile = "import os, py_compile, sys\nfor i, f in enumerate(sys.argv[2:]): py_compile.compile(f, doraise=True, cfile=os.path.join(sys.argv[1], f'{i}.pyc'))";
  const r = py(["-c", compile, tmp, ...files]);
  t.equal(r.status, 0, `py_compile of ${files.length} files: ${r.stderr.trim()}`);
  // the check can fail: a broken file is reported
  const bad = join(tmp, "broken.py");
  writeFileSync(bad, "def f(:\n  pass\n");
  const rb = py(["-c", compile, tmp, bad]);
  t.not(rb.status, 0, "a syntax error fails the same check");
});

/**
 * Runs tools/export/contract.py's writer on fake graph files (bytes that are not ONNX: the writer only hashes).
 * `bertVocab`: also write bert_zh.onnx and bert_zh_vocab.txt with this text and pass contract.BERT_FILES.
 */
function writeSet(dir: string, dims: Record<string, number>, omit?: string, bertVocab?: string): { status: number | null; stderr: string } {
  const script = `
import json, os, sys
sys.path.insert(0, ${JSON.stringify(EXPORT_DIR)})
import contract
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
for i, g in enumerate(contract.GRAPH_NAMES):
    if g != ${JSON.stringify(omit ?? "")}:
        with open(os.path.join(d, g + ".onnx"), "wb") as f:
            f.write(bytes([i]) * (100 + i))
dims = contract.make_dims(**json.loads(sys.argv[2]))
bert = None
if len(sys.argv) > 3:
    with open(os.path.join(d, contract.BERT_FILES["file"]), "wb") as f:
        f.write(b"bert graph bytes")
    with open(os.path.join(d, contract.BERT_FILES["vocab"]), "w", encoding="utf-8") as f:
        f.write(sys.argv[3])
    bert = contract.BERT_FILES
contract.write_manifest(d, name="unit", description="contract writer test", dims=dims, extra={"tool": "test"}, bert_zh=bert)
`;
  const r = py(["-c", script, dir, JSON.stringify(dims), ...(bertVocab === undefined ? [] : [bertVocab])]);
  return { status: r.status, stderr: r.stderr };
}

const SIZES = {
  layers: 24, heads: 16, hidden: 512, ffn: 2048, vocab: 1025, eos: 1024, phone_vocab: 732,
  ssl_dim: 768, codebook: 1024, ge_dim: 512, fea_dim: 512,
};

t.test("the contract writer's manifest is accepted by loadManifest", async (t) => {
  const dir = join(tmp, "set");
  const r = writeSet(dir, SIZES);
  t.equal(r.status, 0, r.stderr);
  const m = loadManifest(dir);
  t.equal(m.kind, "exported");
  t.equal(m.contract, 1);
  t.equal(m.lengthPolicy, null, "exported sets stop on EOS, not by a length policy");
  t.same(Object.keys(m.graphs).sort(), [...GRAPH_NAMES].sort(), "all nine graphs");
  // dims from the contract's rules, not from the writer
  t.same(m.dims.t2s, { layers: 24, heads: 16, headDim: 512 / 16, hidden: 512, ffn: 2048, vocab: 1025, eos: 1024, phoneVocab: 732, bertDim: 1024 });
  t.same(m.dims.ssl, { dim: 768, sampleRate: 16000, hop: 320, window: 400 });
  t.same([m.dims.vq.codebook, m.dims.ge.dim, m.dims.fea.dim], [1024, 512, 512]);
  t.same(m.dims.mel, { bands: 100, sampleRate: 24000, nFft: 1024, hop: 256, win: 1024, fmin: 0, fmax: null, logMin: -12, logMax: 2 });
  t.equal(m.dims.vocoder.upsample * 93.75, m.dims.vocoder.sampleRate, "256 samples per mel frame at 93.75 fps is 24 kHz");
  GRAPH_NAMES.forEach((g, i) => {
    const bytes = readFileSync(join(dir, `${g}.onnx`));
    t.equal(m.graphs[g].bytes, 100 + i, `${g} size`);
    t.equal(m.graphs[g].sha256, createHash("sha256").update(bytes).digest("hex"), `${g} sha256`);
  });
  // an altered graph file is refused
  writeFileSync(join(dir, "vocoder.onnx"), Buffer.alloc(100 + GRAPH_NAMES.indexOf("vocoder"), 7));
  t.throws(() => loadManifest(dir), ManifestError, "a graph whose bytes changed fails its sha256 check");
});

t.test("the contract writer adds the optional bert_zh graph with its vocab", async (t) => {
  const dir = join(tmp, "bert-set");
  const vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n，\n今\n天\n";
  const r = writeSet(dir, SIZES, undefined, vocab);
  t.equal(r.status, 0, r.stderr);
  const m = loadManifest(dir);
  t.same(Object.keys(m.graphs).sort(), [...GRAPH_NAMES, "bert_zh"].sort(), "the nine graphs and bert_zh");
  const b = m.graphs.bert_zh!;
  t.equal(b.file, "bert_zh.onnx");
  t.equal(b.sha256, createHash("sha256").update("bert graph bytes").digest("hex"), "graph sha256");
  t.equal(b.vocab.file, "bert_zh_vocab.txt");
  t.equal(b.vocab.bytes, Buffer.byteLength(vocab), "vocab size");
  t.equal(b.vocab.sha256, createHash("sha256").update(vocab).digest("hex"), "vocab sha256");
  // the vocab is verified like a graph
  writeFileSync(join(dir, "bert_zh_vocab.txt"), vocab.replace("今", "明"));
  t.throws(() => loadManifest(dir), ManifestError, "a vocab whose bytes changed fails its sha256 check");
  t.doesNotThrow(() => loadManifest(dir, { graphs: [...GRAPH_NAMES] }), "services that do not load bert_zh do not verify it");
  // a vocab the text-frontend could not use is refused by the writer
  const bad = writeSet(join(tmp, "bert-bad"), SIZES, undefined, "[PAD]\n[UNK]\n[SEP]\n今\n");
  t.not(bad.status, 0, "a vocab without [CLS] gets no manifest");
  t.match(bad.stderr, /the BERT vocabulary has no \[CLS\]/);
  // without bert files the manifest has no bert_zh (the earlier test's set)
  t.notOk("bert_zh" in loadManifest(join(tmp, "set"), { verify: false }).graphs, "a set exported without --roberta lists no bert_zh");
});

t.test("the contract writer refuses what the contract forbids", async (t) => {
  const r1 = writeSet(join(tmp, "partial"), SIZES, "cfm_dit");
  t.not(r1.status, 0, "a set without cfm_dit gets no manifest");
  t.match(r1.stderr, /graph files missing for cfm_dit/);
  const r2 = writeSet(join(tmp, "odd"), { ...SIZES, heads: 7 });
  t.not(r2.status, 0, "hidden 512 over 7 heads is refused");
  t.match(r2.stderr, /not a multiple of heads/);
  const r3 = writeSet(join(tmp, "eos"), { ...SIZES, eos: 1025 });
  t.match(r3.stderr, /eos 1025 must be below vocab 1025/);
});

t.test("without a GPT-SoVITS checkout both scripts say what is missing", async (t) => {
  const env = { GSV_UPSTREAM_DIR: "" };
  const e = py([join(EXPORT_DIR, "export_v3.py"), "--out", join(tmp, "x")], env);
  t.equal(e.status, 2);
  t.match(e.stderr, /no GPT-SoVITS checkout: pass --upstream DIR or set GSV_UPSTREAM_DIR/);
  const p = py([join(EXPORT_DIR, "parity.py")], env);
  t.equal(p.status, 2);
  t.match(p.stderr, /parity: cannot run: no GPT-SoVITS checkout/);
  const wrong = py([join(EXPORT_DIR, "export_v3.py"), "--out", join(tmp, "x"), "--upstream", tmp], env);
  t.equal(wrong.status, 2);
  t.match(wrong.stderr, /is not a GPT-SoVITS checkout/);
});
