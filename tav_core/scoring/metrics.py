"""How good an edit is, in the numbers papers report: small functions of embeddings (any CLIP-like embedder) and
of uint8 frames (frames, height, width, 3).

* frame consistency: mean cosine similarity of the frames' image embeddings over all pairs, x100 (Tune-A-Video's
  Table 1: 92.40), or over consecutive frames (V2VBench: 0.917 for Tune-A-Video, here x100 as well);
* text alignment: mean CLIP score of each frame against the edit prompt, CLIP score = max(100 cos, 0) per frame
  (the paper: 27.58), or the mean clamped instead (``clamp="mean"``: torchmetrics' ``CLIPScore`` given the frames as
  one batch; the two differ only where some cosines are negative);
* V2VBench's (``v2vbench_*``): frame consistency on the vision tower's pooled output before the projection, over
  consecutive frames, each cosine clamped at 0, not scaled (0-1); text alignment 100 cos per frame, not clamped;
* preservation of the source: PSNR and SSIM per frame, optionally only inside or outside a mask; SSIM over the whole
  frame, borders reflect-padded (torchmetrics), or without the border its window overhangs (``"skimage"``).
"""

import math

import torch
import torch.nn.functional as F

from ..choices import CLIP_CLAMPS, SSIM_CONVENTIONS
from ..errors import check

SSIM_WINDOW = 11
SSIM_BORDER = SSIM_WINDOW // 2  # pixels the window overhangs the frame at its edges


def _unit(embeds: torch.Tensor) -> torch.Tensor:
    check(embeds.ndim == 2 and len(embeds) >= 1, f"embeddings must be (frames, dims), got {tuple(embeds.shape)}")
    return F.normalize(embeds.double(), dim=-1)


def frame_consistency(image_embeds: torch.Tensor) -> float:
    """Mean cosine over all pairs of frames, x100 (needs 2 or more frames)."""
    e = _unit(image_embeds)
    check(len(e) >= 2, "frame consistency needs at least 2 frames")
    cos = e @ e.T
    pairs = torch.triu_indices(len(e), len(e), offset=1)
    return float(cos[pairs[0], pairs[1]].mean() * 100)


def consecutive_consistency(image_embeds: torch.Tensor) -> float:
    """Mean cosine of each frame with the next, x100 (V2VBench's temporal consistency)."""
    e = _unit(image_embeds)
    check(len(e) >= 2, "frame consistency needs at least 2 frames")
    return float((e[:-1] * e[1:]).sum(-1).mean() * 100)


def neighbour_consistency(image_embeds: torch.Tensor) -> torch.Tensor:
    """Per frame: mean cosine with the frames before and after it, x100 (what a per-frame chart shows)."""
    e = _unit(image_embeds)
    check(len(e) >= 2, "frame consistency needs at least 2 frames")
    step = (e[:-1] * e[1:]).sum(-1)  # cos(i, i+1)
    total = torch.zeros(len(e), dtype=e.dtype).index_add(0, torch.arange(len(e) - 1), step)
    total = total.index_add(0, torch.arange(1, len(e)), step)
    count = torch.full((len(e),), 2.0, dtype=e.dtype)
    count[0] = count[-1] = 1.0
    return (total / count * 100).float()


def v2vbench_frame_consistency(pooled: torch.Tensor) -> float:
    """V2VBench's CLIP consistency: mean over consecutive frames of max(cos, 0) of the vision tower's pooled outputs
    (before the projection), 0-1."""
    e = _unit(pooled)
    check(len(e) >= 2, "frame consistency needs at least 2 frames")
    return float((e[:-1] * e[1:]).sum(-1).clamp(min=0).mean())


def v2vbench_text_alignment(image_embeds: torch.Tensor, text_embed: torch.Tensor) -> float:
    """V2VBench's CLIP text alignment: mean over frames of 100 cos (its CLIP's logit scale, 100), not clamped."""
    return float(_cosines(image_embeds, text_embed).mean())


def _cosines(image_embeds: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """Per frame: 100 cos of its embedding with the prompt's (float64, not clamped)."""
    e, t = _unit(image_embeds), _unit(text_embed.reshape(1, -1))
    check(e.shape[1] == t.shape[1], f"image embeddings have {e.shape[1]} dims but the text embedding {t.shape[1]}: "
                                    "they come from different CLIP models; use a matching image and text tower")
    return 100 * (e @ t.T).squeeze(1)


def clip_scores(image_embeds: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """Per frame: CLIP score against the prompt, max(100 cos, 0)."""
    return _cosines(image_embeds, text_embed).clamp(min=0).float()


def text_alignment(image_embeds: torch.Tensor, text_embed: torch.Tensor, clamp: str = "frame") -> float:
    """Mean CLIP score of the frames against the prompt; ``clamp`` (CLIP_CLAMPS): at 0 per frame, or the mean."""
    check(clamp in CLIP_CLAMPS, f"CLIP score clamp {clamp!r} is not one of {CLIP_CLAMPS}")
    if clamp == "frame":
        return float(clip_scores(image_embeds, text_embed).mean())
    return max(float(_cosines(image_embeds, text_embed).mean()), 0.0)


def _pair(source, edit, mask):
    a, b = (torch.as_tensor(x).double() for x in (source, edit))
    check(a.ndim == 4 and a.shape[-1] == 3 and a.shape == b.shape,
          f"source and edit must be frames of one shape (frames, height, width, 3), got {tuple(a.shape)} and "
          f"{tuple(b.shape)}; read the source with the edit's frames and size")
    if mask is None:
        return a, b, torch.ones(a.shape[:3], dtype=torch.bool)
    m = torch.as_tensor(mask).bool()
    check(m.shape in (a.shape[1:3], a.shape[:3]), f"mask must be (height, width) or (frames, height, width) of the "
                                                  f"frames, got {tuple(m.shape)} for frames {tuple(a.shape[:3])}")
    m = m.expand(a.shape[:3])
    check(bool(m.flatten(1).any(1).all()), "the mask region is empty in at least one frame; nothing to compare there")
    return a, b, m


def psnr(source, edit, mask=None) -> torch.Tensor:
    """Per frame: 10 log10(255^2 / MSE) over the pixels in ``mask`` (all channels); inf for identical frames."""
    a, b, m = _pair(source, edit, mask)
    mse = (((a - b) ** 2).mean(-1) * m).flatten(1).sum(1) / m.flatten(1).sum(1)
    return torch.where(mse == 0, torch.tensor(math.inf, dtype=mse.dtype), 10 * torch.log10(255.0 ** 2 / mse)).float()


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(source, edit) -> torch.Tensor:
    """SSIM of every pixel, averaged over RGB: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5),
    K1 0.01, K2 0.03, data range 255, reflect padding at the borders. (frames, height, width)."""
    a, b, _ = _pair(source, edit, None)
    check(min(a.shape[1:3]) >= 6, f"frames of {a.shape[2]}x{a.shape[1]} are too small for SSIM's 11x11 window")
    x, y = (t.permute(0, 3, 1, 2).reshape(-1, 1, *t.shape[1:3]) for t in (a, b))  # (frames*3, 1, h, w)
    window = _gaussian_window()[None, None]

    def blur(t):
        return F.conv2d(F.pad(t, (SSIM_BORDER,) * 4, mode="reflect"), window)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.reshape(len(a), 3, *a.shape[1:3]).mean(1)


def ssim(source, edit, mask=None, convention: str = "whole_frame") -> torch.Tensor:
    """Per frame: mean SSIM over the pixels in ``mask`` (windows still see the whole frame); ``convention``
    (SSIM_CONVENTIONS) "skimage" leaves out the border where the window overhangs the frame, as scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` does."""
    check(convention in SSIM_CONVENTIONS, f"SSIM convention {convention!r} is not one of {SSIM_CONVENTIONS}")
    _, _, m = _pair(source, edit, mask)
    s = ssim_map(source, edit)
    if convention == "skimage":
        b = SSIM_BORDER
        m = m.clone()
        m[:, :b], m[:, -b:], m[:, :, :b], m[:, :, -b:] = False, False, False, False
        check(bool(m.flatten(1).any(1).all()), f"no pixel of the region is {b} pixels inside the frame: SSIM's "
                                               "skimage convention has nothing to average; use whole_frame")
    return ((s * m).flatten(1).sum(1) / m.flatten(1).sum(1)).float()
