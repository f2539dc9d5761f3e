"""Turn an image UNet into a video UNet in place, with hooks and two new modules per transformer block.

Works on any SD UNet whose transformer blocks have ``attn1``/``attn2``/``ff`` with ``to_q/to_k/to_v`` linears
(diffusers' and ComfyUI's alike). Original parameter names stay unchanged; new ones are ``attn_temp.*`` and
``norm_temp.*`` inside each transformer block, as in the reference implementation.
"""

import math
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from ..errors import check
from .attention import (TemporalAttention, check_frame_attention, check_group_norm, clip_group_norm_in,
                        clip_group_norm_out, first_frame, sparse_causal, sparse_causal_window, temporal_residual)
from .frames import FrameContext
from .motion import MotionHooks, motion_pairs

TEMPORAL_MODULES = ("attn_temp", "norm_temp")
TRAINABLE = (".attn1.to_q.", ".attn2.to_q.", ".attn_temp.")


_STAGES = {"down_blocks": 0, "input_blocks": 0, "mid_block": 1, "middle_block": 1, "up_blocks": 2, "output_blocks": 2}


def _stage(name: str) -> int:
    return next((_STAGES[part] for part in name.split(".") if part in _STAGES), 1)


def transformer_blocks(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """The UNet's transformer blocks, down -> middle -> up: the same order in diffusers' and ComfyUI's layouts."""
    blocks = [(name, m) for name, m in unet.named_modules() if all(hasattr(m, a) for a in ("attn1", "attn2", "ff"))]
    return sorted(blocks, key=lambda item: _stage(item[0]))


def clip_norms(unet: nn.Module) -> list[nn.GroupNorm]:
    """GroupNorms of ResNet blocks and the output norm; a transformer's input norm stays per frame."""
    transformers = [name + "." for name, m in unet.named_modules() if hasattr(m, "transformer_blocks")]
    return [m for name, m in unet.named_modules()
            if isinstance(m, nn.GroupNorm) and not any(name.startswith(p) for p in transformers)]


def make_temporal_layers(block: nn.Module, holder: nn.Module | None = None) -> nn.Module:
    """Give ``holder`` (default: the block itself) a ``norm_temp`` and a zero-output ``attn_temp`` sized for
    ``block``; a holder that has them already is kept as it is."""
    holder = block if holder is None else holder
    if not hasattr(holder, "attn_temp"):
        q = block.attn1.to_q
        dim, inner, heads = q.in_features, q.out_features, block.attn1.heads
        like = dict(device=q.weight.device, dtype=q.weight.dtype)
        holder.norm_temp = nn.LayerNorm(dim, **like)
        holder.attn_temp = TemporalAttention(dim, heads, inner // heads, **like)
    return holder


def draw_fresh_temporal(params: dict[str, nn.Parameter], generator: torch.Generator, only_fresh: bool = True) -> None:
    """A temporal attention not tuned yet (its output projection still zero) gets its query, key and value weights
    drawn from the run's seeded generator, as ``nn.Linear`` draws them (uniform within 1/sqrt(fan_in)): the same
    seed starts from the same values in any process and either host, as the reference seeds before building.
    ``only_fresh=False`` draws every block's (a LoRA file's base, drawn again when it loads)."""
    blocks = sorted({k.split(".attn_temp.")[0] for k in params if ".attn_temp." in k}, key=lambda b: int(b.split(".")[1]))
    with torch.no_grad():
        for block in blocks:
            out = params.get(f"{block}.attn_temp.to_out.0.weight")
            if out is None or (only_fresh and bool(out.any())):
                continue
            for projection in ("to_q", "to_k", "to_v"):
                weight = params.get(f"{block}.attn_temp.{projection}.weight")
                if weight is not None:
                    bound = 1 / math.sqrt(weight.shape[1])
                    weight.copy_(torch.empty(weight.shape).uniform_(-bound, bound, generator=generator))


def video_defaults(motion, frame_attention: str | None, group_norm: str | None) -> tuple[str, str]:
    """The frame attention and group norm a video model takes when not told: Tune-A-Video's (sparse-causal, clip
    statistics); with a motion module (``tav_core.loading.motion.MotionModule``) its own AnimateDiff's (per-frame
    attention, and the GroupNorm its version was trained with: clip statistics for v1, per frame for v2/v3/SDXL),
    so the motion prior meets the image features it learnt on and generation equals AnimateDiff's."""
    if motion is None:
        return check_frame_attention(frame_attention or "sparse_causal"), check_group_norm(group_norm or "clip")
    return (check_frame_attention(frame_attention or "per_frame"),
            check_group_norm(group_norm or ("clip" if motion.version == "v1" else "frame")))


class TemporalLayers(nn.Module):
    """The temporal layers of a UNet kept outside it (ComfyUI shares one UNet among MODELs); state-dict keys
    ``blocks.{i}.norm_temp.*`` / ``blocks.{i}.attn_temp.*`` match the tuned-weights files. With a motion module
    (``tav_core.loading.motion.MotionModule``) that module is the temporal layers instead, under ``motion.*``."""

    def __init__(self, unet: nn.Module, frame_attention: str | None = None, motion=None, group_norm: str | None = None):
        super().__init__()
        blocks = transformer_blocks(unet) if motion is None else []
        self.blocks = nn.ModuleList(make_temporal_layers(b, nn.Module()) for _, b in blocks)
        # part of the video model: tuned with it
        self.frame_attention, self.group_norm = video_defaults(motion, frame_attention, group_norm)
        self.motion_module = motion
        if motion is not None:
            self.motion = motion.adapter

    def pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return temporal_pairs(self.blocks)

    def video(self, inflation: "Inflation", num_frames: int, window=None):
        """``inflation.video`` with these layers, their frame attention and group norm."""
        return inflation.video(num_frames, self.pairs(), window, self.frame_attention, self.group_norm,
                               self.motion_module)


def temporal_pairs(holders) -> list[tuple[nn.Module, nn.Module]]:
    """(norm_temp, attn_temp) of each holder, the form ``Inflation`` takes."""
    return [(h.norm_temp, h.attn_temp) for h in holders]


def is_trainable(name: str) -> bool:
    """Tune-A-Video tunes the query projections of both attentions and all of the temporal attention."""
    return any(t in "." + name for t in TRAINABLE)


class Inflation:
    """Hooks that make one UNet a video model while a clip runs through it (``video()``), an image model
    otherwise. ``temporal`` holds each transformer block's (norm_temp, attn_temp); ``frame_attention`` what the
    self-attention looks at (``attention.FRAME_ATTENTION``); ``group_norm`` what the ResNets' GroupNorms take
    statistics over (``attention.GROUP_NORMS``); ``motion`` an AnimateDiff motion module
    (``tav_core.loading.motion.MotionModule``) whose hooks run inside ``video()``; ``remove()`` unhooks."""

    def __init__(self, unet: nn.Module, context: FrameContext,
                 temporal: list[tuple[nn.Module, nn.Module]] | None = None, frame_attention: str = "sparse_causal",
                 group_norm: str = "clip", motion=None):
        self.unet, self.context = unet, context
        self.temporal, self.motion = temporal, motion
        self.frame_attention = check_frame_attention(frame_attention)
        self.group_norm = check_group_norm(group_norm)
        self.motion_hooks = None  # the MotionHooks of the motion module running now
        self.handles = []
        blocks = transformer_blocks(unet)
        check(bool(blocks), f"{type(unet).__name__} has no transformer blocks with attn1/attn2/ff; "
                            "give a Stable Diffusion 1.x/2.x or SDXL UNet")
        for i, (_, block) in enumerate(blocks):
            for proj in (block.attn1.to_k, block.attn1.to_v):
                self.handles.append(proj.register_forward_hook(self._sparse_causal))
            self.handles.append(block.register_forward_hook(partial(self._temporal, i)))
        for norm in clip_norms(unet):
            self.handles.append(norm.register_forward_pre_hook(self._norm_in))
            self.handles.append(norm.register_forward_hook(self._norm_out))

    @contextmanager
    def video(self, num_frames: int, temporal: list[tuple[nn.Module, nn.Module]] | None = None, window=None,
              frame_attention: str | None = None, group_norm: str | None = None, motion=None):
        """Run clips of ``num_frames`` frames inside this block (with these temporal layers, frame attention, group
        norm and motion module, if given); ``window`` (``tav_core.sampling.windows.Window``): the frames are that
        window of a longer clip. Nested blocks (a window inside a clip) share the outer block's motion hooks."""
        previous = self.temporal, self.frame_attention, self.group_norm, self.motion
        frame_attention = check_frame_attention(frame_attention or self.frame_attention)
        group_norm = check_group_norm(group_norm or self.group_norm)
        motion = self.motion if motion is None else motion
        hooks = None
        if motion is not None and self.motion_hooks is None:  # (made first: a module that does not fit changes nothing)
            hooks = self.motion_hooks = MotionHooks(self.unet, motion.adapter, self.context, motion.max_frames)
        self.temporal = self.temporal if temporal is None else temporal
        self.frame_attention, self.group_norm, self.motion = frame_attention, group_norm, motion
        try:
            with self.context.frames(num_frames, window):
                yield self
        finally:
            if hooks is not None:
                hooks.remove()
                self.motion_hooks = None
            self.temporal, self.frame_attention, self.group_norm, self.motion = previous

    def _sparse_causal(self, module, args, out):
        f = self.context.active(out.shape[0])
        if self.frame_attention == "per_frame":
            return out  # each frame attends to itself, as the image model
        first_only = self.frame_attention == "first_frame"
        if self.context.window is not None:
            return sparse_causal_window(out, self.context.window, module, first_only)
        if f in (None, 1):
            return out  # one frame: [f0 ‖ f0] (or f0) attends like f0 alone
        return first_frame(out, f) if first_only else sparse_causal(out, f)

    def _temporal(self, index, block, args, out):
        f = self.context.active(out.shape[0])
        if f is None or not self.temporal:
            return out
        norm, attn = self.temporal[index]
        return temporal_residual(out, norm, attn, f)

    def _norm_in(self, module, args):
        f = self.context.active(args[0].shape[0])
        return None if f in (None, 1) or self.group_norm == "frame" else (clip_group_norm_in(args[0], f), *args[1:])

    def _norm_out(self, module, args, out):
        f = self.context.num_frames
        return out if f in (None, 1) or self.group_norm == "frame" else clip_group_norm_out(out, f)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def inflate(unet: nn.Module, context: FrameContext | None = None, frame_attention: str | None = None,
            motion=None, group_norm: str | None = None) -> Inflation:
    """Inflate ``unet`` in place (idempotent): temporal layers inside its blocks, as in the reference, or (``motion``:
    a ``tav_core.loading.motion.MotionModule``) an AnimateDiff motion module as the temporal layers. ``frame_attention``
    and ``group_norm`` (defaults: ``video_defaults``) also apply when inflated already; the temporal layers cannot change.

    Returns its ``Inflation`` (also ``unet.tav_inflation``).
    """
    existing = getattr(unet, "tav_inflation", None)
    if existing is not None:
        check(motion is None or (existing.motion is not None and existing.motion.fingerprint == motion.fingerprint),
              "this UNet was inflated with other temporal layers than the motion module given; load the model again "
              "for another motion module")
        if frame_attention is not None:
            existing.frame_attention = check_frame_attention(frame_attention)
        if group_norm is not None:
            existing.group_norm = check_group_norm(group_norm)
        return existing
    frame_attention, group_norm = video_defaults(motion, frame_attention, group_norm)
    if motion is not None:
        motion_pairs(unet, motion.adapter)  # a module that does not fit this UNet is refused now, naming both
    temporal = None if motion is not None else \
        temporal_pairs(make_temporal_layers(block) for _, block in transformer_blocks(unet))
    inflation = Inflation(unet, context or FrameContext(), temporal, frame_attention, group_norm, motion)
    unet.tav_inflation = inflation
    return inflation


def is_inflated(unet: nn.Module) -> bool:
    return getattr(unet, "tav_inflation", None) is not None
