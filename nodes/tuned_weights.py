"""Tuned weights on ComfyUI's MODEL: what tuning trains (full, or LoRA), the tuned clone, its file, loading a file.

Full tuning trains copies of the query projections (weight patches of the clone afterwards) and of the temporal layers.
LoRA tuning trains ComfyUI's own trainable LoRA (``weight_adapter.lora.LoraDiff``, what its LoRA trainer uses) on the
query projections and PEFT's adapters on the temporal layers (``tav_core.model.lora``); its file is a standard LoRA
file whose image part the stock Load LoRA applies, and whose query adapters become the clone's ordinary LoRA patches.
With an AnimateDiff motion module as the temporal layers, full tuning trains the whole module and LoRA adapts its
attentions (MotionDirector's targets); the files name the module, and load only beside it.
"""

import copy
from dataclasses import dataclass, field

import torch

from ..tav_core.errors import check
from ..tav_core.loading.tuned import (apply_temporal_lora, blend, check_motion, is_lora, lora_adapters,
                                      lora_file_tensors, lora_record, motion_record, read_tuned, tuned_frame_attention,
                                      tuned_group_norm, write_tuned)
from ..tav_core.model.inflation import TemporalLayers, transformer_blocks
from ..tav_core.model.lora import MOTION, SPATIAL, TEMPORAL, add_adapters, check_rank, delta, motion_holders, remove_adapters
from . import host
from .video_model import (attach, base_fingerprint, diffusion_model, new_temporal_layers, patched_weight,
                          query_names, require_supported, temporal_layers)


@dataclass
class Trainable:
    """What one tuning run trains on a MODEL. ``weights``: ModelPatcher key -> the query projection's tensor (full) or
    weight function (LoRA) while tuning; ``params``: the trained tensors by file key; ``frozen``: LoRA's temporal
    layers' own weights (drawn from the seed)."""
    layers: TemporalLayers
    weights: dict
    params: dict
    frozen: dict = field(default_factory=dict)
    lora: dict | None = None  # after tuning: LoRA's record (tav_core.loading.tuned.lora_record)


def is_trained(key: str) -> bool:
    """A temporal layers' tensor full tuning trains: the temporal attention (not its norm), or all of a motion module."""
    return ".attn_temp." in key or key.startswith("motion.")


def adapted_holders(layers: TemporalLayers) -> tuple[list | dict, tuple[str, ...]]:
    """Where LoRA's PEFT adapters go in the temporal layers, and on which layers: each block's temporal attention, or
    the motion module's transformer blocks (keyed ``motion.<path>``) and their attentions."""
    if layers.motion_module is None:
        return list(layers.blocks), TEMPORAL
    return motion_holders(layers.motion), MOTION


def trainable(model, layers: TemporalLayers, config, device, base=patched_weight) -> Trainable:
    """What ``config`` tunes on ``layers`` (the run's own copies, on ``device``) and on the query projections.
    ``base(model, key)``: a query projection's current weight, where full tuning starts (the planner's fake one)."""
    names = query_names(model)
    if config.lora_rank is None:
        weights = {k: torch.nn.Parameter(base(model, k).to(device)) for k in names}
        params = {names[k]: q for k, q in weights.items()}
        params.update({k: p for k, p in layers.named_parameters() if is_trained(k)})
        return Trainable(layers, weights, params)
    check_rank(config.lora_rank, config.lora_alpha)
    rank, alpha = config.lora_rank, config.lora_alpha if config.lora_alpha is not None else config.lora_rank
    holders, targets = adapted_holders(layers)
    # the adapted layers' own weights: the temporal attention's (drawn from the seed; the run's identity), or the
    # motion module's attentions (the module is their base)
    frozen = {k: p for k, p in layers.named_parameters() if any(f".{t}.weight" in k for t in targets)}
    weights, params = {}, {}
    for key, file_key in names.items():
        out_features, in_features = host.utils.get_attr(model.model, key).shape
        diff = host.weight_adapter.lora.LoraDiff((torch.zeros(out_features, rank), torch.zeros(rank, in_features),
                                                  float(alpha), None, None, None))
        if torch.device(device).type != "cpu":  # (made on the CPU; a memory plan's fake one cannot move)
            diff = diff.to(device)
        weights[key] = diff
        layer = file_key.removesuffix(".weight")
        params.update({f"{layer}.lora_A.weight": diff.lora_down.weight, f"{layer}.lora_B.weight": diff.lora_up.weight})
    params.update(add_adapters(holders, targets, rank, alpha))
    return Trainable(layers, weights, params, frozen)


def require_untuned(layers: TemporalLayers) -> None:
    """LoRA tuning starts from fresh temporal layers (its file names their starting weights by the seed only) or from
    the motion module as loaded (its file names it by the module's fingerprint)."""
    tuned = getattr(layers, "tuned", False) or any(bool(attn.to_out[0].weight.any()) for _, attn in layers.pairs())
    check(not tuned, "LoRA tuning starts from an untuned video model (a LoRA file leaves the temporal layers' "
                     "starting weights out: they are drawn from the seed, or are the motion module's): give the MODEL "
                     "from Inflate Model or Load & Inflate Checkpoint, not a tuned one, or tune fully")


def finish(run: Trainable, config) -> Trainable:
    """After tuning: LoRA's record kept (before its temporal adapters merge into the layers); the layers on the CPU,
    marked tuned."""
    if config.lora_rank is not None:
        run.lora = lora_record(run.params, config.lora_rank, config.lora_alpha, config.seed, run.frozen)
        remove_adapters(adapted_holders(run.layers)[0])
    run.layers = run.layers.to("cpu").requires_grad_(False)
    run.layers.tuned = True
    return run


def lora_block_names(model) -> list[str]:
    """Each transformer block as a standard LoRA file names it (diffusers' module path), from ComfyUI's key map."""
    keys = host.lora.model_lora_keys_unet(model.model, {})
    diffusers = {}
    for name, target in keys.items():
        own = "lora_unet_" + target.removeprefix("diffusion_model.").removesuffix(".weight").replace(".", "_")
        if name.startswith("lora_unet_") and name != own:
            diffusers[target] = name
    return [diffusers[f"diffusion_model.{name}.attn1.to_q.weight"].removeprefix("lora_unet_").removesuffix("_attn1_to_q")
            for name, _ in transformer_blocks(diffusion_model(model))]


def with_lora_queries(model, tensors: dict, strength: float):
    """A clone with a LoRA file's query adapters as ComfyUI's own LoRA patches (what Load LoRA adds), at ``strength``."""
    spatial = {k: v for k, v in tensors.items() if k.startswith("lora_unet_")}
    loaded = host.lora.load_lora(spatial, host.lora.model_lora_keys_unet(model.model, {}))
    expected = len(query_names(model))
    check(len(loaded) == expected, f"the LoRA's image part fits {len(loaded)} of this model's {expected} query "
                                   "projections; use the base model it was tuned on")
    clone = model.clone()
    clone.add_patches(loaded, strength)
    return clone


def with_queries(model, queries: dict, strength: float):
    """A clone whose query projections (patch key -> tuned tensor) are W0 + s (W - W0): patches of the difference,
    so the MODEL's own patches (LoRAs before) stay in."""
    clone = model.clone()
    clone.add_patches({k: ((q.float().cpu() - patched_weight(model, k)),) for k, q in queries.items()}, strength)
    return clone


def tuned_clone(model, run: Trainable):
    """A clone of ``model`` computing what tuning learnt; the patches are differences (full) or LoRA patches, so
    LoRAs patched before stay in."""
    if run.lora is not None:
        tensors = lora_file_tensors(run.lora["adapters"], lora_block_names(model), run.lora["lora_alpha"])
        return attach(with_lora_queries(model, tensors, 1.0), run.layers)
    return attach(with_queries(model, run.weights, 1.0), run.layers)


def save_tuned_model(path, model, trained: Trainable, **metadata) -> None:
    """What a tuning run trained, as a tuned-weights file (``metadata`` may hold the run's time and memory: "run")."""
    layers = trained.layers
    meta = dict(frame_attention=layers.frame_attention, group_norm=layers.group_norm,
                **motion_record(layers.motion_module), **metadata)
    if trained.lora is not None:
        tensors = lora_file_tensors(trained.lora["adapters"], lora_block_names(model), trained.lora["lora_alpha"])
        meta.update({k: v for k, v in trained.lora.items() if k != "adapters"})
    else:
        names = query_names(model)  # (parameters: a motion module's positional encodings are rebuilt, not tuned)
        tensors = {names[k]: q for k, q in trained.weights.items()} | dict(layers.named_parameters())
    write_tuned(path, tensors, base_fingerprint(model), **meta)


def lora_layers(model, layers: TemporalLayers) -> list[str]:
    """The layers a LoRA file adapts (``tav_core.loading.tuned.lora_layers`` on ComfyUI's MODEL): the queries, and the
    temporal attention or the motion module's attentions."""
    blocks = range(len(transformer_blocks(diffusion_model(model))))
    holders, targets = adapted_holders(layers)
    names = holders if isinstance(holders, dict) else [f"blocks.{i}" for i in blocks]
    return [f"blocks.{i}.{layer}" for i in blocks for layer in SPATIAL] + \
        [f"{name}.{layer}" for name in names for layer in targets]


def load_tuned_model(path, model, strength: float = 1.0) -> tuple:
    """(tuned clone, metadata) from a tuned-weights file (full or LoRA) at ``strength`` (``tav_core.loading.tuned``);
    refuses files tuned on another base model, or with another motion module than the MODEL's (or none)."""
    require_supported(model, "Load Tuned Weights")
    tensors, meta = read_tuned(path, base_fingerprint(model))
    inflated = temporal_layers(model)
    motion = inflated.motion_module if inflated is not None else None
    check_motion(meta, motion, path)
    check(motion is None or not getattr(inflated, "tuned", False) or (not is_lora(meta) and strength == 1),
          f"this MODEL's motion module is tuned already, and {'a LoRA file adds to' if is_lora(meta) else 'a strength blends from'} "
          "the module as loaded: give Load Tuned Weights the MODEL from Inflate Model or Load & Inflate Checkpoint "
          "(or a full file at strength 1)")
    with torch.inference_mode(False):  # the module's own copy (loading changes it; the MODEL given keeps its own)
        motion = copy.deepcopy(motion)
    layers = new_temporal_layers(model, tuned_frame_attention(meta, path), motion, tuned_group_norm(meta, path))
    layers.tuned = True
    if is_lora(meta):
        adapters = lora_adapters(tensors, meta, lora_block_names(model), path, lora_layers(model, layers))
        with torch.inference_mode(False):
            params = dict(layers.named_parameters())
            apply_temporal_lora(params, adapters, meta, path, strength)
            with torch.no_grad():  # a motion module is its adapters' base: W0 + s (alpha / rank) B A
                rank, alpha = int(meta["lora_rank"]), float(meta["lora_alpha"])
                for layer, (down, up) in adapters.items():
                    if layer.startswith("motion."):
                        w = params[f"{layer}.weight"]
                        w.copy_(w + strength * delta(down, up, alpha, rank).to(w))
        return attach(with_lora_queries(model, tensors, strength), layers), meta
    names = query_names(model)
    params = dict(layers.named_parameters())
    expected = set(params) | set(names.values())
    check(set(tensors) == expected, f"{path} does not fit this model's UNet ({len(tensors)} tensors, "
                                    f"{len(expected)} expected); use the base model it was tuned on")
    with torch.inference_mode(False), torch.no_grad():
        for k, p in params.items():  # the temporal attention as tuned (its output scaled), a module W0 + s (W - W0)
            p.copy_(blend(p, tensors[k], k, strength))
    return attach(with_queries(model, {k: tensors[n] for k, n in names.items()}, strength), layers), meta
