"""SDXL's text conditioning, carried as one tensor through every stage.

SDXL's UNet takes, besides the token embeddings its cross-attention reads (both text encoders' penultimate hidden
states, concatenated: 768 + 1280 = 2048 wide), the second encoder's pooled projection (1280) and six "time ids"
(original size, crop corner, target size) embedded beside the timestep. Every stage handles a prompt as one
(rows, tokens, width) tensor: tuning expands it over the frames, CFG concatenates two, windows take rows, null-text
inversion optimises one, files save them. So the pooled embedding rides as more token rows (one for SDXL, where
1280 < 2048; as many as it takes for a narrower context; zero-padded) and is split off just before the UNet: no stage
needs to know. The time ids depend on the clip's size only; they are made from the latents the UNet is given
(original = target = the frame size, crop (0, 0): what diffusers' SDXL pipeline and ComfyUI's CLIP Text Encode give
by default).
"""

import math

import torch


def is_sdxl_unet(unet_config) -> bool:
    """SDXL's UNet takes a pooled text embedding and the image's size and crop besides the token embeddings."""
    return unet_config.get("addition_embed_type") == "text_time"


def pooled_rows(pooled_width: int, width: int) -> int:
    return math.ceil(pooled_width / width)


def pack(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(rows, tokens, width) and (rows, pooled) -> (rows, tokens + k, width): the pooled embedding as the last k rows."""
    rows, width = len(pooled), hidden.shape[-1]
    k = pooled_rows(pooled.shape[-1], width)
    tail = torch.nn.functional.pad(pooled, (0, k * width - pooled.shape[-1])).reshape(rows, k, width)
    return torch.cat([hidden, tail.to(hidden)], dim=1)


def unpack(context: torch.Tensor, pooled_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of ``pack``: (token embeddings, pooled embedding)."""
    k = pooled_rows(pooled_width, context.shape[-1])
    return context[:, :-k], context[:, -k:].flatten(1)[:, :pooled_width]


def pooled_width(unet_config) -> int | None:
    """The pooled embedding's width an SDXL UNet takes (its added input less the six embedded time ids); None for
    a UNet without one (SD 1.x/2.x)."""
    if not is_sdxl_unet(unet_config):
        return None
    return unet_config["projection_class_embeddings_input_dim"] - 6 * unet_config["addition_time_embed_dim"]


def context_tokens(unet_config, tokens: int = 77) -> int:
    """Rows of a prompt's conditioning: CLIP's tokens, and the pooled embedding's rows for SDXL."""
    width = pooled_width(unet_config)
    return tokens + (pooled_rows(width, unet_config["cross_attention_dim"]) if width else 0)


def unet_inputs(context: torch.Tensor, x: torch.Tensor, width: int | None) -> tuple[torch.Tensor, dict | None]:
    """(encoder_hidden_states, added_cond_kwargs) of a diffusers UNet call on ``x`` with this conditioning."""
    if width is None:
        return context, None
    hidden, pooled = unpack(context, width)
    return hidden, {"text_embeds": pooled.to(x.dtype), "time_ids": time_ids(x)}


def time_ids(latents: torch.Tensor, vae_scale: int = 8) -> torch.Tensor:
    """SDXL's size conditioning of a clip: (height, width, crop top, crop left, height, width) in pixels, per row."""
    height, width = latents.shape[-2] * vae_scale, latents.shape[-1] * vae_scale
    ids = torch.tensor([height, width, 0, 0, height, width], dtype=latents.dtype, device=latents.device)
    return ids.expand(latents.shape[0], -1)


@torch.no_grad()
def encode_sdxl(tokenizers: list, encoders: list, prompt: str, device: torch.device) -> torch.Tensor:
    """A prompt through both SDXL text encoders, packed: each encoder's penultimate hidden states (CLIP's 77 tokens,
    each tokenizer padding its own way), concatenated; the second encoder's pooled projection."""
    hidden, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, encoders):
        tokens = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt").input_ids.to(device)
        out = encoder(tokens, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0]  # CLIPTextModelWithProjection's text_embeds (the last encoder is that one)
    return pack(torch.cat(hidden, dim=-1).float(), pooled.float())
