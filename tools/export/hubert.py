"""The `cnhubert` graph: chinese-hubert-base as upstream's TTS._set_prompt_semantic runs it,
`HubertModel(wav16k)["last_hidden_state"].transpose(1, 2)` on the raw 16 kHz waveform (no feature-extractor
normalisation), loaded with `HubertModel.from_pretrained(dir)` as feature_extractor/cnhubert.py does.

The graph takes a batch: references padded at the end to the longest, with each one's own sample count
(`ref_lengths`). The forward below is the model's own, step by step over its modules, with what padding
would change made exact: the first conv layer's GroupNorm (one group per channel, i.e. a norm over time)
counts only a row's own frames, padding frames are zeroed before the positional convolution (as its zero
padding is alone), and attention ignores them as keys. Every frame a reference has alone is then computed
from that reference only; a batch of one is upstream's forward."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


def _masked_instance_norm(x, valid, gn: nn.GroupNorm):
    """GroupNorm with one group per channel over the valid frames of each row; x [B,C,T], valid [B,1,T] float."""
    count = valid.sum(-1, keepdim=True)
    mean = (x * valid).sum(-1, keepdim=True) / count
    c = x - mean
    var = (c * c * valid).sum(-1, keepdim=True) / count
    return c / torch.sqrt(var + gn.eps) * gn.weight[None, :, None] + gn.bias[None, :, None]


class Cnhubert(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio, lengths):
        m = self.model
        c = m.config
        x = audio[:, None]
        n = lengths
        for i, layer in enumerate(m.feature_extractor.conv_layers):
            x = layer.conv(x)
            n = torch.div(n - c.conv_kernel[i], c.conv_stride[i], rounding_mode="floor") + 1
            if i == 0:
                valid = (torch.arange(x.shape[2], device=x.device)[None, :] < n[:, None]).to(x.dtype)[:, None]
                x = _masked_instance_norm(x, valid, layer.layer_norm)
            x = F.gelu(x)
        keep = torch.arange(x.shape[2], device=x.device)[None, :] < n[:, None]  # [B,T50]
        h = m.feature_projection.projection(m.feature_projection.layer_norm(x.transpose(1, 2)))
        enc = m.encoder
        conv = enc.pos_conv_embed.conv
        p = conv((h * keep[..., None].to(h.dtype)).transpose(1, 2))
        if conv.kernel_size[0] % 2 == 0:  # SamePad drops the last frame of an even kernel
            p = p[:, :, :-1]
        h = enc.layer_norm(h + F.gelu(p).transpose(1, 2))
        heads = c.num_attention_heads
        bias = torch.zeros(keep.shape, dtype=h.dtype).masked_fill(~keep, torch.finfo(h.dtype).min)[:, None, None, :]
        for layer in enc.layers:
            a = layer.attention
            b, t, dim = h.shape
            d = dim // heads
            q = (a.q_proj(h) * (d ** -0.5)).view(b, t, heads, d).transpose(1, 2)
            k = a.k_proj(h).view(b, t, heads, d).transpose(1, 2)
            v = a.v_proj(h).view(b, t, heads, d).transpose(1, 2)
            att = torch.softmax(q @ k.transpose(2, 3) + bias, dim=-1) @ v
            h = layer.layer_norm(h + a.out_proj(att.transpose(1, 2).reshape(b, t, dim)))
            ff = layer.feed_forward
            h = layer.final_layer_norm(h + ff.output_dense(F.gelu(ff.intermediate_dense(h))))
        return h.transpose(1, 2)


def load_hubert(folder: str) -> nn.Module:
    from transformers import HubertModel

    return HubertModel.from_pretrained(folder, local_files_only=True).float().eval()


def export_hubert(model: nn.Module, out_dir: str, *, opset: int = 17, fp16: bool = False) -> None:
    from onnx_util import export_onnx

    audio = torch.randn(2, 16000) * 0.1
    export_onnx(Cnhubert(model).eval(), (audio, torch.tensor([16000, 12000])), os.path.join(out_dir, "cnhubert.onnx"),
                inputs=["ref_audio_16k", "ref_lengths"], outputs=["ssl_content"],
                dynamic={"ref_audio_16k": {0: "B", 1: "S16"}, "ref_lengths": {0: "B"}, "ssl_content": {0: "B", 2: "T50"}},
                opset=opset, fp16=fp16)
