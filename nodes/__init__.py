"""ComfyUI adapters over tav_core: the nodes of the pack and the models/tuneavideo folder."""

import os

import folder_paths

from .loaders import InflateModel, LoadInflateCheckpoint, LoadTunedWeights
from .sampling import DDIMInvert, VideoKSampler
from .tuning import FOLDER, OneShotTune

if FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.folder_names_and_paths[FOLDER] = ([os.path.join(folder_paths.models_dir, FOLDER)], {".safetensors"})
os.makedirs(folder_paths.get_folder_paths(FOLDER)[0], exist_ok=True)

NODE_CLASS_MAPPINGS = {
    "TuneAVideoLoadInflateCheckpoint": LoadInflateCheckpoint,
    "TuneAVideoInflateModel": InflateModel,
    "TuneAVideoOneShotTune": OneShotTune,
    "TuneAVideoLoadTunedWeights": LoadTunedWeights,
    "TuneAVideoDDIMInvert": DDIMInvert,
    "TuneAVideoVideoKSampler": VideoKSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "TuneAVideoLoadInflateCheckpoint": "Load & Inflate Checkpoint (Tune-A-Video)",
    "TuneAVideoInflateModel": "Inflate Model (Tune-A-Video)",
    "TuneAVideoOneShotTune": "One-Shot Tune (Tune-A-Video)",
    "TuneAVideoLoadTunedWeights": "Load Tuned Weights (Tune-A-Video)",
    "TuneAVideoDDIMInvert": "DDIM Invert (Tune-A-Video)",
    "TuneAVideoVideoKSampler": "Video KSampler (Tune-A-Video)",
}
