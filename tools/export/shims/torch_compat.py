"""Shim: the torch >= 2.0 functions upstream calls that Debian's torch 1.13 lacks, added to
torch.nn.functional only when missing (upstream.setup() calls install()). Written from torch's
documented semantics:

- scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0, is_causal=False, scale=None):
  softmax(q·kᵀ·scale + bias)·v, scale 1/sqrt(E) by default; a bool mask marks the positions that take
  part (False -> -inf), a float mask is added.
- _canonical_mask: a bool mask (True = masked out) becomes a float mask with -inf there.
- _none_or_dtype: None, or the tensor's dtype.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
          dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None) -> torch.Tensor:
    # TorchScript-compatible: upstream calls it from scripted classes.
    L = query.size(-2)
    S = key.size(-2)
    s = (1.0 / math.sqrt(query.size(-1))) if scale is None else scale
    w = query @ key.transpose(-2, -1) * s
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        w = w.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            w = w.masked_fill(~attn_mask, float("-inf"))
        else:
            w = w + attn_mask
    return torch.softmax(w, dim=-1) @ value


def _canonical_mask(mask, mask_name, other_type, other_name, target_type, check_other=True):
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=target_type).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    return mask


def _none_or_dtype(input):
    if input is None:
        return None
    if isinstance(input, torch.Tensor):
        return input.dtype
    raise RuntimeError("input to _none_or_dtype() must be None or torch.Tensor")


def install():
    for name, fn in (("scaled_dot_product_attention", _sdpa), ("_canonical_mask", _canonical_mask),
                     ("_none_or_dtype", _none_or_dtype)):
        if not hasattr(F, name):
            setattr(F, name, fn)
