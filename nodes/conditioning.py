"""SDXL's added input in the pack's own UNet calls (tuning, null-text inversion, their memory plans).

The host's sampler builds an SDXL MODEL's ADM vector ``y`` (pooled text embedding and size conditioning,
``encode_adm``) from each CONDITIONING; where the pack calls the diffusion model itself it builds ``y`` the same way
(the conditioning's own width/height, as CLIP Text Encode SDXL sets them, else the latent's size) and carries it
packed after the cross-attention context (``tav_core.model.conditioning.pack``), so tav_core's stages take one tensor.
"""

import torch

from ..tav_core.model.conditioning import pack, pooled_rows, unpack


def adm_width(model) -> int | None:
    """The width of the MODEL's ADM vector (SDXL: 2816), None for SD 1.x/2.x."""
    return model.model.adm_channels or None


def adm_vector(model, entry: list, latents: torch.Tensor) -> torch.Tensor | None:
    """The ADM vector (one row) of a CONDITIONING entry ([context, options]) for ``latents``' size, as the host's
    sampler makes it; None for SD 1.x/2.x."""
    if adm_width(model) is None:
        return None
    context, options = entry[0], entry[1]
    size = {"width": latents.shape[-1] * 8, "height": latents.shape[-2] * 8}
    return model.model.encode_adm(**{**size, "device": context.device, **options}).to(context)


def packed_conditioning(model, entry: list, latents: torch.Tensor) -> torch.Tensor:
    """One CONDITIONING entry as the tensor the pack's stages take, for ``latents``' size."""
    y = adm_vector(model, entry, latents)
    return entry[0] if y is None else pack(entry[0], y)


def context_rows(model, tokens: int = 77) -> int:
    """Rows of a packed conditioning: the tokens, and for SDXL the ADM vector's rows."""
    width = adm_width(model)
    return tokens + (pooled_rows(width, model.model.model_config.unet_config["context_dim"]) if width else 0)


def call_unet(unet, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor, adm: int | None, dtype) -> torch.Tensor:
    """ComfyUI's diffusion model on a packed conditioning."""
    y = None
    if adm is not None:
        c, y = unpack(c, adm)
        y = y.to(dtype)
    return unet(x.to(dtype), t.float(), context=c.to(dtype), y=y, transformer_options={}).float()
