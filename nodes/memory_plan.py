"""The memory and compute of One-Shot Tune's step, planned on ComfyUI's own UNet class built from the MODEL's
config on fake tensors (no weights are read), with the node's own weight functions and hooks; and the settings
that fit the load device, chosen before any step."""

from contextlib import nullcontext
from dataclasses import replace
from unittest import mock

import torch
from torch import nn

import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
import comfy.model_management
import comfy.ops
import comfy.utils

from ..tav_core.frames import FrameContext
from ..tav_core.inflation import Inflation, TemporalLayers
from ..tav_core.memory import Plan, Settings, cast, plan_tuning, planning
from ..tav_core.memory_budget import fit
from ..tav_core.tuning import TuneConfig
from .autograd import checkpointed, trainable_weights
from .video_model import diffusion_model, query_names


def _plenty_of_memory(device=None, torch_free_too=False):
    return (2 ** 50, 2 ** 50) if torch_free_too else 2 ** 50


def plan_comfy_tuning(model, settings: Settings, count_flops: bool = True) -> Plan:
    """``settings.clone_frozen_weights``: plan for frozen weights that are inference tensors (each copied once).

    ComfyUI's sub-quadratic attention (its CPU default) chunks by the free memory, with slices that fake tensors
    cannot take: the plan sees plenty of memory, so it plans attention unchunked (an upper bound)."""
    config = {k: v for k, v in model.model.model_config.unet_config.items() if k not in ("dtype", "device", "operations")}
    dtype, compute = settings.weights_dtype, model.model.manual_cast_dtype or settings.weights_dtype
    with planning():
        operations = comfy.ops.manual_cast if model.model.manual_cast_dtype else comfy.ops.disable_weight_init
        unet = openaimodel.UNetModel(**config, dtype=dtype, device="cpu", operations=operations)
        hooks = Inflation(unet, FrameContext())
        layers = cast(TemporalLayers(unet), torch.float32)
        names = {k.removeprefix("diffusion_model."): v for k, v in query_names(model).items()}
        queries = {k: nn.Parameter(comfy.utils.get_attr(unet, k).float()) for k in names}
        trained = {names[k]: q for k, q in queries.items()}
        trained.update({k: p for k, p in layers.named_parameters() if ".attn_temp." in k})
        latent_shape = (settings.frames, config.get("in_channels", 4), settings.height // 8, settings.width // 8)
        context_shape = (1, 77, config["context_dim"])

        def unet_fn(x, t, c):
            return unet(x.to(compute), t.float(), context=c.to(compute), transformer_options={}).float()
        copies = "all" if settings.clone_frozen_weights else "inference"
        with trainable_weights(unet, queries, copies), \
                mock.patch.object(comfy.model_management, "get_free_memory", _plenty_of_memory):
            return plan_tuning([unet, layers], unet_fn, trained, lambda f: hooks.video(f, layers.pairs()),
                               latent_shape, context_shape, settings,
                               (lambda: checkpointed(unet)) if settings.gradient_checkpointing else nullcontext,
                               count_flops)


def resident_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in diffusion_model(model).parameters())


def has_inference_weights(model) -> bool:
    """Whether the loaded weights are inference tensors (then each frozen one is copied for autograd)."""
    return any(p.is_inference() for p in diffusion_model(model).parameters())



def compute_precision(model) -> str:
    """The autocast tuning needs for the MODEL's compute dtype (half-precision weights need the gradient scaler)."""
    dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "no")


def fit_comfy_tuning(model, samples: torch.Tensor, config: TuneConfig, gradient_checkpointing: bool,
                     mode: str) -> tuple[TuneConfig, bool, str]:
    """(config, gradient checkpointing, report) that fit the MODEL's load device, as ``tav_core.memory_budget.fit``
    decides; ComfyUI first unloads other models to make room, as it does before sampling."""
    if mode == "off":
        return config, gradient_checkpointing, ""
    device = model.load_device

    def free(needed: int) -> int:
        with torch.inference_mode(False):  # as tuning loads it: weights moved to a GPU are not inference tensors
            comfy.model_management.load_models_gpu([model], memory_required=needed, force_full_load=True)
        return comfy.model_management.get_free_memory(device)

    free(0)
    frames, _, height, width = samples.shape
    mixed = config.mixed_precision if config.mixed_precision != "no" else compute_precision(model)
    settings = Settings(frames, height * 8, width * 8, model.model.get_dtype(), mixed, gradient_checkpointing,
                        config.frame_window, clone_frozen_weights=has_inference_weights(model))
    chosen, report = fit(lambda s: plan_comfy_tuning(model, s, count_flops=False), settings, resident_bytes(model),
                         free, device.type, mode)
    return (replace(config, mixed_precision=chosen.mixed_precision, frame_window=chosen.frame_window),
            chosen.gradient_checkpointing, report)
