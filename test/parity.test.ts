/**
 * Parity of the exporter with upstream GPT-SoVITS (tools/export/parity.py, docs/parity.md).
 *
 * It needs a GPT-SoVITS checkout (GSV_UPSTREAM_DIR) and a Python with torch and onnx (GSV_PYTHON, else
 * /usr/bin/python3, else python3). Without a checkout it prints why parity did not run and checks that
 * the script refuses in the same words; with one it runs the whole comparison (about 20 minutes on
 * two cores) and requires every row within its tolerance. GSV_PARITY_ONLY (comma-separated parts of
 * parity.py: t2s, sovits, pipeline, vocoder, hubert, bert, lora) runs only those parts.
 */
import t from "tap";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromRoot } from "../shared/paths.js";

const upstreamDir = process.env.GSV_UPSTREAM_DIR ?? "";
const script = fromRoot("tools", "export", "parity.py");

function pythonWithTorch(): string | undefined {
  for (const p of [process.env.GSV_PYTHON, "/usr/bin/python3", "python3"]) {
    if (!p) continue;
    const r = spawnSync(p, ["-c", "import torch, onnx, numpy"], { encoding: "utf8" });
    if (r.status === 0) return p;
  }
  return undefined;
}

if (!upstreamDir) {
  t.comment("parity with upstream not run: GSV_UPSTREAM_DIR is not set (point it at a GPT-SoVITS checkout to run tools/export/parity.py)");
  t.test("parity.py refuses to run without a checkout, saying why", async (t) => {
    const r = spawnSync(process.env.GSV_PYTHON ?? "python3", [script], { encoding: "utf8", env: { ...process.env, GSV_UPSTREAM_DIR: "" } });
    t.equal(r.status, 2, "exit status 2: cannot run");
    t.match(r.stderr, /parity: cannot run: no GPT-SoVITS checkout: pass --upstream DIR or set GSV_UPSTREAM_DIR/);
  });
} else {
  t.setTimeout(40 * 60_000);
  t.test("exported graphs match upstream's modules", { timeout: 40 * 60_000 }, async (t) => {
    t.ok(existsSync(join(upstreamDir, "GPT_SoVITS", "AR", "models", "t2s_model.py")), `${upstreamDir} is a GPT-SoVITS checkout`);
    const py = pythonWithTorch();
    if (!py) {
      t.fail("GSV_UPSTREAM_DIR is set but no Python with torch, onnx and numpy was found (apt-get install python3-torch python3-onnx python3-scipy python3-packaging, or set GSV_PYTHON)");
      return;
    }
    const work = mkdtempSync(join(tmpdir(), "gsv-parity-test-"));
    t.teardown(() => rmSync(work, { recursive: true, force: true }));
    const json = join(work, "parity.json");
    const only = (process.env.GSV_PARITY_ONLY ?? "").split(",").map((s) => s.trim()).filter(Boolean);
    const parts = only.length ? only : ["t2s", "sovits", "pipeline", "vocoder", "hubert", "bert", "lora"];
    if (only.length) t.comment(`GSV_PARITY_ONLY: running only ${only.join(", ")}`);
    const argv = [script, "--json", json, ...(only.length ? ["--only", only.join(",")] : [])];
    const r = spawnSync(py, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 });
    const lines = (r.stdout ?? "").split("\n").filter((l) => l.startsWith("parity:"));
    for (const l of lines) t.comment(l);
    t.equal(r.status, 0, `parity.py exit status (stderr tail: ${(r.stderr ?? "").slice(-1500)})`);
    const res = JSON.parse(readFileSync(json, "utf8")) as { ok: boolean; rows: { graph: string; what: string; ok: boolean }[] };
    const graphs = new Set(res.rows.map((row) => row.graph));
    const expected: Record<string, string[]> = {
      t2s: ["t2s_encoder", "t2s_prefill", "t2s_step", "t2s (engine)"],
      sovits: ["vq_extract", "ge_encoder", "sovits_encp", "cfm_dit"],
      pipeline: ["pipeline"],
      vocoder: ["vocoder"],
      hubert: ["cnhubert"],
      bert: ["bert_zh"],
      lora: ["lora"],
    };
    for (const p of parts) for (const g of expected[p] ?? [p]) t.ok(graphs.has(g), `compared: ${g}`);
    if (!only.length) t.ok(graphs.has("manifest"), "compared: manifest");
    // the bert part: the graph on a padded batch, and the text-frontend's phone features against upstream's get_bert_feature
    if (parts.includes("bert")) {
      const whats = res.rows.filter((row) => row.graph === "bert_zh").map((row) => row.what);
      for (const w of [/^hidden_m3, padded batch/, /^phone features, text-frontend bertFeatures vs get_bert_feature/]) t.ok(whats.some((x) => w.test(x)), `bert_zh compared: ${w.source}`);
    }
    // the pipeline part: tokens, the reference's conditioning, fea, the CFM windows and the mel
    if (parts.includes("pipeline")) {
      const whats = res.rows.filter((row) => row.graph === "pipeline").map((row) => row.what);
      for (const w of [/^greedy tokens/, /^reference spectrogram/, /^ge$/, /^fea_ref/, /^fea_todo/, /^CFM windows/, /^mel, de-normalised \(\d+ frames, 2 windows\)/]) {
        t.ok(whats.some((x) => w.test(x)), `pipeline compared: ${w.source}`);
      }
    }
    for (const row of res.rows) t.ok(row.ok, `${row.graph}: ${row.what}`);
  });
}
