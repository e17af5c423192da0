"""Shim: what upstream's BigVGAN/bigvgan.py imports from huggingface_hub (see ../README.md). The exporter
loads BigVGAN from a local folder only, so nothing is ever downloaded."""


class PyTorchModelHubMixin:
    def __init_subclass__(cls, **kwargs):  # the mixin takes hub metadata as class keywords
        super().__init_subclass__()


def hf_hub_download(*args, **kwargs):
    raise RuntimeError("huggingface_hub shim: no downloads; give the exporter a local folder")
