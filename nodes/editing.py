"""Edits that keep what the prompt does not change: null-text inversion and Prompt-to-Prompt attention control on
the inflated MODEL, through the host's own patch points (attn1/attn2 replace patches, an APPLY_MODEL wrapper), so
LoRAs, tuned weights and ControlNet still compose. The engine's maths is tav_core's."""

import copy
from contextlib import nullcontext

import torch

from ..tav_core.choices import SELF_CONTROL
from ..tav_core.editing.attention_control import MODES, AttentionController, EditControl, parse_reweights
from ..tav_core.editing.null_text import NullTextInversion, null_text_inversion
from ..tav_core.errors import TavError, check
from ..tav_core.loading.configs import clip_tokenizer
from ..tav_core.memory.usage import measured
from ..tav_core.sampling.denoiser import DiscreteDenoiser
from ..tav_core.sampling.windows import Windowed
from . import host
from .autograd import autograd_unet, frozen
from .conditioning import packed_conditioning
from .context_windows import HostWindows
from .memory_plan import fit_comfy_stage
from .shared import (CATEGORY, CONTROL, INVERSION_STEPS, INVERSIONS, NULL_TEXT, NULL_TEXT_CFG, Schema, check_save_name,
                     finite_floats, hidden, io, memory_input, require_finite, save_numbered, show_report, show_text)
from .video_model import (PREDICTION, alphas_cumprod, ddim_sigmas, diffusion_model, require_supported, temporal_layers,
                          video_hooks)


def null_text_latent(latent: dict, noise: torch.Tensor, embeddings: torch.Tensor, steps: int, cfg: float) -> dict:
    return {**{k: v for k, v in latent.items() if k != "samples"}, "samples": noise, INVERSION_STEPS: steps,
            NULL_TEXT: embeddings, NULL_TEXT_CFG: cfg}


class NullTextInvert(io.ComfyNode):
    TITLE = "Null-Text Invert"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoNullTextInvert", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["null text", "null-text inversion", "null text inversion", "p2p inversion"],
            description="Null-text inversion (Mokady et al.; for video as Video-P2P): DDIM-inverts the clip with the "
                        "source prompt, then optimises one unconditional embedding per step, shared by all frames, so "
                        "that sampling at this CFG retraces the clip. Feed it to Video KSampler; with Attention "
                        "Control the source branch uses it and the edit keeps the plain negative prompt. Costs about "
                        "inner_steps backward passes per step. With a save name it is also saved for later sessions.",
            inputs=[
                io.Model.Input("model", tooltip="The (tuned) inflated model you sample with."),
                io.Conditioning.Input("positive", tooltip="The source prompt (the clip's caption)."),
                io.Conditioning.Input("negative", tooltip="The empty prompt: where the null text starts."),
                io.Latent.Input("latent_image", tooltip="The source video's latents (VAE Encode)."),
                io.Int.Input("steps", default=50, min=1, max=999, tooltip="DDIM steps (Video-P2P: 50); sampling "
                                                                          "reuses them."),
                io.Float.Input("cfg", default=7.5, min=1.0, max=100.0, step=0.1, tooltip="The guidance the null text "
                               "is optimised for; sample at the same (Video-P2P: 7.5)."),
                io.Int.Input("inner_steps", default=10, min=1, max=100, tooltip="Adam iterations per step at most "
                             "(Mokady et al.: 10); each stops early once close enough."),
                io.String.Input("save_name", default="", tooltip="Also save to models/tuneavideo_inversions/"
                                "<name>_00001_.safetensors (numbered); empty: do not save."),
                memory_input(checkpointing=True),
            ],
            outputs=[io.Latent.Output(display_name="noise", tooltip="The inverted noise carrying its null text (and "
                                                                     "step count) for Video KSampler.")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True)  # with a save name, the saved inversion is an output in itself

    @classmethod
    def validate_inputs(cls, cfg=None):
        return finite_floats(cls, cfg=cfg)

    @classmethod
    def execute(cls, model, positive, negative, latent_image, steps, cfg, inner_steps, save_name,
                memory="auto") -> io.NodeOutput:
        require_finite(cls, cfg=cfg)
        unique_id = hidden(cls, "unique_id")
        require_supported(model, cls.TITLE)
        name = check_save_name(save_name) if save_name.strip() else None
        samples = latent_image["samples"]
        check(samples.ndim == 4 and bool(torch.isfinite(samples).all()), "LATENT must be finite video latents (VAE Encode)")
        model, report, checkpointing = fit_comfy_stage(model, samples, "null_text", memory, cls.TITLE)
        show_report(unique_id, report)
        sigmas = ddim_sigmas(model, steps)
        alphas = alphas_cumprod(model)
        layers, frames = temporal_layers(model), len(samples)
        bar = host.utils.ProgressBar(steps, node_id=unique_id)

        def progress(i, losses):
            host.model_management.throw_exception_if_processing_interrupted()
            bar.update_absolute(i + 1, steps)
            show_text(unique_id, f"step {i + 1}/{steps}  loss {losses[-1]:.2e} after {len(losses)} iterations")

        with video_hooks(diffusion_model(model)) as hooks, \
                autograd_unet(model, gradient_checkpointing=checkpointing) as (unet_fn, device, dtype):
            denoiser = DiscreteDenoiser(unet_fn, alphas.to(device), PREDICTION[model.model.model_type])
            if layers is not None:
                layers.to(device)
                if any(p.is_inference() for p in layers.parameters()):  # moved there by the host in inference mode:
                    with torch.inference_mode(False):  # a copy autograd can save for the backward (a module's too)
                        layers = copy.deepcopy(layers)

            def video(n, window=None):  # the MODEL's temporal layers, frame attention, group norm and motion module
                return layers.video(hooks, n, window) if layers is not None else hooks.video(n, window=window)
            handler = model.model_options.get("context_handler")
            if isinstance(handler, host.context_windows.IndexListContextHandler):  # the host's context windows
                denoiser = Windowed(denoiser, frames, HostWindows(handler), video)
            latents = model.model.process_latent_in(samples.clone()).to(device, torch.float32)
            # out of inference mode:
            cond, uncond = (packed_conditioning(model, c[0], samples).clone().to(device, torch.float32)
                            for c in (positive, negative))
            tokens = negative[0][0].shape[1]  # the null text; SDXL's ADM rows after them stay the negative's
            # only the null text takes gradients: the temporal layers neither compute nor keep any
            with video(frames), (frozen(layers) if layers is not None else nullcontext()), \
                    measured(device, "inversion") as usage:
                noise, embeddings = null_text_inversion(denoiser, latents, sigmas.clone().to(device), cond, uncond,
                                                        cfg, inner_steps, callback=progress, tokens=tokens)
            embeddings = embeddings[:, :tokens]
        noise_out = model.model.process_latent_out(noise.detach()).cpu()
        if name:
            save_numbered(unique_id, name, INVERSIONS, "null-text inversion", lambda path: NullTextInversion(
                noise.detach().cpu(), embeddings.cpu(), steps, cfg, "").save(path, frames=frames, run=usage))
        return io.NodeOutput(null_text_latent(latent_image, noise_out, embeddings.cpu(), steps, cfg))


class LoadNullTextInversion(io.ComfyNode):
    TITLE = "Load Null-Text Inversion"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoLoadNullTextInversion", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["load null text", "load inversion"],
            description="Loads a null-text inversion saved by Null-Text Invert (or NullTextInversion.save), for more "
                        "edits.",
            inputs=[io.Model.Input("model", tooltip="The model it was inverted with (its latent scaling is used)."),
                    io.Combo.Input("inversion_name", options=host.folder_paths.get_filename_list(INVERSIONS),
                                   tooltip="File in models/tuneavideo_inversions.")],
            outputs=[io.Latent.Output(display_name="noise", tooltip="The inverted noise carrying its null text, as "
                                                                     "Null-Text Invert gives it.")])

    @classmethod
    def validate_inputs(cls, inversion_name):
        if inversion_name in host.folder_paths.get_filename_list(INVERSIONS):
            return True
        return (f"no null-text inversion named '{inversion_name}' in models/{INVERSIONS}; run Null-Text Invert with "
                "a save name first")

    @classmethod
    def execute(cls, model, inversion_name) -> io.NodeOutput:
        inversion = NullTextInversion.load(host.folder_paths.get_full_path_or_raise(INVERSIONS, inversion_name))
        noise = model.model.process_latent_out(inversion.noise)
        return io.NodeOutput(null_text_latent({}, noise, inversion.embeddings, inversion.steps,
                                              inversion.guidance_scale))


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


class AttentionControl(io.ComfyNode):
    TITLE = "Attention Control (Prompt-to-Prompt)"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoAttentionControl", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["p2p", "prompt to prompt", "prompt-to-prompt", "video-p2p", "video p2p", "attention control"],
            description="Prompt-to-Prompt / Video-P2P control of an edit: Video KSampler then samples the source and "
                        "the edit together and, for the first steps, gives the edit the source's cross-attention "
                        "(word swap or refinement, optional reweighting) and self-attention; local blend keeps "
                        "everything outside the blend words' region equal to the source. The prompts here must be the "
                        "texts of the source and edit conditionings (connect one String node to both).",
            inputs=[
                io.String.Input("source_prompt", multiline=True, default="", tooltip="Text of the source prompt (the "
                                                                                     "clip's caption)."),
                io.String.Input("edit_prompt", multiline=True, default="", tooltip="Text of the edit prompt."),
                io.Combo.Input("mode", options=list(MODES), default="auto", tooltip="replace: word swap (same number "
                               "of words); refine: words added or removed; auto: by word count."),
                io.Float.Input("cross_steps", default=0.2, min=0.0, max=1.0, step=0.05, tooltip="Fraction of the steps "
                               "whose cross-attention follows the source (Video-P2P: 0.2; P2P images: 0.8)."),
                io.Float.Input("self_steps", default=0.5, min=0.0, max=1.0, step=0.05, tooltip="Fraction of the steps "
                               "whose self-attention is the source's (Video-P2P: 0.5): more keeps more structure."),
                io.String.Input("reweight", default="", tooltip="Scale the attention to words of the edit prompt, e.g. "
                                "'origami:2' (during cross_steps)."),
                io.String.Input("blend_source_words", default="", tooltip="Local blend: words of the source prompt "
                                "whose region may change (e.g. 'rabbit'); empty: no blend."),
                io.String.Input("blend_edit_words", default="", tooltip="Local blend: words of the edit prompt whose "
                                "region may change."),
                io.Float.Input("blend_threshold", default=0.3, min=0.0, max=1.0, step=0.01, tooltip="Attention above "
                               "this fraction of its maximum is inside the region (Video-P2P: 0.3)."),
                io.Float.Input("blend_start", default=0.2, min=0.0, max=1.0, step=0.05, tooltip="Fraction of the steps "
                               "before the blend starts (P2P: 0.2)."),
                io.Combo.Input("self_attention", options=list(SELF_CONTROL), default="spatial", optional=True,
                               tooltip="Which self-attention self_steps controls: spatial (Prompt-to-Prompt, the "
                                       "paper: the frames' attention at 32x32 and below) or temporal (Video-P2P's "
                                       "code: the temporal attention at every resolution)."),
                io.Boolean.Input("source_cfg", default=True, optional=True, tooltip="Off: the source branch samples "
                                 "without guidance, Video-P2P's --fast (after DDIM Invert with the source prompt "
                                 "instead of Null-Text Invert)."),
            ],
            outputs=[CONTROL.Output(display_name="control", tooltip="Connect to Video KSampler's control input (with "
                                                                     "source_positive).")])

    @classmethod
    def validate_inputs(cls, source_prompt=None, edit_prompt=None, mode=None, cross_steps=None, self_steps=None,
                        reweight=None, blend_source_words=None, blend_edit_words=None, blend_threshold=None,
                        blend_start=None, self_attention=None):
        """Before the graph runs, what the widgets show (words of the blend and reweighting in the prompts, the
        numbers); prompts that come through links are checked when this node runs, which the host does as soon as
        they are there (``execute`` is async), before the models downstream of it."""
        floats = finite_floats(cls, cross_steps=cross_steps, self_steps=self_steps, blend_threshold=blend_threshold,
                               blend_start=blend_start)
        if floats is not True:
            return floats
        inputs = (source_prompt, edit_prompt, mode, cross_steps, self_steps, reweight, blend_source_words,
                  blend_edit_words, blend_threshold, blend_start)
        if any(v is None for v in inputs):
            return True
        try:
            _edit_control(*inputs, self_attention or "spatial", True)
        except TavError as e:
            return str(e)
        return True

    @classmethod
    async def execute(cls, source_prompt, edit_prompt, mode, cross_steps, self_steps, reweight, blend_source_words,
                      blend_edit_words, blend_threshold, blend_start, self_attention="spatial",
                      source_cfg=True) -> io.NodeOutput:
        require_finite(cls, cross_steps=cross_steps, self_steps=self_steps, blend_threshold=blend_threshold,
                       blend_start=blend_start)
        return io.NodeOutput(_edit_control(source_prompt, edit_prompt, mode, cross_steps, self_steps, reweight,
                                           blend_source_words, blend_edit_words, blend_threshold, blend_start,
                                           self_attention, source_cfg))


LITERAL_STRINGS = ("PrimitiveString", "PrimitiveStringMultiline")  # the host's String nodes: a typed value


def inline_literal_prompts(json_data: dict) -> dict:
    """A prompt handler (``host.server.PromptServer.add_on_prompt_handler``): Attention Control's texts that come from a host
    String node holding a typed value become that value, so that validation, which sees widget values only, checks
    their words before the graph runs (the shipped workflows feed both prompts from String nodes)."""
    prompt = json_data.get("prompt")
    if not isinstance(prompt, dict):
        return json_data
    control_id = AttentionControl.define_schema().node_id
    for node in prompt.values():
        if not isinstance(node, dict) or node.get("class_type") != control_id:
            continue
        inputs = node.get("inputs") or {}
        for name, link in list(inputs.items()):
            source = prompt.get(str(link[0])) if isinstance(link, list) and len(link) == 2 else None
            value = source.get("inputs", {}).get("value") if isinstance(source, dict) else None
            if source and source.get("class_type") in LITERAL_STRINGS and isinstance(value, str):
                inputs[name] = value
    return json_data


def _edit_control(source_prompt, edit_prompt, mode, cross_steps, self_steps, reweight, blend_source_words,
                  blend_edit_words, blend_threshold, blend_start, self_attention, source_cfg) -> EditControl:
    """Attention Control's settings, every word and number checked against the prompts (CLIP's tokenizer)."""
    check(bool(source_prompt.strip()) and bool(edit_prompt.strip()), "give the texts of both the source and the "
                                                                      "edit prompt")
    source, edit = _words(blend_source_words), _words(blend_edit_words)
    check(bool(source) == bool(edit), "local blend needs words of both prompts (or neither)")
    control = EditControl(source_prompt.strip(), edit_prompt.strip(), mode, cross_steps, self_steps,
                          parse_reweights(reweight, "reweight"), (source, edit) if source else None, blend_threshold,
                          blend_start, self_control=self_attention, source_cfg=source_cfg)
    AttentionController(control, clip_tokenizer(), 50, 1, (8, 8))
    return control
