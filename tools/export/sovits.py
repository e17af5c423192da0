"""The SoVITS v3 graphs of the contract (vq_extract, ge_encoder, sovits_encp, cfm_dit) as thin torch
modules over upstream's SynthesizerTrnV3 (the export-friendly twin in module/models_onnx.py, which
shares every parameter name with module/models.py and whose attention layers trace with dynamic
lengths).

What the wrappers add to upstream's forward code, and why (docs/models.md):
- sovits_encp takes `speed` as a tensor: the linear resize to ⌊T50/speed + 0.001⌋ + 1 frames (float64)
  is computed in the graph, as torch's `interpolate(mode="linear")` computes it, and is the identity at
  speed 1; upstream decides `speed != 1` in Python, which a trace would freeze. The nearest ×1.875
  and the WaveNet length mask (`int(T25·3.875 / speed) + 1`) are likewise computed in the graph.
- cfm_dit zeroes frames at or after `x_lens` before and after every convolution (the DiT's conv
  position embedding and the text ConvNeXt blocks) and before each ConvNeXt GRN (an L2 norm over
  time), so padded batch rows never leak into valid frames. Upstream runs one row of full length,
  where this masking is the identity.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Any, Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F

import upstream

# ---- loading --------------------------------------------------------------------------------------


def read_sovits(path: str) -> Dict[str, Any]:
    """upstream process_ckpt.load_sovits_new: a file whose first two bytes are a version tag instead of
    the zip magic "PK" (v3/v4 LoRA, v2Pro) is a torch zip with those two bytes replaced."""
    import io

    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"PK":
        data = b"PK" + data[2:]
    return torch.load(io.BytesIO(data), map_location="cpu")


LORA_KEY = re.compile(r"^cfm\.base_model\.model\.(.+)\.lora_A(?:\.default)?\.weight$")


def merge_lora(base: Dict[str, torch.Tensor], lora_ck: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Merges a v3 LoRA checkpoint into the base SoVITS state dict, as upstream's peft
    `merge_and_unload` does for its LoraConfig(r = lora_alpha = lora_rank, targets to_q/to_k/to_v/to_out.0):
    W ← W + (alpha/r)·B·A. Non-LoRA tensors of the LoRA checkpoint replace the base's (peft's wrapped
    names mapped back: `cfm.base_model.model.X.base_layer.w` → `cfm.X.w`)."""
    rank = int(lora_ck.get("lora_rank", 0))
    w = lora_ck["weight"]
    out = dict(base)
    merged = 0
    for k, v in w.items():
        if ".lora_A" in k or ".lora_B" in k:
            continue
        k2 = k.replace("cfm.base_model.model.", "cfm.").replace(".base_layer.", ".")
        out[k2] = v
    for k, a in w.items():
        m = LORA_KEY.match(k)
        if not m:
            continue
        b = w[k.replace("lora_A", "lora_B")]
        r = a.shape[0]
        alpha = rank or r
        target = f"cfm.{m.group(1)}.weight"
        if target not in out:
            raise upstream.UpstreamError(f"LoRA target {target} not in the SoVITS weights")
        # in float32, as upstream merges after loading the (fp16) checkpoints into its fp32 model: casting the
        # merged weight back to the checkpoint's fp16 would round it (parity.py's lora part saw 1.8e-05)
        out[target] = out[target].float() + (alpha / r) * (b.float() @ a.float())
        merged += 1
    if merged == 0:
        raise upstream.UpstreamError("the LoRA checkpoint holds no lora_A/lora_B weights")
    return out


def dit_kwargs(state: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """The DiT's sizes, read from its weights (upstream hard-codes dim 1024, depth 22, heads 16, ff_mult 2,
    text_dim 512, conv_layers 4; dim_head is DiT's default 64)."""
    p = "cfm.estimator."
    dim = state[p + "proj_out.weight"].shape[1]
    depth = len({k.split(".")[3] for k in state if k.startswith(p + "transformer_blocks.")})
    inner = state[p + "transformer_blocks.0.attn.to_q.weight"].shape[0]
    ff = state[p + "transformer_blocks.0.ff.ff.0.0.weight"].shape[0]
    text_dim = state[p + "text_embed.text_blocks.0.dwconv.weight"].shape[0]
    conv_layers = len({k.split(".")[4] for k in state if k.startswith(p + "text_embed.text_blocks.")})
    return dict(dim=dim, depth=depth, heads=inner // 64, dim_head=64, ff_mult=ff // dim, text_dim=text_dim,
                conv_layers=conv_layers)


@contextlib.contextmanager
def _dit_sized(kwargs: Dict[str, int]):
    """Builds SynthesizerTrnV3's DiT with the checkpoint's sizes instead of the hard-coded ones."""
    import module.models as mm
    import module.models_onnx as mo
    from f5_tts.model import DiT

    def factory(**_ignored):
        return DiT(**kwargs)

    saved = (mm.DiT, mo.DiT)
    mm.DiT = mo.DiT = factory
    try:
        yield
    finally:
        mm.DiT, mo.DiT = saved


def _relative_embeddings_traceable(self, relative_embeddings, length):
    """attentions_onnx.MultiHeadAttention._get_relative_embeddings with its final slice, whose bounds are
    1-element tensors that torch 1.13 exports as a Slice ONNX rejects, taken by index_select instead.
    Same values: rows start .. start + 2·length − 2 of the padded table."""
    zero = torch.zeros((1), dtype=torch.int64)
    pad_length = torch.max(zero + length - (self.window_size + 1), other=zero)
    start = torch.max(zero + (self.window_size + 1) - length, other=zero)
    from module import commons

    padded = F.pad(relative_embeddings, commons.convert_pad_shape([[0, 0], [pad_length, pad_length], [0, 0]]))
    idx = torch.arange(2 * length - 1) + start
    return padded.index_select(1, idx)


def build_sovits(state: Dict[str, torch.Tensor], hps: Dict[str, Any], onnx_variant: bool) -> nn.Module:
    """upstream TTS.init_vits_weights' SynthesizerTrnV3 (v3, 25 Hz semantics, v2 symbols), weights loaded."""
    if onnx_variant:
        import module.attentions_onnx as ao
        from module.models_onnx import SynthesizerTrnV3

        ao.MultiHeadAttention._get_relative_embeddings = _relative_embeddings_traceable
    else:
        from module.models import SynthesizerTrnV3
    kw = dict(hps["model"])
    kw["semantic_frame_rate"] = "25hz"
    kw["version"] = "v3"
    with _dit_sized(dit_kwargs(state)):
        model = SynthesizerTrnV3(hps["data"]["filter_length"] // 2 + 1,
                                 hps["train"]["segment_size"] // hps["data"]["hop_length"],
                                 n_speakers=hps["data"]["n_speakers"], **kw)
    if hasattr(model, "enc_q"):
        del model.enc_q
    missing, unexpected = model.load_state_dict(state, strict=False)
    # freqs_cis / inv_freq are tables computed at construction; models_onnx's attention Encoder carries a
    # speaker projection (spk_emb_linear) that only a `g` argument would use, and the encoders get none
    missing = [k for k in missing if not k.endswith(("freqs_cis", "inv_freq")) and ".spk_emb_linear." not in k]
    if missing:
        raise upstream.UpstreamError(f"SoVITS weights do not fit: missing {missing[:6]} ({len(missing)})")
    return model.float().eval()


def load_sovits(path: str, lora: str = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(state dict, hps) of an s2Gv3.pth, with a LoRA merged when given."""
    ck = read_sovits(path)
    state, hps = ck["weight"], ck["config"]
    if "enc_p.text_embedding.weight" in state and state["enc_p.text_embedding.weight"].shape[0] != 732:
        raise upstream.UpstreamError(f"{path}: not a v3 SoVITS (text embedding has "
                                     f"{state['enc_p.text_embedding.weight'].shape[0]} symbols, v3 uses the 732 of v2)")
    if "cfm.estimator.proj_out.weight" not in state:
        raise upstream.UpstreamError(f"{path}: no CFM weights: not a SoVITS v3 checkpoint")
    if lora:
        state = merge_lora(state, read_sovits(lora))
    return state, hps


# ---- wrappers -------------------------------------------------------------------------------------


def _dyn(n) -> torch.Tensor:
    """A size as an int64 tensor (a traced value when tracing, so the graph keeps it dynamic)."""
    return torch.as_tensor(n, dtype=torch.int64).reshape(1)


def linear_resize(x: torch.Tensor, out_len: torch.Tensor) -> torch.Tensor:
    """torch.nn.functional.interpolate(x, size=out_len, mode="linear", align_corners=False) on [B,C,T]
    with a size given as a tensor: source = max(0, (j + 0.5)·T/out − 0.5) in float32, then the two
    neighbours weighted as torch's upsample_linear1d does."""
    t_in = _dyn(x.shape[2])
    scale = t_in.to(torch.float32) / out_len.to(torch.float32)
    j = torch.arange(out_len.reshape(()), dtype=torch.float32)
    src = torch.clamp(scale * (j + 0.5) - 0.5, min=0.0)
    i0 = src.to(torch.int64)
    lam = src - i0.to(torch.float32)
    i1 = torch.minimum(i0 + 1, t_in - 1)
    return x.index_select(2, i0) * (1.0 - lam) + x.index_select(2, i1) * lam


class VqExtract(nn.Module):
    """ssl_content [B,D,T50] -> prompts [B,T25] (upstream extract_latent: ssl_proj, then the RVQ's nearest code).
    Frame pair by frame pair, so rows padded at the end give their own codes first."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, ssl):
        codes = self.m.quantizer.encode(self.m.ssl_proj(ssl))  # [n_q, B, T25]
        return codes[0]


class GeEncoder(nn.Module):
    """refer [B,1025,Ts], refer_lengths [B] -> ge [B,512,1] (upstream create_ge / the `ge is None` branch of
    decode_encp). Upstream's MelStyleEncoder with a padding mask, and exact for padded rows: padding frames
    are zeroed after the spectral layers and after each Conv1dGLU too (upstream zeroes them only before the
    attention, so its kernel-5 convs would read them), masked as keys, left out of the mean."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, refer, lengths):
        e = self.m.ref_enc
        pad = torch.arange(refer.shape[2], device=refer.device)[None, :] >= lengths[:, None]  # [B,Ts]
        x = e.spectral(refer[:, :704].transpose(1, 2)).masked_fill(pad[..., None], 0)  # [B,Ts,H]
        for glu in e.temporal:
            x = glu(x.transpose(1, 2)).transpose(1, 2).masked_fill(pad[..., None], 0)
        x, _ = e.slf_attn(x, mask=pad[:, None, :].expand(-1, refer.shape[2], -1))
        x = e.fc(x)
        return e.temporal_avg_pool(x, mask=pad).unsqueeze(-1)


class SovitsEncp(nn.Module):
    """codes [1,1,T25], text [1,N], ge [1,512,1], speed [1] -> fea [1,512,Tm] (upstream decode_encp)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, codes, text, ge, speed):
        m = self.m
        e = m.enc_p
        q = m.quantizer.decode(codes)  # [1,768,T25]
        q = F.interpolate(q, scale_factor=2, mode="nearest")  # ×2, as upstream
        y_mask = torch.ones_like(q[:1, :1, :])
        y = e.ssl_proj(q * y_mask) * y_mask
        y = e.encoder_ssl(y * y_mask, y_mask)
        text_mask = torch.ones_like(text).to(y.dtype).unsqueeze(0)
        t = e.text_embedding(text).transpose(1, 2)
        t = e.encoder_text(t * text_mask, text_mask)
        y = e.mrte(y, y_mask, t, text_mask, ge)
        y = e.encoder2(y * y_mask, y_mask)
        # speed: T50' = ⌊T50/speed + 0.001⌋ + 1 in float64 (the identity at speed 1)
        t50 = _dyn(y.shape[2])
        one = speed.reshape(1) == 1.0
        stretched = torch.floor(t50.to(torch.float64) / speed.reshape(1).to(torch.float64) + 1e-3).to(torch.int64) + 1
        t50p = torch.where(one, t50, stretched)
        y = linear_resize(y, t50p)
        fea = m.bridge(y)
        # nearest ×1.875 (v3): Tm = ⌊1.875·T50'⌋, frame j takes ⌊j/1.875⌋
        tm = (t50p * 15) // 8
        src = torch.floor(torch.arange(tm.reshape(()), dtype=torch.float32) * (1.0 / 1.875)).to(torch.int64)
        fea = fea.index_select(2, src)
        # WaveNet length as upstream: int(T25·3.875) at speed 1, else int(T25·3.875/speed) + 1
        t25 = _dyn(codes.shape[2]).to(torch.float64)
        size1 = torch.floor(t25 * 3.875).to(torch.int64)
        size2 = torch.floor(t25 * 3.875 / speed.reshape(1).to(torch.float64)).to(torch.int64) + 1
        lengths = torch.where(one, size1, size2)
        fea, _ = m.wns1(fea, lengths, ge)
        return fea


class CfmDit(nn.Module):
    """One DiT evaluation (docs/models.md cfm_dit): x, cond [B,100,T], x_lens [B], time, dt_base_bootstrap
    [B], text [B,512,T] -> velocity [B,T,100]. upstream DiT.forward with frames ≥ x_lens zeroed around
    every convolution."""

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.d = dit
        # torch 1.13 exports a LayerNorm without affine parameters at opset 17 as a LayerNormalization with
        # an empty scale input, which ONNX rejects: give those norms the identity scale and offset.
        for mod in dit.modules():
            if isinstance(mod, nn.LayerNorm) and not mod.elementwise_affine:
                mod.weight = nn.Parameter(torch.ones(mod.normalized_shape))
                mod.bias = nn.Parameter(torch.zeros(mod.normalized_shape))
                mod.elementwise_affine = True

    def forward(self, x0, cond0, x_lens, time, dt, text0):
        d = self.d
        x = x0.transpose(2, 1)
        cond = cond0.transpose(2, 1)
        text = text0.transpose(2, 1)
        b, n = x.shape[0], x.shape[1]
        mask = torch.arange(n).unsqueeze(0) < x_lens.unsqueeze(1)  # [B,T]
        keep = mask.unsqueeze(-1).to(x.dtype)
        t = d.time_embed(time) + d.d_embed(dt)
        # text embedding (TextEmbedding with its ConvNeXt blocks), masked around each block's conv
        te = d.text_embed
        pos = torch.clamp(torch.arange(n), max=te.precompute_max_pos - 1)
        text = (text + te.freqs_cis.index_select(0, pos).unsqueeze(0)) * keep
        for blk in te.text_blocks:
            text = (text + self._convnext(blk, text * keep, keep)) * keep
        # input embedding with the conv position embedding, masked
        ie = d.input_embed
        h = ie.proj(torch.cat((x, cond, text), dim=-1))
        # ConvPositionEmbedding (conv, Mish, conv, Mish) with the mask applied between its convs too
        seq = ie.conv_pos_embed.conv1d
        c = (h * keep).transpose(1, 2)
        kc = keep.transpose(1, 2)
        c = seq[1](seq[0](c)) * kc
        c = seq[3](seq[2](c)) * kc
        h = c.transpose(1, 2) + h
        rope = d.rotary_embed.forward_from_seq_len(n)
        for block in d.transformer_blocks:
            h = block(h, t, mask=mask, rope=rope)
        h = d.norm_out(h, t)
        return d.proj_out(h)

    @staticmethod
    def _convnext(blk: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """ConvNeXtV2Block.forward minus its residual (the caller adds it), padding frames zeroed before
        the GRN, whose L2 norm runs over time."""
        y = blk.dwconv(x.transpose(1, 2)).transpose(1, 2)
        y = blk.act(blk.pwconv1(blk.norm(y))) * keep
        return blk.pwconv2(blk.grn(y))


# ---- export ---------------------------------------------------------------------------------------


def export_sovits(m: nn.Module, out_dir: str, graphs, *, opset: int = 17, fp16: bool = False) -> None:
    from onnx_util import export_onnx

    if "vq_extract" in graphs:
        export_onnx(VqExtract(m).eval(), (torch.randn(2, 768, 20),), os.path.join(out_dir, "vq_extract.onnx"),
                    inputs=["ssl_content"], outputs=["prompts"],
                    dynamic={"ssl_content": {0: "B", 2: "T50"}, "prompts": {0: "B", 1: "T25"}}, opset=opset, fp16=fp16)
    if "ge_encoder" in graphs:
        export_onnx(GeEncoder(m).eval(), (torch.rand(2, 1025, 30), torch.tensor([30, 24])),
                    os.path.join(out_dir, "ge_encoder.onnx"), inputs=["refer", "refer_lengths"], outputs=["ge"],
                    dynamic={"refer": {0: "B", 2: "Ts"}, "refer_lengths": {0: "B"}, "ge": {0: "B"}}, opset=opset, fp16=fp16)
    if "sovits_encp" in graphs:
        export_onnx(SovitsEncp(m).eval(),
                    (torch.randint(0, 1024, (1, 1, 13)), torch.randint(0, 732, (1, 9)), torch.randn(1, 512, 1),
                     torch.tensor([0.9])),
                    os.path.join(out_dir, "sovits_encp.onnx"), inputs=["codes", "text", "ge", "speed"], outputs=["fea"],
                    dynamic={"codes": {2: "T25"}, "text": {1: "N"}, "fea": {2: "Tm"}}, opset=opset, fp16=fp16)
    if "cfm_dit" in graphs:
        fea_dim = m.cfm.estimator.input_embed.proj.in_features - 200
        b, t = 2, 40
        export_onnx(CfmDit(m.cfm.estimator).eval(),
                    (torch.randn(b, 100, t), torch.randn(b, 100, t), torch.tensor([t, t - 5]), torch.tensor([0.1, 0.5]),
                     torch.tensor([0.125, 0.125]), torch.randn(b, fea_dim, t)),
                    os.path.join(out_dir, "cfm_dit.onnx"),
                    inputs=["x", "cond", "x_lens", "time", "dt_base_bootstrap", "text"], outputs=["output"],
                    dynamic={"x": {0: "B", 2: "T"}, "cond": {0: "B", 2: "T"}, "x_lens": {0: "B"}, "time": {0: "B"},
                             "dt_base_bootstrap": {0: "B"}, "text": {0: "B", 2: "T"}, "output": {0: "B", 1: "T"}},
                    opset=opset, fp16=fp16)
