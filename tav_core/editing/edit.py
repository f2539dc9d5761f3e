"""Edits that keep what the prompt does not change (Video-P2P on a tuned model): null-text inversion, then a source
and an edit branch sampled together with Prompt-to-Prompt attention control and local blend.

    inversion = null_text_invert(pipe, latents, "a rabbit is jumping on the grass")
    source, edited = edit(pipe, inversion, EditControl("a rabbit is jumping on the grass",
                                                       "a origami rabbit is jumping on the grass",
                                                       reweight={"origami": 2}, blend_words=(["rabbit"], ["rabbit"])))
"""

import warnings
from collections.abc import Callable
from contextlib import nullcontext

import torch

from ..errors import TavWarning, check
from ..model.inflation import transformer_blocks
from ..sampling.ddim import sample_ddim
from ..sampling.denoiser import guided
from ..sampling.windows import Passes
from .attention_control import AttentionController, EditControl, controlled
from .null_text import NullTextInversion, null_text_inversion
from .pipeline import TuneAVideo

VIDEO_P2P_GUIDANCE = 7.5


def null_text_invert(pipe: TuneAVideo, latents: torch.Tensor, prompt: str, steps: int = 50,
                     guidance_scale: float = VIDEO_P2P_GUIDANCE, inner_steps: int = 10, epsilon: float = 1e-5,
                     callback: Callable | None = None, passes: Passes = Passes()) -> NullTextInversion:
    """DDIM-invert ``latents`` with the source ``prompt`` (no guidance, as Mokady et al. and Video-P2P), then
    optimise one unconditional embedding per step so that CFG at ``guidance_scale`` retraces the inversion.
    ``passes``: precision and frame windows of the UNet passes (the two CFG halves never share a pass here)."""
    pipe._check_latents(latents)
    sigmas = pipe.ddim_sigmas(steps, latents.dtype)
    model = pipe.model(len(latents), passes)
    with pipe.inflation.video(len(latents)):
        noise, embeddings = null_text_inversion(model, latents.to(pipe.device), sigmas, pipe.encode_prompt(prompt),
                                                pipe.encode_prompt(""), guidance_scale, inner_steps, epsilon, callback,
                                                pipe.null_text_tokens)
    # the token rows are the null text (SDXL's pooled rows after them stayed the empty prompt's): what a file keeps,
    # and what the nodes' null text is
    return NullTextInversion(noise, embeddings[:, :pipe.null_text_tokens], steps, guidance_scale,
                             pipe.prompt_used(prompt))


def edit(pipe: TuneAVideo, inverted: NullTextInversion | torch.Tensor, control: EditControl,
         guidance_scale: float | None = None, steps: int | None = None, negative_prompt: str = "",
         attention_control: bool = True, decoupled: bool = True, eta: float = 0.0,
         seed: int = 0, passes: Passes = Passes()) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the source and the edit branch together from the same inverted noise; returns (source, edit) latents.

    With a ``NullTextInversion`` the source branch's unconditional embedding at every step is the optimised one
    and, ``decoupled`` (Video-P2P), the edit branch keeps the plain ``negative_prompt``; otherwise both use it.
    ``attention_control=False`` samples the two prompts side by side without control (for comparison).
    ``control.source_cfg=False`` (Video-P2P's --fast, from ``pipe.invert(latents, steps, source_prompt)``): the
    source branch takes the conditional prediction alone, the edit branch keeps the guidance.
    ``passes``: precision, frame windows (both branches run each window together) and CFG batching.
    """
    noise = inverted.noise if isinstance(inverted, NullTextInversion) else inverted
    if isinstance(inverted, NullTextInversion):
        steps = steps or inverted.steps
        check(steps == inverted.steps, f"the null-text inversion was made with {inverted.steps} steps; sample with as "
                                       "many (its embeddings belong to those steps)")
        guidance_scale = inverted.guidance_scale if guidance_scale is None else guidance_scale
        if guidance_scale != inverted.guidance_scale:
            warnings.warn(f"the null text was optimised for guidance {inverted.guidance_scale}; at {guidance_scale} "
                          "the source branch does not retrace the clip", TavWarning, stacklevel=2)
    steps, guidance_scale = steps or 50, VIDEO_P2P_GUIDANCE if guidance_scale is None else guidance_scale
    pipe._check_latents(noise)
    frames = len(noise)
    sigmas = pipe.ddim_sigmas(steps, noise.dtype)
    cond = torch.cat([pipe.encode_prompt(control.source_prompt).expand(frames, -1, -1),
                      pipe.encode_prompt(control.edit_prompt).expand(frames, -1, -1)])
    negative = pipe.encode_prompt(negative_prompt).expand(frames, -1, -1)
    scale = guidance_scale
    if not control.source_cfg:  # per row: 1 (the conditional prediction) for the source, the guidance for the edit
        scale = torch.tensor([1.0] * frames + [guidance_scale] * frames, dtype=noise.dtype).view(-1, 1, 1, 1)
    controller = None
    if attention_control:
        controller = AttentionController(control, pipe.c.tokenizer, steps, frames, tuple(noise.shape[2:]))

    def model(x, sigma):
        step = int((sigmas.to(sigma) - sigma[0]).abs().argmin())
        source_uncond = negative
        if isinstance(inverted, NullTextInversion):
            source_uncond = inverted.unconditional(step, negative).expand(frames, -1, -1)
        uncond = torch.cat([source_uncond, negative if decoupled else source_uncond])
        if controller is not None:
            controller.step = step
        return guided(denoiser, cond, uncond, scale, passes.batch_cfg, on_chunks)(x, sigma)

    def on_chunks(kinds):
        if controller is not None:
            controller.chunks = kinds

    on_window = controller.follow_window if controller is not None else None
    denoiser = pipe.model(frames, passes, on_window)

    generator = torch.Generator(pipe.device).manual_seed(seed)
    blocks = [b for _, b in transformer_blocks(pipe.c.unet)]
    x = torch.cat([noise, noise]).to(pipe.device)
    with pipe.inflation.video(frames), (controlled(blocks, controller) if controller else nullcontext()):
        out = sample_ddim(model, x, sigmas, eta, generator, after_step=controller.after_step if controller else None)
    return out[:frames], out[frames:]
