"""The model-set contract (docs/models.md, version 1) on the Python side: graph names, fixed dims and the
manifest writer. Standard library only, so it can be tested without torch.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Iterable, Optional

CONTRACT_VERSION = 1
MANIFEST_FILE = "manifest.json"

#: The nine graphs of contract 1, in pipeline order (shared/manifest.ts GRAPH_NAMES).
GRAPH_NAMES = (
    "cnhubert",
    "vq_extract",
    "ge_encoder",
    "t2s_encoder",
    "t2s_prefill",
    "t2s_step",
    "sovits_encp",
    "cfm_dit",
    "vocoder",
)

#: Optional graphs a set may add (shared/manifest.ts OPTIONAL_GRAPH_NAMES): zh BERT features, with the
#: tokenizer's vocabulary next to it.
BERT_GRAPH = "bert_zh"
BERT_FILES = {"file": "bert_zh.onnx", "vocab": "bert_zh_vocab.txt"}

#: Dims every v3 set shares (the audio front-ends and the CFM windowing of upstream v3).
FIXED_DIMS: Dict[str, Any] = {
    "mel": {"bands": 100, "sampleRate": 24000, "nFft": 1024, "hop": 256, "win": 1024, "fmin": 0, "fmax": None,
            "logMin": -12, "logMax": 2},
    "spec": {"sampleRate": 32000, "nFft": 2048, "hop": 640, "win": 2048, "bins": 1025, "usedBins": 704},
    "cfm": {"maxFrames": 934, "maxPromptFrames": 468, "melPerToken": 3.75},
    "vocoder": {"upsample": 256, "sampleRate": 24000},
}


def make_dims(*, layers: int, heads: int, hidden: int, ffn: int, vocab: int, eos: int, phone_vocab: int,
              ssl_dim: int, codebook: int, ge_dim: int, fea_dim: int, bert_dim: int = 1024) -> Dict[str, Any]:
    """manifest.dims for the given model sizes; raises ValueError where the contract's rules fail."""
    if hidden % heads:
        raise ValueError(f"t2s hidden {hidden} is not a multiple of heads {heads}")
    if not 0 <= eos < vocab:
        raise ValueError(f"t2s eos {eos} must be below vocab {vocab}")
    return {
        "t2s": {"layers": layers, "heads": heads, "headDim": hidden // heads, "hidden": hidden, "ffn": ffn,
                "vocab": vocab, "eos": eos, "phoneVocab": phone_vocab, "bertDim": bert_dim},
        "ssl": {"dim": ssl_dim, "sampleRate": 16000, "hop": 320, "window": 400},
        "vq": {"codebook": codebook},
        "ge": {"dim": ge_dim},
        "fea": {"dim": fea_dim},
        **json.loads(json.dumps(FIXED_DIMS)),
    }


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def graph_entry(out_dir: str, file: str) -> Dict[str, Any]:
    path = os.path.join(out_dir, file)
    return {"file": file, "sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def check_bert_vocab(path: str) -> None:
    """Raises ValueError unless the file is a BERT vocab.txt the text-frontend can use (one token per
    line, with [CLS], [SEP] and [UNK]), as services/text-frontend/bert.ts parseVocab requires."""
    with open(path, encoding="utf-8") as f:
        tokens = set(f.read().splitlines())
    lacking = [t for t in ("[CLS]", "[SEP]", "[UNK]") if t not in tokens]
    if lacking:
        raise ValueError(f"{path}: the BERT vocabulary has no {', '.join(lacking)}")


def has_bert(out_dir: str) -> bool:
    return all(os.path.isfile(os.path.join(out_dir, f)) for f in BERT_FILES.values())


def write_manifest(out_dir: str, *, name: str, description: str, dims: Dict[str, Any],
                   files: Optional[Dict[str, str]] = None, extra: Optional[Dict[str, Any]] = None,
                   bert_zh: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Writes out_dir/manifest.json for an exported set whose nine graphs are already in out_dir.

    `files` maps graph name to file name (default `<graph>.onnx`). Every graph file must exist; the
    manifest records its size and sha256. `bert_zh` ({"file": graph, "vocab": vocab.txt}, e.g.
    BERT_FILES) adds the optional zh BERT graph with its vocabulary, each recorded the same way. Written
    under a temporary name and renamed, so a manifest never names a half-written graph. Returns the
    manifest.
    """
    files = dict(files or {})
    missing = [g for g in GRAPH_NAMES if not os.path.isfile(os.path.join(out_dir, files.get(g, f"{g}.onnx")))]
    if missing:
        raise FileNotFoundError(f"{out_dir}: graph files missing for {', '.join(missing)}")
    unknown = sorted(set(files) - set(GRAPH_NAMES))
    if unknown:
        raise ValueError(f"not graphs of contract {CONTRACT_VERSION}: {', '.join(unknown)}")
    manifest: Dict[str, Any] = {
        "format": "gsv-model-set",
        "contract": CONTRACT_VERSION,
        "name": name,
        "kind": "exported",
        "description": description,
        "symbols": "v2",
        "dims": dims,
        "lengthPolicy": None,
        "graphs": {g: graph_entry(out_dir, files.get(g, f"{g}.onnx")) for g in GRAPH_NAMES},
    }
    if bert_zh:
        for f in (bert_zh["file"], bert_zh["vocab"]):
            if not os.path.isfile(os.path.join(out_dir, f)):
                raise FileNotFoundError(f"{out_dir}: {BERT_GRAPH} file {f} missing")
        check_bert_vocab(os.path.join(out_dir, bert_zh["vocab"]))
        manifest["graphs"][BERT_GRAPH] = {**graph_entry(out_dir, bert_zh["file"]),
                                          "vocab": graph_entry(out_dir, bert_zh["vocab"])}
    if extra:
        manifest["export"] = extra
    tmp = os.path.join(out_dir, f".{MANIFEST_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, MANIFEST_FILE))
    return manifest


def missing_graphs(out_dir: str, names: Iterable[str] = GRAPH_NAMES) -> list:
    return [g for g in names if not os.path.isfile(os.path.join(out_dir, f"{g}.onnx"))]
