"""torch -> ONNX export with the settings every graph of a set shares."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import torch

PRODUCER = "gsv-pipeline tools/export"


def export_onnx(module: torch.nn.Module, args: Sequence[torch.Tensor], path: str, *, inputs: List[str], outputs: List[str],
                dynamic: Dict[str, Dict[int, str]], opset: int = 17, fp16: bool = False) -> None:
    """Exports `module` (eval mode, no grad) to `path` (written under a temporary name, then renamed)."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with torch.no_grad():
        torch.onnx.export(module, tuple(args), tmp, input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                          opset_version=opset, do_constant_folding=True)
    import onnx

    model = onnx.load(tmp)
    model.producer_name = PRODUCER
    if fp16:
        from fp16 import to_fp16

        model = to_fp16(model)
    onnx.checker.check_model(model)
    onnx.save(model, tmp)
    os.replace(tmp, path)
