"""What Stable Diffusion's parts look like: the shipped config folders (SD1, SD2, SDXL), the tokenizer and
scheduler they name, and the architecture a memory plan reads without loading any weight."""

from __future__ import annotations  # (the model classes below annotate Components only)

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import CLIPTokenizer

from ..model.conditioning import is_sdxl_unet

if TYPE_CHECKING:  # diffusers' models take seconds to import: ``tuneavideo score`` (the tokenizer only) needs none
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

CONFIGS = Path(__file__).parents[1] / "configs"


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict = field(default_factory=dict)
    text_encoder_2: CLIPTextModelWithProjection | None = None  # SDXL: OpenCLIP bigG, whose pooled output the UNet
    tokenizer_2: CLIPTokenizer | None = None                   # also takes (``is_sdxl``)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def is_sdxl(self) -> bool:
        return is_sdxl_unet(self.unet.config)

    @property
    def text_encoders(self) -> list:
        return [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]


def sd_scheduler_config(sd2: bool = False) -> dict:
    """Stable Diffusion's own DDIM scheduler config (shipped): the schedule, spacing and prediction type."""
    return json.loads((CONFIGS / ("sd2" if sd2 else "sd1") / "scheduler" / "scheduler_config.json").read_text())


def clip_tokenizer(sd2: bool = False) -> CLIPTokenizer:
    """CLIP's BPE tokenizer from the shipped vocabulary; SD2 (OpenCLIP) pads with "!"."""
    return CLIPTokenizer(str(CONFIGS / "clip_tokenizer" / "vocab.json"), str(CONFIGS / "clip_tokenizer" / "merges.txt"),
                         pad_token="!" if sd2 else "<|endoftext|>", model_max_length=77)


@dataclass
class ModelConfigs:
    """The architecture of a model's parts: all a memory plan needs, read without loading any weight."""
    unet: dict
    vae: dict
    text_encoder: dict
    scheduler: dict
    text_encoder_2: dict | None = None
    motion: dict | None = None  # an AnimateDiff motion module's (tav_core.loading.motion.motion_config)

    @classmethod
    def of(cls, components: Components, motion=None) -> "ModelConfigs":
        """The configs of loaded components (and ``motion``: a loaded ``MotionModule`` the pipeline runs with)."""
        from .motion import motion_config  # (the motion loader imports the model code: only for a module's configs)
        second = components.text_encoder_2
        return cls(dict(components.unet.config), dict(components.vae.config), components.text_encoder.config.to_dict(),
                   dict(components.scheduler_config), second.config.to_dict() if second is not None else None,
                   motion_config(motion) if motion is not None else None)

    @classmethod
    def read(cls, folder: str | Path) -> "ModelConfigs":
        """From a diffusers model folder, or a config folder like the shipped SD1.5 ("configs/sd1"), SD2.1 and SDXL
        ones."""
        folder = Path(folder)
        read = lambda part, name="config.json": json.loads((folder / part / name).read_text())
        unet = read("unet")
        return cls(unet, read("vae"), read("text_encoder"), read("scheduler", "scheduler_config.json"),
                   read("text_encoder_2") if is_sdxl_unet(unet) else None)

    @classmethod
    def shipped(cls, family: str = "sd1") -> "ModelConfigs":
        return cls.read(CONFIGS / family)


FOLDER_PARTS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                "scheduler": "scheduler_config.json"}
SDXL_PARTS = FOLDER_PARTS | {"text_encoder_2": "config.json"}


def folder_parts(folder: Path) -> dict[str, str]:
    """The parts a model folder must hold: SDXL's (by its UNet config) has a second text encoder."""
    unet = folder / "unet" / "config.json"
    return SDXL_PARTS if unet.is_file() and is_sdxl_unet(json.loads(unet.read_text())) else FOLDER_PARTS
