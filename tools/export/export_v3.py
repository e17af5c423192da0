#!/usr/bin/env python3
"""Export a user's GPT-SoVITS v3 checkpoints to a model set of this project's contract (docs/models.md).

  python3 tools/export/export_v3.py --gpt s1v3.ckpt --sovits s2Gv3.pth [--lora lora.pth] \\
      --bigvgan DIR --hubert DIR [--roberta DIR] --out models/NAME [--name NAME] [--fp16] [--upstream DIR] \\
      [--only GRAPHS]

--upstream (or GSV_UPSTREAM_DIR) is a GPT-SoVITS checkout: its module code builds the models the
checkpoints are loaded into. --bigvgan is the folder of nvidia/bigvgan_v2_24khz_100band_256x
(config.json + bigvgan_generator.pt); --hubert the folder of chinese-hubert-base (config.json +
pytorch_model.bin); --roberta, optional, the folder of chinese-roberta-wwm-ext-large (config.json +
pytorch_model.bin + vocab.txt or tokenizer.json), which adds the optional bert_zh graph and its
vocabulary. --only exports a subset (comma-separated graph names) and writes no manifest
unless the set is then complete. See docs/export.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import contract  # noqa: E402
import upstream  # noqa: E402

GROUPS = {
    "t2s": ["t2s_encoder", "t2s_prefill", "t2s_step"],
    "sovits": ["vq_extract", "ge_encoder", "sovits_encp", "cfm_dit"],
    "vocoder": ["vocoder"],
    "hubert": ["cnhubert"],
    "bert": [contract.BERT_GRAPH],
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="export_v3.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--gpt", help="s1v3.ckpt (GPT / T2S)")
    p.add_argument("--sovits", help="s2Gv3.pth (SoVITS v3 with its CFM)")
    p.add_argument("--lora", help="a v3 LoRA checkpoint to merge into the CFM of --sovits")
    p.add_argument("--bigvgan", help="folder with config.json and bigvgan_generator.pt")
    p.add_argument("--hubert", help="folder of chinese-hubert-base (config.json, pytorch_model.bin)")
    p.add_argument("--roberta", help="folder of chinese-roberta-wwm-ext-large (config.json, pytorch_model.bin, vocab.txt "
                                     "or tokenizer.json): adds the optional bert_zh graph")
    p.add_argument("--out", required=True, help="model set directory to write")
    p.add_argument("--name", help="manifest name (default: the --out folder's name)")
    p.add_argument("--description", default="", help="manifest description")
    p.add_argument("--fp16", action="store_true", help="store and compute the graphs in fp16 (GPU); I/O stay fp32")
    p.add_argument("--upstream", help="GPT-SoVITS checkout (default: $GSV_UPSTREAM_DIR)")
    p.add_argument("--only", help="comma-separated graph names to export (default: all nine, and bert_zh with --roberta)")
    p.add_argument("--opset", type=int, default=17)
    return p.parse_args(argv)


def wanted(args: argparse.Namespace) -> List[str]:
    if not args.only:
        return list(contract.GRAPH_NAMES) + ([contract.BERT_GRAPH] if args.roberta else [])
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    bad = [n for n in names if n not in contract.GRAPH_NAMES and n != contract.BERT_GRAPH]
    if bad:
        raise SystemExit(f"export_v3: not graphs of the contract: {', '.join(bad)}")
    return names


def need(args: argparse.Namespace, attr: str, graphs: List[str]) -> str:
    v = getattr(args, attr)
    if not v:
        raise SystemExit(f"export_v3: --{attr} is needed for {', '.join(graphs)}")
    if not os.path.exists(v):
        raise SystemExit(f"export_v3: --{attr} {v} does not exist")
    return v


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    graphs = wanted(args)
    try:
        upstream.setup(args.upstream)
    except upstream.UpstreamError as e:
        print(f"export_v3: {e}", file=sys.stderr)
        return 2
    import torch

    torch.set_grad_enabled(False)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    info: Dict[str, object] = {}
    dims_parts: Dict[str, object] = {}
    started = time.time()

    def log(msg: str) -> None:
        print(f"export_v3 [{time.time() - started:6.1f}s] {msg}", flush=True)

    # GPT
    t2s_graphs = [g for g in GROUPS["t2s"] if g in graphs]
    if t2s_graphs or not args.only:
        from t2s import export_t2s

        model, config = upstream.load_t2s(need(args, "gpt", t2s_graphs or GROUPS["t2s"]))
        mc = config["model"]
        dims_parts["t2s"] = dict(layers=mc["n_layer"], heads=mc["head"], hidden=mc["hidden_dim"],
                                 ffn=model.h.layers[0].linear1.out_features, vocab=mc["vocab_size"], eos=mc["EOS"],
                                 phone_vocab=mc["phoneme_vocab_size"], bert_dim=model.bert_proj.in_features)
        if t2s_graphs:
            log(f"GPT: {mc['n_layer']} layers, {mc['head']} heads, hidden {mc['hidden_dim']}")
            export_t2s(model, out, t2s_graphs, opset=args.opset, fp16=args.fp16)
            log("wrote " + ", ".join(t2s_graphs))
        del model

    # SoVITS v3: VQ, ge, encp, CFM's DiT
    sv_graphs = [g for g in GROUPS["sovits"] if g in graphs]
    if sv_graphs or not args.only:
        import sovits

        state, hps = sovits.load_sovits(need(args, "sovits", sv_graphs or GROUPS["sovits"]), args.lora)
        dk = sovits.dit_kwargs(state)
        dims_parts["sovits"] = dict(ssl_dim=state["ssl_proj.weight"].shape[0],
                                    codebook=state["quantizer.vq.layers.0._codebook.embed"].shape[0],
                                    ge_dim=hps["model"]["gin_channels"], fea_dim=dk["text_dim"])
        info["dit"] = dk
        if sv_graphs:
            log(f"SoVITS v3: DiT {dk}" + (f", LoRA {args.lora} merged" if args.lora else ""))
            m = sovits.build_sovits(state, hps, onnx_variant=True)
            sovits.export_sovits(m, out, sv_graphs, opset=args.opset, fp16=args.fp16)
            log("wrote " + ", ".join(sv_graphs))
            del m
        del state

    # BigVGAN
    if "vocoder" in graphs:
        import vocoder

        vm = vocoder.load_bigvgan(need(args, "bigvgan", ["vocoder"]))
        log(f"BigVGAN: {dict(vm.h).get('upsample_initial_channel')} channels, upsampling {list(vm.h.upsample_rates)}")
        vocoder.export_vocoder(vm, out, opset=args.opset, fp16=args.fp16)
        log("wrote vocoder")
        del vm

    # chinese-hubert-base
    if "cnhubert" in graphs:
        import hubert

        hm = hubert.load_hubert(need(args, "hubert", ["cnhubert"]))
        dims_parts["hubert"] = dict(ssl_dim=hm.config.hidden_size)
        log(f"HuBERT: hidden {hm.config.hidden_size}, {hm.config.num_hidden_layers} layers")
        hubert.export_hubert(hm, out, opset=args.opset, fp16=args.fp16)
        log("wrote cnhubert")
        del hm

    # chinese-roberta-wwm-ext-large (optional)
    if contract.BERT_GRAPH in graphs:
        import bert

        folder = need(args, "roberta", [contract.BERT_GRAPH])
        vocab = bert.read_vocab(folder)
        bm = bert.load_bert(folder)
        n_layers = len(bm.bert.encoder.layer)
        dims_parts["bert"] = dict(hidden=bert.hidden_size(bm))
        log(f"BERT: hidden {bert.hidden_size(bm)}, {n_layers} layers (the graph runs {n_layers - 2}), "
            f"vocabulary {len(vocab)}")
        bert.export_bert(bm, vocab, out, opset=args.opset, fp16=args.fp16)
        log(f"wrote {contract.BERT_GRAPH}, {bert.VOCAB_FILE}")
        del bm

    # dims (and source file names) learnt by this run and earlier --only runs into the same folder
    dims_parts["sources"] = {k: os.path.basename(os.path.normpath(v)) for k in ("gpt", "sovits", "lora", "bigvgan", "hubert", "roberta")
                             if (v := getattr(args, k))}
    side = os.path.join(out, DIMS_FILE)
    if os.path.isfile(side):
        with open(side) as f:
            old = json.load(f)
        dims_parts = {**old, **dims_parts, "sources": {**old.get("sources", {}), **dims_parts["sources"]}}
    with open(side, "w") as f:
        json.dump(dims_parts, f, indent=2)

    missing = contract.missing_graphs(out)
    if missing:
        log(f"no manifest written: graphs still missing: {', '.join(missing)}")
        return 0
    try:
        dims = make_dims(dims_parts)
    except (KeyError, ValueError) as e:
        print(f"export_v3: cannot write the manifest: {e}", file=sys.stderr)
        return 1
    name = args.name or os.path.basename(out.rstrip(os.sep))
    src = dims_parts.get("sources", {})
    desc = args.description or ("GPT-SoVITS v3 exported by tools/export/export_v3.py from "
                                + ", ".join(f"{k} {v}" for k, v in src.items()) + (" (fp16)" if args.fp16 else ""))
    contract.write_manifest(out, name=name, description=desc, dims=dims,
                            extra={"tool": "tools/export/export_v3.py", "fp16": bool(args.fp16), "opset": args.opset,
                                   "sources": src},
                            bert_zh=contract.BERT_FILES if contract.has_bert(out) else None)
    log(f"wrote {os.path.join(out, contract.MANIFEST_FILE)}")
    return 0


DIMS_FILE = ".export-dims.json"


def make_dims(parts: Dict[str, Dict[str, int]]) -> Dict[str, object]:
    """manifest.dims from the sizes read off the checkpoints; the SSL width must agree between HuBERT and SoVITS."""
    t, sv, hb = parts["t2s"], parts["sovits"], parts["hubert"]
    if hb["ssl_dim"] != sv["ssl_dim"]:
        raise ValueError(f"HuBERT width {hb['ssl_dim']} does not match the SoVITS ssl_proj ({sv['ssl_dim']})")
    if "bert" in parts and parts["bert"]["hidden"] != t["bert_dim"]:
        raise ValueError(f"BERT width {parts['bert']['hidden']} does not match the GPT's bert_proj ({t['bert_dim']})")
    return contract.make_dims(layers=t["layers"], heads=t["heads"], hidden=t["hidden"], ffn=t["ffn"], vocab=t["vocab"],
                              eos=t["eos"], phone_vocab=t["phone_vocab"], bert_dim=t["bert_dim"], ssl_dim=sv["ssl_dim"],
                              codebook=sv["codebook"], ge_dim=sv["ge_dim"], fea_dim=sv["fea_dim"])


if __name__ == "__main__":
    sys.exit(main())
