"""ComfyUI adapters over tav_core: the nodes of the pack (registered through ``comfy_entrypoint``) and the
models/tuneavideo folders."""

import os

import folder_paths

from ..tav_core.errors import TavError
from ..tav_core.example_clip import install_example_clip

# ComfyUI names an error by its class's module, which for a custom node is its install path: name ours by class only
TavError.__module__ = "builtins"

from .editing import INVERSIONS, AttentionControl, LoadNullTextInversion, NullTextInvert, inline_literal_prompts
from .legacy import LEGACY_NODES
from .loaders import InflateModel, LoadInflateCheckpoint, LoadTunedWeights
from .sampling import DDIMInvert, VideoKSampler
from .schema import ComfyExtension, io
from .scoring import ScoreVideo
from .tuning import FOLDER, OneShotTune

for folder in (FOLDER, INVERSIONS):  # tuned weights; null-text inversions
    if folder not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[folder] = ([os.path.join(folder_paths.models_dir, folder)], {".safetensors"})
    os.makedirs(folder_paths.get_folder_paths(folder)[0], exist_ok=True)

install_example_clip(folder_paths.get_input_directory())  # what the shipped workflows open with

NODES = [LoadInflateCheckpoint, InflateModel, OneShotTune, LoadTunedWeights, DDIMInvert, VideoKSampler, ScoreVideo,
         NullTextInvert, LoadNullTextInversion, AttentionControl, *LEGACY_NODES]


class TuneAVideoExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> TuneAVideoExtension:
    from server import PromptServer
    server = PromptServer.instance
    if server is not None and inline_literal_prompts not in server.on_prompt_handlers:  # once, if asked again
        server.add_on_prompt_handler(inline_literal_prompts)
    return TuneAVideoExtension()
