"""Every stage of a run planned without weights: VAE encode, tuning, DDIM inversion, CFG sampling, null-text
inversion, the two-branch Prompt-to-Prompt edit, VAE decode.

Each stage's own code runs on fake tensors (``tav_core.memory.trace``) of the real architecture: one step of the
sampler, the inversion or the null-text optimisation, over the stage's frame windows if it has any. Its peak is
what the step allocates over what stays loaded (UNet with its tuned tensors, VAE, text encoder); ``held`` is what
the stage keeps for the whole clip (latents, the null-text trajectory). With windows only two to three windows'
worth is live at once: a clip of many windows is planned from traces of three and four windows (the same
per-window peak, the clip-sized tensors growing linearly), so planning costs the same at any length; and within
those, a UNet pass of a kind already traced is replayed (``tav_core.memory.replay``).
"""

from contextlib import nullcontext
from dataclasses import replace
from functools import partial

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from ..editing.attention_control import EditControl
from ..editing.edit import edit, null_text_invert
from ..editing.pipeline import TuneAVideo, vae_dtype
from ..errors import check
from ..loading.configs import ModelConfigs  # noqa: F401  (the plans' input, re-exported)
from ..loading.configs import Components, clip_tokenizer
from ..loading.motion import planned_module
from ..loading.tuned import video_parameters
from ..model.conditioning import context_tokens
from ..model.inflation import inflate
from ..sampling.windows import Passes
from .cache import architecture, cached_plan
from .replay import ReplayedPasses
from .trace import AllocationPeak, Plan, Settings, as_on_device, cast, frozen_bytes, plan_pipeline, planning

STAGES = ("encode", "tune", "invert", "sample", "null_text", "p2p", "decode")
STAGE_NAMES = {"encode": "VAE encode", "tune": "tuning", "invert": "DDIM inversion", "sample": "CFG sampling",
               "null_text": "null-text inversion", "p2p": "Prompt-to-Prompt edit", "decode": "VAE decode"}


def fake_pipeline(configs: ModelConfigs, settings: Settings, device_type: str = "cuda"):
    """A ``TuneAVideo`` on fake components (inside ``planning()``): inflated UNet with fp32 tuned tensors, VAE, text
    encoder in the settings' weights dtype, the pipeline's autocast the settings' (run as on ``device_type``)."""

    dtype = settings.weights_dtype
    unet = cast(UNet2DConditionModel.from_config(configs.unet), dtype)
    vae = cast(AutoencoderKL.from_config(configs.vae), vae_dtype(configs.unet, configs.vae, dtype))
    text = cast(_text_encoder(configs.text_encoder), dtype)
    tokenizer = clip_tokenizer(configs.text_encoder.get("hidden_size") == 1024)
    second = {}
    if configs.text_encoder_2 is not None:  # SDXL
        second = dict(text_encoder_2=cast(_text_encoder(configs.text_encoder_2, True), dtype),
                      tokenizer_2=clip_tokenizer(True))
    motion = planned_module(configs.motion, dtype) if configs.motion else None
    pipe = TuneAVideo(Components(unet, vae, text, tokenizer, dict(configs.scheduler), **second), "cpu", dtype,
                      settings.gradient_checkpointing, settings.mixed_precision, motion_module=motion)
    if settings.vae_tiling:
        vae.enable_tiling()
    as_on_device([pipe.c.unet, vae, *pipe.c.text_encoders], device_type)
    return pipe


def plan_stage(configs: ModelConfigs, stage: str, settings: Settings, device_type: str = "cuda") -> Plan:
    """The memory of one step of ``stage`` (one of ``STAGES``) run by the headless pipeline with ``settings`` on a
    device of ``device_type`` (on the CPU the decoded frames share the memory; on a GPU they go to the host);
    planned once and kept on disk (``tav_core.memory.cache``)."""
    check(stage in STAGES, f"no stage {stage!r}; the stages are {', '.join(STAGES)}")
    return cached_plan(architecture(configs), stage, settings, device_type,
                       lambda: _traced(configs, stage, settings, device_type))


def _traced(configs: ModelConfigs, stage: str, settings: Settings, device_type: str, replay: bool = True) -> Plan:
    """The plan traced (``replay``: a UNet pass of a kind traced before replayed, ``tav_core.memory.replay``)."""
    if stage == "tune":
        return plan_pipeline(configs.unet, settings, resident_modules(configs), count_flops=False, motion=configs.motion,
                             device_type=device_type)
    with planning():
        pipe = fake_pipeline(configs, settings, device_type)
        trained = video_parameters(pipe.c.unet)
        keys = {p.untyped_storage()._cdata for p in trained.values()}
        plan = Plan(frozen_bytes((pipe.c.unet, pipe.c.vae, *pipe.c.text_encoders), keys),
                    sum(p.numel() * p.element_size() for p in trained.values()), 0, 0, 0, 0, 0)
        clip = settings.frames * _latent_frame_bytes(pipe.c.unet, settings)
        if stage in ("encode", "decode"):
            peak = _vae_step(pipe, stage, settings)
            held = (2 if stage == "encode" else 1) * clip
            if stage == "decode" and device_type == "cpu":
                held += 2 * settings.frames * settings.height * settings.width * 3  # uint8 frames, and joined
        else:
            motion = [pipe.inflation.motion.adapter] if pipe.inflation.motion else []
            with ReplayedPasses(pipe.c.unet, pipe.inflation.context, motion) if replay else nullcontext():
                peak = _clip_peak(lambda frames: _unet_step(pipe, stage, replace(settings, frames=frames)), settings)
            held = clip  # the latents the stage starts from
            if stage == "null_text":  # the trace kept two inverted latents and one embedding; a run keeps them all
                embedding = context_tokens(pipe.c.unet.config) * pipe.c.unet.config.cross_attention_dim * 4
                held += (settings.steps - 1) * (clip + embedding)
    return replace(plan, step_peak=peak, held=held)


def resident_modules(configs: ModelConfigs) -> tuple:
    """(build, config) of the modules on the device besides the UNet: the VAE and the text encoder(s)."""
    second = ((partial(_text_encoder, projection=True), configs.text_encoder_2),) if configs.text_encoder_2 else ()
    return ((_vae, configs.vae), (_text_encoder, configs.text_encoder), *second)


def _vae(config):
    return AutoencoderKL.from_config(config)


def _text_encoder(config, projection: bool = False):
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(CLIPTextConfig(**config))


def _latent_frame_bytes(unet, settings: Settings) -> int:
    return unet.config.in_channels * (settings.height // 8) * (settings.width // 8) * 4


def _clip_peak(trace, settings: Settings) -> int:
    """Peak of a step over ``settings.frames`` frames; with windows, extrapolated from three and four windows."""
    w = settings.windows
    if w is None or settings.frames <= w.length + 3 * (w.length - w.overlap):
        return trace(settings.frames)
    n3, n4 = w.length + 2 * (w.length - w.overlap), w.length + 3 * (w.length - w.overlap)
    p3, p4 = trace(n3), trace(n4)
    return int(p4 + (settings.frames - n4) * max(0, p4 - p3) / (n4 - n3))


def _vae_step(pipe, stage: str, settings: Settings) -> int:
    """Peak bytes of one frame through the VAE, as the pipeline encodes and decodes (frame by frame, in diffusers'
    tiles when ``vae_tiling``). Beyond one tile's activations a tiled frame's memory grows with its pixels (the frame
    itself, each tile's output until blended): a frame of more than 8x8 tiles is planned from frames of 4x4 and 8x8
    tiles (SD's VAE tiles 512-pixel squares: 8x8 tiles are a 3.6k frame)."""
    def trace(height: int, width: int) -> int:
        with AllocationPeak() as tracker:
            if stage == "encode":
                pipe.encode_posterior(np.zeros((1, height, width, 3), np.uint8))
            else:
                pipe.decode_frames(torch.zeros(1, pipe.c.unet.config.in_channels, height // 8, width // 8))
        return tracker.peak
    tile = pipe.c.vae.tile_sample_min_size
    stride = int(tile * (1 - pipe.c.vae.tile_overlap_factor)) // 8 * 8
    if not settings.vae_tiling or max(settings.height, settings.width) <= tile + 7 * stride:
        return trace(settings.height, settings.width)
    small, large = tile + 3 * stride, tile + 7 * stride
    p_small, p_large = trace(small, small), trace(large, large)
    per_pixel = max(0, p_large - p_small) / (large ** 2 - small ** 2)
    return int(p_large + per_pixel * (settings.height * settings.width - large ** 2))


# every control on at the step planned (Prompt-to-Prompt's extra attention, local blend's maps)
PLANNED_CONTROL = dict(cross_steps=1.0, self_steps=1.0, blend_start=0.0)


def _unet_step(pipe, stage: str, settings: Settings) -> int:
    """Peak bytes of one step of an inference stage of the pipeline on a clip of ``settings.frames`` frames."""
    latents = torch.zeros(settings.frames, pipe.c.unet.config.in_channels, settings.height // 8, settings.width // 8)
    passes = Passes(settings.mixed_precision, settings.windows, settings.batch_cfg)
    with AllocationPeak() as tracker:
        if stage == "invert":
            pipe.invert(latents, 1, passes=passes)
        elif stage == "sample":
            pipe.sample(latents, "a cat", steps=1, passes=passes)
        elif stage == "null_text":
            null_text_invert(pipe, latents, "a cat", steps=1, inner_steps=1, passes=passes)
        else:
            control = EditControl("a cat walks", "a dog walks", blend_words=(["cat"], ["dog"]), **PLANNED_CONTROL)
            edit(pipe, latents, control, steps=1, passes=passes)
    return tracker.peak


def tuned_bytes(configs: ModelConfigs) -> int:
    """Bytes of the tuned tensors a weights file holds (fp32), from the architecture alone."""

    with planning():
        unet = UNet2DConditionModel.from_config(configs.unet)
        inflate(unet, motion=planned_module(configs.motion, torch.float32) if configs.motion else None)
        return sum(p.numel() * 4 for p in video_parameters(unet).values())
