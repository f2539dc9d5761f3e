"""The frame count of the batch the UNet is running on.

Frames are folded into the batch dimension as ``(b f)``. Inflation hooks read the frame count from a
``FrameContext`` that whoever calls the UNet sets; ``None`` means plain image behaviour.
"""

from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import check


@dataclass
class FrameContext:
    num_frames: int | None = None
    window: object | None = None  # a ``tav_core.sampling.windows.Window`` when the frames are a window of a longer clip

    @contextmanager
    def frames(self, num_frames: int, window=None):
        """Run the UNet on videos of ``num_frames`` frames inside this block (a ``window`` of a longer clip)."""
        check(isinstance(num_frames, int) and num_frames >= 1,
              f"frame count must be a whole number >= 1, got {num_frames!r}; pass at least one frame")
        check(window is None or len(window.indices) == num_frames,
              f"window of {len(window.indices) if window else 0} frames run as {num_frames} frames")
        previous = self.num_frames, self.window
        self.num_frames, self.window = num_frames, window
        try:
            yield self
        finally:
            self.num_frames, self.window = previous

    def active(self, batch: int) -> int | None:
        """Frames per video for a batch of ``batch`` rows, or None when video behaviour is off."""
        f = self.num_frames
        if f is None:
            return None
        check(batch % f == 0,
              f"batch of {batch} rows is not a whole number of {f}-frame videos; "
              f"give latents whose batch is a multiple of the frame count")
        return f
