"""The pack's example clip: drawn rather than filmed (free to ship, nothing to download) and put where the shipped
workflows look for it, so that a first Run needs nothing but a checkpoint. A file of its name that is already there
(the user's own, or ours from an earlier start) is never replaced."""

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from .video import write_video

EXAMPLE_CLIP = "tuneavideo-example.mp4"


def example_clip(num_frames: int = 64, size: int = 512) -> np.ndarray:
    """A red ball with a white band rolls left to right across a meadow under a blue sky (the workflows' prompts
    describe it)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    horizon = 0.58
    sky = np.stack([90 + 80 * y, 150 + 70 * y, 235 + 0 * y], -1)
    grass = np.stack([50 + 30 * y, 120 + 60 * y, 40 + 10 * y], -1) * (0.85 + 0.3 * rng.random((size, size, 1)))
    background = np.where((y < horizon)[..., None], sky, grass)
    radius, ground = 0.11, 0.80
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for i in range(num_frames):
        cx = radius + (1 - 2 * radius) * i / max(1, num_frames - 1)
        cy = ground - radius
        shadow = ((x - cx) / (1.2 * radius)) ** 2 + ((y - ground) / (0.25 * radius)) ** 2 < 1
        image = np.where(shadow[..., None], background * 0.6, background)
        dx, dy = (x - cx) / radius, (y - cy) / radius
        inside = dx ** 2 + dy ** 2 < 1
        angle = (cx - radius) / radius  # rolling without slipping
        band = np.abs(dx * np.cos(angle) + dy * np.sin(angle)) < 0.22
        light = np.clip(1.15 - 0.5 * np.hypot(dx + 0.35, dy + 0.35), 0.35, 1.15)[..., None]
        ball = np.where(band[..., None], [235, 235, 235], [215, 35, 30]) * light
        image = np.where(inside[..., None], ball, image)
        frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def install_example_clip(folder: str | Path) -> Path | None:
    """Write the example clip into ``folder`` unless a file of its name exists; returns the path written, or None.
    Failing to write only logs: everything works without it."""
    target = Path(folder) / EXAMPLE_CLIP
    if target.exists():
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tuneavideo-") as scratch:
            written = write_video(Path(scratch) / EXAMPLE_CLIP, example_clip())
            os.link(written, target)  # fails, rather than replaces, if a file of that name appeared meanwhile
        return target
    except OSError as e:
        logging.warning(f"Tune-A-Video: the example clip was not written to {target} ({e}); the workflows' Load "
                        f"Video will ask for a clip of yours")
        return None
