"""What the model flows (``commands``) and ``score`` share: the device, and outputs written whole (never half) and
never lost to a full disk (in the temp folder, the run then ending with where they went). torch, PIL: no model code."""

from pathlib import Path

import torch
from PIL import Image

from ..files import atomic_path, save_or_fallback


def device_of(args):
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def saved_elsewhere(what: str, path, where: Path, error: OSError) -> OSError:
    """The error a run ends with when an output went to the temp folder: the disk's reason and where it is."""
    return OSError(error.errno, f"{error.strerror or error}; the {what} {'are' if what.endswith('s') else 'is'} saved "
                                f"in {where} instead: move {'them' if what.endswith('s') else 'it'} to {path} once "
                                "there is room", str(path))


def save_output(what: str, path, save) -> Path:
    """``save(path)``, or in the temp folder if the disk refuses it; then the run ends saying where it went."""
    where, error = save_or_fallback(save, path)
    if error is not None:
        raise saved_elsewhere(what, path, where, error)
    return where


def write_png(path: Path, image) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
