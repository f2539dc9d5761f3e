"""The headless Tune-A-Video pipeline: encode, tune, invert, edit, decode, on diffusers components."""

import copy
import math
import warnings
from dataclasses import replace

import numpy as np
import torch

from ..errors import TavWarning, check, plural
from ..loading.configs import Components
from ..loading.tuned import (load_tuned, lora_layers, lora_record, mark_tuned, require_untuned, save_tuned,
                             video_parameters)
from ..model.conditioning import encode_sdxl, is_sdxl_unet, pooled_width, unet_inputs
from ..model.inflation import inflate, transformer_blocks
from ..model.lora import MOTION, SPATIAL, TEMPORAL, add_adapters, check_rank, is_fake, motion_holders, remove_adapters
from ..precision import autocast, compute_precision
from ..sampling.ddim import invert_ddim, sample_ddim
from ..sampling.denoiser import DiscreteDenoiser, guided
from ..sampling.schedule import alphas_cumprod, ddim_sigmas, ddim_timesteps, final_sigma, sigma_table
from ..sampling.windows import Passes, Windowed
from ..tuning.tune import TuneConfig, recorded, tune
from .null_text import NullTextInversion


def vae_dtype(unet_config, vae_config, dtype: torch.dtype) -> torch.dtype:
    """SDXL's VAE overflows in fp16 (its config says force_upcast): it stays fp32 beside fp16 weights, as diffusers'
    SDXL pipeline upcasts it; a VAE fixed for fp16 (force_upcast false) runs in fp16. SD 1.x/2.x VAEs run in fp16."""
    upcast = is_sdxl_unet(unet_config) and dtype == torch.float16 and vae_config.get("force_upcast", True)
    return torch.float32 if upcast else dtype


class TuneAVideo:
    """One inflated model; latents are (frames, 4, height/8, width/8), already scaled by the VAE factor."""

    def __init__(self, components: Components, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False,
                 mixed_precision: str | None = None, frame_attention: str | None = None, motion_module=None,
                 group_norm: str | None = None):
        """``dtype``: the frozen weights'; ``mixed_precision`` ("no", "bf16", "fp16"): the autocast every UNet pass
        (tuning, inversion, sampling, editing) computes in; half-precision weights compute in their own dtype.
        ``frame_attention``: "sparse_causal" (Tune-A-Video), "first_frame" (Video-P2P's model) or "per_frame"
        (AnimateDiff's); ``group_norm``: "clip" or "frame" statistics; ``motion_module``: an AnimateDiff motion module
        (``tav_core.loading.motion.load_motion_module``) as the temporal layers. Defaults: ``video_defaults``' (the
        paper's, or with a motion module its AnimateDiff's); tuned weights carry theirs, and loading them sets them."""
        self.c = components
        self.lora = None  # the last LoRA tuning's adapters (tav_core.loading.tuned.lora_record), for save_tuned
        self.device, self.dtype = torch.device(device), dtype
        self.mixed_precision = compute_precision(dtype, mixed_precision)
        if motion_module is not None and not is_fake(motion_module.adapter):  # its own copy: tuning trains it, and
            adapter = copy.deepcopy(motion_module.adapter).to(self.device)   # the module given stays as loaded
            motion_module = replace(motion_module, adapter=adapter)
        self.inflation = inflate(components.unet, frame_attention=frame_attention, motion=motion_module,
                                 group_norm=group_norm)
        self.vae_dtype = vae_dtype(components.unet.config, components.vae.config, dtype)
        for m in (components.unet, components.vae, *components.text_encoders):
            first = next(m.parameters())
            wanted = self.vae_dtype if m is components.vae else dtype
            if first.dtype != wanted:  # diffusers warns about any dtype given to .to()
                m.to(wanted)
            if first.device != self.device:  # (the memory planner's fake modules cannot move)
                m.to(self.device)
            m.eval().requires_grad_(False)
        self.half = dtype in (torch.float16, torch.bfloat16)
        for p in video_parameters(components.unet).values():  # tuned tensors (a motion module too) stay fp32 for AdamW
            if self.half or p.dtype != torch.float32:
                p.data = p.data.float()
        if gradient_checkpointing:
            components.unet.enable_gradient_checkpointing()
        self.alphas = alphas_cumprod(components.scheduler_config)
        self.denoiser = self.model(1)  # in the pipeline's precision, no windows
        self.scaling = components.vae.config.scaling_factor
        self.pooled_width = pooled_width(components.unet.config)  # SDXL's; None for SD 1.x/2.x
        # the rows of a prompt's conditioning null-text inversion optimises: CLIP's tokens (not SDXL's pooled rows)
        self.null_text_tokens = components.tokenizer.model_max_length if self.pooled_width else None

    def unet_fn(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Raw UNet prediction, computed under the pipeline's autocast (tuned tensors are fp32). With none it
        opens no autocast, so one a caller opened (tuning's) still applies."""
        with autocast(self.device, self.mixed_precision):
            return self.raw_unet_fn(x, t, cond)

    def raw_unet_fn(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet under whatever autocast the caller opened (tuning opens its config's). An SDXL prompt carries its
        pooled embedding (``tav_core.model.conditioning``); the size conditioning is the clip's."""
        cond, added = unet_inputs(cond, x, self.pooled_width)
        return self.c.unet(x, t, encoder_hidden_states=cond.to(x.dtype), added_cond_kwargs=added).sample.to(x.dtype)

    def prompt_used(self, prompt: str) -> str:
        """The part of ``prompt`` the text encoder reads: CLIP takes 77 tokens (75 and start/end), as the reference."""
        ids = self.c.tokenizer(prompt, truncation=False, verbose=False).input_ids
        limit = self.c.tokenizer.model_max_length
        return prompt if len(ids) <= limit else self.c.tokenizer.decode(ids[1:limit - 1])

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        used = self.prompt_used(prompt)
        if used != prompt:
            warnings.warn(f"the prompt is longer than CLIP's 77 tokens; only {used!r} is used", TavWarning, stacklevel=2)
        if self.c.is_sdxl:  # (rows, 77 + 1, 2048): the pooled embedding as the last row
            return encode_sdxl([self.c.tokenizer, self.c.tokenizer_2], self.c.text_encoders, prompt, self.device)
        tokens = self.c.tokenizer(prompt, padding="max_length", max_length=self.c.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt").input_ids
        return self.c.text_encoder(tokens.to(self.device))[0].float()

    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (frames, H, W, 3) -> latents: the VAE posterior mean, so the same video gives the same latents."""
        return self.encode_posterior(frames)[0]

    @torch.no_grad()
    def encode_posterior(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (frames, H, W, 3) -> (mean, std) of the VAE posterior, both scaled like latents: tuning draws
        a fresh sample from it every step, as the reference does."""
        frames = np.asarray(frames)
        check(frames.ndim == 4 and frames.shape[-1] == 3 and len(frames) >= 1,
              f"video must be (frames >= 1, height, width, 3), got shape {frames.shape}")
        check(frames.shape[1] % 8 == 0 and frames.shape[2] % 8 == 0,
              f"video size {frames.shape[2]}x{frames.shape[1]} is not a multiple of 8; resize or crop it "
              "(read_video does this with width/height)")
        check(frames.dtype == np.uint8, f"video frames must be uint8 (0-255), got {frames.dtype}")
        means, stds = [], []
        for frame in frames:  # one frame on the device at a time: memory does not grow with the clip
            pixels = torch.from_numpy(frame).permute(2, 0, 1)[None].to(self.device, torch.float32) / 127.5 - 1
            posterior = self.c.vae.encode(pixels.to(self.vae_dtype)).latent_dist
            means.append(posterior.mean.float() * self.scaling)
            stds.append(posterior.std.float() * self.scaling)
        return torch.cat(means), torch.cat(stds)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> uint8 (frames, H, W, 3), frame by frame (what stays on the device is one frame's image)."""
        return self.decode_frames(latents).numpy()

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        frames = []
        for latent in latents:
            image = self.c.vae.decode((latent[None] / self.scaling).to(self.device, self.vae_dtype)).sample.float()
            frames.append(((image + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
        return torch.cat(frames)

    def tune(self, latents: torch.Tensor, prompt: str, config: TuneConfig = TuneConfig(), callback=None,
             progress: bool = True, latent_std: torch.Tensor | None = None) -> list[float]:
        """Tune on the clip. ``latents`` is the posterior mean; give ``latent_std`` (``encode_posterior``) to draw a
        posterior sample every step as the reference does; without it the mean is used (``config.posterior``
        then reads "mean" in what ``tuned_config`` reports)."""
        self._check_latents(latents)
        config = self.tuned_config(config, latent_std)
        self.lora = None
        if config.lora_rank is None:
            params = video_parameters(self.c.unet, trainable_only=True)
            losses = tune(self.raw_unet_fn, params, self.inflation.video, latents, self.encode_prompt(prompt),
                          self.c.scheduler_config, config, callback, progress, latent_std)
        else:
            losses = self._tune_lora(latents, prompt, config, callback, progress, latent_std)
        mark_tuned(self.c.unet)
        return losses

    def _tune_lora(self, latents, prompt, config, callback, progress, latent_std) -> list[float]:
        """LoRA tuning (``tav_core.model.lora``): PEFT's adapters while tuning, merged into the weights once done (the
        UNet keeps its own layers); ``self.lora`` keeps what ``save_tuned`` writes. Starts from the untuned model: a
        LoRA file names its temporal base by the seed."""
        check_rank(config.lora_rank, config.lora_alpha)
        require_untuned(self.c.unet, "LoRA tuning starts from the untuned video model (a LoRA file names its "
                                     "temporal attention's start by the seed): tune LoRA in a fresh pipeline")
        blocks = [block for _, block in transformer_blocks(self.c.unet)]
        motion = self.inflation.motion
        holders = motion_holders(motion.adapter) if motion is not None else {}  # (its attentions: no attn_temp)
        base = video_parameters(self.c.unet, trainable_only=True)  # full tuning's starting tensors: the run's identity
        adapted = {f"{layer}.weight" for layer in lora_layers(self.c.unet)}
        layers = {k: p for k, p in base.items() if k in adapted}
        merged = False
        try:
            for p in layers.values():  # frozen now: in the weights' precision (full tuning keeps them fp32 for AdamW)
                p.data = p.data.to(self.dtype)
            params = add_adapters(blocks, SPATIAL + (TEMPORAL if motion is None else ()), config.lora_rank,
                                  config.lora_alpha)
            params.update(add_adapters(holders, MOTION, config.lora_rank, config.lora_alpha) if holders else {})
            losses = tune(self.raw_unet_fn, params, self.inflation.video, latents, self.encode_prompt(prompt),
                          self.c.scheduler_config, config, callback, progress, latent_std, frozen=base)
            self.lora = lora_record(params, config.lora_rank, config.lora_alpha, config.seed, layers)
            merged = True
        finally:  # an interrupted run leaves the layers as they were (its state file resumes it)
            remove_adapters(blocks, merge=merged)
            remove_adapters(holders, merge=merged)
            for p in layers.values():  # back to what the pipeline keeps (a later full tuning trains them)
                p.data = p.data.float()
        return losses

    def tuned_config(self, config: TuneConfig, latent_std: torch.Tensor | None = None) -> TuneConfig:
        """The settings tuning actually runs with (what the saved weights should record)."""
        if config.mixed_precision == "no":  # the pipeline's own precision (fp16 needs the gradient scaler)
            config = replace(config, mixed_precision=self.mixed_precision)
        compute_precision(self.dtype, config.mixed_precision)  # half weights compute in their own dtype only
        if latent_std is None and config.posterior == "sample":
            config = replace(config, posterior="mean")
        return config

    def _check_latents(self, latents: torch.Tensor, num_frames: int | None = None) -> None:
        check(latents.ndim == 4 and latents.shape[1] == self.c.unet.config.in_channels,
              f"latents must be (frames, {self.c.unet.config.in_channels}, h, w), got {tuple(latents.shape)}")
        check(num_frames is None or latents.shape[0] == num_frames,
              f"latents hold {plural(latents.shape[0], 'frame')} but {num_frames} were asked for; encode the same clip "
              "you invert, or set the frame count to match")
        check(bool(torch.isfinite(latents).all()), "latents contain NaN or infinity; check the input video")

    def ddim_sigmas(self, steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Descending DDIM sigmas as the reference's scheduler visits them (see ``tav_core.sampling.ddim``), computed in
        the latents' dtype (float64 latents give a float64 chain end to end)."""
        config, table = self.c.scheduler_config, sigma_table(self.alphas.to(dtype))
        return ddim_sigmas(table, ddim_timesteps(config, steps), final_sigma(config, table))

    def model(self, frames: int, passes: Passes = Passes(), on_window=None):
        """The denoiser ``model(x, sigma, context) -> x0`` a stage runs: in ``passes``' precision, over its frame
        windows (``tav_core.sampling.windows.Windowed``; ``on_window`` runs before each) if it has any."""
        precision = compute_precision(self.dtype, passes.mixed_precision or self.mixed_precision)

        def unet_fn(x, t, cond):
            with autocast(self.device, precision):
                return self.raw_unet_fn(x, t, cond)
        denoiser = DiscreteDenoiser(unet_fn, self.alphas, self.c.prediction_type)
        if passes.windows is None:
            return denoiser
        return Windowed(denoiser, frames, passes.windows, self.inflation.video, on_window)

    def invert(self, latents: torch.Tensor, steps: int = 50, prompt: str = "", passes: Passes = Passes()) -> torch.Tensor:
        """DDIM inversion with no guidance (the reference uses the empty prompt): clean latents -> noise in
        k-diffusion scaling (``tav_core.sampling.ddim``)."""
        self._check_latents(latents)
        frames = len(latents)
        model = guided(self.model(frames, passes), self.encode_prompt(prompt).expand(frames, -1, -1), None, 1.0)
        with self.inflation.video(frames):
            return invert_ddim(model, latents.to(self.device), self.ddim_sigmas(steps, latents.dtype).flip(0))

    def sample(self, noise: torch.Tensor | NullTextInversion, prompt: str, negative_prompt: str = "",
               guidance_scale: float = 12.5, steps: int = 50, eta: float = 0.0, seed: int = 0,
               num_frames: int | None = None, passes: Passes = Passes()) -> torch.Tensor:
        """DDIM sampling from inverted latents (or any noise at the top sigma) with classifier-free guidance. From a
        ``NullTextInversion`` the unconditional embedding of every step is the optimised one (and the steps its).
        ``passes``: precision, frame windows and CFG batching of the UNet passes (``Passes``)."""
        null_text = noise if isinstance(noise, NullTextInversion) else None
        if null_text is not None:
            noise, steps = null_text.noise, null_text.steps
        self._check_latents(noise, num_frames)
        frames = len(noise)
        cond = self.encode_prompt(prompt).expand(frames, -1, -1)
        uncond = self.encode_prompt(negative_prompt).expand(frames, -1, -1)
        sigmas = self.ddim_sigmas(steps, noise.dtype)
        denoiser = self.model(frames, passes)

        def model(x, sigma):
            u = uncond
            if null_text is not None:
                u = null_text.unconditional(int((sigmas.to(sigma) - sigma[0]).abs().argmin()), uncond)
            return guided(denoiser, cond, u.expand(frames, -1, -1), guidance_scale, passes.batch_cfg)(x, sigma)
        generator = torch.Generator(self.device).manual_seed(seed)
        with self.inflation.video(frames):
            return sample_ddim(model, noise.to(self.device), sigmas, eta, generator)

    def save_tuned(self, path, prompt: str, frames: int, width: int, height: int, config: TuneConfig,
                   run: dict | None = None) -> None:
        """The weights the last ``tune`` learnt (LoRA's adapters, if it tuned LoRA); ``run``: the tuning's own time
        and memory (``tav_core.memory.usage.measured``), which a score report of an edit with them shows."""
        check(config.lora_rank is None or self.lora is not None,
              "no LoRA adapters were tuned in this pipeline; tune with lora_rank first")
        save_tuned(path, self.c.unet, self.lora if config.lora_rank is not None else None,
                   prompt=self.prompt_used(prompt), frames=frames, width=width, height=height,
                   tuning=recorded(config), frame_attention=self.inflation.frame_attention,
                   group_norm=self.inflation.group_norm, **({"run": run} if run else {}))

    def load_tuned(self, path, strength: float = 1.0) -> dict:
        """Tuned weights (full or LoRA) into this pipeline's UNet at ``strength`` (0: the base model, 1: as tuned)."""
        check(math.isfinite(strength), f"strength must be a finite number, got {strength}")
        return load_tuned(path, self.c.unet, strength)  # (marks the UNet tuned)
