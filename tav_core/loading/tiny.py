"""Tiny random-weight SD- and SDXL-shaped models, for the demo and the tests (no weights can be downloaded)."""

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .configs import Components, clip_tokenizer, sd_scheduler_config

# SDXL's shape at toy size: no attention at the first level, two transformer blocks per layer after it, 64-channel
# heads and 32 norm groups (as ComfyUI builds SDXL), linear projections, the added "text_time" input (pooled 1280 + 6 time ids x 256,
# SDXL's 2816, which ComfyUI's SDXL model fixes). The text encoders differ in width (32 and bigG's own 1280, which
# ComfyUI's CLIP requires of its projection: context 1312), as CLIP-L and bigG do, which is how a single-file loader
# tells them apart; three layers (ComfyUI takes the penultimate's output only of more than two), narrow MLPs.
TINY_SDXL_UNET = dict(
    sample_size=8, block_out_channels=(32, 128), layers_per_block=1, norm_num_groups=32,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2), attention_head_dim=(1, 2), cross_attention_dim=1312, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
TINY_SDXL_TEXT = (dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4),
                  dict(hidden_size=1280, intermediate_size=64, num_hidden_layers=3, num_attention_heads=20,
                       projection_dim=1280, hidden_act="gelu"))


def tiny_components(seed: int = 0, prediction_type: str = "epsilon", sd2: bool = False) -> Components:
    """UNet (2 levels, 32/64 channels), VAE with SD's 8x downsampling, 2-layer CLIP text encoder."""
    torch.manual_seed(seed)
    context = 32
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=context, attention_head_dim=4 if sd2 else 8, use_linear_projection=sd2)
    vae = tiny_vae()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=context, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=49408, max_position_embeddings=77, projection_dim=context))
    scheduler_config = sd_scheduler_config() | {"prediction_type": prediction_type}
    for m in (unet, vae, text_encoder):
        m.eval()
    return Components(unet, vae, text_encoder, clip_tokenizer(sd2), scheduler_config)


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(block_out_channels=(8, 16, 16, 16), norm_num_groups=8, latent_channels=4, layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def tiny_sdxl_components(seed: int = 0, prediction_type: str = "epsilon", vae: AutoencoderKL | None = None) -> Components:
    """An SDXL-architecture model at toy size (``TINY_SDXL_UNET``), with SDXL's VAE scaling and DDIM schedule."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_SDXL_UNET)
    base = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    first = CLIPTextModel(CLIPTextConfig(**base, **TINY_SDXL_TEXT[0]))
    second = CLIPTextModelWithProjection(CLIPTextConfig(**base, **TINY_SDXL_TEXT[1]))
    vae = vae or tiny_vae()  # drawn last: the other parts are the same whichever VAE is given
    vae.register_to_config(scaling_factor=0.13025, force_upcast=True)
    scheduler_config = sd_scheduler_config() | {"prediction_type": prediction_type}
    for m in (unet, vae, first, second):
        m.eval()
    return Components(unet, vae, first, clip_tokenizer(False), scheduler_config, second, clip_tokenizer(True))


def save_folder(components: Components, folder: str | Path) -> Path:
    """Save as a diffusers model folder (what ``load_components`` reads back)."""
    folder = Path(folder)
    components.unet.save_pretrained(folder / "unet")
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    if components.text_encoder_2 is not None:
        components.text_encoder_2.save_pretrained(folder / "text_encoder_2")
        components.tokenizer_2.save_pretrained(folder / "tokenizer_2")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(components.scheduler_config))
    return folder
