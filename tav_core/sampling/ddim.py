"""DDIM sampling and inversion as small functions of a denoiser ``model(x, sigma) -> x0`` (k-diffusion style).

The one statement of the conventions (schedule, pipeline and ComfyUI nodes follow it):

* ``x`` is in k-diffusion scaling, ``x = x0 + sigma * eps``; the UNet sees the DDPM ("VP") latent
  ``z = x / sqrt(1 + sigma^2)`` at the timestep whose sigma is ``sigma``.
* The clean end of a chain is not sigma 0 but the level below the first inference timestep: ``alpha_bar[0]``
  for SD (sigma ~0.029, ``set_alpha_to_one: false``), as in the reference. Latents at the clean end are
  **VP-scaled** (the reference's ``z``: what the VAE encodes and what it decodes): ``invert_ddim`` takes them,
  ``sample_ddim`` returns them.
* Latents at the noisy end (inverted noise) are in **k-diffusion scaling** at the largest sigma (std ~14.6 for
  SD), what ComfyUI's samplers start from; the reference's ``z_T`` is ``x_T / sqrt(1 + sigma_max^2)``.
* Inversion is the reference's ``next_step``: the UNet is evaluated at the *target* timestep on the *current*
  latent, then the deterministic DDIM update moves the latent up one level.

In these variables deterministic DDIM is an Euler step; eta > 0 adds the DDIM noise (k-diffusion's ancestral
step), which equals diffusers' ``DDIMScheduler.step``.
"""

from collections.abc import Callable

import torch


def vp_scale(sigma: torch.Tensor) -> torch.Tensor:
    """z / x at this sigma: 1 / sqrt(1 + sigma^2)."""
    return (1 + sigma ** 2).rsqrt()


def _sigma_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma.to(x.device, x.dtype).expand(x.shape[0])


@torch.no_grad()
def sample_ddim(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, eta: float = 0.0,
                generator: torch.Generator | None = None, callback: Callable | None = None,
                after_step: Callable | None = None) -> torch.Tensor:
    """Denoise ``x`` (k-diffusion scaling, at ``sigmas[0]``) down the descending ``sigmas``; returns the VP-scaled
    latents at ``sigmas[-1]`` (the reference's output; with a final sigma of 0, the clean estimate).
    ``after_step(i, x) -> x`` may change the latents after each step (local blend)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, _sigma_batch(x, sigma))
        eps = (x - denoised) / sigma
        noise_std = eta * sigma_next * (1 - (sigma_next / sigma) ** 2).clamp(min=0).sqrt()
        x = denoised + (sigma_next ** 2 - noise_std ** 2).clamp(min=0).sqrt() * eps
        if eta > 0:
            x = x + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if after_step is not None:
            x = after_step(i, x)
        if callback is not None:
            callback(i, x, denoised)
    return x * vp_scale(sigmas[-1]).to(x)


@torch.no_grad()
def invert_ddim(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                callback: Callable | None = None) -> torch.Tensor:
    """Run DDIM up the ascending ``sigmas`` (sampling's, flipped) from the VP-scaled clean latents at
    ``sigmas[0]``; returns the noise in k-diffusion scaling at ``sigmas[-1]``."""
    x = x / vp_scale(sigmas[0]).to(x)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # the model scales its input by vp_scale(sigma_next); feed it the current VP latent x * vp_scale(sigma)
        x_in = x * (vp_scale(sigma) / vp_scale(sigma_next)).to(x)
        denoised = model(x_in, _sigma_batch(x, sigma_next))
        x = x + (sigma_next - sigma) * (x_in - denoised) / sigma_next
        if callback is not None:
            callback(i, x, denoised)
    return x
