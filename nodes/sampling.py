"""DDIM inversion and video sampling through ComfyUI's sampler API (so ControlNet, area conds etc. apply).

Both use tav_core's DDIM functions as ``KSAMPLER`` sampler functions on the reference's DDIM sigmas (taken
from the MODEL's own schedule; conventions in ``tav_core.sampling.ddim``); the inverted LATENT remembers its step count
so sampling walks the same sigmas back down.
"""

import torch

from ..tav_core.editing.attention_control import AttentionController
from ..tav_core.errors import check
from ..tav_core.loading.configs import clip_tokenizer
from ..tav_core.sampling.ddim import invert_ddim, sample_ddim
from . import host
from .conditioning import adm_vector
from .edit_plan import EditPlan, comfy_attention, with_edit_plan
from .memory_plan import fit_comfy_stage
from .shared import (CATEGORY, CONTROL, INVERSION_STEPS, NULL_TEXT, NULL_TEXT_CFG, Schema, finite_floats, hidden, io,
                     memory_input, require_finite, seed_input, show_report, show_text)
from .video_model import ddim_sigmas, require_supported, temporal_layers


def _progress(callback):
    """tav_core's callback(i, x, denoised) -> ComfyUI's k-diffusion style callback dict."""
    if callback is None:
        return None
    return lambda i, x, denoised: callback({"i": i, "x": x, "denoised": denoised, "sigma": None, "sigma_hat": None})


def _inversion_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return invert_ddim(lambda x, s: model(x, s, **(extra_args or {})), x, sigmas, _progress(callback))


def _ddim_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, after_step=None):
    extra_args = extra_args or {}
    generator = torch.Generator(x.device).manual_seed(int(extra_args.get("seed", 0)))
    return sample_ddim(lambda x, s: model(x, s, **extra_args), x, sigmas, eta, generator, _progress(callback),
                       after_step)


def _run(model, sampler, sigmas, positive, negative, cfg, latent, seed, noise_mask=None):
    """Start exactly at the given latents (no noise added: it is already in them) and sample."""
    samples = latent["samples"]
    check(samples.ndim == 4 and samples.shape[0] >= 1, f"LATENT must be a batch of frames, got {tuple(samples.shape)}")
    check(bool(torch.isfinite(samples).all()), "LATENT contains NaN or infinity; check the VAE Encode input")
    callback = host.latent_preview.prepare_callback(model, len(sigmas) - 1)
    return host.sample.sample_custom(model, torch.zeros_like(samples), cfg, sampler, sigmas, positive, negative,
                                      samples, noise_mask=noise_mask, callback=callback, seed=seed)


class DDIMInvert(io.ComfyNode):
    TITLE = "DDIM Invert"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoInvert", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["invert", "inversion", "ddim inversion", "video inversion"],
            description="DDIM inversion as in Tune-A-Video: runs the sampler backwards from the video's latents to the "
                        "noise that regenerates them. Feed the result to Video KSampler with an edited prompt.",
            inputs=[io.Model.Input("model", tooltip="The (tuned) inflated model; the same one you sample with."),
                    io.Conditioning.Input("conditioning", tooltip="Prompt of the inversion; the paper uses the empty "
                                                                  "prompt."),
                    io.Latent.Input("latent_image", tooltip="The source video's latents (VAE Encode of the frames)."),
                    io.Int.Input("steps", default=50, min=1, max=999, tooltip="DDIM steps (paper: 50); Video KSampler "
                                                                              "reuses this."),
                    memory_input()],
            outputs=[io.Latent.Output(display_name="noise", tooltip="The inverted noise (it remembers its step count "
                                                                     "for Video KSampler).")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, model, conditioning, latent_image, steps, memory="auto") -> io.NodeOutput:
        require_supported(model, cls.TITLE)
        model, report, _ = fit_comfy_stage(model, latent_image["samples"], "invert", memory, cls.TITLE)
        show_report(hidden(cls, "unique_id"), report)
        sigmas = ddim_sigmas(model, steps).flip(0)  # alpha_bar[0] -> sigma_max
        sampler = host.samplers.KSAMPLER(_inversion_sampler)
        out = _run(model, sampler, sigmas, conditioning, conditioning, 1.0, latent_image, 0)
        return io.NodeOutput({**{k: v for k, v in latent_image.items() if k != "samples"}, "samples": out,
                              INVERSION_STEPS: steps})


class VideoKSampler(io.ComfyNode):
    TITLE = "Video KSampler"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoSampler", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["sampler", "video sampler", "ddim sampler", "video edit", "edit video"],
            description="DDIM sampling of a whole clip from inverted latents with classifier-free guidance. Works "
                        "with ControlNet Apply (one hint image per frame) and any conditioning. From a Null-Text Invert "
                        "LATENT each step uses its optimised null text; with Attention Control (and source_positive) "
                        "it samples the source and the edit together, Prompt-to-Prompt / Video-P2P style.",
            inputs=[
                io.Model.Input("model", tooltip="The (tuned) inflated model."),
                seed_input("Seed of the eta noise (unused at eta 0); stays as set.", "seed (if eta > 0)"),
                io.Int.Input("steps", display_name="steps (0: DDIM Invert's)", default=0, min=0, max=999,
                             tooltip="DDIM steps; 0 = as many as DDIM Invert used (else 50)."),
                io.Float.Input("cfg", default=12.5, min=0.0, max=100.0, step=0.1, tooltip="Guidance scale (paper: "
                               "12.5; after Null-Text Invert use its cfg)."),
                io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="DDIM eta: 0 is deterministic "
                                                                                        "(paper)."),
                io.Conditioning.Input("positive", tooltip="The edited prompt."),
                io.Conditioning.Input("negative", tooltip="Negative prompt (empty prompt in the paper)."),
                io.Latent.Input("latent_image", tooltip="Output of DDIM Invert or Null-Text Invert (or any latents at "
                                                        "the top noise level)."),
                CONTROL.Input("control", optional=True, tooltip="Attention Control (Prompt-to-Prompt): sample the "
                              "source and the edit together; needs source_positive."),
                io.Conditioning.Input("source_positive", optional=True, tooltip="The source prompt's conditioning, for "
                                      "the source branch of a controlled edit."),
                memory_input(),
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The edited video's latents, one per frame: VAE "
                                                                      "Decode them."),
                     io.Latent.Output(display_name="source", tooltip="With Attention Control, the source branch (the "
                                      "clip as the model retraces it); otherwise the same as the first output.")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def validate_inputs(cls, cfg=None, eta=None):
        return finite_floats(cls, cfg=cfg, eta=eta)

    @classmethod
    def execute(cls, model, seed, steps, cfg, eta, positive, negative, latent_image, control=None,
                source_positive=None, memory="auto") -> io.NodeOutput:
        require_finite(cls, cfg=cfg, eta=eta)
        unique_id = hidden(cls, "unique_id")
        require_supported(model, cls.TITLE)
        model, report, _ = fit_comfy_stage(model, latent_image["samples"], "p2p" if control is not None else "sample",
                                           memory, cls.TITLE)
        show_report(unique_id, report)
        latent = latent_image
        inverted = latent.get(INVERSION_STEPS)
        check(not (steps and inverted and steps != inverted),
              f"this LATENT was inverted with {inverted} steps; sampling it with {steps} starts at another noise "
              f"level and does not reproduce the video: set steps to 0 (the inversion's) or invert with {steps}")
        steps = steps or inverted or 50
        null_text = latent.get(NULL_TEXT)
        if null_text is not None and latent.get(NULL_TEXT_CFG) != cfg:
            show_text(unique_id, f"note: the null text was optimised for cfg {latent.get(NULL_TEXT_CFG)}; at {cfg} the "
                                 "source is not retraced")
        sigmas = ddim_sigmas(model, steps)
        samples, frames = latent["samples"], len(latent["samples"])
        plan = None
        if control is not None:
            check(source_positive is not None, "Attention Control needs source_positive: the source prompt's "
                                               "conditioning, for the source branch")
            layers = temporal_layers(model)
            check(control.self_control != "temporal" or layers is None or layers.motion_module is None,
                  "Attention Control's temporal self-attention control acts on Tune-A-Video's temporal attention, "
                  "and this MODEL's temporal layers are a motion module: set self_attention to spatial")
            controller = AttentionController(control, clip_tokenizer(), steps, frames, tuple(samples.shape[2:]),
                                             attention=comfy_attention)
            plan = EditPlan(frames, 2, sigmas, source_positive[0][0], null_text, controller=controller,
                            source_adm=adm_vector(model, source_positive[0], samples))
            samples = torch.cat([samples, samples])
        elif null_text is not None:
            plan = EditPlan(frames, 1, sigmas, None, null_text)
        if plan is not None:
            model = with_edit_plan(model, plan)
        after_step = plan.controller.after_step if plan is not None and plan.controller is not None else None
        sampler = host.samplers.KSAMPLER(_ddim_sampler, extra_options={"eta": eta, "after_step": after_step})
        out = _run(model, sampler, sigmas, positive, negative, cfg, {**latent, "samples": samples}, seed,
                   latent.get("noise_mask"))  # inpainting masks apply while sampling, never while inverting
        rest = {k: v for k, v in latent.items() if k not in ("samples", INVERSION_STEPS, NULL_TEXT, NULL_TEXT_CFG)}
        return io.NodeOutput({**rest, "samples": out[-frames:]}, {**rest, "samples": out[:frames]})
