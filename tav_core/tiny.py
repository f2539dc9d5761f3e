"""A tiny random-weight SD-shaped model, for the demo and the tests (no weights can be downloaded)."""

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .models import Components, clip_tokenizer, sd_scheduler_config


def tiny_components(seed: int = 0, prediction_type: str = "epsilon", sd2: bool = False) -> Components:
    """UNet (2 levels, 32/64 channels), VAE with SD's 8x downsampling, 2-layer CLIP text encoder."""
    torch.manual_seed(seed)
    context = 32
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=context, attention_head_dim=4 if sd2 else 8, use_linear_projection=sd2)
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16), norm_num_groups=8, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=context, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        vocab_size=49408, max_position_embeddings=77, projection_dim=context))
    scheduler_config = sd_scheduler_config() | {"prediction_type": prediction_type}
    for m in (unet, vae, text_encoder):
        m.eval()
    return Components(unet, vae, text_encoder, clip_tokenizer(sd2), scheduler_config)


def save_folder(components: Components, folder: str | Path) -> Path:
    """Save as a diffusers model folder (what ``load_components`` reads back)."""
    folder = Path(folder)
    components.unet.save_pretrained(folder / "unet")
    components.vae.save_pretrained(folder / "vae")
    components.text_encoder.save_pretrained(folder / "text_encoder")
    components.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(components.scheduler_config))
    return folder
