"""Seams between frame windows: how much an edit changes from one frame to the next where the windows it was made in
hand over, against how much it changes inside them (what long-clip users see as a jump every N frames).

A boundary is a frame whose set of covering windows differs from the previous frame's (a window starts or ends):
the change into that frame is a boundary change, every other change is an inside change. The ratio of their means is
1 for an edit without seams. Changes are per consecutive pair of frames: the pixels' mean absolute difference (0-255)
and the CLIP embeddings' 100 (1 - cos).
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import check


def window_boundaries(frames: int, windows: list[list[int]]) -> list[int]:
    """The frames (1..frames-1) where the covering windows change; ``windows``: each window's frame indices
    (``ContextWindows.windows(frames)``)."""
    check(all(0 <= f < frames for w in windows for f in w), f"the windows name frames outside the {frames}-frame clip; "
                                                          "give the windows the edit was made in")
    cover = [frozenset(i for i, w in enumerate(windows) if f in w) for f in range(frames)]
    return [f for f in range(1, frames) if cover[f] != cover[f - 1]]


def pixel_changes(frames) -> torch.Tensor:
    """Per frame from the second: mean absolute difference to the previous frame, 0-255 (frames - 1,)."""
    x = torch.as_tensor(np.asarray(frames)).double()
    check(x.ndim == 4 and x.shape[-1] == 3 and len(x) >= 2, f"frames must be (frames >= 2, height, width, 3), got "
                                                           f"{tuple(x.shape)}")
    return (x[1:] - x[:-1]).abs().flatten(1).mean(1)


def embedding_changes(embeds: torch.Tensor) -> torch.Tensor:
    """Per frame from the second: 100 (1 - cos) of its embedding with the previous frame's (frames - 1,)."""
    e = F.normalize(embeds.double(), dim=-1)
    check(e.ndim == 2 and len(e) >= 2, f"embeddings must be (frames >= 2, dims), got {tuple(embeds.shape)}")
    return 100 * (1 - (e[1:] * e[:-1]).sum(-1))


def seam_ratio(changes: torch.Tensor, boundaries: list[int]) -> float:
    """Mean change into the boundary frames over the mean change into the others (NaN without both kinds)."""
    into = torch.zeros(len(changes), dtype=torch.bool)
    into[[b - 1 for b in boundaries]] = True
    if bool(into.all()) or not bool(into.any()):
        return float("nan")
    inside = float(changes[~into].mean())
    return float(changes[into].mean()) / inside if inside > 0 else float("inf")


def largest_jump(changes: torch.Tensor) -> tuple[int, float]:
    """The frame whose change from the previous one stands out most, and by how much: its change over the median
    change of the clip (a seam or a cut shows as one frame well above 1)."""
    median = float(changes.median())
    i = int(changes.argmax())
    return i + 1, float(changes[i]) / median if median > 0 else float("inf")


def seams(frames, embeds: torch.Tensor | None, boundaries: list[int]) -> dict:
    """Each boundary's pixel (and CLIP) change, the ratios to the inside changes, the largest jump."""
    pixel = pixel_changes(frames)
    clip = embedding_changes(embeds) if embeds is not None else None
    out = {"boundaries": [{"frame": b, "pixel_change": float(pixel[b - 1]),
                           **({"clip_change": float(clip[b - 1])} if clip is not None else {})} for b in boundaries],
           "pixel_ratio": seam_ratio(pixel, boundaries)}
    if clip is not None:
        out["clip_ratio"] = seam_ratio(clip, boundaries)
    out["largest_jump_frame"], out["largest_jump_ratio"] = largest_jump(pixel)
    return out
