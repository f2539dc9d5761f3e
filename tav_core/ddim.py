"""DDIM sampling and inversion as small functions of a denoiser ``model(x, sigma) -> x0`` (k-diffusion style).

In k-diffusion's variables (x = x0 + sigma * eps) deterministic DDIM is an Euler step; eta > 0 adds the
DDIM noise, which in these variables is k-diffusion's ancestral step.
"""

from collections.abc import Callable

import torch


def _sigma_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma.to(x.device, torch.float32).expand(x.shape[0])


@torch.no_grad()
def sample_ddim(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, eta: float = 0.0,
                generator: torch.Generator | None = None, callback: Callable | None = None) -> torch.Tensor:
    """Denoise ``x`` (at ``sigmas[0]``) down the descending ``sigmas``; a final 0 returns the clean estimate."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, _sigma_batch(x, sigma))
        if sigma_next == 0:
            x = denoised
        else:
            eps = (x - denoised) / sigma
            noise_std = eta * sigma_next * (1 - (sigma_next / sigma) ** 2).clamp(min=0).sqrt()
            x = denoised + (sigma_next ** 2 - noise_std ** 2).sqrt() * eps
            if eta > 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + noise_std * noise
        if callback is not None:
            callback(i, x, denoised)
    return x


@torch.no_grad()
def invert_ddim(model: Callable, x: torch.Tensor, sigmas: torch.Tensor,
                callback: Callable | None = None) -> torch.Tensor:
    """Run DDIM backwards up the ascending ``sigmas`` (``sampling sigmas`` reversed, starting at 0).

    From the clean latents (sigma 0) the noise direction is taken at the first nonzero sigma, as the
    reference does; after that each step is the exact mirror of a deterministic sampling step.
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        at = sigma if sigma > 0 else sigma_next
        denoised = model(x, _sigma_batch(x, at))
        x = x + (sigma_next - sigma) * (x - denoised) / at
        if callback is not None:
            callback(i, x, denoised)
    return x
