"""Shim: the einops patterns upstream's module/core_vq.py uses at inference (see ../README.md).

rearrange(x, "... d -> (...) d")  flattens every leading axis;
rearrange(x, "b d n -> b n d") / "b n d -> b d n"  swaps the last two axes.
Any other pattern raises, so a new upstream use cannot pass silently.
"""


def rearrange(x, pattern, **axes):
    p = " ".join(pattern.split())
    if p == "... d -> (...) d":
        return x.reshape(-1, x.shape[-1])
    if p in ("b d n -> b n d", "b n d -> b d n"):
        return x.transpose(1, 2)
    raise NotImplementedError(f"einops shim: pattern {pattern!r} is not implemented")


def repeat(x, pattern, **axes):
    raise NotImplementedError(f"einops shim: repeat {pattern!r} is not implemented (training only)")
