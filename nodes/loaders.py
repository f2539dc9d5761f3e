"""Getting an inflated MODEL: from a checkpoint, from any MODEL (either with an AnimateDiff motion module), or with
saved tuned weights."""

import os
import pickle

import torch
from safetensors import SafetensorError

from ..tav_core.choices import FRAME_ATTENTION, GROUP_NORMS
from ..tav_core.errors import TavError, summary
from ..tav_core.files import read_header
from ..tav_core.loading.motion import MotionModule, motion_module_from_state
from . import host
from .shared import AUTO, CATEGORY, FOLDER, MOTION_FOLDER, NO_MOTION, Schema, finite_floats, io, require_finite
from .tuned_weights import load_tuned_model
from .video_model import inflate_model


def load_checkpoint(ckpt_name: str) -> tuple:
    """(MODEL, CLIP, VAE) as Load Checkpoint gives them; a damaged or foreign file is refused naming it and what is
    wrong (a safetensors header is read first: seconds, not a load)."""
    name = f"models/checkpoints/{ckpt_name}"
    path = host.folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
    fix = "download or copy it again, or pick another checkpoint"
    if path.lower().endswith(".safetensors"):
        read_header(path, fix, name)
    try:
        return host.stock_nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)[:3]
    except (RuntimeError, ValueError, OSError, KeyError, pickle.UnpicklingError, SafetensorError) as e:
        raise TavError(f"{name} could not be loaded ({summary(e, 1)}); it may be damaged or not an SD 1.x/2.x or "
                       f"SDXL checkpoint: {fix}") from e


_MOTION_MODULES: dict[str, tuple[float, MotionModule]] = {}  # path -> (its mtime, the module read from it)


def load_motion_module(name: str) -> MotionModule | None:
    """A motion module of models/animatediff_models (None for "none"), read with the host's safe loader (a .ckpt too:
    tensors only, no code) and kept while the file is unchanged, so a re-run does not read it again."""
    if name == NO_MOTION:
        return None
    path = host.folder_paths.get_full_path_or_raise(MOTION_FOLDER, name)
    mtime = os.path.getmtime(path)
    cached = _MOTION_MODULES.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    source = f"models/{MOTION_FOLDER}/{name}"
    with torch.inference_mode(False):  # ordinary tensors: tuning trains them, null-text inversion runs backward
        try:
            state = host.utils.load_torch_file(path, safe_load=True)
        except (RuntimeError, ValueError, OSError, KeyError, pickle.UnpicklingError, SafetensorError) as e:
            raise TavError(f"{source} could not be read ({summary(e, 1)}); download or copy it again") from e
        state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
        module = motion_module_from_state(state, source)
    _MOTION_MODULES[path] = (mtime, module)
    return module


def motion_modules() -> list[str]:
    return [NO_MOTION, *host.folder_paths.get_filename_list(MOTION_FOLDER)]


def check_motion_name(name: str | None) -> bool | str:
    """``validate_inputs``' check of a motion module name (None: linked, or not given)."""
    if name is None or name in motion_modules():
        return True
    return (f"motion_module: '{name}' not in models/{MOTION_FOLDER}; put that AnimateDiff motion module there (or pick "
            "one from the list, or none) and press R to refresh")


def auto(value: str | None) -> str | None:
    """A video option as ``tav_core`` takes it: "auto" (or not given) is None, ``video_defaults``' choice."""
    return None if value in (None, AUTO) else value


def video_inputs() -> list:
    """The inflation's options, after the ones saved workflows had (the editor restores widget values by position:
    frame_attention stays where it was, and its old values mean what they meant)."""
    return [
        io.Combo.Input("frame_attention", options=[AUTO, *FRAME_ATTENTION], default=AUTO, optional=True,
                       tooltip="What each frame's self-attention looks at. auto: sparse_causal without a motion "
                               "module, per_frame with one. sparse_causal (Tune-A-Video): frame 0 and the previous "
                               "frame; first_frame (Video-P2P's model): frame 0 only; per_frame (AnimateDiff's): the "
                               "frame itself, the attention a motion module's prior was trained beside. sparse_causal "
                               "stays available with a module, for edits that need stronger appearance consistency. "
                               "Tune and edit with the same; tuned weights keep theirs."),
        io.Combo.Input("motion_module", options=motion_modules(), default=NO_MOTION, optional=True,
                       tooltip=f"An AnimateDiff motion module from models/{MOTION_FOLDER} (AnimateDiff-Evolved's "
                               "folder: the same files), as the temporal layers instead of Tune-A-Video's fresh "
                               "temporal attention: a trained motion prior that One-Shot Tune tunes further. SD1.5: "
                               "mm_sd_v14/v15, mm_sd_v15_v2, v3_sd15_mm; SDXL: mm_sdxl_v10_beta; .safetensors or "
                               ".ckpt (read safely). none: Tune-A-Video's temporal attention."),
        io.Combo.Input("group_norm", options=[AUTO, *GROUP_NORMS], default=AUTO, optional=True,
                       tooltip="What the ResNets' GroupNorms take statistics over: clip (the whole clip, "
                               "Tune-A-Video's) or frame (each frame). auto: clip without a motion module; with one, "
                               "the norm its version was trained with (v1: clip; v2, v3, SDXL: frame). Tuned weights "
                               "keep theirs."),
    ]


class LoadInflateCheckpoint(io.ComfyNode):
    TITLE = "Load & Inflate Checkpoint"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoLoadInflateCheckpoint", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["tune-a-video", "tuneavideo", "video checkpoint", "inflate checkpoint", "inflate"],
            description="Loads an SD 1.x/2.x or SDXL checkpoint like Load Checkpoint and inflates its MODEL to video, "
                        "optionally with an AnimateDiff motion module as its temporal layers.",
            inputs=[io.Combo.Input("ckpt_name", options=host.folder_paths.get_filename_list("checkpoints"),
                                   tooltip="SD 1.x/2.x or SDXL checkpoint from models/checkpoints."),
                    *video_inputs()],
            outputs=[io.Model.Output(tooltip="The inflated (video) MODEL: One-Shot Tune, DDIM Invert and Video "
                                             "KSampler take it."),
                     io.Clip.Output(tooltip="The CLIP model, for CLIP Text Encode of the prompts."),
                     io.Vae.Output(tooltip="The VAE, for VAE Encode of the frames and VAE Decode of the edit.")])

    @classmethod
    def validate_inputs(cls, ckpt_name, motion_module=None):
        """Before anything runs, as the stock loaders' lists are checked (v3 lists are not checked by the host)."""
        if ckpt_name in host.folder_paths.get_filename_list("checkpoints"):
            return check_motion_name(motion_module)
        return (f"ckpt_name: '{ckpt_name}' not in models/checkpoints; put that SD 1.x/2.x or SDXL checkpoint there "
                "(or pick one from the list) and press R to refresh")

    @classmethod
    def execute(cls, ckpt_name, frame_attention=AUTO, motion_module=NO_MOTION, group_norm=AUTO) -> io.NodeOutput:
        model, clip, vae = load_checkpoint(ckpt_name)
        motion = load_motion_module(motion_module)
        return io.NodeOutput(inflate_model(model, auto(frame_attention), cls.TITLE, motion, auto(group_norm)), clip, vae)


class InflateModel(io.ComfyNode):
    TITLE = "Inflate Model"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoInflateModel", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["inflate", "video model", "motion module", "animatediff"],
            description="Makes a video model of any SD 1.x/2.x or SDXL MODEL (after LoRA loaders, merges...): "
                        "sparse-causal self-attention, temporal attention (starting at zero) and clip-wide GroupNorm, "
                        "or with an AnimateDiff motion module that module as the temporal layers (per-frame "
                        "attention and its GroupNorm by default). The MODEL given is not changed. Frames are the "
                        "latent batch.",
            inputs=[io.Model.Input("model", tooltip="An SD 1.x/2.x or SDXL MODEL."), *video_inputs()],
            outputs=[io.Model.Output(tooltip="The inflated (video) MODEL; before tuning it edits like the image "
                                             "model, frame by frame.")])

    @classmethod
    def validate_inputs(cls, motion_module=None):
        return check_motion_name(motion_module)

    @classmethod
    def execute(cls, model, frame_attention=AUTO, motion_module=NO_MOTION, group_norm=AUTO) -> io.NodeOutput:
        motion = load_motion_module(motion_module)
        return io.NodeOutput(inflate_model(model, auto(frame_attention), cls.TITLE, motion, auto(group_norm)))


class LoadTunedWeights(io.ComfyNode):
    TITLE = "Load Tuned Weights"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoLoadTunedWeights", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["tuned weights", "load tuned", "load weights"],
            description="Applies tuned weights saved by One-Shot Tune (or 'tuneavideo tune'), full or LoRA, to a "
                        "MODEL at a strength, inflating it with the frame attention they were tuned with. Refuses "
                        "weights tuned on a different base model.",
            inputs=[io.Model.Input("model", tooltip="The base MODEL the weights were tuned on."),
                    io.Combo.Input("weights_name", options=host.folder_paths.get_filename_list(FOLDER),
                                   tooltip="File in models/tuneavideo, saved by One-Shot Tune's save name."),
                    io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.05, optional=True,
                                   tooltip="How much of the tuning to apply: 0 the base model, 1 as tuned; between, "
                                           "the query projections W0 + s (W - W0) as a LoRA's strength, and the "
                                           "temporal attention's output s times its tuned value.")],
            outputs=[io.Model.Output(tooltip="The MODEL, inflated, with the tuned weights: DDIM Invert and Video "
                                             "KSampler take it.")])

    @classmethod
    def validate_inputs(cls, weights_name, strength=None):
        if weights_name in host.folder_paths.get_filename_list(FOLDER):
            return finite_floats(cls, strength=strength)
        return (f"no tuned weights named '{weights_name}' in models/{FOLDER}; tune first (One-Shot Tune with a save "
                "name, e.g. the '5. Tune and save weights' template) or pick a file from the list")

    @classmethod
    def execute(cls, model, weights_name, strength=1.0) -> io.NodeOutput:
        require_finite(cls, strength=strength)
        path = host.folder_paths.get_full_path_or_raise(FOLDER, weights_name)
        return io.NodeOutput(load_tuned_model(path, model, strength)[0])
