"""Load a UNet tuned and saved by the reference Tune-A-Video code (its ``UNet3DConditionModel`` folder)."""

import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file

from ..errors import check
from ..model.inflation import inflate, transformer_blocks
from .tuned import load_video_parameters, video_parameters

_BLOCK_3D_TO_2D = {"CrossAttnDownBlock3D": "CrossAttnDownBlock2D", "DownBlock3D": "DownBlock2D",
                   "CrossAttnUpBlock3D": "CrossAttnUpBlock2D", "UpBlock3D": "UpBlock2D",
                   "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn"}


def load_reference_unet(folder: str | Path) -> UNet2DConditionModel:
    """Load a UNet tuned and saved by the reference Tune-A-Video repo (``UNet3DConditionModel`` folder).

    Its 3D blocks are the 2D ones with extra ``attn_temp``/``norm_temp`` layers, so the weights go into an
    inflated diffusers ``UNet2DConditionModel``.
    """
    folder = Path(folder)
    check((folder / "config.json").is_file(), f"{folder} has no config.json; give the reference repo's saved "
                                              "'unet' folder (config.json + diffusion_pytorch_model.bin/.safetensors)")
    config = json.loads((folder / "config.json").read_text())
    for key in ("down_block_types", "up_block_types"):
        config[key] = [_BLOCK_3D_TO_2D.get(b, b) for b in config[key]]
    config["mid_block_type"] = _BLOCK_3D_TO_2D.get(config.get("mid_block_type", "UNetMidBlock3DCrossAttn"),
                                                   "UNetMidBlock2DCrossAttn")
    config["_class_name"] = "UNet2DConditionModel"
    weights = folder / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        state = load_file(str(weights))
    else:
        weights = folder / "diffusion_pytorch_model.bin"
        check(weights.is_file(), f"{folder} has no diffusion_pytorch_model.safetensors or .bin")
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"})
    temporal = (".attn_temp.", ".norm_temp.")
    base = {k: v for k, v in state.items() if not any(t in k for t in temporal)}
    missing, unexpected = unet.load_state_dict(base, strict=False)
    check(not missing and not unexpected, f"{folder} does not match the SD UNet layout (missing {missing[:3]}, "
                                          f"unexpected {unexpected[:3]})")
    inflate(unet)
    block_names = [name for name, _ in transformer_blocks(unet)]
    tensors = {}
    for key in video_parameters(unet):
        _, i, rest = key.split(".", 2)
        source = f"{block_names[int(i)]}.{rest}"
        check(source in state, f"{folder} lacks {source}; it is not a Tune-A-Video UNet")
        tensors[key] = state[source]
    load_video_parameters(unet, tensors, str(folder))
    return unet
