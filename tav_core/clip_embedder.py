"""CLIP image and text embeddings from a local CLIP model folder (transformers ``CLIPModel``), fully offline.

The folder is the user's: e.g. openai/clip-vit-large-patch14 as downloaded (config.json + weights; the tokenizer
files are used when present, else the shipped CLIP vocabulary). Nothing is fetched.
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from .errors import TavError, check, summary
from .models import clip_tokenizer

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(frames: np.ndarray, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """uint8 (frames, H, W, 3) -> CLIP's input: shortest side to ``size`` (bicubic, antialiased), centre crop,
    normalised. (frames, 3, size, size)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
    scale = size / min(x.shape[2:])
    x = F.interpolate(x, size=(round(x.shape[2] * scale), round(x.shape[3] * scale)), mode="bicubic", antialias=True)
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    x = x[:, :, top:top + size, left:left + size].clamp(0, 1)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class ClipEmbedder:
    def __init__(self, folder: str | Path, device: str | torch.device = "cpu"):
        folder = Path(folder)
        check((folder / "config.json").is_file(), f"CLIP folder {folder} has no config.json; give a local CLIP model "
                                                   "folder (e.g. openai/clip-vit-large-patch14 as downloaded)")
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().to(device)
        except Exception as e:  # noqa: BLE001  (corrupt weights fail in many ways; each is this one message)
            raise TavError(f"could not load the CLIP model in {folder} ({summary(e)}); it must be a transformers "
                           "CLIPModel folder (vision and text towers)") from e
        self.device = torch.device(device)
        self.tokenizer = (CLIPTokenizer.from_pretrained(folder, local_files_only=True)
                          if (folder / "vocab.json").is_file() else clip_tokenizer())
        processor = folder / "preprocessor_config.json"
        settings = json.loads(processor.read_text()) if processor.is_file() else {}
        self.mean, self.std = settings.get("image_mean", CLIP_MEAN), settings.get("image_std", CLIP_STD)
        self.size = self.model.config.vision_config.image_size

    @torch.no_grad()
    def images(self, frames: np.ndarray, batch: int = 16) -> torch.Tensor:
        """Projected image embeddings of uint8 frames: (frames, dims)."""
        pixels = clip_pixels(frames, self.size, self.mean, self.std)
        return torch.cat([self.model.get_image_features(pixel_values=p.to(self.device)).float().cpu()
                          for p in pixels.split(batch)])

    @torch.no_grad()
    def text(self, prompt: str) -> torch.Tensor:
        """Projected text embedding of a prompt: (1, dims)."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return self.model.get_text_features(input_ids=ids.to(self.device)).float().cpu()
