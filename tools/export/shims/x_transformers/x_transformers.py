"""Shim: the rotary position embedding of x-transformers as upstream's F5 DiT uses it (see ../README.md).

RotaryEmbedding(dim, base=10000): inv_freq[j] = 1 / base^(2j/dim); forward_from_seq_len(n) returns
(freqs, 1.0) with freqs [1, n, dim], each frequency t·inv_freq[j] repeated for the pair (2j, 2j+1).
apply_rotary_pos_emb(t, freqs, scale=1) rotates the first dim channels of t (partial rotary, the rest
pass through): t·cos + rotate_half(t)·sin, where rotate_half maps each pair (a, b) to (−b, a).
"""
import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, use_xpos=False, scale_base=512, interpolation_factor=1.0, base=10000,
                 base_rescale_factor=1.0):
        super().__init__()
        if use_xpos:
            raise NotImplementedError("x_transformers shim: xpos is not implemented")
        base = base * base_rescale_factor ** (dim / (dim - 2))
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)))
        self.interpolation_factor = interpolation_factor

    def forward_from_seq_len(self, seq_len):
        t = torch.arange(seq_len, device=self.inv_freq.device)
        return self.forward(t)

    def forward(self, t):
        if t.ndim == 1:
            t = t.unsqueeze(0)
        freqs = t.type_as(self.inv_freq).unsqueeze(-1) * self.inv_freq / self.interpolation_factor  # [b, n, dim/2]
        freqs = torch.stack((freqs, freqs), dim=-1).flatten(-2)
        return freqs, 1.0


def rotate_half(x):
    x = x.reshape(*x.shape[:-1], -1, 2)
    x1, x2 = x.unbind(dim=-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_pos_emb(t, freqs, scale=1):
    rot_dim, seq_len = freqs.shape[-1], t.shape[-2]
    freqs = freqs[..., -seq_len:, :]
    if t.ndim == 4 and freqs.ndim == 3:
        freqs = freqs.unsqueeze(1)
    t_rot, t_pass = t[..., :rot_dim], t[..., rot_dim:]
    t_rot = t_rot * freqs.cos() * scale + rotate_half(t_rot) * freqs.sin() * scale
    return torch.cat((t_rot, t_pass), dim=-1)
