"""Tune-A-Video on ComfyUI's own MODEL (a ModelPatcher): inflation, tuned query weights, their files.

The diffusion model is shared by every clone of a MODEL, so nothing here changes what the MODEL it was given
computes: the video hooks (tav_core.Inflation) are on the diffusion model only while a clip runs through it (an
inflated MODEL's APPLY_MODEL wrapper, tuning, null-text inversion), never after; temporal layers live outside the
UNet in their own ModelPatcher; tuned query projections are ordinary weight patches of the tuned clone.
"""

import copy
from contextlib import contextmanager

import torch

from ..tav_core.editing.attention_control import controlled_temporal
from ..tav_core.errors import TavError, check, plural
from ..tav_core.loading.configs import sd_scheduler_config
from ..tav_core.loading.fingerprint import fingerprint_names, fingerprint_of
from ..tav_core.model.frames import FrameContext
from ..tav_core.model.inflation import Inflation, TemporalLayers, transformer_blocks
from ..tav_core.model.motion import motion_pairs
from ..tav_core.sampling import schedule
from ..tav_core.sampling.windows import Window
from . import host
from .context_windows import KEY as WINDOW_KEY, anchor_host_windows, controlnets
from .edit_plan import KEY as EDIT_KEY, clips_per_chunk

KEY = "tuneavideo"
QUERIES = ("attn1.to_q.weight", "attn2.to_q.weight")


def diffusion_model(model) -> torch.nn.Module:
    return model.model.diffusion_model


@contextmanager
def video_hooks(unet: torch.nn.Module):
    """The video hooks on a diffusion model (shared by all its MODELs) while inside: installed on entry, removed on
    exit, so a plain image graph on the same checkpoint runs the UNet untouched; a nested use shares the outer one's.
    They do nothing until ``video()`` is entered."""
    inflation = getattr(unet, "tav_inflation", None)
    if inflation is not None:
        yield inflation
        return
    inflation = unet.tav_inflation = Inflation(unet, FrameContext())
    try:
        yield inflation
    finally:
        inflation.remove()
        del unet.tav_inflation


def temporal_layers(model) -> TemporalLayers | None:
    """The temporal layers of an inflated MODEL, None if it is not inflated."""
    return model.get_attachment(KEY)


# SD 1.x/2.x and SDXL (and SDXL's distillations, which the host builds as SDXL); exact classes: the SDXL refiner, SD3,
# Flux, Stable Cascade... are other classes; DDIM needs an eps- or v-prediction model (not EDM: Playground 2.5)
SUPPORTED = (host.model_base.BaseModel, host.model_base.SDXL)
PREDICTION = {host.model_base.ModelType.EPS: "epsilon", host.model_base.ModelType.V_PREDICTION: "v_prediction"}


def require_supported(model, node: str) -> None:
    """Tune-A-Video inflates SD 1.x/2.x and SDXL text-to-image UNets; refuse anything else at once, not inside the
    UNet."""
    base = model.model
    check(type(base) in SUPPORTED,
          f"{node} got a {type(base).__name__} MODEL ({type(base.model_config).__name__}); Tune-A-Video works on "
          "Stable Diffusion 1.x/2.x and SDXL models: load such a checkpoint")
    check(base.model_type in PREDICTION, f"{node} got a {base.model_type.name} model ({type(base.model_config).__name__}); "
                                          "DDIM inversion and Tune-A-Video's tuning need an eps- or v-prediction "
                                          "model")
    channels = base.diffusion_model.in_channels
    check(channels == 4, f"{node} got a UNet with {channels} input channels (an inpainting or instruct model); "
                         "Tune-A-Video needs a plain text-to-image SD 1.x/2.x or SDXL checkpoint (4 latent channels)")


def require_inflated(model, node: str) -> TemporalLayers:
    require_supported(model, node)
    layers = temporal_layers(model)
    check(layers is not None, f"{node} needs an inflated MODEL: put 'Inflate Model' (or 'Load & Inflate "
                              "Checkpoint') before it")
    return layers


def query_names(model) -> dict[str, str]:
    """ModelPatcher key -> tuned-weights file key (``blocks.{i}...``) of every tuned query projection."""
    return {f"diffusion_model.{name}.{q}": f"blocks.{i}.{q}"
            for i, (name, _) in enumerate(transformer_blocks(diffusion_model(model))) for q in QUERIES}


class VideoWrapper:
    """APPLY_MODEL wrapper: the batch is len(cond_or_uncond) chunks of clips of the latent's frame count (one clip,
    or two during a two-branch edit, whose plan also sets each row's prompt)."""

    def __init__(self, layers: TemporalLayers):
        self.layers = layers

    def __call__(self, executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
        chunks = transformer_options.get("cond_or_uncond", [0])
        branches = clips_per_chunk(transformer_options)
        clips = max(1, len(chunks)) * branches
        check(x.shape[0] % clips == 0, f"batch of {x.shape[0]} is not {clips} equal clips")
        plan = transformer_options.get(EDIT_KEY)
        if plan is not None and c_crossattn is not None:
            c_crossattn = plan.context(c_crossattn, t, chunks)
        if plan is not None and kwargs.get("y") is not None:  # SDXL: the source rows' pooled text too
            kwargs["y"] = plan.adm(kwargs["y"], chunks)
        if next(self.layers.parameters()).device != x.device:  # normally loaded as an additional model
            self.layers.to(x.device)
        window = transformer_options.get(WINDOW_KEY)  # a window of a longer clip (nodes.context_windows)
        if window is not None:  # its anchor cache keeps each clip's rows apart: by cond kind and branch
            window = Window(window.indices, window.anchors, [(kind, b) for kind in chunks for b in range(branches)])
        controller = plan.controller if plan is not None else None
        temporal = []
        if controller is not None:  # the temporal attention's control (Video-P2P's) needs the batch and the step
            controller.chunks, controller.step = chunks, plan.step_of(t)
            temporal = [attn for _, attn in self.layers.pairs()]
        with video_hooks(executor.class_obj.diffusion_model) as hooks, \
                self.layers.video(hooks, x.shape[0] // clips, window), controlled_temporal(temporal, controller):
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


def check_control_hints(executor, model, conds, x_in, timestep, model_options):
    """CALC_COND_BATCH wrapper: a ControlNet must get one hint image per frame (or one for all frames); ComfyUI
    repeats them over the batch, so both branches of an edit get them."""
    frames = x_in.shape[0] // clips_per_chunk(model_options.get("transformer_options", {}))
    for control in controlnets(conds):
        hint = getattr(control, "cond_hint_original", None)
        if hint is not None and hint.shape[0] not in (1, frames):
            raise TavError(f"ControlNet hint has {plural(hint.shape[0], 'image')} but the video has "
                           f"{plural(frames, 'frame')}; give one hint image per frame (or a single image for all "
                           "frames)")
    return executor(model, conds, x_in, timestep, model_options)


def attach(model, layers: TemporalLayers):
    """Make ``model`` (a clone) an inflated MODEL with these temporal layers."""
    model.set_attachments(KEY, layers)
    wrappers = host.patcher_extension.WrappersMP
    for kind, wrapper in ((wrappers.APPLY_MODEL, VideoWrapper(layers)), (wrappers.CALC_COND_BATCH, check_control_hints),
                          (wrappers.OUTER_SAMPLE, anchor_host_windows)):
        model.remove_wrappers_with_key(kind, KEY)
        model.add_wrapper_with_key(kind, KEY, wrapper)
    model.set_additional_models(KEY, [host.model_patcher.ModelPatcher(layers, model.load_device, model.offload_device)])
    return model


def new_temporal_layers(model, frame_attention: str | None = None, motion=None,
                        group_norm: str | None = None) -> TemporalLayers:
    """Fresh temporal layers for this MODEL's UNet: zero-output temporal attention as ordinary (non-inference) fp32
    tensors, or (``motion``: a ``tav_core.loading.motion.MotionModule``) that motion module as they are.
    ``frame_attention``/``group_norm`` None: ``video_defaults``' (the paper's; with a module, its AnimateDiff's)."""
    unet = diffusion_model(model)
    if motion is not None:
        motion_pairs(unet, motion.adapter)  # a module that does not fit this UNet is refused here, naming both
    with torch.inference_mode(False):
        layers = TemporalLayers(unet, frame_attention, motion, group_norm)
        return layers.to("cpu", torch.float32) if motion is None else layers


def inflate_model(model, frame_attention: str | None = None, node: str = "Inflate Model", motion=None,
                  group_norm: str | None = None):
    """A video clone of ``model`` with fresh temporal layers (``motion``: that AnimateDiff motion module); an inflated
    MODEL keeps its layers (a clone with this frame attention and group norm, if it had others; None keeps its own).
    A motion module for a MODEL inflated with other temporal layers is refused: they cannot change."""
    require_supported(model, node)
    layers = temporal_layers(model)
    if layers is None:
        return attach(model.clone(), new_temporal_layers(model, frame_attention, motion, group_norm))
    if motion is not None:
        had = layers.motion_module
        check(had is not None and had.fingerprint == motion.fingerprint,
              f"{node} got a MODEL inflated already with other temporal layers "
              f"({'another motion module' if had is not None else 'temporal attention'}): give it the MODEL before "
              "inflation (from Load Checkpoint, a LoRA loader...) to inflate it with this motion module")
    wanted = (frame_attention or layers.frame_attention, group_norm or layers.group_norm)
    if wanted == (layers.frame_attention, layers.group_norm):
        return model
    other = copy.copy(layers)  # the same tensors, another frame attention or group norm
    other.frame_attention, other.group_norm = wanted
    return attach(model.clone(), other)


def base_weight(model, key: str) -> torch.Tensor:
    """A weight as stored, before any clone's patches (ComfyUI keeps originals aside while patched)."""
    backup = model.backup.get(key)
    return backup.weight if backup is not None else host.utils.get_attr(model.model, key)


def alphas_cumprod(model, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The MODEL's own alpha_bar of every training timestep, from its sigmas (1 / (1 + sigma^2)), on the CPU."""
    sigmas = model.get_model_object("model_sampling").sigmas.detach().to("cpu", dtype)
    return 1 / (1 + sigmas ** 2)


def patched_weight(model, key: str) -> torch.Tensor:
    """A weight with this MODEL's own patches (LoRA, merges) applied, in float32 on the CPU."""
    weight = base_weight(model, key).detach().to("cpu", torch.float32, copy=True)
    return host.lora.calculate_weight(model.patches.get(key, []), weight, key)


def base_fingerprint(model) -> list[float]:
    return fingerprint_of([base_weight(model, f"diffusion_model.{n}") for n in fingerprint_names(diffusion_model(model))])


def ddim_sigmas(model, steps: int) -> torch.Tensor:
    """The reference's DDIM sigmas on this MODEL's noise schedule (SD's spacing, ending at alpha_bar[0])."""
    table = model.get_model_object("model_sampling").sigmas.detach().float().cpu()
    config = {**sd_scheduler_config(), "num_train_timesteps": len(table)}
    timesteps = schedule.ddim_timesteps(config, steps)
    return schedule.ddim_sigmas(table, timesteps, schedule.final_sigma(config, table))
