"""The host's context windows (``Context Windows (Manual)``, ``comfy.context_windows``) on an inflated MODEL.

The host's handler cuts the latent batch into windows and fuses their outputs; what it cannot express is Tune-A-
Video's sparse-causal attention across windows (every frame attends to the clip's frame 0 and its own previous
frame) and a batch holding two branches of a clip (a Prompt-to-Prompt edit). ``AnchoredContextHandler`` is the
host's handler with its settings (schedule, length, overlap, stride, loop, fuse method) that runs each window with
the anchor cache of ``tav_core.sampling.windows`` and both branches, and gives a ControlNet each window's own hint frames.
An inflated MODEL's sampling swaps it in for the host's handler (an OUTER_SAMPLE wrapper), so the stock KSampler,
DDIM Invert and Video KSampler all honour it; Null-Text Invert runs the same windows through ``HostWindows``.
"""

from contextlib import contextmanager

import torch

from ..tav_core.errors import check
from ..tav_core.sampling.windows import AnchorCache, Window, normalised
from . import host
from .edit_plan import clips_per_chunk

KEY = "tav_window"  # transformer_options entry: the ``Window`` a UNet call runs on


def relative_weights(window: list[int]) -> list[float]:
    """The host's "relative" fusion, a running average weighted by each frame's nearness to the window's centre, is
    the weighted average with these weights."""
    centre, half = (window[0] + window[-1]) / 2, (window[-1] - window[0] + 1e-2) / 2
    return [max(1e-2, 1 - abs(i - centre) / half) for i in window]


class HostWindows:
    """The windows and normalised fuse weights a host handler gives a clip: ``plan(frames)`` as
    ``tav_core.sampling.windows.ContextWindows.plan``."""

    def __init__(self, handler: host.context_windows.IndexListContextHandler, model_options: dict | None = None):
        check(handler.dim == 0, f"context windows on dim {handler.dim}: an SD MODEL's frames are its latent batch, "
                                "dim 0; set dim to 0 in Context Windows (Manual)")
        self.handler, self.model_options = handler, model_options or {}

    def __repr__(self) -> str:
        """What decides the windows (a plan kept on disk is keyed by it): the handler's schedule and settings."""
        h = self.handler
        return (f"HostWindows({h.context_schedule.name}, length={h.context_length}, overlap={h.context_overlap}, "
                f"stride={h.context_stride}, closed_loop={h.closed_loop}, fuse={h.fuse_method.name})")

    @property
    def length(self) -> int:
        return self.handler.context_length

    def windows(self, frames: int) -> list[list[int]]:
        if frames <= self.handler.context_length:
            return [list(range(frames))]
        return [list(w) for w in self.handler.context_schedule.func(frames, self.handler, self.model_options)]

    def plan(self, frames: int) -> list[tuple[list[int], torch.Tensor]]:
        windows = self.windows(frames)
        left_out = sorted(set(range(frames)).difference(*windows))
        check(not left_out, f"the context windows leave frames {left_out} out; use a schedule that covers every frame")
        weights = []
        for w in windows:
            if self.handler.fuse_method.name == host.context_windows.ContextFuseMethods.RELATIVE:
                weights.append(torch.tensor(relative_weights(w), dtype=torch.float64))
            else:
                raw = host.context_windows.get_context_weights(len(w), frames, w, self.handler)
                weights.append(torch.as_tensor(raw, dtype=torch.float64))
        return normalised(windows, weights, frames)


def controlnets(conds) -> list:
    """Every ControlNet of the conditionings, each once: the ones applied and those chained before them."""
    out = []
    for cond_list in conds:
        for cond in cond_list or []:
            control = cond.get("control")
            while control is not None:
                if control not in out:
                    out.append(control)
                control = getattr(control, "previous_controlnet", None)
    return out


@contextmanager
def window_hints(controls: list, frames: int, window: list[int]):
    """While inside, a ControlNet with one hint per frame has the window's hints (the host would give every window
    the clip's first ones)."""
    saved = []
    for control in controls:
        hint = getattr(control, "cond_hint_original", None)
        if hint is not None and hint.shape[0] == frames > 1:
            saved.append((control, hint))
            control.cond_hint_original, control.cond_hint = hint[window], None
    try:
        yield
    finally:
        for control, hint in saved:
            control.cond_hint_original, control.cond_hint = hint, None


class AnchoredContextHandler(host.context_windows.IndexListContextHandler):
    """The host's index-list handler (same settings) running windows as Tune-A-Video needs them."""

    @classmethod
    def like(cls, handler: host.context_windows.IndexListContextHandler) -> "AnchoredContextHandler":
        new = cls(handler.context_schedule, handler.fuse_method, handler.context_length, handler.context_overlap,
                  handler.context_stride, handler.closed_loop, handler.dim)
        new.callbacks = handler.callbacks
        return new

    @staticmethod
    def branches(model_options: dict) -> int:
        return clips_per_chunk(model_options.get("transformer_options", {}))

    def set_step(self, timestep, model_options):
        """The step of this sigma (the host compares a whole batch of sigmas, one per frame, and fails for SD)."""
        super().set_step(timestep.flatten()[:1], model_options)

    def should_use_context(self, model, conds, x_in, timestep, model_options) -> bool:
        return x_in.shape[0] // self.branches(model_options) > self.context_length

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        self.set_step(timestep, model_options)
        branches = self.branches(model_options)
        frames = x_in.shape[0] // branches
        plan = HostWindows(self, model_options).plan(frames)
        anchors = AnchorCache([w for w, _ in plan])
        options = model_options["transformer_options"]
        edit = options.get("tav_edit")
        controller = edit.controller if edit is not None else None
        controls = controlnets(conds)
        out = [torch.zeros_like(x_in) for _ in conds]
        try:
            for window, weights in plan:
                host.model_management.throw_exception_if_processing_interrupted()
                rows = [b * frames + i for b in range(branches) for i in window]
                host_window = host.context_windows.IndexListContextWindow(rows, dim=0)
                options["context_window"], options[KEY] = host_window, Window(window, anchors)
                if controller is not None:
                    controller.follow_window(window, weights)
                sub_conds = [self.get_resized_cond(c, x_in, host_window) for c in conds]
                with window_hints(controls, frames, window):
                    sub_out = calc_cond_batch(model, sub_conds, x_in[rows], timestep[rows], model_options)
                scale = weights.repeat(branches).to(x_in).view(-1, *[1] * (x_in.ndim - 1))
                for total, part in zip(out, sub_out):
                    total.index_add_(0, torch.tensor(rows, device=x_in.device), part.to(total) * scale)
                anchors.done(window)
        finally:
            options.pop(KEY, None)
            options.pop("context_window", None)
            if controller is not None:
                controller.window = None
        return out


def anchor_host_windows(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper of an inflated MODEL: while it samples, the host's context windows run anchored."""
    guider = executor.class_obj
    handler = guider.model_options.get("context_handler")
    if isinstance(handler, host.context_windows.IndexListContextHandler) and not isinstance(handler, AnchoredContextHandler):
        HostWindows(handler)  # refuses windows on another dim
        guider.model_options = {**guider.model_options, "context_handler": AnchoredContextHandler.like(handler)}
    return executor(*args, **kwargs)
