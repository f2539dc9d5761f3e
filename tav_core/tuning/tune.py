"""One-shot tuning on one text-video pair: the query projections and the temporal attention learn the clip."""

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn
from tqdm.auto import tqdm

from ..errors import TavWarning, check
from ..model.inflation import draw_fresh_temporal
from ..model.lora import check_rank, draw_adapters
from ..precision import autocast
from .state import load_state, run_identity, save_state


@dataclass
class TuneConfig:
    steps: int = 500
    learning_rate: float = 3e-5
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    seed: int = 0
    mixed_precision: str = "no"          # "no", "bf16" or "fp16" (autocast; trained tensors stay fp32)
    checkpoint_every: int = 0            # save a resumable training state every N steps (0: never)
    checkpoint_path: str | None = None
    resume: bool = False                 # continue from checkpoint_path if it exists
    frame_window: int | None = None      # tune each step on a random run of this many consecutive frames
    posterior: str = "sample"            # "sample": a fresh VAE posterior sample every step, as the reference;
                                         # "mean": the posterior mean (mode) every step
    clip: dict = field(default_factory=dict)  # which frames of which video (file, frames, start, stride, size):
                                              # recorded with the weights, named when a resume differs
    lora_rank: int | None = None         # None: the paper's full tuning; R: LoRA adapters of rank R (tuning.lora)
    lora_alpha: float | None = None      # the adapters' scale is alpha / rank (None: alpha = rank)


MACHINE_FIELDS = ("checkpoint_every", "checkpoint_path", "resume")  # how a run was kept, not what it learnt


def recorded(config: TuneConfig) -> dict:
    """The settings a tuned-weights file records: what shaped the weights, nothing of the machine it ran on."""
    return {k: v for k, v in asdict(config).items() if k not in MACHINE_FIELDS}


def tune(unet_fn: Callable, params: dict[str, nn.Parameter], video: Callable, latents: torch.Tensor,
         cond: torch.Tensor, scheduler_config: dict, config: TuneConfig = TuneConfig(),
         callback: Callable | None = None, progress: bool = True,
         latent_std: torch.Tensor | None = None, frozen: dict[str, torch.Tensor] | None = None) -> list[float]:
    """Tune ``params`` in place on ``latents`` (frames, C, H, W) captioned by ``cond`` (1, tokens, dim).

    ``latents`` is the VAE posterior mean (scaled); with ``config.posterior == "sample"`` every step draws
    ``latents + latent_std * n`` (``latent_std``: the posterior std, scaled the same way) from the seeded generator.

    ``unet_fn(noisy, timesteps, cond)`` returns the UNet's raw prediction and must use ``params``;
    ``video(num_frames)`` is the context manager that makes the UNet treat its batch as one clip
    (``Inflation.video``). ``callback(step, loss)`` runs after every step (raise inside it to stop).
    With LoRA (``config.lora_rank``) ``params`` are the adapters (``tuning.lora``) and ``frozen`` the adapted
    layers' own weights (the temporal ones drawn here, from the seed, as full tuning draws them).
    Returns the loss of every step done.
    """
    check(latents.ndim == 4 and latents.shape[0] >= 1, f"latents must be (frames, channels, height, width), "
                                                      f"got shape {tuple(latents.shape)}")
    check(bool(torch.isfinite(latents).all()), "latents contain NaN or infinity; check the input video and VAE")
    check(bool(torch.isfinite(cond).all()), "prompt embedding contains NaN or infinity; check the text encoder")
    check(config.steps >= 0, f"steps must be >= 0, got {config.steps}")
    if config.lora_rank is not None:
        check_rank(config.lora_rank, config.lora_alpha)
    check(config.frame_window is None or config.frame_window >= 1,
          f"frame window must be at least 1 frame, got {config.frame_window}")
    check(config.posterior in ("sample", "mean"), f"posterior must be 'sample' or 'mean', got {config.posterior!r}")
    check(config.posterior == "mean" or (latent_std is not None and latent_std.shape == latents.shape),
          "posterior 'sample' needs the VAE posterior std of every latent (latent_std, from encode_posterior); "
          "give it, or tune on the posterior mean with posterior='mean'")
    frames = min(latents.shape[0], config.frame_window or latents.shape[0])
    scheduler = DDPMScheduler.from_config(scheduler_config)
    for p in params.values():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params.values(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(latents.device.type, enabled=config.mixed_precision == "fp16")
    generator = torch.Generator().manual_seed(config.seed)
    frozen = frozen or {}
    check((config.lora_rank is None) == (not frozen), "LoRA tuning takes the adapted layers' weights (frozen) and "
                                                      "full tuning none; give lora_rank with them")
    draw_fresh_temporal({**frozen, **params}, generator)
    if config.lora_rank is not None:
        draw_adapters(params, config.seed)
    start, losses = 0, []
    state_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    identity = run_identity(frozen or params, params, latents, latent_std, cond, config) if state_path else None
    if config.resume and state_path and state_path.is_file():
        start, losses = load_state(state_path, params, optimizer, scaler, generator, identity)
        check(start <= config.steps, f"training state {state_path} is at step {start}, past the {config.steps} steps "
                                     f"asked for; ask for at least {start} steps, or delete it to start afresh")
    cond = cond.expand(frames, *cond.shape[1:])
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="tuning", disable=not progress)
    try:
        for step in bar:
            t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=generator)
            first = 0
            if frames < len(latents):  # a random run of consecutive frames; frame 0 of the run is the anchor
                first = int(torch.randint(0, len(latents) - frames + 1, (1,), generator=generator))
            window = latents[first:first + frames]
            if config.posterior == "sample":  # the reference re-encodes the clip every step: latent_dist.sample()
                draw = torch.randn(window.shape, generator=generator).to(window)
                window = window + latent_std[first:first + frames] * draw
            noise = torch.randn(window.shape, generator=generator).to(window)
            timesteps = t.expand(frames).to(window.device)
            noisy = scheduler.add_noise(window, noise, timesteps)
            target = noise if scheduler.config.prediction_type == "epsilon" else \
                scheduler.get_velocity(window, noise, timesteps)
            with video(frames):  # backward too: gradient checkpointing re-runs the forward there
                with autocast(latents.device, config.mixed_precision):
                    prediction = unet_fn(noisy, timesteps, cond)
                loss = F.mse_loss(prediction.float(), target.float())
                check(math.isfinite(loss.item()), f"loss became {loss.item()} at step {step}; lower the learning "
                                                  "rate or use mixed_precision='no'")
                scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params.values(), config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)  # freed now, not at the next backward: the next forward runs without
                                                   # them (a whole motion module's worth of memory)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if state_path and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                try:
                    save_state(state_path, params, optimizer, scaler, generator, step + 1, losses, identity)
                except OSError as e:  # a full disk must not end a long run: only resuming is lost
                    warnings.warn(f"could not save the training state {state_path} at step {step + 1} "
                                  f"({e.strerror or e}); tuning goes on", TavWarning, stacklevel=2)
            if callback is not None:
                callback(step, losses[-1])
    finally:
        bar.close()
        for p in params.values():  # gradients and AdamW's state are of no use after tuning: free them
            p.grad = None
            p.requires_grad_(False)
        optimizer.state.clear()
    return losses
