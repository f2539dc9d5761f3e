"""The DDIM schedule as k-diffusion sigmas, placed exactly where the reference's diffusers DDIMScheduler puts it.

See ``tav_core.sampling.ddim`` for what the sigmas mean and which scaling latents are in at either end.
"""

import torch
from diffusers import DDIMScheduler

from ..errors import check


def alphas_cumprod(scheduler_config: dict) -> torch.Tensor:
    return DDIMScheduler.from_config(scheduler_config).alphas_cumprod.to(torch.float32)


def sigma_table(alphas: torch.Tensor) -> torch.Tensor:
    """sigma of every training timestep: sqrt((1 - alpha_bar) / alpha_bar)."""
    return ((1 - alphas) / alphas).sqrt()


def ddim_timesteps(scheduler_config: dict, steps: int) -> torch.Tensor:
    """The integer timesteps DDIM visits, descending (diffusers' spacing; SD's "leading" + offset 1: 981 ... 1)."""
    scheduler = DDIMScheduler.from_config(scheduler_config)
    limit = scheduler.config.num_train_timesteps - 1
    check(isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= limit,
          f"steps must be a whole number from 1 to {limit}, got {steps!r}")
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.to(torch.long)


def final_sigma(scheduler_config: dict, table: torch.Tensor) -> float:
    """The level below the first inference timestep: alpha_bar[0] (SD: ``set_alpha_to_one: false``), else 0."""
    return 0.0 if scheduler_config.get("set_alpha_to_one", True) else table[0].item()


def ddim_sigmas(table: torch.Tensor, timesteps: torch.Tensor, final: float) -> torch.Tensor:
    """Descending sigmas for DDIM sampling: the timesteps' sigmas, then ``final``. Inversion walks them flipped."""
    return torch.cat([table[timesteps.cpu()], torch.tensor([final], dtype=table.dtype)])
