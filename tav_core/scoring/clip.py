"""CLIP image and text embeddings from a local CLIP model folder (transformers ``CLIPModel``), fully offline.

The folder is the user's: e.g. openai/clip-vit-large-patch14 as downloaded (config.json + weights; the tokenizer
files are used when present, else the shipped CLIP vocabulary). Nothing is fetched.
"""

from pathlib import Path

import numpy as np
import torch
from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

from ..errors import TavError, check, summary
from ..loading.configs import clip_tokenizer


def clip_processor(size: int, folder: Path | None = None) -> CLIPImageProcessor:
    """The image half of transformers' ``CLIPProcessor``, which papers' CLIP scores use: the folder's own settings
    (preprocessor_config.json), else CLIP's at ``size``: shortest side to ``size`` (PIL bicubic on the 8-bit
    frame), centre crop, rescale to [0, 1], normalise with CLIP's mean and std."""
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        return CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def clip_pixels(frames: np.ndarray, processor: CLIPImageProcessor, **options) -> torch.Tensor:
    """uint8 (frames, H, W, 3) -> the vision tower's input (frames, 3, size, size); ``options`` override the
    processor's settings for this call."""
    pixels = processor(images=list(np.asarray(frames)), input_data_format="channels_last", return_tensors="pt",
                       **options)
    return pixels.pixel_values


def clip_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 frames resized and cropped as ``clip_pixels`` does but not normalised, (frames, size, size, 3) in
    [0, 1] (multiples of 1/255), for a host whose image encoder normalises them itself."""
    return clip_pixels(frames, clip_processor(size), do_normalize=False).permute(0, 2, 3, 1)


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
        self.processor = clip_processor(self.model.config.vision_config.image_size, folder)

    @torch.no_grad()
    def images(self, frames: np.ndarray, batch: int = 16) -> torch.Tensor:
        """Projected image embeddings of uint8 frames: (frames, dims)."""
        pixels = clip_pixels(frames, self.processor)
        return torch.cat([self.model.get_image_features(pixel_values=p.to(self.device)).float().cpu()
                          for p in pixels.split(batch)])

    @torch.no_grad()
    def vision(self, frames: np.ndarray, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected image embeddings, the vision tower's pooled output before the projection) of uint8 frames:
        the first is what ``images`` gives, the second what V2VBench's consistency reads (``CLIPVisionModel``'s
        ``pooler_output``), from one pass."""
        pixels = clip_pixels(frames, self.processor)
        projected, pooled = [], []
        for p in pixels.split(batch):
            out = self.model.vision_model(pixel_values=p.to(self.device)).pooler_output
            pooled.append(out.float().cpu())
            projected.append(self.model.visual_projection(out).float().cpu())
        return torch.cat(projected), torch.cat(pooled)

    @torch.no_grad()
    def text(self, prompt: str) -> torch.Tensor:
        """Projected text embedding of a prompt: (1, dims)."""
        ids = self.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        return self.model.get_text_features(input_ids=ids.to(self.device)).float().cpu()
