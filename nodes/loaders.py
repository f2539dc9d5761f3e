"""Getting an inflated MODEL: from a checkpoint, from any MODEL, or with saved tuned weights."""

import pickle

from safetensors import SafetensorError

from ..tav_core.choices import FRAME_ATTENTION
from ..tav_core.errors import TavError, summary
from ..tav_core.files import read_header
from . import host
from .shared import CATEGORY, FOLDER, finite_floats, io, require_finite
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


def frame_attention_input() -> io.Combo.Input:
    return io.Combo.Input("frame_attention", options=list(FRAME_ATTENTION), default="sparse_causal", optional=True,
                          tooltip="What each frame's self-attention looks at: sparse_causal (Tune-A-Video): frame 0 "
                                  "and the previous frame; first_frame (Video-P2P's model): frame 0 only. Tune and "
                                  "edit with the same; tuned weights keep theirs.")


class LoadInflateCheckpoint(io.ComfyNode):
    TITLE = "Load & Inflate Checkpoint"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TuneAVideoLoadInflateCheckpoint", display_name=cls.TITLE, category=CATEGORY,
            description="Loads an SD 1.x/2.x or SDXL checkpoint like Load Checkpoint and inflates its MODEL to video.",
            inputs=[io.Combo.Input("ckpt_name", options=host.folder_paths.get_filename_list("checkpoints"),
                                   tooltip="SD 1.x/2.x or SDXL checkpoint from models/checkpoints."),
                    frame_attention_input()],
            outputs=[io.Model.Output(tooltip="The inflated (video) MODEL: One-Shot Tune, DDIM Invert and Video "
                                             "KSampler take it."),
                     io.Clip.Output(tooltip="The CLIP model, for CLIP Text Encode of the prompts."),
                     io.Vae.Output(tooltip="The VAE, for VAE Encode of the frames and VAE Decode of the edit.")])

    @classmethod
    def validate_inputs(cls, ckpt_name):
        """Before anything runs, as the stock loaders' lists are checked (v3 lists are not checked by the host)."""
        if ckpt_name in host.folder_paths.get_filename_list("checkpoints"):
            return True
        return (f"ckpt_name: '{ckpt_name}' not in models/checkpoints; put that SD 1.x/2.x or SDXL checkpoint there "
                "(or pick one from the list) and press R to refresh")

    @classmethod
    def execute(cls, ckpt_name, frame_attention="sparse_causal") -> io.NodeOutput:
        model, clip, vae = load_checkpoint(ckpt_name)
        return io.NodeOutput(inflate_model(model, frame_attention, cls.TITLE), clip, vae)


class InflateModel(io.ComfyNode):
    TITLE = "Inflate Model"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TuneAVideoInflateModel", display_name=cls.TITLE, category=CATEGORY,
            description="Makes a video model of any SD 1.x/2.x or SDXL MODEL (after LoRA loaders, merges...): "
                        "sparse-causal self-attention, temporal attention (starting at zero) and clip-wide GroupNorm. "
                        "The MODEL given is not changed. Frames are the latent batch.",
            inputs=[io.Model.Input("model", tooltip="An SD 1.x/2.x or SDXL MODEL."), frame_attention_input()],
            outputs=[io.Model.Output(tooltip="The inflated (video) MODEL; before tuning it edits like the image "
                                             "model, frame by frame.")])

    @classmethod
    def execute(cls, model, frame_attention="sparse_causal") -> io.NodeOutput:
        return io.NodeOutput(inflate_model(model, frame_attention, cls.TITLE))


class LoadTunedWeights(io.ComfyNode):
    TITLE = "Load Tuned Weights"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TuneAVideoLoadTunedWeights", display_name=cls.TITLE, category=CATEGORY,
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
