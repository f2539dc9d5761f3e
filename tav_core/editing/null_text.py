"""Null-text inversion (Mokady et al. 2023; for video as Video-P2P: one unconditional embedding per step, shared by
all frames): the unconditional embeddings that make CFG sampling with the source prompt retrace the inversion.

``optimize_null_text`` is a function of a denoiser ``model(x, sigma, context) -> x0`` that is differentiable in
``context``; x follows ``tav_core.sampling.ddim``'s conventions. The loss is taken on VP-scaled latents, as the reference's
DDPM-space loss, so its early-stopping thresholds mean the same.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import check
from ..files import parsed_metadata, read_header, read_safetensors, write_safetensors
from ..sampling.ddim import invert_ddim, vp_scale
from ..sampling.windows import Windowed

FORMAT = "tuneavideo-nulltext-v1"


def optimize_null_text(model: Callable, trajectory: list[torch.Tensor], sigmas: torch.Tensor, cond: torch.Tensor,
                       uncond: torch.Tensor, guidance_scale: float, inner_steps: int = 10, epsilon: float = 1e-5,
                       callback: Callable | None = None, tokens: int | None = None) -> list[torch.Tensor]:
    """One unconditional embedding per sampling step.

    ``trajectory[i]`` is the inverted latent at ``sigmas[i]`` (descending sampling sigmas: ``trajectory[0]`` is the
    noise, ``trajectory[-1]`` the clean start in k-diffusion scaling). Step i starts from the previous step's
    embedding and runs Adam (lr 1e-2 (1 - i/100)) for up to ``inner_steps`` iterations on the distance between a
    deterministic DDIM step with CFG and ``trajectory[i + 1]``, stopping once it is below ``epsilon + 2e-5 i``.
    ``model(x, sigma, context)`` is differentiable in ``context`` (one row per latent; ``cond``/``uncond`` are one
    row); a ``Windowed`` model takes each iteration's gradient window by window (``_windowed_loss``).
    ``callback(i, losses)`` follows every step. ``tokens``: only the first rows of the context are the null text
    (SDXL's context carries its pooled embedding after them, ``tav_core.model.conditioning``): the rest stay as given.
    """
    check(len(trajectory) == len(sigmas), f"{len(trajectory)} inverted latents for {len(sigmas)} sigmas")
    check(inner_steps >= 1, f"inner steps must be at least 1, got {inner_steps}")
    windowed = isinstance(model, Windowed) and not model.single
    x = trajectory[0].detach()
    embeddings = []
    uncond = uncond.detach()
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        s = sigma.to(x).expand(len(x))
        target = trajectory[i + 1].detach() * vp_scale(sigma_next).to(x)

        def step(u, rows=slice(None), fn=model):
            xr = x[rows]
            denoised_u = fn(xr, s[rows], u.expand(len(xr), -1, -1))
            denoised = denoised_u + guidance_scale * (denoised_cond[rows] - denoised_u)
            return denoised + sigma_next.to(x) * (xr - denoised) / sigma.to(x)

        with torch.no_grad():
            denoised_cond = model(x, s, cond.expand(len(x), -1, -1))
        u = uncond.clone().requires_grad_(True)
        if tokens is not None:  # the pooled rows get no gradient, so Adam leaves them exactly as they are
            kept = torch.zeros_like(u)
            kept[:, :tokens] = 1
            u.register_hook(lambda grad: grad * kept)
        optimizer = torch.optim.Adam([u], lr=1e-2 * (1 - i / 100))
        losses = []
        with torch.enable_grad():
            for _ in range(inner_steps):
                optimizer.zero_grad()
                if windowed:
                    loss = _windowed_loss(model, lambda rows: step(u, rows, model.model), sigma_next, target)
                else:
                    loss = F.mse_loss(step(u) * vp_scale(sigma_next).to(x), target)
                    loss.backward()
                optimizer.step()
                losses.append(loss.item())
                if losses[-1] < epsilon + i * 2e-5:
                    break
        uncond = u.detach()
        embeddings.append(uncond)
        with torch.no_grad():
            x = step(uncond)
        if callback is not None:
            callback(i, losses)
    return embeddings


def _windowed_loss(model: "Windowed", step: Callable, sigma_next: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The loss over frame windows, its gradient taken window by window (memory of one window): each frame's squared
    error in each window weighted by the frame's fuse weight there, so that with one window it is the mean squared
    error."""
    total = torch.zeros((), dtype=torch.float64)
    for rows, weights, run in model.parts(1, target.device):
        with run():
            error = (step(rows) * vp_scale(sigma_next).to(target) - target[rows]) ** 2
            part = (error * weights.to(error).view(-1, *[1] * (error.ndim - 1))).sum() / target.numel()
            part.backward()  # inside the window: gradient checkpointing re-runs the window's forward here
        total += part.detach().double().cpu()
    return total


def null_text_inversion(model: Callable, latents: torch.Tensor, sigmas: torch.Tensor, cond: torch.Tensor,
                        uncond: torch.Tensor, guidance_scale: float, inner_steps: int = 10, epsilon: float = 1e-5,
                        callback: Callable | None = None, tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM-invert the VP-scaled clean ``latents`` with ``cond`` and no guidance (Mokady et al., Video-P2P), then
    optimise the null text along that trajectory. ``model(x, sigma, context)`` with a context row per latent (a
    ``Windowed`` model runs over its windows); ``cond`` and ``uncond`` are one row; ``tokens`` as in
    ``optimize_null_text``. Returns (noise, embeddings (steps, tokens, dim))."""
    states = []
    noise = invert_ddim(lambda x, s: model(x, s, cond.expand(len(x), -1, -1)), latents, sigmas.flip(0),
                        callback=lambda i, x, denoised: states.append(x))
    trajectory = [latents / vp_scale(sigmas[-1]).to(latents), *states][::-1]
    embeddings = optimize_null_text(model, trajectory, sigmas, cond, uncond, guidance_scale, inner_steps, epsilon,
                                    callback, tokens)
    return noise, torch.cat(embeddings)


@dataclass
class NullTextInversion:
    """An inverted clip ready for many edits: its noise, one unconditional embedding per step, and how it was made."""
    noise: torch.Tensor           # (frames, 4, h, w), k-diffusion scaling at the top sigma
    embeddings: torch.Tensor      # (steps, tokens, dim)
    steps: int
    guidance_scale: float
    prompt: str
    made_from: dict = field(default_factory=dict)  # fingerprints of what it was made from (``check_made_from``)

    def embedding_at(self, step: int) -> torch.Tensor:
        return self.embeddings[step][None]

    def unconditional(self, step: int, negative: torch.Tensor) -> torch.Tensor:
        """The unconditional conditioning of ``step`` (one row): the optimised token rows, then the rows the negative
        conditioning carries after its tokens (SDXL's pooled embedding, ``tav_core.model.conditioning``; none for SD)."""
        tokens = self.embeddings.shape[1]
        return torch.cat([self.embedding_at(step).to(negative), negative[:1, tokens:]], dim=1)

    def save(self, path: str | Path, **metadata) -> None:
        """``metadata``: what else identifies it, e.g. the fingerprints of the latents and tuned weights it was made
        from (``check_made_from`` compares them on reuse)."""
        meta = {"format": FORMAT, "steps": json.dumps(self.steps), "guidance_scale": json.dumps(self.guidance_scale),
                "prompt": json.dumps(self.prompt), **{k: json.dumps(v) for k, v in metadata.items()}}
        tensors = {"noise": self.noise.detach().cpu().float().contiguous(),
                   "embeddings": self.embeddings.detach().cpu().float().contiguous()}
        write_safetensors(path, tensors, meta)

    @staticmethod
    def read_metadata(path: str | Path) -> dict:
        """The file's metadata (its header only), checked: format, steps, guidance scale, prompt."""
        path = Path(path)
        check(path.is_file(), f"null-text inversion {path} does not exist; give a file saved by Null-Text Invert or "
                              "'NullTextInversion.save'")
        meta = parsed_metadata(read_header(path, "invert again"), path, "invert again")
        check(meta.get("format") == FORMAT, f"{path} is not a null-text inversion file (format {meta.get('format')!r})")
        steps, scale, prompt = meta.get("steps"), meta.get("guidance_scale"), meta.get("prompt")
        check(isinstance(steps, int) and steps >= 1 and isinstance(scale, (int, float)) and isinstance(prompt, str),
              f"{path} does not say how it was made (steps {steps!r}, guidance {scale!r}, prompt {prompt!r}): the "
              "file is damaged; invert again")
        return meta

    @classmethod
    def load(cls, path: str | Path) -> "NullTextInversion":
        meta = cls.read_metadata(path)
        tensors = read_safetensors(path, "invert again")[1]
        check(set(tensors) == {"noise", "embeddings"}, f"{path} holds {sorted(tensors)}, not a null-text inversion's "
                                                       "noise and embeddings: the file is damaged; invert again")
        check(all(bool(torch.isfinite(t).all()) for t in tensors.values()),
              f"{path} holds NaN or infinite values: the file is damaged; invert again")
        steps = meta["steps"]
        check(len(tensors["embeddings"]) == steps, f"{path} holds {len(tensors['embeddings'])} embeddings for "
                                                   f"{steps} steps: the file is damaged; invert again")
        return cls(tensors["noise"], tensors["embeddings"], steps, meta["guidance_scale"], meta["prompt"],
                   {k: v for k, v in meta.items() if k in ("latents", "weights")})

    def check_made_from(self, path, prompt: str, steps: int, guidance_scale: float, shape: tuple, **sources) -> None:
        """Refuse to reuse this inversion for another clip, other tuned weights or other settings (each named)."""
        made = {"prompt": self.prompt, "steps": self.steps, "cfg": self.guidance_scale,
                "latents' shape": tuple(self.noise.shape)}
        wanted = {"prompt": prompt, "steps": steps, "cfg": guidance_scale, "latents' shape": tuple(shape)}
        differ = [f"{k} ({made[k]!r}, here {wanted[k]!r})" for k in made if made[k] != wanted[k]]
        for name, fingerprint in sources.items():
            what = {"latents": "video", "weights": "tuned weights"}.get(name, name)
            if name not in self.made_from:
                differ.append(f"{what} (not recorded: made by an older version)")
            elif not torch.allclose(torch.tensor(self.made_from[name]), torch.tensor(fingerprint), rtol=1e-4, atol=1e-6):
                differ.append(what)  # a tuning step moves weights by ~lr: 1e-3 relative and more
        check(not differ, f"--inversion {path} was made for another edit: its {', '.join(differ)} differ from this "
                          "run's; delete it or give another path")
