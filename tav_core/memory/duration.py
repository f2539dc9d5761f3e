"""How long a run will take, said before it starts: the plan's FLOPs per step (``tav_core.memory.trace``) over the
rate this device reaches on a probe shaped like the run's own work, measured once per shape (a fraction of a
second on a GPU, about a second on a CPU).

The probe is a ResNet block's GroupNorm, SiLU and 3x3 convolution at SD's first width (320 channels) and a
transformer's LayerNorm and attention of as many queries as the run's latent has pixels to twice as many keys
(sparse-causal attention's two frames; 8 heads of 40, by the run's own attention function: the host's chunked ones
on a CPU),
forward and backward, computed as the run computes (autocast for half precision): the layers that hold most of a
step's FLOPs and much of its memory traffic, with the attention's share growing with the size as in the UNet. A
whole step reaches a steady share of the probe's rate: ``STEP_SHARE``, measured by ``bench.duration`` (real steps
against their prediction).
"""

import math
import time

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from .trace import FLOPS

STEP_SHARE = 1.0  # a tuning step's FLOP rate over the probe's: 0.74-1.17 measured (bench/results/duration-cpu.json)
LONG = 10 * 60  # seconds: a run predicted longer than this says what would make it shorter
_RATES: dict[tuple, float] = {}


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Attention of (batch, tokens, heads x width) tensors, as torch's SDPA computes it (diffusers' attention)."""
    split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).flatten(2)


def _probe(device: torch.device, dtype: torch.dtype, tokens: int, attention):
    """A ResNet block's norm, SiLU and 3x3 convolution, and a transformer's norm and attention, at SD's first width
    (320 channels, 8 heads of 40) over ``tokens`` pixels; in ``dtype`` as the run computes it (autocast for half)."""
    generator = torch.Generator().manual_seed(0)
    side = min(64, max(8, math.isqrt(tokens)))  # (SD's full-size attention at 512x512; larger latents cost more)
    new = lambda *shape, scale=1.0: (torch.randn(*shape, generator=generator) * scale).to(device).requires_grad_()
    x, weight, hidden = new(1, 320, side, side), new(320, 320, 3, 3, scale=0.02), new(1, side * side, 320)

    def run():
        with torch.autocast(device.type, dtype, enabled=dtype in (torch.float16, torch.bfloat16)):
            out = F.conv2d(F.silu(F.group_norm(x, 32)), weight, padding=1)
            q = F.layer_norm(hidden, (320,))
            kv = torch.cat([q, q.flip(1)], 1)  # sparse-causal attention's keys: two frames' tokens
            attended = attention(q, kv, kv, 8)
        (out.float().square().mean() + attended.float().square().mean()).backward()
    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_rate(device: torch.device | str, dtype: torch.dtype = torch.float32, tokens: int = 1024,
                  attention=sdpa) -> float:
    """FLOP/s this device reaches on the probe in ``dtype`` over ``tokens`` (a latent's pixels) with the run's
    ``attention(q, k, v, heads)`` (the best of a few repeats after a warm-up)."""
    device = torch.device(device)
    key = (device.type, device.index, dtype, tokens, attention)
    if key not in _RATES:
        with torch.inference_mode(False), torch.enable_grad():
            run = _probe(device, dtype, tokens, attention)
            with FlopCounterMode(display=False, custom_mapping=FLOPS) as counter:
                run()
            flops = counter.get_total_flops()
            best, spent = math.inf, 0.0
            while spent < 0.3 or best == math.inf:
                _sync(device)
                start = time.perf_counter()
                run()
                _sync(device)
                took = time.perf_counter() - start
                best, spent = min(best, took), spent + took
        _RATES[key] = flops / best
    return _RATES[key]


def predicted_seconds(flops_per_step: float, steps: int, device: torch.device | str,
                      dtype: torch.dtype = torch.float32, tokens: int = 1024, attention=sdpa) -> float:
    return steps * flops_per_step / (measured_rate(device, dtype, tokens, attention) * STEP_SHARE)


def duration_text(seconds: float) -> str:
    """"40 s", "12 min", "3 h 20 min", "6.8 days"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"
    days = f"{seconds / 86400:.1f}" if seconds < 10 * 86400 else f"{round(seconds / 86400)}"
    return f"{days.removesuffix('.0')} days"
