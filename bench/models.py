"""Random-weight models for benchmarks: a small one for CPUs, and the real SD1.5 architecture for GPUs."""

import json

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from tav_core.loading.configs import CONFIGS, Components, clip_tokenizer

SMALL = dict(
    unet=dict(sample_size=16, block_out_channels=(64, 128, 128), layers_per_block=1, norm_num_groups=16,
              down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
              cross_attention_dim=128, attention_head_dim=8),
    vae=dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=16, latent_channels=4, layers_per_block=1,
             down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
    text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4),
)

WIDE = dict(SMALL, unet=dict(SMALL["unet"], block_out_channels=(80, 160, 320), attention_head_dim=2))
"""SMALL with SD1.5's head widths (two heads of 40, 80 and, in the middle block, 160 channels): attention and
matmuls at realistic shapes, the time spent where SD1.5 spends it."""


def _sd1(part: str) -> dict:
    return json.loads((CONFIGS / "sd1" / part).read_text())


def bench_components(size: str, seed: int = 0, device: str | torch.device = "cpu") -> Components:
    """``small``: about 20 M parameters in all; ``wide``: ``small`` with SD1.5's head widths; ``sd15``: SD1.5's UNet, VAE and CLIP-L with random weights, drawn on
    ``device`` (a GPU draws SD1.5's billion in a moment, a CPU in tens of seconds)."""
    torch.manual_seed(seed)
    with torch.device(device):
        return _components(size)


def _components(size: str) -> Components:
    if size in ("small", "wide"):
        config = SMALL if size == "small" else WIDE
        unet, vae = UNet2DConditionModel(**config["unet"]), AutoencoderKL(**config["vae"])
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **config["text"]))
    elif size == "sd15":
        unet = UNet2DConditionModel.from_config(_sd1("unet/config.json"))
        vae = AutoencoderKL.from_config(_sd1("vae/config.json"))
        text = CLIPTextModel(CLIPTextConfig(**_sd1("text_encoder/config.json")))
    else:
        raise ValueError(f"model size {size!r}: use 'small', 'wide' or 'sd15'")
    return Components(unet.eval(), vae.eval(), text.eval(), clip_tokenizer(), _sd1("scheduler/scheduler_config.json"))


def bench_motion_module(size: str, seed: int = 0):
    """A random AnimateDiff motion module (v2's layout: with a mid block) for ``bench_components(size)``'s UNet:
    released modules' heads, and the UNet's GroupNorm groups as released modules have."""
    from diffusers import MotionAdapter

    from tav_core.loading.motion import _module
    unet = SMALL["unet"] if size == "small" else _sd1("unet/config.json")
    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=tuple(unet["block_out_channels"]),
                            motion_layers_per_block=unet["layers_per_block"], motion_num_attention_heads=8,
                            motion_norm_num_groups=unet["norm_num_groups"], motion_max_seq_length=32,
                            use_motion_mid_block=True, conv_in_channels=None)
    return _module(adapter.eval(), "v2", 32)


def save_tiny_clip(folder) -> None:
    """A tiny random CLIP (vision and text towers, projection to 16 dims) saved as a transformers folder, for
    ``tuneavideo score``; its logit scale is OpenAI's (ln 100), as V2VBench's text alignment multiplies by it."""
    import math

    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(0)
    tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(text_config=dict(tower, vocab_size=49408, max_position_embeddings=77),
                        vision_config=dict(tower, image_size=32, patch_size=8), projection_dim=16,
                        logit_scale_init_value=math.log(100))
    CLIPModel(config).save_pretrained(folder)
