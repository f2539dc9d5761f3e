"""Tuning that fits: the planned peak (``tav_core.memory``) against the device's free memory, before any step.

Modes: "auto" (the default) tunes as asked if that fits, else with the first cheaper setting that fits (gradient
checkpointing, then half-precision autocast, then ever shorter frame windows) and says so; "check" refuses what
does not fit, naming what would; "off" plans nothing.
"""

from collections.abc import Callable
from dataclasses import replace

import torch

from .errors import TavError, check
from .memory import Plan, Settings, plan_pipeline

MEMORY_MODES = ("auto", "check", "off")
# what a process really takes per planned byte: on CUDA the caching allocator's rounding and fragmentation; on the
# CPU, glibc's arenas keep freed memory (the process grew by 1.5-2.3x the counted allocations, bench/memory_check)
OVERHEAD = {"cuda": 1.1, "cpu": 2.5}


def free_bytes(device: torch.device) -> int:
    """What this process can still take on ``device``: CUDA's free memory plus what torch's cache holds unused;
    the CPU's available memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024


def gib(n: float) -> str:
    """Bytes as a person reads them: GB (GiB) to one decimal, MB below one GB."""
    return f"{n / 2 ** 30:.1f} GB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MB"


def candidates(settings: Settings, device_type: str) -> list[tuple[str, Settings]]:
    """What may be changed to fit, cheapest first: gradient checkpointing (the same result, ~1.3x the FLOPs),
    half-precision autocast (the reference's own recipe), then shorter frame windows (a change of the recipe; two
    frames at least, or the temporal attention would learn nothing)."""
    out, s = [], settings
    if not s.gradient_checkpointing:
        s = replace(s, gradient_checkpointing=True)
        out.append(("gradient checkpointing", s))
    if s.mixed_precision == "no":
        bf16 = device_type == "cpu" or (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        s = replace(s, mixed_precision="bf16" if bf16 else "fp16")
        out.append((f"gradient checkpointing and {s.mixed_precision} autocast", s))
    window = s.step_frames
    while window > 2:
        window = max(2, window // 2)
        out.append((f"gradient checkpointing, {s.mixed_precision} autocast and a frame window of {window}",
                    replace(s, frame_window=window)))
    return out


def fit(plan_for: Callable[[Settings], Plan], settings: Settings, already: int, free: Callable[[int], int],
        device_type: str, mode: str = "auto") -> tuple[Settings, str]:
    """The settings to tune with and a one-line report. ``plan_for(settings)`` plans a step; ``already``: bytes of
    the plan already on the device (the loaded weights); ``free(needed)``: the free bytes, after the host made room
    for ``needed`` if it can. Raises ``TavError`` with the numbers and what would fit."""
    check(mode in MEMORY_MODES, f"memory mode {mode!r} is not one of {', '.join(MEMORY_MODES)}")
    factor = OVERHEAD.get(device_type, 1.1)

    def needs(s: Settings) -> int:
        return int((plan_for(s).total - already) * factor)
    asked = needs(settings)
    available = free(asked)
    if asked <= available:
        return settings, f"memory: tuning needs about {gib(asked)} more, {gib(available)} free"
    said = f"tuning needs about {gib(asked)} more but {gib(available)} are free"
    for name, option in candidates(settings, device_type):
        need = needs(option)
        if need <= available:
            if mode == "auto":
                return option, f"memory: {said}: tuning with {name} ({gib(need)})"
            raise TavError(f"{said}; with {name} it needs {gib(need)}: turn that on, or use the 'auto' memory mode")
    raise TavError(f"{said}, and would not fit even with gradient checkpointing, half precision and a 2-frame window; "
                   "use fewer frames or a smaller size, or free memory (other programs, other loaded models)")


def fit_pipeline(pipe, latents: torch.Tensor, config, mode: str = "auto", free: Callable[[int], int] | None = None):
    """Fit a ``TuneAVideo`` tuning run on ``latents`` with ``config`` (as ``pipe.tuned_config`` gives it): returns
    (config, report). Turns the UNet's gradient checkpointing on when the chosen settings need it."""
    check(mode in MEMORY_MODES, f"memory mode {mode!r} is not one of {', '.join(MEMORY_MODES)}")
    if mode == "off":
        return config, ""
    unet = pipe.c.unet
    frames, _, height, width = latents.shape
    autocast = config.mixed_precision
    if autocast == "no" and pipe.half:  # the pipeline autocasts half-precision weights itself
        autocast = "fp16" if pipe.dtype == torch.float16 else "bf16"
    settings = Settings(frames, height * 8, width * 8, pipe.dtype, autocast, unet.is_gradient_checkpointing,
                        config.frame_window)
    already = sum(p.numel() * p.element_size() for p in unet.parameters())  # all of it on the device already
    chosen, report = fit(lambda s: plan_pipeline(dict(unet.config), s, count_flops=False), settings, already,
                         free or (lambda _: free_bytes(pipe.device)), pipe.device.type, mode)
    if chosen.gradient_checkpointing and not unet.is_gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    mixed = chosen.mixed_precision if chosen.mixed_precision != autocast else config.mixed_precision
    return replace(config, mixed_precision=mixed, frame_window=chosen.frame_window), report
