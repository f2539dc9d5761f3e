"""Noise schedules as k-diffusion sigmas, taken from diffusers' scheduler configs."""

import torch
from diffusers import DDIMScheduler

from .errors import check


def alphas_cumprod(scheduler_config: dict) -> torch.Tensor:
    return DDIMScheduler.from_config(scheduler_config).alphas_cumprod.to(torch.float32)


def ddim_timesteps(scheduler_config: dict, steps: int) -> torch.Tensor:
    """The integer timesteps DDIM visits, descending (diffusers' spacing: SD's "leading" + offset 1)."""
    scheduler = DDIMScheduler.from_config(scheduler_config)
    limit = scheduler.config.num_train_timesteps - 1
    check(isinstance(steps, int) and 1 <= steps <= limit, f"steps must be a whole number from 1 to {limit}, got {steps!r}")
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.to(torch.long)


def sigmas_at(alphas: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar): the noise level in k-diffusion's x = x0 + sigma * eps."""
    a = alphas[timesteps]
    return ((1 - a) / a).sqrt()


def sampling_sigmas(alphas: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Descending sigmas ending in 0 (the final step returns the denoised latents)."""
    return torch.cat([sigmas_at(alphas, timesteps), torch.zeros(1)])


def inversion_sigmas(alphas: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Ascending sigmas from 0 (the clean latents) up to the largest DDIM timestep: sampling's, reversed."""
    return sampling_sigmas(alphas, timesteps).flip(0)
