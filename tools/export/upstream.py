"""Access to a GPT-SoVITS checkout (the user's, or one fetched for the parity check).

The exporter builds upstream's own modules from upstream's own code, so the checkout's path is needed:
`--upstream DIR` or the environment variable GSV_UPSTREAM_DIR. Nothing of upstream is copied here.
Packages upstream imports that Debian lacks are served by tools/export/shims, placed on sys.path after
the real site-packages, so a real GPT-SoVITS environment keeps its own packages.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
SHIMS = os.path.join(HERE, "shims")


class UpstreamError(RuntimeError):
    pass


def upstream_dir(explicit: Optional[str] = None) -> str:
    d = explicit or os.environ.get("GSV_UPSTREAM_DIR")
    if not d:
        raise UpstreamError("no GPT-SoVITS checkout: pass --upstream DIR or set GSV_UPSTREAM_DIR")
    d = os.path.abspath(d)
    if not os.path.isfile(os.path.join(d, "GPT_SoVITS", "AR", "models", "t2s_model.py")):
        raise UpstreamError(f"{d} is not a GPT-SoVITS checkout (GPT_SoVITS/AR/models/t2s_model.py missing)")
    return d


_ready: Optional[str] = None


def setup(explicit: Optional[str] = None) -> str:
    """Puts the checkout (its root and GPT_SoVITS/, as upstream's own scripts do) and the shims on sys.path."""
    global _ready
    d = upstream_dir(explicit)
    if _ready == d:
        return d
    if _ready is not None:
        raise UpstreamError(f"upstream already set up from {_ready}")
    for p in (os.path.join(d, "GPT_SoVITS"), d):
        if p not in sys.path:
            sys.path.insert(0, p)
    if SHIMS not in sys.path:
        sys.path.append(SHIMS)
    import torch_compat

    torch_compat.install()
    _ready = d
    return d


def strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ---- GPT (s1v3.ckpt) -------------------------------------------------------------------------------


def load_t2s(ckpt_path: str):
    """Text2SemanticDecoder from an s1 checkpoint ({"config": ..., "weight": {"model.*": ...}}), eval mode, fp32."""
    import torch
    from AR.models.t2s_model import Text2SemanticDecoder

    ck = torch.load(ckpt_path, map_location="cpu")
    config = ck["config"]
    model = Text2SemanticDecoder(config=config, top_k=3)
    state = strip_prefix(ck["weight"], "model.")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("ar_accuracy_metric")]
    if missing or unexpected:
        raise UpstreamError(f"{ckpt_path}: GPT weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.float().eval(), config
