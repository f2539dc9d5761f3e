"""Tune-A-Video engine: inflate an SD UNet to video, tune it on one clip, invert and edit (no ComfyUI import).

Names are imported on first use, so ``tuneavideo --help`` and the error paths start without torch.
"""

from importlib import import_module

_EXPORTS = {
    "ddim": ["invert_ddim", "sample_ddim"],
    "denoiser": ["DiscreteDenoiser", "guided"],
    "errors": ["TavError"],
    "frames": ["FrameContext"],
    "inflation": ["inflate", "is_inflated", "transformer_blocks"],
    "models": ["Components", "load_components", "load_reference_unet"],
    "pipeline": ["TuneAVideo"],
    "tuning": ["TuneConfig", "tune"],
    "video": ["demo_video", "read_video", "write_video"],
    "weights": ["load_tuned", "save_tuned", "video_parameters"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'tav_core' has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
