"""Shim: transformers' HubertModel as GPT-SoVITS uses it (chinese-hubert-base, see ../README.md).

Written from the HuBERT-base architecture and the key names of its Hugging Face checkpoints
(config.json + pytorch_model.bin), for the configuration chinese-hubert-base uses:
feat_extract_norm "group", do_stable_layer_norm false, feat_proj_layer_norm true, conv_bias false,
gelu activations. Inference only. In an environment with the real transformers package that package is
used instead (the shims sit after site-packages on sys.path).

Forward (input_values [B, S] raw 16 kHz audio) -> {"last_hidden_state": [B, T, hidden]}:
- feature encoder: 7 Conv1d (no bias); GroupNorm(one group per channel) after the first; GELU after each;
- feature projection: LayerNorm(512), Linear(512 -> hidden);
- positional convolution: Conv1d(hidden, hidden, k 128, padding 64, groups 16) with weight norm over
  dim 2, the last frame dropped (even kernel), GELU; added to the hidden states; LayerNorm;
- post-norm transformer layers: x = LN(x + Attn(x)); x = LN_final(x + W2·GELU(W1·x)), attention
  q·k scaled by head_dim^-0.5.
"""
import json
import math
import os

import torch
from torch import nn
from torch.nn import functional as F


class _Logging:
    def set_verbosity_error(self):
        pass


logging = _Logging()


class HubertConfig(dict):
    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e


_DEFAULTS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
                 conv_bias=False, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                 feat_extract_norm="group", do_stable_layer_norm=False, feat_proj_layer_norm=True,
                 layer_norm_eps=1e-5, hidden_act="gelu", feat_extract_activation="gelu")


class _ConvLayer(nn.Module):
    def __init__(self, cin, cout, k, s, bias, group_norm):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, stride=s, bias=bias)
        if group_norm:
            self.layer_norm = nn.GroupNorm(cout, cout, affine=True)

    def forward(self, x):
        x = self.conv(x)
        if hasattr(self, "layer_norm"):
            x = self.layer_norm(x)
        return F.gelu(x)


class _FeatureEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        layers = []
        cin = 1
        for i, (d, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
            layers.append(_ConvLayer(cin, d, k, s, c.conv_bias, group_norm=(i == 0)))
            cin = d
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x):
        x = x[:, None]
        for l in self.conv_layers:
            x = l(x)
        return x


class _FeatureProjection(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer_norm = nn.LayerNorm(c.conv_dim[-1], eps=c.layer_norm_eps)
        self.projection = nn.Linear(c.conv_dim[-1], c.hidden_size)

    def forward(self, x):
        return self.projection(self.layer_norm(x))


class _PosConv(nn.Module):
    def __init__(self, c):
        super().__init__()
        k = c.num_conv_pos_embeddings
        self.conv = nn.utils.weight_norm(
            nn.Conv1d(c.hidden_size, c.hidden_size, k, padding=k // 2, groups=c.num_conv_pos_embedding_groups), dim=2)
        self.remove = 1 if k % 2 == 0 else 0

    def forward(self, x):  # [B, hidden, T]
        x = self.conv(x)
        if self.remove:
            x = x[:, :, : -self.remove]
        return F.gelu(x)


class _Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h = c.num_attention_heads
        self.d = c.hidden_size // self.h
        self.q_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.k_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.v_proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.out_proj = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x):
        b, t, _ = x.shape
        q = (self.q_proj(x) * (self.d ** -0.5)).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.h, self.d).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(2, 3), dim=-1) @ v
        return self.out_proj(a.transpose(1, 2).reshape(b, t, self.h * self.d))


class _FeedForward(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.intermediate_dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.output_dense = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x):
        return self.output_dense(F.gelu(self.intermediate_dense(x)))


class _Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = _Attention(c)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.feed_forward = _FeedForward(c)
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x):
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pos_conv_embed = _PosConv(c)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList([_Layer(c) for _ in range(c.num_hidden_layers)])

    def forward(self, x):
        x = x + self.pos_conv_embed(x.transpose(1, 2)).transpose(1, 2)
        x = self.layer_norm(x)
        for l in self.layers:
            x = l(x)
        return x


class HubertModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = HubertConfig({**_DEFAULTS, **dict(config)})
        if c.feat_extract_norm != "group" or c.do_stable_layer_norm or not c.feat_proj_layer_norm or c.conv_bias:
            raise NotImplementedError("transformers shim: only the chinese-hubert-base configuration is implemented")
        self.config = c
        self.feature_extractor = _FeatureEncoder(c)
        self.feature_projection = _FeatureProjection(c)
        self.encoder = _Encoder(c)
        self.masked_spec_embed = nn.Parameter(torch.zeros(c.hidden_size))  # used only when training with masks

    def forward(self, input_values):
        x = self.feature_extractor(input_values).transpose(1, 2)
        x = self.feature_projection(x)
        return {"last_hidden_state": self.encoder(x)}

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        with open(os.path.join(path, "config.json")) as f:
            model = cls(json.load(f))
        state = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu")
        state = {k[len("hubert."):] if k.startswith("hubert.") else k: v for k, v in state.items()}
        # older checkpoints name the weight-norm halves weight_g/weight_v, newer parametrizations original0/1
        state = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
                 for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise RuntimeError(f"transformers shim: {path}: missing weights {missing[:5]}")
        return model.eval()

    def save_pretrained(self, path):
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(dict(self.config), f)
        torch.save(self.state_dict(), os.path.join(path, "pytorch_model.bin"))
