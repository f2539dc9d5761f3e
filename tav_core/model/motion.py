"""AnimateDiff's motion modules on an image UNet: after each ResNet (and its attention) of the down, mid and up
blocks, as diffusers' ``UNetMotionModel`` places them, run as forward hooks while a clip runs through the UNet.

A motion module takes a ``(b f) c h w`` batch and mixes each pixel's features over the clip's frames (a temporal
transformer with a sinusoidal position encoding of at most ``max_frames`` frames); the UNet's own layers stay image
layers. The hooks do nothing outside ``context.frames()``.
"""

from torch import nn

from ..errors import check, plural
from .frames import FrameContext


def _last_layer(sequence: nn.Module, skip: str) -> nn.Module | None:
    """The last layer of one of ComfyUI's ``TimestepEmbedSequential`` that is not a ``skip`` (re)sampler."""
    layers = [m for m in sequence if type(m).__name__ != skip]
    return layers[-1] if layers else None


def unet_layers(unet: nn.Module) -> tuple[list[list[nn.Module]], list[nn.Module], list[list[nn.Module]] | None]:
    """The layers a motion module follows: per down level (flat for ComfyUI's layout, split by the caller), the mid
    attention, per up level. diffusers: each block's attentions (or ResNets); ComfyUI (``input_blocks``...): each
    level's attention (or ResNet), its down/upsampler aside."""
    if hasattr(unet, "down_blocks"):
        level = lambda b: list(getattr(b, "attentions", None) or b.resnets)  # noqa: E731
        return ([level(b) for b in unet.down_blocks], list(unet.mid_block.attentions),
                [level(b) for b in unet.up_blocks])
    down = [layer for seq in list(unet.input_blocks)[1:] if (layer := _last_layer(seq, "Downsample")) is not None]
    up = [_last_layer(seq, "Upsample") for seq in unet.output_blocks]
    mid = [m for m in unet.middle_block if type(m).__name__ == "SpatialTransformer"]
    return [down], mid, [up]


def motion_pairs(unet: nn.Module, adapter: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(the UNet layer whose output a motion module takes, the motion module), in diffusers' order: each down and up
    level's attentions (or ResNets, where a level has none), the mid block's attention (v2). Works on diffusers' and
    ComfyUI's UNet layouts alike."""
    down, mid, up = unet_layers(unet)
    pairs = []
    for levels, blocks in ((down, adapter.down_blocks), (up, adapter.up_blocks)):
        modules = [list(b.motion_modules) for b in blocks]
        layers = [layer for level in levels for layer in level]
        fits = len(layers) == sum(map(len, modules)) and (len(levels) == 1 or list(map(len, levels)) == list(map(len, modules)))
        check(fits, f"the motion module has {len(modules)} levels of {[len(m) for m in modules]} layers where the UNet "
                    f"has {len(layers)} layers: give an SD1.5 module for SD1.5, the SDXL one for SDXL")
        pairs += zip(layers, [m for level in modules for m in level])
    if getattr(adapter, "mid_block", None) is not None:
        check(len(mid) == len(adapter.mid_block.motion_modules), "the motion module's mid block does not fit the UNet")
        pairs += zip(mid, adapter.mid_block.motion_modules)
    for layer, module in pairs:
        width = getattr(layer, "out_channels", None) or getattr(layer, "in_channels", None)
        check(width in (None, module.proj_in.in_features),
              f"the motion module's layers are {module.proj_in.in_features} channels wide where the UNet's are "
              f"{width}: give a module made for this model family (SD1.5's for SD 1.x, the SDXL one for SDXL)")
    return pairs


class MotionHooks:
    """The motion modules of ``adapter`` on ``unet`` while ``context`` runs a clip; ``remove()`` unhooks."""

    def __init__(self, unet: nn.Module, adapter: nn.Module, context: FrameContext, max_frames: int):
        self.context, self.max_frames = context, max_frames
        self.handles = [layer.register_forward_hook(self._hook(module)) for layer, module in motion_pairs(unet, adapter)]

    def _hook(self, module: nn.Module):
        def hook(layer, args, out):
            x = out[0] if isinstance(out, tuple) else out
            frames = self.context.active(x.shape[0])
            if frames is None:
                return out
            check(frames <= self.max_frames, f"the motion module encodes at most {plural(self.max_frames, 'frame')} "
                                             f"and this pass has {frames}: run the clip in frame windows of at most "
                                             f"{self.max_frames}, as AnimateDiff does (editing: --context-length, in "
                                             "ComfyUI a Context Windows node; tuning: --frame-window, One-Shot Tune's "
                                             "frame_window)")
            dtype = next(module.parameters()).dtype  # (a tuned module may be kept in higher precision)
            x = module(x.to(dtype), num_frames=frames).to(x.dtype)
            return (x, *out[1:]) if isinstance(out, tuple) else x
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
