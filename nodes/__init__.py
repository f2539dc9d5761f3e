"""ComfyUI adapters over tav_core: the nodes of the pack, registered through ``comfy_entrypoint``, which is also where
the pack touches the host (its model folders, the example clip, the prompt handler, the one patch): importing the
pack changes nothing in ComfyUI.

Modules import downward only, in this order (a test reads it): ``host`` (every ComfyUI internal) and ``shared``
(what several nodes share), then the video model on ComfyUI's MODEL, then the nodes, then the registration."""

import os

from ..tav_core.errors import TavError
from ..tav_core.example_clip import install_example_clip

# ComfyUI names an error by its class's module, which for a custom node is its install path: name ours by class only
TavError.__module__ = "builtins"

from . import host
from .editing import AttentionControl, LoadNullTextInversion, NullTextInvert, inline_literal_prompts
from .legacy import LEGACY_NODES
from .loaders import InflateModel, LoadInflateCheckpoint, LoadTunedWeights
from .sampling import DDIMInvert, VideoKSampler
from .scoring import ScoreVideo
from .shared import FOLDER, INVERSIONS, MOTION_FOLDER, ComfyExtension, io
from .tuning import OneShotTune

LAYERS = (
    ("host", "shared"),
    ("conditioning", "edit_plan", "context_windows", "video_model", "tuned_weights", "autograd", "memory_plan"),
    ("sampling", "tuning", "editing", "loaders", "scoring"),
    ("legacy", "__init__"),
)

NODES = [LoadInflateCheckpoint, InflateModel, OneShotTune, LoadTunedWeights, DDIMInvert, VideoKSampler, ScoreVideo,
         NullTextInvert, LoadNullTextInversion, AttentionControl, *LEGACY_NODES]


class TuneAVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


def register_folders() -> None:
    """models/tuneavideo (tuned weights), models/tuneavideo_inversions (null-text inversions), and, unless
    AnimateDiff-Evolved registered it, models/animatediff_models (motion modules): its folder, with the host's
    model-file extensions as it registers them, so the same files serve both packs whichever loads first."""
    folders = host.folder_paths.folder_names_and_paths
    for folder, extensions in ((FOLDER, {".safetensors"}), (INVERSIONS, {".safetensors"}),
                               (MOTION_FOLDER, set(host.folder_paths.supported_pt_extensions))):
        if folder not in folders:
            folders[folder] = ([os.path.join(host.folder_paths.models_dir, folder)], extensions)
        os.makedirs(host.folder_paths.get_folder_paths(folder)[0], exist_ok=True)


async def comfy_entrypoint() -> TuneAVideoExtension:
    """What the host calls for the node list: everything the pack sets up in the host happens here (each step once,
    if asked again)."""
    host.log_drift()
    register_folders()
    install_example_clip(host.folder_paths.get_input_directory())  # what the shipped workflows open with
    host.remember_text_projections()
    server = getattr(host.server.PromptServer, "instance", None)  # (None in a script)
    if server is not None and inline_literal_prompts not in server.on_prompt_handlers:
        server.add_on_prompt_handler(inline_literal_prompts)
    return TuneAVideoExtension()
