"""Tuning that fits: the planned peak (``tav_core.memory.trace``) against the device's free memory, before any step.

Modes: "auto" (the default) tunes as asked if that fits, else with the first cheaper setting that fits (gradient
checkpointing, then half-precision autocast, then ever shorter frame windows) and says so; "check" refuses what
does not fit, naming what would; "off" plans nothing.
"""

from collections.abc import Callable
from dataclasses import replace

import torch

from ..errors import TavError, check, size_text
from ..loading.configs import ModelConfigs
from ..sampling.windows import ContextWindows, Passes
from .host import cpu_free_bytes
from .stages import STAGE_NAMES, plan_stage
from .trace import Plan, Settings

MEMORY_MODES = ("auto", "check", "off")
# what a process really takes per planned byte: on CUDA the caching allocator's rounding and fragmentation; on the
# CPU, glibc's arenas keep freed memory (the process grew by 1.6-2.8x the counted allocations, bench/memory_check)
OVERHEAD = {"cuda": 1.1, "cpu": 3.0}


def free_bytes(device: torch.device) -> int:
    """What this process can still take on ``device``: CUDA's free memory plus what torch's cache holds unused;
    on the CPU, the available memory within the cgroup's limit (``tav_core.memory.host``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return cpu_free_bytes()


def half_precision(device_type: str) -> str:
    """The half precision autocast takes here: bf16 where the device has it (and on the CPU), else fp16."""
    bf16 = device_type == "cpu" or (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return "bf16" if bf16 else "fp16"


def candidates(settings: Settings, device_type: str, stage: str = "tune") -> list[tuple[str, Settings]]:
    """What may be changed to fit ``stage``, cheapest first, each step keeping the ones before. Tuning: gradient
    checkpointing (the same result, ~1.3x the FLOPs), half-precision autocast (the reference's own recipe), then
    shorter frame windows (a change of the recipe; two frames at least, or the temporal attention would learn
    nothing). Inference stages: CFG's halves one after the other (the same result), gradient checkpointing (null-text
    inversion's backward), half precision, then overlapping frame windows (``tav_core.sampling.windows``) of 32 frames and
    fewer, 4 at least. VAE stages: tiles."""
    out, s, said = [], settings, []

    def add(name: str, changed: Settings) -> Settings:
        said.append(name)
        out.append((" and ".join(said) if len(said) < 3 else ", ".join(said[:-1]) + " and " + said[-1], changed))
        return changed
    if stage in ("encode", "decode"):
        return [] if s.vae_tiling else [("VAE tiles", replace(s, vae_tiling=True))]
    if stage in ("sample", "p2p") and s.batch_cfg:
        s = add("CFG halves one after the other", replace(s, batch_cfg=False))
    if stage in ("tune", "null_text") and not s.gradient_checkpointing:
        s = add("gradient checkpointing", replace(s, gradient_checkpointing=True))
    if s.mixed_precision == "no":
        s = add(f"{half_precision(device_type)} autocast", replace(s, mixed_precision=half_precision(device_type)))
    if stage == "tune":
        window = s.step_frames
        while window > 2:
            window = max(2, window // 2)
            out.append((f"{', '.join(said)} and a frame window of {window}", replace(s, frame_window=window)))
        return out
    return out + [(f"{', '.join(said)} and {name}", option) for name, option in window_options(s)]


def window_options(settings: Settings) -> list[tuple[str, Settings]]:
    """Overlapping frame windows shorter than the clip (or than the windows already set): 32 frames down to 4."""
    length = getattr(settings.windows, "length", settings.frames)
    return [(f"frame windows of {w} (overlap {w // 4})", replace(settings, windows=ContextWindows(w, w // 4)))
            for w in (32, 16, 8, 4) if w < length]


def fit(plan_for: Callable[[Settings], Plan], settings: Settings, already: int, free: Callable[[int], int],
        device_type: str, mode: str = "auto", stage: str = "tune",
        options: Callable = candidates) -> tuple[Settings, str]:
    """The settings to run ``stage`` with and a one-line report. ``plan_for(settings)`` plans a step; ``already``:
    bytes of the plan already on the device (the loaded weights); ``free(needed)``: the free bytes, after the host
    made room for ``needed`` if it can; ``options(settings, device_type, stage)``: what may be changed, cheapest
    first (``candidates``). Raises ``TavError`` with the numbers and what would fit."""
    check(mode in MEMORY_MODES, f"memory mode {mode!r} is not one of {', '.join(MEMORY_MODES)}")
    factor = OVERHEAD.get(device_type, 1.1)
    what = STAGE_NAMES[stage]

    def needs(s: Settings) -> int:
        return int((plan_for(s).total - already) * factor)
    asked = needs(settings)
    available = free(asked)
    if asked <= available:
        return settings, f"memory: {what} needs about {size_text(asked)} more, {size_text(available)} free"
    said = f"{what} needs about {size_text(asked)} more but {size_text(available)} are free"
    choices = options(settings, device_type, stage)
    for name, option in choices:
        need = needs(option)
        if need <= available:
            if mode == "auto":
                return option, f"memory: {said}: {what} with {name} ({size_text(need)})"
            raise TavError(f"{said}; with {name} it needs {size_text(need)}: turn that on, or use the 'auto' memory mode")
    tried = f" even with {choices[-1][0]}" if choices else ""
    lora = _lora_that_fits(needs, settings, available, device_type, stage, options) if stage == "tune" else None
    raise TavError(f"{said}, and would not fit{tried}; {lora or 'use fewer frames or a smaller size'}, or free "
                   "memory (other programs, other loaded models)")


LORA_RANK = 16  # what a plan that full tuning cannot fit tries instead


def _lora_that_fits(needs: Callable, settings: Settings, available: int, device_type: str, stage: str,
                    options: Callable) -> str | None:
    """Where full tuning fits nowhere: the first LoRA setting that would, named (never taken: LoRA learns otherwise
    than the paper's recipe, so only the user turns it on)."""
    if settings.lora_rank is not None:
        return None
    lora = replace(settings, lora_rank=LORA_RANK)
    for name, option in [("", lora), *options(lora, device_type, stage)]:
        need = needs(option)
        if need <= available:
            return (f"LoRA tuning of rank {LORA_RANK}{' with ' + name if name else ''} would fit ({size_text(need)}): "
                    f"turn it on (--lora-rank {LORA_RANK}; One-Shot Tune: method lora), as it learns otherwise than "
                    "the paper's recipe it is never chosen for you; or use fewer frames or a smaller size")
    return None


def loaded_bytes(pipe) -> int:
    """What the pipeline already holds on its device: the weights of UNet (and tuned tensors), VAE, text encoder."""
    return sum(p.numel() * p.element_size() for m in (pipe.c.unet, pipe.c.vae, *pipe.c.text_encoders)
               for p in m.parameters())


def stage_settings(stage: str, frames: int, height: int, width: int, weights_dtype: torch.dtype = torch.float32,
                   mixed_precision: str = "no", passes: Passes = Passes(), config=None, steps: int = 50,
                   gradient_checkpointing: bool = False, vae_tiling: bool = False) -> Settings:
    """The ``Settings`` a stage runs with: tuning from its ``config`` (its precision already resolved, as
    ``TuneAVideo.tuned_config`` gives it), inference stages from their ``passes`` over the pipeline's precision."""
    common = dict(weights_dtype=weights_dtype, vae_tiling=vae_tiling, steps=steps,
                  gradient_checkpointing=gradient_checkpointing)
    if stage == "tune":
        return Settings(frames, height, width, mixed_precision=config.mixed_precision, frame_window=config.frame_window,
                        lora_rank=config.lora_rank, **common)
    return Settings(frames, height, width, mixed_precision=passes.mixed_precision or mixed_precision,
                    windows=passes.windows, batch_cfg=passes.batch_cfg, **common)


def pipeline_settings(pipe, stage: str, frames: int, height: int, width: int, **options) -> Settings:
    """``stage_settings`` of a loaded ``TuneAVideo``: its weights, precision, checkpointing and VAE tiles."""
    return stage_settings(stage, frames, height, width, pipe.dtype, pipe.mixed_precision,
                          gradient_checkpointing=pipe.c.unet.is_gradient_checkpointing,
                          vae_tiling=bool(getattr(pipe.c.vae, "use_tiling", False)), **options)


def fit_stage(configs: ModelConfigs, stage: str, settings: Settings, device: torch.device, mode: str = "auto",
              free: Callable[[int], int] | None = None, loaded: int = 0) -> tuple[Settings, str]:
    """Plan ``stage`` (``tav_core.memory.stages.STAGES``) of a model of these ``configs`` against ``device``'s free
    memory, of which ``loaded`` bytes already hold the model (0 before it loads): (settings to run it with, report),
    or ``TavError`` (see ``fit``)."""
    check(mode in MEMORY_MODES, f"memory mode {mode!r} is not one of {', '.join(MEMORY_MODES)}")
    if mode == "off":
        return settings, ""
    device = torch.device(device)
    return fit(lambda s: plan_stage(configs, stage, s, device.type), settings, loaded,
               free or (lambda _: free_bytes(device)), device.type, mode, stage)


def apply_to_pipeline(pipe, chosen: Settings) -> None:
    """Turn on in the pipeline what the chosen settings need of it: the UNet's gradient checkpointing, VAE tiles."""
    if chosen.gradient_checkpointing and not pipe.c.unet.is_gradient_checkpointing:
        pipe.c.unet.enable_gradient_checkpointing()
    if chosen.vae_tiling:
        pipe.c.vae.enable_tiling()


def fit_pipeline_stage(pipe, stage: str, settings: Settings, mode: str = "auto",
                       free: Callable[[int], int] | None = None) -> tuple[Settings, str]:
    """``fit_stage`` for a loaded ``TuneAVideo``, applying the chosen settings' needs to it."""
    chosen, report = fit_stage(ModelConfigs.of(pipe.c), stage, settings, pipe.device, mode, free, loaded_bytes(pipe))
    apply_to_pipeline(pipe, chosen)
    return chosen, report


def passes_of(settings: Settings) -> Passes:
    return Passes(settings.mixed_precision, settings.windows, settings.batch_cfg)


def fit_pipeline(pipe, latents: torch.Tensor, config, mode: str = "auto", free: Callable[[int], int] | None = None):
    """Fit a ``TuneAVideo`` tuning run on ``latents`` with ``config`` (as ``pipe.tuned_config`` gives it): returns
    (config, report). Turns the UNet's gradient checkpointing on when the chosen settings need it."""
    frames, _, height, width = latents.shape
    settings = pipeline_settings(pipe, "tune", frames, height * 8, width * 8, config=config)
    chosen, report = fit_pipeline_stage(pipe, "tune", settings, mode, free)
    return replace(config, mixed_precision=chosen.mixed_precision, frame_window=chosen.frame_window), report
