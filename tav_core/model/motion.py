"""AnimateDiff's motion modules on an image UNet: after each ResNet (and its attention) of the down, mid and up
blocks, as diffusers' ``UNetMotionModel`` places them, run as forward hooks while a clip runs through the UNet.

A motion module takes a ``(b f) c h w`` batch and mixes each pixel's features over the clip's frames (a temporal
transformer with a sinusoidal position encoding of at most ``max_frames`` frames); the UNet's own layers stay image
layers. The hooks do nothing outside ``context.frames()``.
"""

from torch import nn

from ..errors import check, plural
from .frames import FrameContext


def motion_pairs(unet: nn.Module, adapter: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(the UNet layer whose output a motion module takes, the motion module), in diffusers' order: each down and up
    block's attentions (or ResNets, where a block has none), the mid block's attention (v2)."""
    pairs = []
    for blocks, modules in ((unet.down_blocks, adapter.down_blocks), (unet.up_blocks, adapter.up_blocks)):
        check(len(blocks) == len(modules), f"the motion module has {len(modules)} blocks where the UNet has "
                                           f"{len(blocks)}: give an SD1.5 module for SD1.5, the SDXL one for SDXL")
        for block, motion in zip(blocks, modules):
            layers = getattr(block, "attentions", None) or block.resnets
            check(len(layers) == len(motion.motion_modules), "the motion module's layers do not match the UNet's: "
                                                             "give a module made for this model family")
            pairs += zip(layers, motion.motion_modules)
    if getattr(adapter, "mid_block", None) is not None:
        pairs += zip(unet.mid_block.attentions, adapter.mid_block.motion_modules)
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
                                             f"{self.max_frames} (--context-length), as AnimateDiff does")
            x = module(x, num_frames=frames)
            return (x, *out[1:]) if isinstance(out, tuple) else x
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
