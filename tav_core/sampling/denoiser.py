"""Wrap a UNet that predicts eps or v at integer timesteps as a k-diffusion denoiser ``model(x, sigma) -> x0``."""

from collections.abc import Callable

import torch

from ..errors import check
from .schedule import sigma_table

PREDICTION_TYPES = ("epsilon", "v_prediction")


class DiscreteDenoiser:
    """``x`` lives in k-diffusion space (x0 + sigma * noise); the UNet sees x / sqrt(sigma^2 + 1) at t(sigma)."""

    def __init__(self, unet_fn: Callable, alphas: torch.Tensor, prediction_type: str = "epsilon"):
        check(prediction_type in PREDICTION_TYPES,
              f"prediction type {prediction_type!r} is not supported; use one of {PREDICTION_TYPES}")
        self.unet_fn = unet_fn
        self.prediction_type = prediction_type
        self.alphas = alphas

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose sigma is ``sigma`` (linear in log sigma; exact at the training timesteps,
        whose sigmas ``schedule.sigma_table`` computes the same way in the same dtype)."""
        log_sigmas = sigma_table(self.alphas.to(sigma.device, sigma.dtype)).log()
        log_sigma = sigma.log().clamp(log_sigmas[0], log_sigmas[-1])
        high = torch.searchsorted(log_sigmas, log_sigma).clamp(1, len(log_sigmas) - 1)
        low = high - 1
        w = (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])
        return low + w

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        c_in = (s ** 2 + 1).rsqrt()
        out = self.unet_fn(x * c_in, self.sigma_to_t(sigma.to(x.dtype)), cond)
        if self.prediction_type == "epsilon":
            return x - s * out
        return x * c_in ** 2 - out * s * c_in


def guided(model: Callable, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float | torch.Tensor,
           batched: bool = True, on_chunks: Callable | None = None) -> Callable:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``, both halves in one batch, or (``batched``
    False: half the memory of a pass) one after the other; ``scale`` may be a tensor of one scale per row.
    ``on_chunks(kinds)`` is told what the next call's batch holds, in ComfyUI's words: 1 unconditional,
    0 conditional (attention control reads it)."""
    tell = on_chunks or (lambda kinds: None)
    if uncond is None or (not torch.is_tensor(scale) and scale == 1.0):
        def conditional(x, sigma):
            tell([0])
            return model(x, sigma, cond)
        return conditional

    def fn(x, sigma):
        if batched:
            tell([1, 0])
            u, c = model(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([uncond, cond])).chunk(2)
        else:
            tell([1])
            u = model(x, sigma, uncond)
            tell([0])
            c = model(x, sigma, cond)
        return u + (scale.to(u) if torch.is_tensor(scale) else scale) * (c - u)
    return fn
