"""The GPT graphs of the contract (t2s_encoder, t2s_prefill, t2s_step) as thin torch modules over
upstream's Text2SemanticDecoder: they hold upstream's own submodules and weights and compute what
docs/models.md says, which for the encoder and the prefill is what upstream's `infer_panel_naive` does,
and for the step is upstream's `decode_next_token` over a fixed-capacity, masked, head-major KV cache.
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn
from torch.nn import functional as F

MASK_FILL = -1e9


def sinusoid(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Interleaved sinusoidal encoding of float positions pos [...]: [..., dim], as upstream's
    SinePositionalEmbedding.extend_pe computes its table (same float32 div_term)."""
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    ang = pos.unsqueeze(-1) * div  # [..., dim/2]
    return torch.stack([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(-2)


class _Layer:
    """The weights of one upstream TransformerEncoderLayer (post-norm, fused q/k/v, ReLU FFN)."""

    def __init__(self, layer: nn.Module):
        a = layer.self_attn
        self.qkv_w, self.qkv_b = a.in_proj_weight, a.in_proj_bias
        self.out_w, self.out_b = a.out_proj.weight, a.out_proj.bias
        self.w1, self.b1 = layer.linear1.weight, layer.linear1.bias
        self.w2, self.b2 = layer.linear2.weight, layer.linear2.bias
        self.n1 = layer.norm1
        self.n2 = layer.norm2

    def ffn_and_norms(self, x: torch.Tensor, attn: torch.Tensor, hidden: int) -> torch.Tensor:
        x = F.layer_norm(x + F.linear(attn, self.out_w, self.out_b), [hidden], self.n1.weight, self.n1.bias, self.n1.eps)
        h = F.linear(F.relu(F.linear(x, self.w1, self.b1)), self.w2, self.b2)
        return F.layer_norm(x + h, [hidden], self.n2.weight, self.n2.bias, self.n2.eps)


class _T2SBase(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        if getattr(model, "norm_first", False):
            raise ValueError("only post-norm GPTs (norm_first=False, as every GPT-SoVITS s1 model) are supported")
        self.m = model
        self.hidden = model.model_dim
        self.heads = model.num_head
        self.head_dim = self.hidden // self.heads
        self.layers: List[_Layer] = [_Layer(l) for l in model.h.layers]


class T2SEncoder(_T2SBase):
    """ref_seq [1,Nr], text_seq [1,Nt], ref_bert [Nr,1024], text_bert [Nt,1024] -> x [1,N,H]."""

    def forward(self, ref_seq, text_seq, ref_bert, text_bert):
        m = self.m
        seq = torch.cat([ref_seq, text_seq], dim=1)
        bert = torch.cat([ref_bert, text_bert], dim=0).unsqueeze(0)
        x = m.ar_text_embedding(seq) + m.bert_proj(bert)
        pos = torch.arange(seq.shape[1], dtype=torch.float32)
        p = m.ar_text_position
        return x * p.x_scale + p.alpha * sinusoid(pos, self.hidden).unsqueeze(0)


class T2SPrefill(_T2SBase):
    """x [1,N,H], prompts [1,T25] -> logits [1,vocab], k_i, v_i [1,Hh,N+T25,Dh] (upstream's process_prompt)."""

    def forward(self, x, prompts):
        m = self.m
        p = m.ar_audio_position
        pos = torch.arange(prompts.shape[1], dtype=torch.float32)
        y = m.ar_audio_embedding(prompts) * p.x_scale + p.alpha * sinusoid(pos, self.hidden).unsqueeze(0)
        xy = torch.cat([x, y], dim=1)
        n = x.shape[1]
        s = xy.shape[1]
        idx = torch.arange(s)
        rows, cols = idx.unsqueeze(1), idx.unsqueeze(0)
        allowed = (cols < n) | ((rows >= n) & (cols <= rows))  # text rows: all text; audio rows: text + causal audio
        bias = torch.where(allowed, torch.zeros(()), torch.full((), MASK_FILL))
        H, Hh, Dh = self.hidden, self.heads, self.head_dim
        ks, vs = [], []
        for L in self.layers:
            q, k, v = F.linear(xy, L.qkv_w, L.qkv_b).chunk(3, dim=-1)
            q = q.view(1, s, Hh, Dh).transpose(1, 2)
            k = k.view(1, s, Hh, Dh).transpose(1, 2)
            v = v.view(1, s, Hh, Dh).transpose(1, 2)
            ks.append(k)
            vs.append(v)
            att = torch.softmax(q @ k.transpose(2, 3) * (1.0 / math.sqrt(Dh)) + bias, dim=-1) @ v
            xy = L.ffn_and_norms(xy, att.transpose(1, 2).reshape(1, s, H), H)
        logits = m.ar_predict_layer(xy[:, -1])
        return (logits, *ks, *vs)


class T2SStep(_T2SBase):
    """One decode step for B rows over a masked KV cache of capacity Kc (docs/models.md t2s_step):
    token [B,1], pos [B], past_k_i/past_v_i [B,Hh,Kc,Dh], past_mask [B,Kc] ->
    logits [B,vocab], k_i/v_i [B,Hh,1,Dh]."""

    def forward(self, token, pos, past_mask, *past):
        m = self.m
        nl = len(self.layers)
        past_k, past_v = past[:nl], past[nl:]
        H, Hh, Dh = self.hidden, self.heads, self.head_dim
        b = token.shape[0]
        p = m.ar_audio_position
        x = m.ar_audio_embedding(token[:, 0]) * p.x_scale + p.alpha * sinusoid(pos.to(torch.float32), H)  # [B,H]
        live = (past_mask > 0.5).view(b, 1, -1)  # [B,1,Kc]
        scale = 1.0 / math.sqrt(Dh)
        ks, vs = [], []
        for L, pk, pv in zip(self.layers, past_k, past_v):
            q, k, v = F.linear(x, L.qkv_w, L.qkv_b).chunk(3, dim=-1)  # [B,H] each
            q = q * scale
            qc = q.reshape(b, Hh, Dh, 1)
            k4 = k.reshape(b, Hh, 1, Dh)
            v4 = v.reshape(b, Hh, 1, Dh)
            ks.append(k4)
            vs.append(v4)
            s_past = (pk @ qc).reshape(b, Hh, -1)  # [B,Hh,Kc]
            s_past = torch.where(live, s_past, torch.full((), MASK_FILL))
            s_self = (k4 @ qc).reshape(b, Hh, 1)
            w = torch.softmax(torch.cat([s_past, s_self], dim=-1), dim=-1)
            kc = s_past.shape[-1]
            w_past = w[..., :kc].reshape(b, Hh, 1, kc)
            w_self = w[..., kc:].reshape(b, Hh, 1, 1)
            att = (w_past @ pv + w_self * v4).reshape(b, H)
            x = L.ffn_and_norms(x, att, H)
        logits = m.ar_predict_layer(x)
        return (logits, *ks, *vs)


def export_t2s(model: nn.Module, out_dir: str, graphs=("t2s_encoder", "t2s_prefill", "t2s_step"), *, opset: int = 17,
               fp16: bool = False) -> None:
    """Writes t2s_encoder.onnx, t2s_prefill.onnx and t2s_step.onnx (those of them in `graphs`) into out_dir."""
    import os

    from onnx_util import export_onnx

    H = model.model_dim
    Hh = model.num_head
    Dh = H // Hh
    nl = len(model.h.layers)
    bert = model.bert_proj.in_features
    ex_ref = torch.tensor([[1, 2, 3]], dtype=torch.int64)
    ex_text = torch.tensor([[4, 5, 6, 7]], dtype=torch.int64)
    if "t2s_encoder" in graphs:
        export_onnx(T2SEncoder(model).eval(), (ex_ref, ex_text, torch.zeros(3, bert), torch.zeros(4, bert)),
                    os.path.join(out_dir, "t2s_encoder.onnx"), inputs=["ref_seq", "text_seq", "ref_bert", "text_bert"],
                    outputs=["x"], dynamic={"ref_seq": {1: "Nr"}, "text_seq": {1: "Nt"}, "ref_bert": {0: "Nr"},
                                            "text_bert": {0: "Nt"}, "x": {1: "N"}}, opset=opset, fp16=fp16)
    kv = [f"k_{i}" for i in range(nl)] + [f"v_{i}" for i in range(nl)]
    if "t2s_prefill" in graphs:
        dyn = {"x": {1: "N"}, "prompts": {1: "T25"}}
        dyn.update({n: {2: "NT"} for n in kv})
        export_onnx(T2SPrefill(model).eval(), (torch.zeros(1, 7, H), torch.tensor([[1, 2, 3, 4, 5]], dtype=torch.int64)),
                    os.path.join(out_dir, "t2s_prefill.onnx"), inputs=["x", "prompts"], outputs=["logits"] + kv,
                    dynamic=dyn, opset=opset, fp16=fp16)
    if "t2s_step" in graphs:
        b, kc = 2, 16
        past = [torch.zeros(b, Hh, kc, Dh) for _ in range(2 * nl)]
        past_names = [f"past_k_{i}" for i in range(nl)] + [f"past_v_{i}" for i in range(nl)]
        dyn = {"token": {0: "B"}, "pos": {0: "B"}, "past_mask": {0: "B", 1: "Kc"}, "logits": {0: "B"}}
        dyn.update({n: {0: "B", 2: "Kc"} for n in past_names})
        dyn.update({n: {0: "B"} for n in kv})
        export_onnx(T2SStep(model).eval(), (torch.zeros(b, 1, dtype=torch.int64), torch.tensor([5, 9]), torch.ones(b, kc), *past),
                    os.path.join(out_dir, "t2s_step.onnx"), inputs=["token", "pos", "past_mask"] + past_names,
                    outputs=["logits"] + kv, dynamic=dyn, opset=opset, fp16=fp16)
