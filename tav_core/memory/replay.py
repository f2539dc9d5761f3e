"""Repeated UNet passes in a plan replayed instead of traced again.

A clip planned in frame windows runs the same UNet pass many times: the same window shape in every window of the
inversion, of the conditional and the unconditional pass, of the three- and the four-window clip. Each fake pass
costs about a second of tracing; what it does to memory is the same every time it meets the same state. So the
first pass of each kind is traced and recorded (its peak above what was live at its start, its output, the anchor
rows it kept for later windows, for a pass with gradients what autograd keeps and the backward's peak), and a later
pass of the same kind allocates the same tensors and reports the same peak to the tracker, without running. The
plan stays exact (``tests/core/test_plan_replay.py`` compares plans with and without replay byte for byte).

A pass's kind: its inputs' shapes, strides, dtypes and which need gradients, grad mode and autocast, the frames it
runs as, for a window the anchor rows it finds, keeps and keeps again (relative to its first frame; frame 0
absolute), and an attention controller's state (its blend maps, chunks, which controls the step runs). A pass that
kept anything else, and a pass with gradients whose backward did not run or where a planned weight needs a gradient,
is always traced.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..model.inflation import transformer_blocks
from ..sampling.windows import outside_frames
from .trace import AllocationPeak


def _meta(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.stride(), t.dtype


def _same(sample: torch.Tensor) -> torch.Tensor:
    return sample


def _empty(meta: tuple) -> torch.Tensor:
    shape, stride, dtype = meta
    return torch.empty_strided(shape, stride, dtype=dtype)


@dataclass
class Recorded:
    """What one traced pass did to memory, in bytes relative to what was live when it started."""
    peak: int                    # the forward's peak
    output: tuple                # the output sample's (shape, stride, dtype)
    rows: list                   # (layer, clip, frame offset, meta) of the anchor rows it kept
    rebuild: Callable            # the UNet's output around a sample
    replayable: bool = True
    with_grad: bool = False      # inputs take gradients through it
    saved: int = 0               # what autograd keeps from forward to backward
    grads: list = field(default_factory=list)  # metas of the inputs' gradients
    backward_peak: int | None = None           # above what was live when the backward reached the UNet

    @property
    def complete(self) -> bool:
        return self.replayable and (not self.with_grad or self.backward_peak is not None)


class WindowKind(NamedTuple):
    """What of a window shapes its pass, relative to its first frame (frame 0 absolute)."""
    frames: tuple        # the window's frames
    starts_clip: bool    # it holds frame 0
    found: tuple         # (frame, whether an earlier window kept its rows) of the anchor and previous frames outside
    kept: tuple          # its frames whose rows it keeps for later windows
    again: tuple         # of those, the frames whose rows were kept before (replaced, the old ones freed)
    clips: tuple         # the clips in the batch


class _Replayed(torch.autograd.Function):
    """A recorded pass with gradients: its output, what autograd kept (one block of bytes, freed by the backward)
    and the backward's peak, then the inputs' gradients."""

    @staticmethod
    def forward(ctx, recorded, tracker, *inputs):
        ctx.recorded, ctx.tracker = recorded, tracker
        ctx.kept = torch.empty(recorded.saved, dtype=torch.uint8)
        return _empty(recorded.output)

    @staticmethod
    def backward(ctx, grad):
        ctx.tracker.reach(ctx.recorded.backward_peak)
        del ctx.kept
        return (None, None, *[_empty(meta) for meta in ctx.recorded.grads])


class ReplayedPasses:
    """Inside: ``unet`` (diffusers' or ComfyUI's, inflated with the hooks of ``context``, a ``FrameContext``) replays
    the passes it has traced before, while an ``AllocationPeak`` is tracking."""

    def __init__(self, unet, context, weights=()):
        self.unet, self.context = unet, context
        self.weights = (unet, *weights)  # modules whose weights must take no gradient for a backward to be replayed
        blocks = transformer_blocks(unet)
        self.first_attention = blocks[0][1].attn1 if blocks else None  # where an attention controller shows
        self.forward = type(self.unet).forward.__get__(self.unet)
        self.memo: dict[tuple, Recorded] = {}
        self.backwards: dict[tuple, Recorded] = {}  # by kind without the anchor rows kept (``_without_kept``)
        self.traced = self.replayed = 0

    def __enter__(self):
        self.unet.forward = self._forward
        return self

    def __exit__(self, *exc):
        del self.unet.forward

    def _forward(self, *args, **kwargs):
        tracker = AllocationPeak.active[-1] if AllocationPeak.active else None
        if tracker is None or not isinstance(args[0], FakeTensor):  # (a measurement on real tensors runs for real)
            return self.forward(*args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        needs_grad = [isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled() for t in leaves]
        key = self._kind(leaves, args[0].shape[0])
        recorded = self.memo.get(key)
        if recorded is not None and recorded.complete:
            self.replayed += 1
            return self._replay(recorded, tracker, [t for t, g in zip(leaves, needs_grad) if g])
        self.traced += 1
        # inputs taking gradients enter as views of their own, so the backward's end is this pass's
        leaves = [t.view_as(t) if g else t for t, g in zip(leaves, needs_grad)]
        args, kwargs = tree_unflatten(leaves, spec)
        out, self.memo[key] = self._record(tracker, [t for t, g in zip(leaves, needs_grad) if g], args, kwargs,
                                           _without_kept(key))
        return out

    def _kind(self, leaves: list, batch: int) -> tuple:
        tensors = tuple(_meta(t) + (t.requires_grad,) if isinstance(t, torch.Tensor) else repr(t) for t in leaves)
        window, anchors = self.context.window, None
        if window is not None:
            start, clips = window.indices[0], window.clip_keys(batch // len(window.indices))
            rows = {(k[1], k[2]) for k in window.anchors.rows}
            found = tuple(sorted((f if f == 0 else f - start, all((c, f) in rows for c in clips))
                                 for f in outside_frames(window.indices)))
            kept = tuple(i - start for i in window.indices if window.anchors.needed(i))
            again = tuple(i for i in kept if all((c, start + i) in rows for c in clips))  # (the old rows are freed)
            anchors = WindowKind(tuple(i - start for i in window.indices), start == 0, found, kept, again, tuple(clips))
        autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
        return tensors, torch.is_grad_enabled(), autocast, self.context.num_frames, anchors, self._controller()

    def _controller(self):
        """The state of the attention controller routing this UNet's attention (a Prompt-to-Prompt edit), if any."""
        control = getattr(getattr(self.first_attention, "processor", None), "controller", None)
        if control is None:
            return None
        steps = control.step < control.cross_stop, control.step < control.self_stop, control.step >= control.blend_from
        blend = control.blend_tokens and tuple(map(tuple, control.blend_tokens))
        return (tuple(sorted(control.maps)), tuple(control.chunks), steps, control.mode, blend,
                control.control.self_control, control.control.self_max_pixels)

    def _record(self, tracker: AllocationPeak, inputs: list, args, kwargs, backward_kind: tuple):
        window = self.context.window
        rows_now = window.anchors.rows if window is not None else {}
        before = {k: (id(v), v.untyped_storage().nbytes()) for k, v in rows_now.items()}
        start, outer = tracker.in_use, tracker.peak
        tracker.peak = start
        out = self.forward(*args, **kwargs)
        peak = tracker.peak - start
        tracker.peak = max(outer, tracker.peak)
        sample = out if isinstance(out, torch.Tensor) else out.sample if hasattr(out, "sample") else out[0]
        new = [(k, v) for k, v in rows_now.items() if before.get(k, (None,))[0] != id(v)]
        rows = [(layer, clip, frame - window.indices[0], _meta(v)) for (layer, clip, frame), v in new]
        replaced = sum(n for k, (i, n) in before.items() if id(rows_now.get(k)) != i)  # (a row kept again frees the old)
        extra = (tracker.in_use - start + replaced
                 - sum(t.untyped_storage().nbytes() for t in [sample, *(v for _, v in new)]))
        rebuild = (_same if isinstance(out, torch.Tensor) else (lambda s: (s,)) if isinstance(out, tuple)
                   else (lambda s, cls=type(out): cls(sample=s)))
        recorded = Recorded(peak, _meta(sample), rows, rebuild, replayable=extra == 0)
        if inputs:  # what the pass kept beyond its output is autograd's, unless weights take gradients or a
            # controller keeps maps
            recorded.with_grad, recorded.saved = True, extra
            recorded.replayable = (extra >= 0 and sample.requires_grad and self._controller() is None
                                   and not any(p.requires_grad for m in self.weights for p in m.parameters()))
            measured = self.backwards.get(backward_kind)
            if recorded.replayable and measured is not None and measured.backward_peak is not None:
                # a backward of this kind ran before: the traced graph goes, a replayed backward stands for it
                recorded.grads, recorded.backward_peak = measured.grads, measured.backward_peak
                del out, sample
                return recorded.rebuild(_Replayed.apply(recorded, tracker, *inputs)), recorded
            if recorded.replayable:
                self.backwards[backward_kind] = recorded
                _measure_backward(recorded, tracker, sample, inputs)
        return out, recorded

    def _replay(self, recorded: Recorded, tracker: AllocationPeak, inputs: list):
        tracker.reach(recorded.peak)
        sample = _Replayed.apply(recorded, tracker, *inputs) if recorded.with_grad else _empty(recorded.output)
        window = self.context.window
        for layer, clip, offset, meta in recorded.rows:
            window.anchors.rows[layer, clip, window.indices[0] + offset] = _empty(meta)
        return recorded.rebuild(sample)


def _measure_backward(recorded: Recorded, tracker: AllocationPeak, sample: torch.Tensor, inputs: list) -> None:
    """Record the backward's peak through the UNet, from the output's gradient to the last input's, and the layout
    of each input's gradient. The tracker's peak is back to the whole trace's at the end of that backward whatever
    happens (a backward that gives some input no gradient leaves the pass unrecorded: it is traced each time)."""
    state = {"grads": [None] * len(inputs)}

    def begin(grad):
        state["start"], state["outer"] = tracker.in_use, tracker.peak
        tracker.peak = state["start"]
        torch.autograd.Variable._execution_engine.queue_callback(finish)

    def end(i, grad):
        state["grads"][i] = _meta(grad)

    def finish():
        if all(g is not None for g in state["grads"]):
            recorded.grads, recorded.backward_peak = state["grads"], tracker.peak - state["start"]
        tracker.peak = max(state["outer"], tracker.peak)
    sample.register_hook(begin)
    for i, t in enumerate(inputs):
        t.register_hook(partial(end, i))


def _without_kept(kind: tuple) -> tuple:
    """A pass's kind as its backward sees it: the anchor rows a window keeps are detached copies, outside the graph,
    so windows that differ only in them run the same backward."""
    tensors, grad, autocast, frames, anchors, controller = kind
    return tensors, grad, autocast, frames, anchors and anchors._replace(kept=None, again=None), controller
