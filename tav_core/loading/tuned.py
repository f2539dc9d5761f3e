"""Tuned weights: only the tuned tensors, as safetensors, keyed by transformer-block index.

Keys look like ``blocks.3.attn1.to_q.weight`` so the same file serves diffusers' and ComfyUI's UNet layouts
(both list transformer blocks in the same order). A fingerprint of the frozen base weights guards against
loading into another base model.
"""

import json
from pathlib import Path

import torch
from torch import nn

from ..choices import FRAME_ATTENTION
from ..errors import check
from ..files import parsed_metadata, read_header, read_safetensors, write_safetensors
from ..model.inflation import TEMPORAL_MODULES, inflate, is_trainable, transformer_blocks
from .fingerprint import checkpoint_fingerprint, fingerprint, same_base

FORMAT = "tuneavideo-tuned-v1"


def video_parameters(unet: nn.Module, trainable_only: bool = False) -> dict[str, nn.Parameter]:
    """The tuned tensors (query projections, temporal layers) of an inflated UNet, keyed by block index."""
    out = {}
    for i, (_, block) in enumerate(transformer_blocks(unet)):
        for name, p in block.named_parameters():
            full = f"blocks.{i}.{name}"
            if is_trainable(full) or (not trainable_only and name.split(".")[0] in TEMPORAL_MODULES):
                out[full] = p
    return out


def write_tuned(path: str | Path, tensors: dict[str, torch.Tensor], base_fingerprint: list[float],
                **metadata) -> None:
    """Save tuned tensors with metadata (frames, size, steps, prompt, ...) atomically."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    blocks = {int(k.split(".")[1]) for k in tensors}
    meta = {"format": FORMAT, "fingerprint": json.dumps(base_fingerprint), "blocks": str(len(blocks))}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    write_safetensors(path, tensors, meta)


def save_tuned(path: str | Path, unet: nn.Module, **metadata) -> None:
    write_tuned(path, video_parameters(unet), fingerprint(unet), **metadata)


def read_metadata(path: str | Path) -> dict:
    """A tuned-weights file's metadata (its header only), every entry parsed and the base fingerprint present."""
    path = Path(path)
    check(path.is_file(), f"tuned weights file {path} does not exist; give the path of a .safetensors file "
                          "saved by 'tuneavideo tune' or the One-Shot Tune node")
    meta = read_header(path, "re-save it or tune again")
    check(meta.get("format") == FORMAT, f"{path} is not a Tune-A-Video tuned-weights file (format "
                                        f"{meta.get('format')!r}); give a file saved by 'tuneavideo tune' or One-Shot Tune")
    meta = parsed_metadata(meta, path, "tune again")
    fingerprint = meta.get("fingerprint")
    check(isinstance(fingerprint, list) and len(fingerprint) > 0 and all(isinstance(v, (int, float)) for v in fingerprint),
          f"{path} does not say which base model it was tuned on (its fingerprint is missing or damaged); tune again")
    return meta


def check_tuned_file(path: str | Path, model: str | Path | None = None, config: str | Path | None = None) -> dict:
    """Before any model loads: the file is tuned weights, whole and finite, and (given the checkpoint) tuned on it."""
    meta = read_metadata(path)
    if model is not None:
        base = checkpoint_fingerprint(model)
        check(base is None or same_base(meta["fingerprint"], base),
              f"{path} was tuned on a different base model than {model}; give the checkpoint it was tuned on (its "
              f"prompt was {meta.get('prompt')!r}) or tune again on this one")
    _finite_tensors(path)
    return meta


def _finite_tensors(path) -> dict[str, torch.Tensor]:
    tensors = read_safetensors(path, "restore a copy or tune again")[1]
    damaged = sorted(k for k, v in tensors.items() if not bool(torch.isfinite(v).all()))
    check(not damaged, f"{path} holds NaN or infinite values in {len(damaged)} tensor(s) (e.g. {damaged[:1]}): the "
                       "file is damaged; restore a copy or tune again")
    return tensors


def read_tuned(path: str | Path, base_fingerprint: list[float]) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata of a tuned-weights file; refuses one made on another base model."""
    meta = read_metadata(path)
    check(same_base(meta["fingerprint"], base_fingerprint),
          f"{path} was tuned on a different base model than the one given; load the checkpoint it was tuned "
          f"on (its prompt was {meta.get('prompt')!r}) or tune again on this one")
    return _finite_tensors(path), meta


def load_tuned(path: str | Path, unet: nn.Module) -> dict:
    """Load tuned tensors into a UNet (inflating it if needed, with the frame attention they were tuned with).
    Returns the metadata."""
    tensors, meta = read_tuned(path, fingerprint(unet))
    inflate(unet, frame_attention=tuned_frame_attention(meta, path))
    load_video_parameters(unet, tensors, str(path))
    return meta


def tuned_frame_attention(meta: dict, path) -> str:
    """The frame attention weights were tuned with (files from before the choice existed: sparse_causal)."""
    kind = meta.get("frame_attention", "sparse_causal")
    check(kind in FRAME_ATTENTION, f"{path} was tuned with frame attention {kind!r}, which this version does not know "
                                   f"({FRAME_ATTENTION}); update the pack or tune again")
    return kind


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
