"""The memory and compute of One-Shot Tune's step, planned on ComfyUI's own UNet class built from the MODEL's
config on fake tensors (no weights are read), with the node's own weight functions and hooks; and the settings
that fit the load device, chosen before any step."""

import inspect
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from functools import cache
from pathlib import Path

import torch
from torch import nn

from ..tav_core.editing.null_text import optimize_null_text
from ..tav_core.loading.motion import motion_config, planned_module
from ..tav_core.memory.cache import cached_plan, files_version
from ..tav_core.memory.duration import LONG, duration_text, measured_rate, predicted_seconds
from ..tav_core.memory.fit import fit, window_options
from ..tav_core.memory.replay import ReplayedPasses
from ..tav_core.memory.trace import AllocationPeak, Plan, Settings, as_on_device, cast, plan_tuning, planning
from ..tav_core.model.frames import FrameContext
from ..tav_core.model.inflation import Inflation, TemporalLayers
from ..tav_core.precision import HALF, PRECISIONS, autocast
from ..tav_core.sampling.ddim import invert_ddim, sample_ddim
from ..tav_core.sampling.denoiser import DiscreteDenoiser, guided
from ..tav_core.sampling.windows import ContextWindows, Windowed
from ..tav_core.tuning.tune import TuneConfig
from . import host
from .autograd import checkpointed, frozen, trainable_weights
from .conditioning import adm_width, call_unet, context_rows
from .context_windows import HostWindows
from .tuned_weights import trainable
from .video_model import PREDICTION, alphas_cumprod, diffusion_model, temporal_layers


@contextmanager
def fake_unet(model, settings: Settings):
    """Inside ``planning()``: ComfyUI's UNet class of the MODEL's config on fake tensors, with the video hooks and
    fp32 temporal layers like the MODEL's (its motion module's architecture, if it has one): (unet, hooks, layers,
    unet_fn). Attention is planned unchunked (an upper bound:
    ``host.patched_for_planning``), and the host's free-memory queries see plenty of memory. Off the CPU the layers
    compute as there (``as_on_device``: the fused temporal attention, on CUDA float32 norms under autocast)."""
    config = {k: v for k, v in model.model.model_config.unet_config.items() if k not in ("dtype", "device", "operations")}
    dtype, compute = settings.weights_dtype, model.model.manual_cast_dtype or settings.weights_dtype
    adm = adm_width(model)
    own = temporal_layers(model)
    motion, frame_attention, group_norm = (own.motion_module, own.frame_attention, own.group_norm) if own else (None,) * 3
    with planning():
        operations = host.ops.manual_cast if model.model.manual_cast_dtype else host.ops.disable_weight_init
        unet = host.openaimodel.UNetModel(**config, dtype=dtype, device="cpu", operations=operations)
        hooks = Inflation(unet, FrameContext())
        planned = planned_module(motion_config(motion), torch.float32) if motion is not None else None
        layers = cast(TemporalLayers(unet, frame_attention, planned, group_norm), torch.float32)
        as_on_device([unet, layers], model.load_device.type)

        def unet_fn(x, t, c):
            with autocast("cpu", settings.mixed_precision):
                return call_unet(unet, x, t, c, adm, compute)
        with host.patched_for_planning():
            yield unet, hooks, layers, unet_fn


def _shapes(model, settings: Settings) -> tuple[tuple, tuple]:
    config = model.model.model_config.unet_config
    latent_shape = (settings.frames, config.get("in_channels", 4), settings.height // 8, settings.width // 8)
    return latent_shape, (1, context_rows(model), config["context_dim"])


def planned_model(model) -> dict:
    """What of a MODEL and the host shapes its plans (the key of the plans kept on disk, ``tav_core.memory.cache``):
    its UNet's config, dtypes and prediction, conditioning widths, temporal layers (a motion module's architecture),
    load device, and the attention ComfyUI chose at start-up (its flags and what is installed)."""
    own = temporal_layers(model)
    return {"unet": {k: v for k, v in model.model.model_config.unet_config.items() if k not in ("device", "operations")},
            "class": type(model.model).__name__, "weights": model.model.get_dtype(),
            "manual_cast": model.model.manual_cast_dtype, "prediction": model.model.model_type.name,
            "adm": adm_width(model), "context_rows": context_rows(model),
            "temporal": own and [own.motion_module and motion_config(own.motion_module), own.frame_attention,
                                 own.group_norm],
            "load_device": model.load_device.type, "attention": getattr(host.attention.optimized_attention, "__name__", "")}


@cache
def planning_code() -> str:
    """The version of the code a node's plan traces beyond the engine's: these nodes' and the host's model modules
    (``comfy/ldm/modules``: UNet, attention, their blocks) and layers (``comfy/ops.py``)."""
    modules = Path(inspect.getfile(host.openaimodel)).parents[1]
    return files_version([*Path(__file__).parent.glob("*.py"), *modules.rglob("*.py"), inspect.getfile(host.ops)])


def plan_comfy_tuning(model, settings: Settings, count_flops: bool = True) -> Plan:
    """``settings.clone_frozen_weights``: plan for frozen weights that are inference tensors (each copied once).
    Planned once and kept on disk."""
    stage = "comfy tune" + (" with flops" if count_flops else "")
    return cached_plan(planned_model(model), stage, settings, model.load_device.type,
                       lambda: _trace_tuning(model, settings, count_flops), planning_code())


def _trace_tuning(model, settings: Settings, count_flops: bool) -> Plan:
    with fake_unet(model, settings) as (unet, hooks, layers, unet_fn):
        fake_weight = lambda model, key: host.utils.get_attr(unet, key.removeprefix("diffusion_model.")).float()
        run = trainable(model, layers, TuneConfig(lora_rank=settings.lora_rank), "cpu", fake_weight)
        latent_shape, context_shape = _shapes(model, settings)
        copies = "all" if settings.clone_frozen_weights else "inference"
        queries = {k.removeprefix("diffusion_model."): w for k, w in run.weights.items()}
        with trainable_weights(unet, queries, copies):
            adapters = [w for w in run.weights.values() if isinstance(w, nn.Module)]  # LoRA's
            return plan_tuning([unet, layers, *adapters], unet_fn, run.params,
                               lambda f: layers.video(hooks, f), latent_shape, context_shape, settings,
                               (lambda: checkpointed(unet)) if settings.gradient_checkpointing else nullcontext,
                               count_flops)


def plan_comfy_stage(model, stage: str, settings: Settings) -> Plan:
    """One step of DDIM Invert ("invert"), Video KSampler ("sample": CFG's halves batched, as ComfyUI runs them when
    they fit; "p2p": two branches) or Null-Text Invert ("null_text") on ComfyUI's UNet: the growth over the loaded
    MODEL (its weights and temporal layers), over ``settings.windows`` if set. Planned once and kept on disk."""
    return cached_plan(planned_model(model), f"comfy {stage}", settings, model.load_device.type,
                       lambda: _trace_stage(model, stage, settings), planning_code())


def _trace_stage(model, stage: str, settings: Settings, replay: bool = True) -> Plan:
    """The plan traced (``replay``: a UNet pass of a kind traced before replayed, ``tav_core.memory.replay``)."""
    alphas = alphas_cumprod(model).tolist()  # real numbers, read before the fake tensors
    prediction = PREDICTION[model.model.model_type]
    with fake_unet(model, settings) as (unet, hooks, layers, unet_fn):
        denoiser = DiscreteDenoiser(unet_fn, torch.tensor(alphas), prediction)
        frames = settings.frames
        fn = denoiser if settings.windows is None else Windowed(
            denoiser, frames, settings.windows, lambda n, window: layers.video(hooks, n, window))
        latent_shape, context_shape = _shapes(model, settings)
        rows = 2 * frames if stage == "p2p" else frames
        x, context = torch.zeros(rows, *latent_shape[1:]), torch.zeros(context_shape)
        sigmas = torch.tensor([14.6, 0.03])
        copies = "all" if settings.clone_frozen_weights else "inference"
        checkpointing = checkpointed(unet) if stage == "null_text" and settings.gradient_checkpointing else nullcontext()
        replayed = ReplayedPasses(unet, hooks.context, [layers]) if replay else nullcontext()
        # as the nodes run: only the null text takes gradients
        with frozen(unet), frozen(layers), trainable_weights(unet, {}, copies), checkpointing, \
                layers.video(hooks, frames), replayed, AllocationPeak() as tracker:
            cond = context.expand(rows, -1, -1)
            if stage == "invert":
                invert_ddim(lambda x, s: fn(x, s, cond), x, sigmas.flip(0))
            elif stage == "null_text":
                optimize_null_text(fn, [x, x], sigmas, context, context, 7.5, inner_steps=1)
            else:
                sample_ddim(guided(fn, cond, cond, 7.5, settings.batch_cfg), x, sigmas)
    return Plan({}, 0, 0, 0, 0, tracker.peak, 0, held=2 * x.numel() * 4)


def resident_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in diffusion_model(model).parameters())


def has_inference_weights(model) -> bool:
    """Whether the loaded weights are inference tensors (then each frozen one is copied for autograd)."""
    return any(p.is_inference() for p in diffusion_model(model).parameters())


def compute_precision(model) -> str:
    """The autocast tuning needs for the MODEL's compute dtype (half-precision weights need the gradient scaler)."""
    return HALF.get(model.model.manual_cast_dtype or model.model.get_dtype(), "no")


def _free_after_loading(model):
    """``free(needed)``: the load device's free memory once ComfyUI loaded the MODEL and unloaded other models to
    make room for ``needed`` more, as it does before sampling."""
    def free(needed: int) -> int:
        with torch.inference_mode(False):  # as tuning loads it: weights moved to a GPU are not inference tensors
            host.model_management.load_models_gpu([model], memory_required=needed, force_full_load=True)
        return host.model_management.get_free_memory(model.load_device)
    return free


def tuning_settings(model, samples: torch.Tensor, config: TuneConfig, gradient_checkpointing: bool) -> Settings:
    frames, _, height, width = samples.shape
    mixed = config.mixed_precision if config.mixed_precision != "no" else compute_precision(model)
    return Settings(frames, height * 8, width * 8, model.model.get_dtype(), mixed, gradient_checkpointing,
                    config.frame_window, config.lora_rank, clone_frozen_weights=has_inference_weights(model))


def fit_comfy_tuning(model, samples: torch.Tensor, config: TuneConfig, gradient_checkpointing: bool,
                     mode: str) -> tuple[TuneConfig, bool, str]:
    """(config, gradient checkpointing, report) that fit the MODEL's load device, as ``tav_core.memory.fit.fit``
    decides; ComfyUI first unloads other models to make room, as it does before sampling."""
    if mode == "off":
        return config, gradient_checkpointing, ""
    device = model.load_device
    free = _free_after_loading(model)
    free(0)
    settings = tuning_settings(model, samples, config, gradient_checkpointing)
    chosen, report = fit(lambda s: plan_comfy_tuning(model, s, count_flops=False), settings, resident_bytes(model),
                         free, device.type, mode)
    return (replace(config, mixed_precision=chosen.mixed_precision, frame_window=chosen.frame_window),
            chosen.gradient_checkpointing, report)


def tuning_forecast(model, samples: torch.Tensor, config: TuneConfig, gradient_checkpointing: bool) -> tuple[float, str]:
    """(predicted seconds, what to show) for tuning ``config.steps`` steps as set: from the plan's FLOPs per step and
    the load device's measured rate; a run predicted long (``duration.LONG``) also names what half the frames or
    half the size would take (planned too)."""
    device = model.load_device
    settings = tuning_settings(model, samples, config, gradient_checkpointing)
    dtype = PRECISIONS[settings.mixed_precision] or model.model.manual_cast_dtype or model.model.get_dtype()
    tokens = lambda s: s.height // 8 * (s.width // 8)  # the latent's pixels: the attention's length at full size
    attention = host.attention.optimized_attention  # (the host's own: chunked on a CPU)
    seconds = lambda s, flops: predicted_seconds(flops, config.steps, device, dtype, tokens(s), attention)
    flops = plan_comfy_tuning(model, settings).flops
    predicted = seconds(settings, flops)
    text = (f"{config.steps} steps of {settings.frames} frames at {settings.width}x{settings.height}: about "
            f"{duration_text(predicted)} on this {device.type.upper()} (planned {flops / 1e12:.2f} TFLOP a step, "
            f"measured {measured_rate(device, dtype, tokens(settings), attention) / 1e9:.0f} GFLOP/s)")
    if predicted <= LONG:
        return predicted, text
    shorter = []
    if settings.frames >= 4:
        frames = settings.frames // 2
        window = min(settings.frame_window, frames) if settings.frame_window else None
        shorter.append((f"{frames} frames", replace(settings, frames=frames, frame_window=window)))
    half = replace(settings, height=max(64, settings.height // 16 * 8), width=max(64, settings.width // 16 * 8))
    if (half.height, half.width) != (settings.height, settings.width):
        shorter.append((f"{half.width}x{half.height}", half))
    said = [f"{name} about {duration_text(seconds(s, plan_comfy_tuning(model, s).flops))}" for name, s in shorter]
    return predicted, text + (f"; shorter: {', '.join(said)}" if said else "")


def window_candidates(settings: Settings, device_type: str, stage: str) -> list[tuple[str, Settings]]:
    """What a node may change to fit an inference stage: for null-text inversion's backward first gradient
    checkpointing (the same result), then frame windows (CFG's halves are split by ComfyUI itself when short of
    memory; the precision is the loader's)."""
    if stage == "null_text" and not settings.gradient_checkpointing:
        checkpointed_settings = replace(settings, gradient_checkpointing=True)
        return [("gradient checkpointing", checkpointed_settings),
                *[(f"gradient checkpointing and {name}", s) for name, s in window_options(checkpointed_settings)]]
    return window_options(settings)


def with_context_windows(model, windows: ContextWindows):
    """A clone of ``model`` with the host's context windows of these settings (what Context Windows (Manual) adds)."""
    model = model.clone()
    model.model_options["context_handler"] = host.context_windows.IndexListContextHandler(
        host.context_windows.get_matching_context_schedule(host.context_windows.ContextSchedules.STATIC_STANDARD),
        host.context_windows.get_matching_fuse_method(windows.fuse), windows.length, windows.overlap)
    return model


def fit_comfy_stage(model, samples: torch.Tensor, stage: str, mode: str, node: str):
    """(MODEL, report, gradient checkpointing) for one inference stage of a node: the MODEL as given if its step fits
    the load device (over the context windows it carries, if any), else in "auto" (null-text inversion with gradient
    checkpointing, then) a clone with the longest frame windows that fit."""
    if mode == "off":
        return model, "", False
    handler = model.model_options.get("context_handler")
    windows = HostWindows(handler) if isinstance(handler, host.context_windows.IndexListContextHandler) else None
    frames, _, height, width = samples.shape
    settings = Settings(frames, height * 8, width * 8, model.model.get_dtype(), compute_precision(model),
                        windows=windows, clone_frozen_weights=stage == "null_text" and has_inference_weights(model))
    chosen, report = fit(lambda s: plan_comfy_stage(model, stage, s), settings, 0, _free_after_loading(model),
                         model.load_device.type, mode, stage, window_candidates)
    if chosen.windows is not windows:
        model = with_context_windows(model, chosen.windows)
    return model, report and f"{node}: {report}", chosen.gradient_checkpointing
