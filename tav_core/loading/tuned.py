"""Tuned weights: only the tuned tensors, as safetensors, keyed by transformer-block index.

Full tuning's keys look like ``blocks.3.attn1.to_q.weight`` so the same file serves diffusers' and ComfyUI's UNet
layouts (both list transformer blocks in the same order). LoRA files (``model.lora``) use the standard LoRA layout
(``<name>.lora_down.weight``, ``.lora_up.weight``, ``.alpha``): the image model's query projections under the
kohya-style names SD tools use and ComfyUI's Load LoRA reads (``lora_unet_<diffusers module path>``), the temporal
attention under the pack's block keys. A fingerprint of the frozen base weights guards against loading into another base model.

``strength`` s blends a file in: every tuned weight becomes W0 + s (W - W0), W0 its untuned value (the base model's
query projections; the temporal attention's output projection, zero). The temporal attention's query, key and value
weights have no untuned value worth blending towards (a random draw), and with the output scaled they need none: they
load as tuned. s = 0 computes the base model, s = 1 the tuned one.
"""

import json
from pathlib import Path

import torch
from torch import nn

from ..choices import FRAME_ATTENTION, GROUP_NORMS
from ..errors import check
from ..files import parsed_metadata, read_header, read_safetensors, write_safetensors
from ..model.inflation import TEMPORAL_MODULES, draw_fresh_temporal, inflate, is_trainable, transformer_blocks
from ..model.lora import MOTION, SPATIAL, TEMPORAL, delta, motion_holders
from .fingerprint import checkpoint_fingerprint, fingerprint, fingerprint_of, same_base

FORMAT = "tuneavideo-tuned-v1"
LORA_PARTS = {"lora_A": "lora_down", "lora_B": "lora_up"}  # PEFT's names -> the standard file's
TEMPORAL_OUT = ".attn_temp.to_out.0."


def motion_of(unet: nn.Module):
    """The AnimateDiff motion module an inflated UNet runs with (``tav_core.loading.motion.MotionModule``), or None."""
    return getattr(getattr(unet, "tav_inflation", None), "motion", None)


def video_parameters(unet: nn.Module, trainable_only: bool = False) -> dict[str, nn.Parameter]:
    """The tuned tensors (query projections, temporal layers) of an inflated UNet, keyed by block index; with a
    motion module, all of it (the temporal layers) under ``motion.<its diffusers name>``."""
    out = {}
    for i, (_, block) in enumerate(transformer_blocks(unet)):
        for name, p in block.named_parameters():
            full = f"blocks.{i}.{name}"
            if is_trainable(full) or (not trainable_only and name.split(".")[0] in TEMPORAL_MODULES):
                out[full] = p
    motion = motion_of(unet)
    if motion is not None:
        out.update({f"motion.{name}": p for name, p in motion.adapter.named_parameters()})
    return out


def motion_record(motion) -> dict:
    """What a tuned file records of the motion module it was tuned with (nothing without one)."""
    return {} if motion is None else {"motion_version": motion.version, "motion_fingerprint": motion.fingerprint}


def check_motion(meta: dict, motion, path) -> None:
    """A file tuned with a motion module loads with that module only; one tuned without, without one."""
    tuned_with = meta.get("motion_fingerprint")
    if tuned_with is None:
        check(motion is None, f"{path} was tuned without a motion module; load the model without one")
        return
    check(motion is not None, f"{path} was tuned with an AnimateDiff motion module ({meta.get('motion_version')}); "
                              "give that module (--motion-module; in ComfyUI, inflate the MODEL with it: Inflate "
                              "Model or Load & Inflate Checkpoint)")
    check(same_base(tuned_with, motion.fingerprint), f"{path} was tuned with another motion module than the one "
                                                      f"given ({meta.get('motion_version')}, not this "
                                                      f"{motion.version}); give the module it was tuned with")


def write_tuned(path: str | Path, tensors: dict[str, torch.Tensor], base_fingerprint: list[float],
                **metadata) -> None:
    """Save tuned tensors with metadata (frames, size, steps, prompt, ...) atomically."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    blocks = {int(k.split(".")[1]) for k in tensors if k.startswith("blocks.")}
    meta = {"format": FORMAT, "fingerprint": json.dumps(base_fingerprint), "blocks": str(len(blocks))}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    write_safetensors(path, tensors, meta)


def save_tuned(path: str | Path, unet: nn.Module, lora: dict | None = None, **metadata) -> None:
    """Full tuning's tensors from the UNet, or (``lora``: ``lora_record``'s) the adapters in the LoRA layout."""
    metadata.update(motion_record(motion_of(unet)))
    if lora is None:
        write_tuned(path, video_parameters(unet), fingerprint(unet), **metadata)
        return
    names = diffusers_block_names(unet)
    write_tuned(path, lora_file_tensors(lora["adapters"], names, lora["lora_alpha"]), fingerprint(unet),
                **metadata, **{k: v for k, v in lora.items() if k != "adapters"})


def diffusers_block_names(unet: nn.Module) -> list[str]:
    """Each transformer block's module path in diffusers' UNet (what a standard LoRA file names)."""
    return [name for name, _ in transformer_blocks(unet)]


def lora_record(adapters: dict, rank: int, alpha: float | None, seed: int, temporal: dict) -> dict:
    """What a LoRA file holds besides the base fingerprint: the adapters (``blocks.{i}.{layer}.lora_A/B.weight``), rank,
    alpha, and the seed and fingerprint of the temporal attention's drawn base (``temporal``: its weights as tuned on,
    before any adapter is merged in; a motion module has no drawn base: its fingerprint names it)."""
    record = {"adapters": {k: v.detach().float().cpu().clone() for k, v in adapters.items()}, "method": "lora",
              "lora_rank": rank, "lora_alpha": float(rank if alpha is None else alpha)}
    if "blocks.0.attn_temp.to_q.weight" in temporal:
        record.update(temporal_seed=seed, temporal_fingerprint=temporal_fingerprint(temporal))
    return record


def temporal_fingerprint(temporal: dict) -> list[float]:
    return fingerprint_of([temporal[f"blocks.0.attn_temp.{p}.weight"] for p in ("to_q", "to_k", "to_v")])


def lora_module_name(layer: str, block_names: list[str]) -> str:
    """``blocks.{i}.attn1.to_q`` -> ``lora_unet_down_blocks_0_..._attn1_to_q``; temporal layers keep their key."""
    if not layer.startswith("blocks."):
        return layer  # (a motion module's)
    _, i, rest = layer.split(".", 2)
    return f"lora_unet_{block_names[int(i)]}.{rest}".replace(".", "_") if rest in SPATIAL else layer


def lora_file_tensors(adapters: dict, block_names: list[str], alpha: float) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in adapters.items():
        layer, part, _ = key.rsplit(".", 2)
        name = lora_module_name(layer, block_names)
        out[f"{name}.{LORA_PARTS[part]}.weight"] = t
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def lora_layers(unet: nn.Module) -> list[str]:
    """The layers LoRA tuning adapts in an inflated UNet: the queries, and the temporal attention or (with a motion
    module) the motion module's attentions (``motion.<block path>.<layer>``)."""
    motion = motion_of(unet)
    blocks = range(len(transformer_blocks(unet)))
    if motion is None:
        return [f"blocks.{i}.{layer}" for i in blocks for layer in SPATIAL + TEMPORAL]
    return [f"blocks.{i}.{layer}" for i in blocks for layer in SPATIAL] + \
        [f"{name}.{layer}" for name in motion_holders(motion.adapter) for layer in MOTION]


def lora_adapters(tensors: dict, meta: dict, block_names: list[str], path, layers: list[str] | None = None) -> dict[str, tuple]:
    """A LoRA file's adapters as ``{<layer>: (down, up)}`` (``layers``: ``lora_layers``'; default: the queries and
    temporal attention of every block), every expected one present."""
    layers = layers or [f"blocks.{i}.{layer}" for i in range(len(block_names)) for layer in SPATIAL + TEMPORAL]
    names = {lora_module_name(layer, block_names): layer for layer in layers}
    found = {k.rsplit(".", 2)[0] for k in tensors if k.endswith((".lora_down.weight", ".lora_up.weight"))}
    missing, unexpected = sorted(set(names) - found), sorted(found - set(names))
    check(not missing and not unexpected, f"{path} does not fit this UNet (missing {missing[:2]}, unexpected "
                                          f"{unexpected[:2]}); use the base model it was tuned on")
    return {names[n]: (tensors[f"{n}.lora_down.weight"], tensors[f"{n}.lora_up.weight"]) for n in names}


def is_lora(meta: dict) -> bool:
    return meta.get("method") == "lora"


def redraw_temporal(temporal: dict, meta: dict, path) -> None:
    """A LoRA file's temporal base: drawn again from the run's seed, and checked against the draw it was tuned on."""
    draw_fresh_temporal(temporal, torch.Generator().manual_seed(int(meta["temporal_seed"])), only_fresh=False)
    check(same_base(meta["temporal_fingerprint"], temporal_fingerprint(temporal)),
          f"{path}: the temporal attention it was tuned on cannot be drawn again here (this torch draws other "
          "numbers from the same seed); tune again with this installation")


def apply_temporal_lora(temporal: dict, adapters: dict, meta: dict, path, strength: float) -> None:
    """The temporal attention as a LoRA file makes it, whatever it held: its base drawn again, each adapter added; the
    output projection (zero untuned, its bias too) becomes the adapter's product scaled by ``strength``. (A motion
    module is its own base: its adapters add like the queries'.)"""
    if "temporal_seed" not in meta:
        return
    redraw_temporal(temporal, meta, path)
    rank, alpha = int(meta["lora_rank"]), float(meta["lora_alpha"])
    with torch.no_grad():
        for layer, (down, up) in adapters.items():
            if ".attn_temp." not in layer:
                continue
            w = temporal[f"{layer}.weight"]
            d = delta(down, up, alpha, rank).to(w.device)
            if f"{layer}.".endswith(TEMPORAL_OUT):
                w.copy_(strength * d)
                temporal[f"{layer}.bias"].zero_()
            else:
                w.copy_(w.float() + d)


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


def mark_tuned(unet: nn.Module) -> None:
    """The UNet now holds tuned weights (tuned, or a file loaded): a LoRA or a strength no longer meets the base."""
    unet.tav_tuned = True


def require_untuned(unet: nn.Module, why: str) -> None:
    check(not getattr(unet, "tav_tuned", False), f"this UNet holds tuned weights already: {why}")


def load_tuned(path: str | Path, unet: nn.Module, strength: float = 1.0) -> dict:
    """Load tuned weights into a UNet (inflating it if needed, with the frame attention they were tuned with), at
    ``strength`` (see the module's docstring). Returns the metadata. A LoRA file, or any file at a strength other
    than 1, applies to the base model: a UNet holding tuned weights already is refused for them."""
    tensors, meta = read_tuned(path, fingerprint(unet))
    check_motion(meta, motion_of(unet), path)
    if is_lora(meta) or strength != 1:
        require_untuned(unet, f"{'a LoRA file adds to' if is_lora(meta) else 'a strength blends from'} the base "
                              "model's weights; load it into a fresh pipeline (or tuned weights at strength 1)")
    inflate(unet, frame_attention=tuned_frame_attention(meta, path), group_norm=tuned_group_norm(meta, path))
    mark_tuned(unet)
    if not is_lora(meta):
        load_video_parameters(unet, tensors, str(path), strength)
        return meta
    adapters = lora_adapters(tensors, meta, diffusers_block_names(unet), path, lora_layers(unet))
    params = video_parameters(unet)
    apply_temporal_lora(params, adapters, meta, path, strength)
    rank, alpha = int(meta["lora_rank"]), float(meta["lora_alpha"])
    with torch.no_grad():
        for layer, (down, up) in adapters.items():
            if ".attn_temp." not in layer:
                w = params[f"{layer}.weight"]
                w.copy_(w.float() + strength * delta(down, up, alpha, rank).to(w.device))
    return meta


def tuned_frame_attention(meta: dict, path) -> str:
    """The frame attention weights were tuned with (files from before the choice existed: sparse_causal)."""
    kind = meta.get("frame_attention", "sparse_causal")
    check(kind in FRAME_ATTENTION, f"{path} was tuned with frame attention {kind!r}, which this version does not know "
                                   f"({FRAME_ATTENTION}); update the pack or tune again")
    return kind


def tuned_group_norm(meta: dict, path) -> str:
    """The group norm weights were tuned with (files from before the choice existed: clip)."""
    kind = meta.get("group_norm", "clip")
    check(kind in GROUP_NORMS, f"{path} was tuned with group norm {kind!r}, which this version does not know "
                               f"({GROUP_NORMS}); update the pack or tune again")
    return kind


def blend(base: torch.Tensor, tuned: torch.Tensor, key: str, strength: float) -> torch.Tensor:
    """A full-tuning tensor at ``strength``: W0 + s (W - W0), W0 the base's (the temporal output's: zero); other
    temporal tensors as tuned (see the module's docstring). Exact at s = 0 and s = 1 (``torch.lerp``)."""
    if TEMPORAL_OUT in key:
        return tuned * strength
    if ".attn_temp." in key or ".norm_temp." in key:
        return tuned
    return torch.lerp(base.to(tuned), tuned, strength)


def load_video_parameters(unet: nn.Module, tensors: dict[str, torch.Tensor], source: str,
                          strength: float = 1.0) -> None:
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
            p.copy_(blend(p, tensors[k], k, strength))
