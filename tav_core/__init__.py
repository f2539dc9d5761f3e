"""Tune-A-Video engine: inflate an SD UNet to video, tune it on one clip, invert and edit (no ComfyUI import)."""

from .ddim import invert_ddim, sample_ddim
from .denoiser import DiscreteDenoiser, guided
from .errors import TavError
from .frames import FrameContext
from .inflate import inflate, is_inflated, transformer_blocks
from .models import Components, load_components, load_reference_unet
from .pipeline import TuneAVideo
from .tuning import TuneConfig, tune
from .video import demo_video, read_video, write_video
from .weights import load_tuned, save_tuned, video_parameters

__all__ = ["invert_ddim", "sample_ddim", "DiscreteDenoiser", "guided", "TavError", "FrameContext", "inflate",
           "is_inflated", "transformer_blocks", "Components", "load_components", "load_reference_unet",
           "TuneAVideo", "TuneConfig", "tune", "demo_video", "read_video", "write_video", "load_tuned",
           "save_tuned", "video_parameters"]
