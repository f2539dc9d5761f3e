"""Tiny random AnimateDiff motion modules in the original checkpoint layout (mm_sd_v14/v15, mm_sd_v15_v2, v3_sd15_mm,
mm_sdxl_v10_beta), for the motion-module tests: no real module can be downloaded here.

One motion module (AnimateDiff's ``VanillaTemporalModule``) is ``<block>.motion_modules.<j>.temporal_transformer.*``:
GroupNorm ``norm``, ``proj_in``, one transformer block of two temporal self-attentions (``attention_blocks.{0,1}`` with
``to_q/to_k/to_v/to_out.0`` and a sinusoidal ``pos_encoder.pe`` of 24 (v1) or 32 frames), LayerNorms ``norms.{0,1}``,
a GEGLU feed-forward ``ff`` with ``ff_norm``, ``proj_out``. Down blocks hold 2, up blocks 3, v2 adds ``mid_block``.
SD1.5-shaped modules keep four blocks, SDXL's three (at a tiny width), so the version rules are the real ones.
"""
from __future__ import annotations

import math

import torch

VERSIONS = ("v1", "v2", "v3", "sdxl")

# tiny defaults; SD-like keeps 4 blocks (last two equal, like 320/640/1280/1280),
# SDXL-like keeps 3 blocks (like 320/640/1280) so detect() can tell them apart.
DEFAULT_CHANNELS = {"v1": (32, 32, 64, 64), "v2": (32, 32, 64, 64), "v3": (32, 32, 64, 64), "sdxl": (32, 64, 64)}
PE_LEN = {"v1": 24, "v2": 32, "v3": 32, "sdxl": 32}
HAS_MID = {"v1": False, "v2": True, "v3": False, "sdxl": False}


def sinusoid_pe(max_len: int, dim: int) -> torch.Tensor:
    """AnimateDiff PositionalEncoding.pe (== diffusers SinusoidalPositionalEmbedding.pe)."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


def _module(prefix: str, c: int, pe_len: int, g: torch.Generator, scale: float) -> dict:
    def rnd(*shape):
        return torch.randn(*shape, generator=g) * scale

    def ones_ish(n):
        return 1.0 + torch.randn(n, generator=g) * scale

    p = prefix + ".temporal_transformer."
    sd = {
        p + "norm.weight": ones_ish(c), p + "norm.bias": rnd(c),
        p + "proj_in.weight": rnd(c, c), p + "proj_in.bias": rnd(c),
    }
    tb = p + "transformer_blocks.0."
    pe = sinusoid_pe(pe_len, c)
    for a in (0, 1):
        ab = f"{tb}attention_blocks.{a}."
        sd[ab + "to_q.weight"] = rnd(c, c)
        sd[ab + "to_k.weight"] = rnd(c, c)
        sd[ab + "to_v.weight"] = rnd(c, c)
        sd[ab + "to_out.0.weight"] = rnd(c, c)
        sd[ab + "to_out.0.bias"] = rnd(c)
        sd[ab + "pos_encoder.pe"] = pe.clone()
        sd[f"{tb}norms.{a}.weight"] = ones_ish(c)
        sd[f"{tb}norms.{a}.bias"] = rnd(c)
    sd[tb + "ff.net.0.proj.weight"] = rnd(8 * c, c)
    sd[tb + "ff.net.0.proj.bias"] = rnd(8 * c)
    sd[tb + "ff.net.2.weight"] = rnd(c, 4 * c)
    sd[tb + "ff.net.2.bias"] = rnd(c)
    sd[tb + "ff_norm.weight"] = ones_ish(c)
    sd[tb + "ff_norm.bias"] = rnd(c)
    # proj_out is zero-initialised in AnimateDiff training; trained files are not zero.
    sd[p + "proj_out.weight"] = rnd(c, c)
    sd[p + "proj_out.bias"] = rnd(c)
    return sd


def original_state_dict(
    version: str,
    channels: tuple[int, ...] | None = None,
    layers_per_block: int = 2,
    pe_len: int | None = None,
    seed: int = 0,
    scale: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Random motion module in the original AnimateDiff key layout.

    channels=None -> DEFAULT_CHANNELS[version] (4 blocks for v1/v2/v3, 3 for sdxl).
    Any tuple works for loading; detect() needs 4 (SD) / 3 (SDXL) blocks.
    """
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    channels = tuple(channels or DEFAULT_CHANNELS[version])
    pe_len = pe_len or PE_LEN[version]
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for i, c in enumerate(channels):
        for j in range(layers_per_block):
            sd.update(_module(f"down_blocks.{i}.motion_modules.{j}", c, pe_len, g, scale))
    if HAS_MID[version]:
        sd.update(_module("mid_block.motion_modules.0", channels[-1], pe_len, g, scale))
    for i, c in enumerate(reversed(channels)):
        for j in range(layers_per_block + 1):
            sd.update(_module(f"up_blocks.{i}.motion_modules.{j}", c, pe_len, g, scale))
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def adapter_config(
    version: str,
    channels: tuple[int, ...] | None = None,
    layers_per_block: int = 2,
    pe_len: int | None = None,
    heads: int = 2,
    norm_groups: int = 8,
) -> dict:
    """diffusers MotionAdapter(**cfg) matching original_state_dict(version, ...)."""
    return dict(
        block_out_channels=list(channels or DEFAULT_CHANNELS[version]),
        motion_layers_per_block=layers_per_block,
        motion_transformer_layers_per_block=1,
        motion_mid_block_layers_per_block=1,
        motion_transformer_layers_per_mid_block=1,
        motion_num_attention_heads=heads,
        motion_norm_num_groups=norm_groups,
        motion_max_seq_length=pe_len or PE_LEN[version],
        use_motion_mid_block=HAS_MID[version],
        conv_in_channels=None,
    )


# Full-size equivalents (what guoyww/animatediff-motion-adapter-* should hold):
#   v1  : block_out_channels (320,640,1280,1280), layers 2, heads 8, groups 32, max_seq 24, mid False
#   v2  : same, max_seq 32, use_motion_mid_block True
#   v3  : same as v1 but max_seq 32
#   sdxl: block_out_channels (320,640,1280), layers 2, heads 8, groups 32, max_seq 32, mid False


def tiny_module(seed: int = 0, max_frames: int = 32, channels: tuple = (32, 64), version: str = "v2"):
    """A random motion module for ``tiny_components``' two-level UNet (a v2-like one: with a mid block; "sdxl" with
    ``channels=(32, 128)``: for ``tiny_sdxl_components``', without); every weight drawn (diffusers starts some at
    zero), so the module acts. Its GroupNorm has the UNet's group count (8; SDXL's 32), as released modules do
    (diffusers' ``UNetMotionModel`` takes the UNet's count for its modules whatever the adapter's config says)."""
    from diffusers import MotionAdapter

    from tav_core.loading.motion import _module
    torch.manual_seed(seed)
    adapter = MotionAdapter(block_out_channels=channels, motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32 if version == "sdxl" else 8, motion_max_seq_length=max_frames,
                            use_motion_mid_block=version == "v2", conv_in_channels=None)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if name.endswith("norm.weight") else 0.0))
    return _module(adapter, version, max_frames)
