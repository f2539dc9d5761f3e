"""Tiny AnimateDiff motion modules in the original (v2) key layout that fit the test checkpoint's one-level UNet (320
channels, a mid block): what the motion-module tests put in models/animatediff_models. AnimateDiff's own head and
group counts (8, 32), so they load as the pack loads a real module."""

import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the layout's writer
from motion_layout import original_state_dict  # noqa: E402

MOTION, OTHER_MOTION = "tiny-mm-v2.safetensors", "tiny-mm-v2-other.safetensors"  # (another module: another seed)


def write_motion_module(path: Path, seed: int = 0) -> Path:
    save_file(original_state_dict("v2", channels=(320,), layers_per_block=1, seed=seed), str(path))
    return path


def write_motion_modules(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_motion_module(folder / MOTION, 0)
    write_motion_module(folder / OTHER_MOTION, 1)
    return folder
