"""Colour drift: how far each frame's mean colour moves from the source's over the clip, in CIELAB (D65), where a
distance of about 2 is the smallest difference people notice side by side (CIE76 delta E).

The mean is taken of each pixel's Lab colour (not Lab of the mean RGB), so a frame's colour is what it looks like on
average. sRGB to Lab follows IEC 61966-2-1 (the sRGB curve) and CIE 15 (the Lab formulas, D65 white, 2-degree
observer) with the constants scikit-image's ``rgb2lab`` uses, so the two agree to float rounding.
"""

import numpy as np
import torch

from ..errors import check

# linear sRGB -> CIE XYZ (D65) and the D65 white point (Y = 1), as scikit-image states them
SRGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
EPSILON, KAPPA = 0.008856, 7.787  # CIE's linear segment near black: (6/29)^3 and (29/6)^2 / 3, rounded as skimage does


def srgb_to_lab(rgb) -> torch.Tensor:
    """uint8 (..., 3) sRGB -> (..., 3) CIELAB (L 0-100), float64."""
    c = torch.as_tensor(np.asarray(rgb)).double() / 255
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    t = (linear @ SRGB_TO_XYZ.T) / D65
    f = torch.where(t > EPSILON, t.clamp(min=EPSILON) ** (1 / 3), KAPPA * t + 16 / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """(..., 3) CIELAB -> (..., 3) sRGB in [0, 1] (unclamped), float64: ``srgb_to_lab``'s inverse."""
    lab = torch.as_tensor(lab).double()
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    t = torch.where(f > 0.2068966, f ** 3, (f - 16 / 116) / KAPPA)
    linear = (t * D65) @ torch.linalg.inv(SRGB_TO_XYZ).T
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear.clamp(min=0) ** (1 / 2.4) - 0.055)


def mean_lab(frames) -> torch.Tensor:
    """Each frame's mean Lab colour: uint8 (frames, H, W, 3) -> (frames, 3)."""
    frames = np.asarray(frames)
    check(frames.ndim == 4 and frames.shape[-1] == 3, f"frames must be (frames, height, width, 3), got {frames.shape}")
    return torch.stack([srgb_to_lab(f).reshape(-1, 3).mean(0) for f in frames])


def colour_drift(source, edit) -> torch.Tensor:
    """Per frame: the CIE76 distance of the edit's mean Lab colour from the source's (frames,)."""
    a, b = mean_lab(source), mean_lab(edit)
    check(a.shape == b.shape, f"source and edit have {len(a)} and {len(b)} frames; read the source with the edit's "
                              "frames")
    return (a - b).norm(dim=-1)


def drift_summary(drift: torch.Tensor) -> dict:
    """Mean, first and last frame's drift, and its least-squares slope per frame (0 for one frame)."""
    n = len(drift)
    x = torch.arange(n, dtype=torch.float64)
    slope = float(((x - x.mean()) * (drift - drift.mean())).sum() / ((x - x.mean()) ** 2).sum()) if n > 1 else 0.0
    return {"colour_drift": float(drift.mean()), "colour_drift_first": float(drift[0]),
            "colour_drift_last": float(drift[-1]), "colour_drift_slope": slope}
