"""An edit's report: the paper's CLIP numbers and how well the source is preserved, as a dict, a table, JSON
and a per-frame chart. Works on embeddings from any embedder (``ClipEmbedder`` headless, ComfyUI's models)."""

import json
import math

import numpy as np
import torch

from ..charts import line_chart
from ..errors import check
from . import metrics

LABELS = {"frame_consistency": "frame consistency (all pairs, x100; paper 92.40)",
          "consecutive_consistency": "frame consistency (consecutive, x100)",
          "text_alignment": "text alignment (CLIP score; paper 27.58)",
          "psnr": "PSNR to the source (dB)", "ssim": "SSIM to the source",
          "psnr_inside": "PSNR inside the mask (dB)", "psnr_outside": "PSNR outside the mask (dB)",
          "ssim_inside": "SSIM inside the mask", "ssim_outside": "SSIM outside the mask"}


CONVENTIONS = {("clip_score_clamp", "frame"): "CLIP score clamped at 0 per frame",
               ("clip_score_clamp", "mean"): "CLIP score: the mean clamped at 0",
               ("ssim", "whole_frame"): "SSIM over the whole frame",
               ("ssim", "skimage"): "SSIM without the 5-pixel border (skimage)"}


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean())


def score(image_embeds: torch.Tensor, text_embed: torch.Tensor | None = None, source=None, edit=None,
          mask=None, clip_clamp: str = "frame", ssim_convention: str = "whole_frame") -> dict:
    """Everything measurable from what is given: the CLIP numbers need 2+ frames' embeddings (and a text
    embedding for alignment); preservation needs the source and edit frames (uint8, same shape). The conventions
    (``metrics``: CLIP_CLAMPS, SSIM_CONVENTIONS) are recorded in the report."""
    frames = len(image_embeds)
    report: dict = {"frames": frames, "per_frame": {}}
    if frames >= 2:
        report["frame_consistency"] = metrics.frame_consistency(image_embeds)
        report["consecutive_consistency"] = metrics.consecutive_consistency(image_embeds)
        report["per_frame"]["consistency_to_neighbours"] = metrics.neighbour_consistency(image_embeds).tolist()
    if text_embed is not None:
        scores = metrics.clip_scores(image_embeds, text_embed)
        report["text_alignment"] = metrics.text_alignment(image_embeds, text_embed, clip_clamp)
        report["per_frame"]["clip_score"] = scores.tolist()
        report.setdefault("conventions", {})["clip_score_clamp"] = clip_clamp
    if source is not None and edit is not None:
        ssim = lambda a, b, m=None: metrics.ssim(a, b, m, ssim_convention)
        report.setdefault("conventions", {})["ssim"] = ssim_convention
        for name, fn in (("psnr", metrics.psnr), ("ssim", ssim)):
            values = fn(source, edit)
            report[name], report["per_frame"][name] = _mean(values), values.tolist()
            if mask is not None:
                inside = _edit_region(mask)
                report[f"{name}_inside"] = _mean(fn(source, edit, inside))
                report[f"{name}_outside"] = _mean(fn(source, edit, ~inside))
    return report


def _edit_region(mask) -> torch.Tensor:
    """The mask of the edited region (white inside), refused where one side of it would be empty in some frame."""
    inside = torch.as_tensor(mask).bool()
    frames = inside.reshape(-1, *inside.shape[-2:])
    check(bool(frames.flatten(1).any(1).all()), "the mask is black in at least one frame: it marks no edited region "
                                                "there; white marks the region the edit changed")
    check(not bool(frames.flatten(1).all(1).any()), "the mask is white over a whole frame: nothing is outside the "
                                                    "edited region there to compare; white should mark only the region "
                                                    "the edit changed")
    return inside


def table(report: dict) -> str:
    """The report as aligned lines of text (what the CLI prints and the node shows)."""
    rows = [(LABELS[k], report[k]) for k in LABELS if k in report]
    width = max([len(label) for label, _ in rows], default=0)
    lines = [f"{label:<{width}}  {value:8.3f}" for label, value in rows]
    conventions = report.get("conventions", {})
    said = [CONVENTIONS[k, v] for k, v in conventions.items()]
    return "\n".join([f"{report['frames']} frames", *lines] + ([f"({'; '.join(said)})"] if said else []))


def to_json(report: dict) -> str:
    """JSON of the report; an infinite PSNR (identical frames) becomes null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(report), indent=1)


def chart(report: dict) -> np.ndarray:
    """Per frame: consistency with the neighbouring frames and CLIP score to the prompt (and PSNR/SSIM to the
    source when measured), one panel each, two to a row (compact enough to show on a node)."""
    per_frame = report["per_frame"]
    panels = [(title, {name: per_frame[key]}) for key, title, name in (
        ("consistency_to_neighbours", "consistency to neighbouring frames (x100)", "consistency"),
        ("clip_score", "CLIP score to the prompt", "CLIP score"),
        ("psnr", "PSNR to the source (dB)", "PSNR"), ("ssim", "SSIM to the source", "SSIM"))
        if key in per_frame]
    return line_chart(panels or [("no per-frame scores", {})], "frame", width=1200, panel_height=300, columns=2)
