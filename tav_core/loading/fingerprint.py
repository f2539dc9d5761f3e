"""A fingerprint of a base model's frozen weights: evenly spaced samples of two tensors, so tuned weights refuse
to load into another base model, and a checkpoint can be checked without loading it."""

import re
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..errors import check
from ..model.inflation import transformer_blocks

FINGERPRINT_SAMPLES = 32


def fingerprint_names(unet: nn.Module) -> list[str]:
    """Parameters that identify the base model: the input conv and the first block's attn1.to_k."""
    conv = next(name for name, m in unet.named_modules() if isinstance(m, nn.Conv2d))
    blocks = transformer_blocks(unet)
    check(bool(blocks), "the model has no transformer blocks; give a Stable Diffusion 1.x/2.x or SDXL UNet")
    return [f"{conv}.weight", f"{blocks[0][0]}.attn1.to_k.weight"]


def fingerprint_of(tensors: list[torch.Tensor]) -> list[float]:
    """Evenly spaced samples of frozen base tensors: the same for fp32, fp16 and bf16 copies."""
    values = []
    for w in tensors:
        flat = w.detach().flatten().float().cpu()
        values += flat[torch.linspace(0, flat.numel() - 1, FINGERPRINT_SAMPLES).long()].tolist()
    return values


def fingerprint(unet: nn.Module) -> list[float]:
    params = dict(unet.named_parameters())
    return fingerprint_of([params[n] for n in fingerprint_names(unet)])


def same_base(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and torch.allclose(torch.tensor(a), torch.tensor(b), rtol=2e-2, atol=1e-3)


# where the tensors of ``fingerprint_names`` lie: the input conv and the first transformer block's attn1.to_k
# (the first level's for SD 1.x/2.x, the second's for SDXL, whose first level has no attention)
FINGERPRINT_KEYS = {"single file": ("model.diffusion_model.input_blocks.0.0.weight",
                                    r"model\.diffusion_model\.input_blocks\.(\d+)\.1\.transformer_blocks\.0\.attn1\.to_k\.weight"),
                    "folder": ("conv_in.weight", r"down_blocks\.(\d+)\.attentions\.0\.transformer_blocks\.0\.attn1\.to_k\.weight")}


def checkpoint_fingerprint(path: str | Path) -> list[float] | None:
    """The base-model fingerprint of tuned weights (``fingerprint``), read from a safetensors checkpoint
    without loading it; None where that cannot be done cheaply (pickles, ``.bin`` folders, other layouts): the
    check then happens when the weights load."""
    path = Path(path)
    kind, file = ("folder", path / "unet" / "diffusion_pytorch_model.safetensors") if path.is_dir() else \
        ("single file", path)
    if file.suffix != ".safetensors" or not file.is_file():
        return None
    conv, block = FINGERPRINT_KEYS[kind]
    try:
        with safe_open(str(file), "pt") as f:
            blocks = sorted((int(m[1]), m[0]) for k in f.keys() if (m := re.fullmatch(block, k)))
            if conv not in f.keys() or not blocks:
                return None
            return fingerprint_of([f.get_tensor(conv), f.get_tensor(blocks[0][1])])
    except Exception:  # noqa: BLE001  (unreadable here: the full load says why)
        return None
