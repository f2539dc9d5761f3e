"""Tune-A-Video engine: inflate an SD UNet to video, tune it on one clip, invert and edit (no ComfyUI import).

Grouped by pipeline stage; a module imports only from its own layer or the layers before it in ``LAYERS`` (a test
reads the imports): the shared leaves (errors, files, precision, video...), then ``model`` (frames, attention,
inflation, conditioning), ``sampling`` (schedule, denoiser, DDIM, frame windows), ``loading`` (configs,
checkpoints, tuned weights, the reference layout), ``tuning``, ``editing`` (prompt alignment, attention control,
null text, the pipeline, edits), ``memory`` (trace, stages, fit, host), ``scoring`` and ``cli``.
Names are imported on first use, so ``tuneavideo --help`` and the error paths start without torch.
"""

from importlib import import_module

LAYERS = (
    ("errors", "choices", "options", "precision", "files", "charts", "video", "example_clip"),
    ("model",),
    ("sampling",),
    ("loading",),
    ("tuning",),
    ("editing",),
    ("memory",),
    ("scoring",),
    ("cli", "__main__", "__init__"),
)

_EXPORTS = {
    "errors": ["TavError"],
    "video": ["demo_video", "read_video", "write_video"],
    "model.frames": ["FrameContext"],
    "model.inflation": ["inflate", "is_inflated", "transformer_blocks"],
    "sampling.ddim": ["invert_ddim", "sample_ddim"],
    "sampling.denoiser": ["DiscreteDenoiser", "guided"],
    "loading.configs": ["Components"],
    "loading.checkpoints": ["load_components"],
    "loading.reference": ["load_reference_unet"],
    "loading.motion": ["load_motion_module"],
    "loading.tuned": ["load_tuned", "save_tuned", "video_parameters"],
    "tuning.tune": ["TuneConfig", "tune"],
    "editing.pipeline": ["TuneAVideo"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'tav_core' has no attribute {name!r}")
    return getattr(import_module(f".{_MODULE_OF[name]}", __name__), name)
