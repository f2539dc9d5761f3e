"""Long clips through overlapping frame windows: memory bounded by the window, not the clip.

A model evaluation ``model(x, sigma, context)`` over a clip of F frames runs window by window (each a run of
consecutive frames), and the windows' outputs are fused per frame with weights that taper at window edges (the
context-window scheme of AnimateDiff-Evolved and ComfyUI's ``comfy.context_windows``: the same schedule and
fuse weights). What is Tune-A-Video's own: every window's sparse-causal attention keeps the clip's frame 0 as
anchor and each frame's true previous frame. Their keys and values come from the window that computed them
earlier in the same evaluation (``AnchorCache``), so frame s of a window starting at s attends to [frame 0 ‖
frame s-1] as in the full clip; the temporal attention and the clip-wide GroupNorm run within the window. A window
that covers the clip is the plain evaluation, bit for bit.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..choices import FUSE_METHODS
from ..errors import check
from ..model.attention import previous_frame


@dataclass(frozen=True)
class ContextWindows:
    """Windows of ``length`` frames overlapping by ``overlap``, fused by ``fuse`` (ComfyUI's "standard_static"
    schedule: starts every length - overlap frames, the last window moved back to end at the clip's end)."""
    length: int = 16
    overlap: int = 4
    fuse: str = "pyramid"

    def __post_init__(self):
        check(isinstance(self.length, int) and self.length >= 1, f"window length must be at least 1, got {self.length}")
        check(isinstance(self.overlap, int) and 0 <= self.overlap < self.length,
              f"window overlap must be from 0 to length - 1 ({self.length - 1}), got {self.overlap}")
        check(self.fuse in FUSE_METHODS, f"fuse method {self.fuse!r} is not one of {', '.join(FUSE_METHODS)}")

    def windows(self, frames: int) -> list[list[int]]:
        if frames <= self.length:
            return [list(range(frames))]
        out, step = [], self.length - self.overlap
        for start in range(0, frames, step):
            start = min(start, frames - self.length)
            out.append(list(range(start, start + self.length)))
            if start + self.length >= frames:
                break
        return out

    def plan(self, frames: int) -> list[tuple[list[int], torch.Tensor]]:
        """(frame indices, fuse weight of each) per window; each frame's weights sum to 1 over the windows."""
        windows = self.windows(frames)
        return normalised(windows, [fuse_weights(self.fuse, w, frames, self.overlap) for w in windows], frames)


def normalised(windows: list[list[int]], weights: list[torch.Tensor],
               frames: int) -> list[tuple[list[int], torch.Tensor]]:
    """(frame indices, weight of each) per window, the float64 weights divided by each frame's total over the
    windows, so they sum to 1 (float32)."""
    total = torch.zeros(frames, dtype=torch.float64)
    for w, weight in zip(windows, weights):
        total.index_add_(0, torch.tensor(w), weight)
    return [(w, (weight / total[w]).float()) for w, weight in zip(windows, weights)]


def fuse_weights(method: str, window: list[int], frames: int, overlap: int) -> torch.Tensor:
    """Un-normalised weights of a window's frames (ComfyUI's fuse methods): "pyramid" rises 1, 2, ... to the middle
    and falls back (FreeNoise's weighted average); "flat" is 1; "overlap-linear" ramps over the overlap on the sides
    that have a neighbouring window."""
    n = len(window)
    if method == "flat":
        return torch.ones(n, dtype=torch.float64)
    if method == "pyramid":
        i = torch.arange(n, dtype=torch.float64)
        return torch.minimum(i + 1, n - i)
    weights = torch.ones(n, dtype=torch.float64)
    if overlap > 0 and window[0] > 0:
        weights[:overlap] = torch.linspace(1e-37, 1, overlap, dtype=torch.float64)
    if overlap > 0 and window[-1] < frames - 1:
        weights[-overlap:] = torch.linspace(1, 1e-37, overlap, dtype=torch.float64)
    return weights


def outside_frames(window: list[int]) -> set[int]:
    """Frames a window's sparse-causal attention needs that it does not compute: the anchor and previous frames."""
    inside = set(window)
    return {f for f in (0, *(previous_frame(i) for i in window)) if f not in inside}


class AnchorCache:
    """For one model evaluation: the sparse-causal keys and values (per layer and clip) of the frames that later
    windows take as anchor or previous frame. A frame's rows are kept while a window still to run needs them."""

    def __init__(self, windows: list[list[int]]):
        self.uses = Counter(f for w in windows for f in outside_frames(w))
        self.rows: dict[tuple, torch.Tensor] = {}
        self.missing = 0  # lookups of frames no earlier window computed (windows out of clip order)

    def lookup(self, layer, clip, frame: int) -> torch.Tensor | None:
        row = self.rows.get((layer, clip, frame))
        if row is None:
            self.missing += 1
        return row

    def needed(self, frame: int) -> bool:
        """Whether a window still to run takes this frame's rows."""
        return self.uses[frame] > 0

    def store(self, layer, clip, frame: int, row: torch.Tensor) -> None:
        if self.needed(frame):
            self.rows[layer, clip, frame] = row.detach().clone()  # a view would keep the whole window's keys

    def done(self, window: list[int]) -> None:
        """A window has run: what only it still needed is dropped."""
        for f in outside_frames(window):
            self.uses[f] -= 1
        self.rows = {k: v for k, v in self.rows.items() if self.uses[k[2]] > 0}

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.rows.values())


@dataclass
class Window:
    """The window a UNet call runs on: its clip frame indices, the clips in the batch (their cache keys), the
    evaluation's anchor cache."""
    indices: list[int]
    anchors: AnchorCache
    clips: list | None = None  # keys of the clips in the batch (default: their position)

    def clip_keys(self, clips: int) -> list:
        keys = self.clips if self.clips is not None else list(range(clips))
        check(len(keys) == clips, f"window of {len(keys)} clips got a batch of {clips}")
        return keys


@dataclass(frozen=True)
class Passes:
    """How the UNet passes of an inference stage run (what a memory plan may change): the autocast (None: the
    pipeline's), frame windows (None: the whole clip at once), CFG's two halves in one batch or one after the other."""
    mixed_precision: str | None = None
    windows: ContextWindows | None = None
    batch_cfg: bool = True


class Windowed:
    """``model(x, sigma, context)`` over windows of a clip of ``frames`` frames: x holds whole clips one after another
    (rows: clips x frames, e.g. CFG's [uncond; cond]). ``windows``: ``ContextWindows`` or anything whose
    ``plan(frames)`` gives the same (a host's handler); ``video(num_frames, window=...)`` enters one window's context
    (``Inflation.video``); ``on_window(indices, weights)`` runs before each window (attention control follows it)."""

    def __init__(self, model: Callable, frames: int, windows: ContextWindows, video: Callable,
                 on_window: Callable | None = None):
        self.model, self.frames, self.video, self.on_window = model, frames, video, on_window
        self.plan = windows.plan(frames)

    @property
    def single(self) -> bool:
        return len(self.plan) == 1

    def rows(self, clips: int, indices: list[int], device) -> torch.Tensor:
        return torch.tensor([c * self.frames + i for c in range(clips) for i in indices], device=device)

    def parts(self, clips: int, device) -> Iterator[tuple[torch.Tensor, torch.Tensor, Callable]]:
        """(rows, fuse weight of each row, context manager to run them in) per window, for one evaluation."""
        anchors = AnchorCache([w for w, _ in self.plan])
        for indices, weights in self.plan:
            @contextmanager
            def run(indices=indices, weights=weights):
                if self.on_window is not None:
                    self.on_window(indices, weights)
                with self.video(len(indices), window=Window(indices, anchors)):
                    yield
            yield self.rows(clips, indices, device), weights.to(device).repeat(clips), run
            anchors.done(indices)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.single:
            return self.model(x, sigma, context)
        check(x.shape[0] % self.frames == 0, f"batch of {x.shape[0]} is not whole clips of {self.frames} frames")
        out = torch.zeros_like(x)
        for rows, weights, run in self.parts(x.shape[0] // self.frames, x.device):
            with run():
                y = self.model(x[rows], sigma[rows], context[rows])
            out.index_add_(0, rows, y * weights.to(y).view(-1, *[1] * (y.ndim - 1)))
        return out
