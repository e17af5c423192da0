"""The `cnhubert` graph: chinese-hubert-base as upstream's TTS._set_prompt_semantic runs it,
`HubertModel(wav16k)["last_hidden_state"].transpose(1, 2)` on the raw 16 kHz waveform (no feature-extractor
normalisation), loaded with `HubertModel.from_pretrained(dir)` as feature_extractor/cnhubert.py does."""
from __future__ import annotations

import os

import torch
from torch import nn


class Cnhubert(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio):
        return self.model(audio)["last_hidden_state"].transpose(1, 2)


def load_hubert(folder: str) -> nn.Module:
    from transformers import HubertModel

    return HubertModel.from_pretrained(folder, local_files_only=True).float().eval()


def export_hubert(model: nn.Module, out_dir: str, *, opset: int = 17, fp16: bool = False) -> None:
    from onnx_util import export_onnx

    export_onnx(Cnhubert(model).eval(), (torch.randn(1, 16000) * 0.1,), os.path.join(out_dir, "cnhubert.onnx"),
                inputs=["ref_audio_16k"], outputs=["ssl_content"], dynamic={"ref_audio_16k": {1: "S16"}, "ssl_content": {2: "T50"}},
                opset=opset, fp16=fp16)
