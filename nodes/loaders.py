"""Getting an inflated MODEL: from a checkpoint, from any MODEL, or with saved tuned weights."""

import folder_paths
import nodes

from .sampling import CATEGORY
from .tuning import FOLDER
from .video_model import inflate_model, load_tuned_model


class LoadInflateCheckpoint:
    DESCRIPTION = "Loads an SD 1.x/2.x checkpoint like Load Checkpoint and inflates its MODEL to video."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),
                                           {"tooltip": "SD 1.x/2.x checkpoint from models/checkpoints."})}}

    def load(self, ckpt_name):
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)[:3]
        return (inflate_model(model), clip, vae)


class InflateModel:
    DESCRIPTION = ("Makes a video model of any SD 1.x/2.x MODEL (after LoRA loaders, merges...): sparse-causal "
                   "self-attention, temporal attention (starting at zero) and clip-wide GroupNorm. The MODEL "
                   "given is not changed. Frames are the latent batch.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "inflate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL", {"tooltip": "An SD 1.x/2.x MODEL."})}}

    def inflate(self, model):
        return (inflate_model(model),)


class LoadTunedWeights:
    DESCRIPTION = ("Applies tuned weights saved by One-Shot Tune (or 'tuneavideo tune') to a MODEL, inflating "
                   "it. Refuses weights tuned on a different base model.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The base MODEL the weights were tuned on."}),
            "weights_name": (folder_paths.get_filename_list(FOLDER), {"tooltip": "File in models/tuneavideo."}),
        }}

    def load(self, model, weights_name):
        return (load_tuned_model(folder_paths.get_full_path_or_raise(FOLDER, weights_name), model)[0],)
