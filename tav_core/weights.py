"""Tuned weights: only the tuned tensors, as safetensors, keyed by transformer-block index.

Keys look like ``blocks.3.attn1.to_q.weight`` so the same file serves diffusers' and ComfyUI's UNet layouts
(both list transformer blocks in the same order). A fingerprint of the frozen base weights guards against
loading into another base model.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import TavError, check
from .files import atomic_path
from .inflate import TEMPORAL_MODULES, add_temporal_layers, is_trainable, transformer_blocks

FORMAT = "tuneavideo-tuned-v1"
FINGERPRINT_SAMPLES = 32


def video_parameters(unet: nn.Module, trainable_only: bool = False) -> dict[str, nn.Parameter]:
    """The tuned tensors (query projections, temporal layers) of an inflated UNet, keyed by block index."""
    out = {}
    for i, (_, block) in enumerate(transformer_blocks(unet)):
        for name, p in block.named_parameters():
            full = f"blocks.{i}.{name}"
            if is_trainable(full) or (not trainable_only and name.split(".")[0] in TEMPORAL_MODULES):
                out[full] = p
    return out


def fingerprint(unet: nn.Module) -> list[float]:
    """Evenly spaced samples of two frozen base tensors (input conv, first attn1.to_k), dtype-independent."""
    conv = next(m for m in unet.modules() if isinstance(m, nn.Conv2d))
    blocks = transformer_blocks(unet)
    check(bool(blocks), "the model has no transformer blocks; give a Stable Diffusion 1.x/2.x UNet")
    values = []
    for w in (conv.weight, blocks[0][1].attn1.to_k.weight):
        flat = w.detach().flatten().float().cpu()
        values += flat[torch.linspace(0, flat.numel() - 1, FINGERPRINT_SAMPLES).long()].tolist()
    return values


def same_base(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and torch.allclose(torch.tensor(a), torch.tensor(b), rtol=2e-2, atol=1e-3)


def save_tuned(path: str | Path, unet: nn.Module, **metadata) -> None:
    """Save the tuned tensors with metadata (frames, size, steps, prompt, ...) atomically."""
    tensors = {k: p.detach().to("cpu", torch.float32).contiguous() for k, p in video_parameters(unet).items()}
    meta = {"format": FORMAT, "fingerprint": json.dumps(fingerprint(unet)),
            "blocks": str(len(transformer_blocks(unet)))}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    check(path.is_file(), f"tuned weights file {path} does not exist; give the path of a .safetensors file "
                          "saved by 'tuneavideo tune' or the One-Shot Tune node")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise TavError(f"{path} is not a readable safetensors file ({e}); re-save or re-download it") from e
    check(meta.get("format") == FORMAT, f"{path} is not a Tune-A-Video tuned-weights file (format "
                                        f"{meta.get('format')!r}); for a reference-repo UNet folder use load_reference_unet")
    out = {k: json.loads(v) for k, v in meta.items() if k not in ("format",)}
    return out


def load_tuned(path: str | Path, unet: nn.Module) -> dict:
    """Load tuned tensors into an inflated UNet; refuses a file made on another base model. Returns metadata."""
    meta = read_metadata(path)
    check(same_base(meta["fingerprint"], fingerprint(unet)),
          f"{path} was tuned on a different base model than the one given; load the checkpoint it was tuned "
          f"on (its prompt was {meta.get('prompt')!r}) or tune again on this one")
    for _, block in transformer_blocks(unet):
        add_temporal_layers(block)
    load_video_parameters(unet, load_file(str(path)), str(path))
    return meta


def load_video_parameters(unet: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    params = video_parameters(unet)
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    check(not missing and not unexpected,
          f"{source} does not fit this UNet (missing {missing[:3]}, unexpected {unexpected[:3]}); "
          "use the base model the weights were tuned on")
    with torch.no_grad():
        for k, p in params.items():
            check(p.shape == tensors[k].shape, f"{source}: {k} has shape {tuple(tensors[k].shape)}, the UNet "
                                               f"needs {tuple(p.shape)}; use the base model it was tuned on")
            p.copy_(tensors[k])
