"""The `vocoder` graph: upstream's BigVGAN (GPT_SoVITS/BigVGAN, NVIDIA's v2 code) loaded from a local
folder of nvidia/bigvgan_v2_24khz_100band_256x (config.json + bigvgan_generator.pt) as upstream's
TTS.init_vocoder loads it (weight norm removed), exported as is: x [B,100,Tm] (de-normalised log-mel)
-> audio [B,1,256·Tm]."""
from __future__ import annotations

import os

import torch

import upstream


def load_bigvgan(folder: str):
    from BigVGAN.bigvgan import BigVGAN

    for f in ("config.json", "bigvgan_generator.pt"):
        if not os.path.isfile(os.path.join(folder, f)):
            raise upstream.UpstreamError(f"{folder}: {f} missing (expected a bigvgan_v2_24khz_100band_256x folder)")
    model = BigVGAN._from_pretrained(model_id=folder, revision=None, cache_dir=None, force_download=False, proxies=None,
                                     resume_download=False, local_files_only=True, token=None)
    model.remove_weight_norm()
    h = model.h
    if h.num_mels != 100 or int(torch.tensor(h.upsample_rates).prod()) != 256:
        raise upstream.UpstreamError(f"{folder}: BigVGAN with {h.num_mels} mels and ×{h.upsample_rates} upsampling; "
                                     "v3 needs 100 mels and ×256")
    return model.float().eval()


def _static_channel_forwards() -> None:
    """The anti-aliasing filters of BigVGAN expand their kernel to the channel count read from the input's
    shape, which a trace turns into a dynamic value torch 1.13 cannot export as a conv kernel. The channel
    count of each layer is fixed, so these forwards (upstream's, line for line) read it as a constant."""
    import torch.nn.functional as F
    from BigVGAN.alias_free_activation.torch import filter as flt
    from BigVGAN.alias_free_activation.torch import resample as rs

    def up_forward(self, x):
        C = int(x.shape[1])
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(C, -1, -1), stride=self.stride, groups=C)
        return x[..., self.pad_left : -self.pad_right]

    def lowpass_forward(self, x):
        C = int(x.shape[1])
        if self.padding:
            x = F.pad(x, (self.pad_left, self.pad_right), mode=self.padding_mode)
        return F.conv1d(x, self.filter.expand(C, -1, -1), stride=self.stride, groups=C)

    rs.UpSample1d.forward = up_forward
    flt.LowPassFilter1d.forward = lowpass_forward


def export_vocoder(model, out_dir: str, *, opset: int = 17, fp16: bool = False) -> None:
    from onnx_util import export_onnx

    _static_channel_forwards()
    export_onnx(model, (torch.randn(1, 100, 12) - 5,), os.path.join(out_dir, "vocoder.onnx"), inputs=["x"],
                outputs=["audio"], dynamic={"x": {0: "B", 2: "Tm"}, "audio": {0: "B", 2: "S"}}, opset=opset, fp16=fp16)
