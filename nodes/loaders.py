"""Getting an inflated MODEL: from a checkpoint, from any MODEL, or with saved tuned weights."""

import folder_paths
import nodes

from ..tav_core.choices import FRAME_ATTENTION
from .sampling import CATEGORY
from .tuning import FOLDER
from .video_model import inflate_model, load_tuned_model


FRAME_ATTENTION_INPUT = (list(FRAME_ATTENTION), {
    "default": "sparse_causal", "tooltip": "What each frame's self-attention looks at: sparse_causal (Tune-A-Video): "
    "frame 0 and the previous frame; first_frame (Video-P2P's model): frame 0 only. Tune and edit with the same; "
    "tuned weights keep theirs."})


class LoadInflateCheckpoint:
    TITLE = "Load & Inflate Checkpoint"
    DESCRIPTION = "Loads an SD 1.x/2.x checkpoint like Load Checkpoint and inflates its MODEL to video."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = ("The inflated (video) MODEL: One-Shot Tune, DDIM Invert and Video KSampler take it.",
                       "The CLIP model, for CLIP Text Encode of the prompts.",
                       "The VAE, for VAE Encode of the frames and VAE Decode of the edit.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),
                                           {"tooltip": "SD 1.x/2.x checkpoint from models/checkpoints."})},
                "optional": {"frame_attention": FRAME_ATTENTION_INPUT}}

    def load(self, ckpt_name, frame_attention="sparse_causal"):
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)[:3]
        return (inflate_model(model, frame_attention, self.TITLE), clip, vae)


class InflateModel:
    TITLE = "Inflate Model"
    DESCRIPTION = ("Makes a video model of any SD 1.x/2.x MODEL (after LoRA loaders, merges...): sparse-causal "
                   "self-attention, temporal attention (starting at zero) and clip-wide GroupNorm. The MODEL "
                   "given is not changed. Frames are the latent batch.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The inflated (video) MODEL; before tuning it edits like the image model, frame by frame.",)
    FUNCTION = "inflate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "An SD 1.x/2.x MODEL."})},
                "optional": {"frame_attention": FRAME_ATTENTION_INPUT}}

    def inflate(self, model, frame_attention="sparse_causal"):
        return (inflate_model(model, frame_attention),)


class LoadTunedWeights:
    TITLE = "Load Tuned Weights"
    DESCRIPTION = ("Applies tuned weights saved by One-Shot Tune (or 'tuneavideo tune') to a MODEL, inflating "
                   "it with the frame attention they were tuned with. Refuses weights tuned on a different base model.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The MODEL, inflated, with the tuned weights: DDIM Invert and Video KSampler take it.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The base MODEL the weights were tuned on."}),
            "weights_name": (folder_paths.get_filename_list(FOLDER),
                             {"tooltip": "File in models/tuneavideo, saved by One-Shot Tune's save name."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, weights_name):
        if weights_name in folder_paths.get_filename_list(FOLDER):
            return True
        return (f"no tuned weights named '{weights_name}' in models/{FOLDER}; tune first (One-Shot Tune with a save "
                "name, e.g. the '5. Tune and save weights' template) or pick a file from the list")

    def load(self, model, weights_name):
        return (load_tuned_model(folder_paths.get_full_path_or_raise(FOLDER, weights_name), model)[0],)
