"""An edit's report: the paper's CLIP numbers and how well the source is preserved, as a dict, a table, JSON
and a per-frame chart. Works on embeddings from any embedder (``ClipEmbedder`` headless, ComfyUI's models)."""

import json
import math

import numpy as np
import torch

from ..charts import line_chart
from ..choices import SCORE_CONVENTIONS
from ..errors import check
from . import metrics
from .drift import colour_drift, drift_summary
from .seams import pixel_changes, seams

LABELS = {"frame_consistency": "frame consistency (all pairs, x100; paper 92.40)",
          "consecutive_consistency": "frame consistency (consecutive, x100)",
          "text_alignment": "text alignment (CLIP score; paper 27.58)",
          "v2vbench_frame_consistency": "V2VBench CLIP consistency (pooled, consecutive, 0-1)",
          "v2vbench_text_alignment": "V2VBench CLIP text alignment (100 cos)",
          "psnr": "PSNR to the source (dB)", "ssim": "SSIM to the source",
          "psnr_inside": "PSNR inside the mask (dB)", "psnr_outside": "PSNR outside the mask (dB)",
          "ssim_inside": "SSIM inside the mask", "ssim_outside": "SSIM outside the mask",
          "colour_drift": "colour drift from the source (mean delta E)",
          "colour_drift_last": "colour drift at the last frame (delta E)",
          "colour_drift_slope": "colour drift per frame (delta E)",
          "seam_pixel_ratio": "seams: pixel change at window boundaries / inside",
          "seam_clip_ratio": "seams: CLIP change at window boundaries / inside",
          "largest_jump_ratio": "largest frame-to-frame change / median"}


# the run's own numbers (``run``: from the tuned weights', the inversion's and the edit's metadata)
RUN_LABELS = {"tuning_seconds": "tuning time (s)", "tuning_peak_gb": "tuning peak memory (GB)",
              "inversion_seconds": "null-text inversion time (s)", "edit_seconds": "inversion + edit time (s)",
              "edit_peak_gb": "inversion + edit peak memory (GB)"}


# the node's few lines (the editor's text box shows about ten without scrolling): one line per kind of measure,
# "title: value words, value words"; values under "run" come from report["run"]
SUMMARY = [("frame consistency (x100)", [("frame_consistency", "all pairs (paper 92.40)"),
                                         ("consecutive_consistency", "consecutive")]),
           ("text alignment", [("text_alignment", "CLIP score (paper 27.58)")]),
           ("V2VBench", [("v2vbench_frame_consistency", "CLIP consistency"),
                         ("v2vbench_text_alignment", "text alignment")]),
           ("to the source", [("psnr", "dB PSNR"), ("ssim", "SSIM")]),
           ("inside the mask", [("psnr_inside", "dB PSNR"), ("ssim_inside", "SSIM")]),
           ("outside the mask", [("psnr_outside", "dB PSNR"), ("ssim_outside", "SSIM")]),
           ("colour drift (delta E)", [("colour_drift", "mean"), ("colour_drift_last", "at the last frame"),
                                       ("colour_drift_slope", "per frame")]),
           ("seams (window boundaries / inside)", [("seam_pixel_ratio", "pixel change"),
                                                   ("seam_clip_ratio", "CLIP change")]),
           ("largest frame-to-frame change", [("largest_jump_ratio", "x the median")]),
           ("run", [("tuning_seconds", "s tuning"), ("tuning_peak_gb", "GB tuning peak"),
                    ("inversion_seconds", "s null-text inversion"), ("edit_seconds", "s inversion + edit"),
                    ("edit_peak_gb", "GB inversion + edit peak")])]


CONVENTIONS = {("clip_score_clamp", "frame"): "CLIP score clamped at 0 per frame",
               ("clip_score_clamp", "mean"): "CLIP score: the mean clamped at 0",
               ("ssim", "whole_frame"): "SSIM over the whole frame",
               ("ssim", "skimage"): "SSIM without the 5-pixel border (skimage)",
               ("scores", "paper"): "CLIP numbers as the paper computes them",
               ("scores", "v2vbench"): "also V2VBench's CLIP numbers"}


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean())


def score(image_embeds: torch.Tensor, text_embed: torch.Tensor | None = None, source=None, edit=None,
          mask=None, clip_clamp: str = "frame", ssim_convention: str = "whole_frame", boundaries: list[int] | None = None,
          pooled: torch.Tensor | None = None, run: dict | None = None) -> dict:
    """Everything measurable from what is given: the CLIP numbers need 2+ frames' embeddings (and a text
    embedding for alignment); ``pooled`` (the vision tower's output before its projection) adds V2VBench's;
    preservation and colour drift need the source and edit frames (uint8, same shape); seams need the edit frames
    and the ``boundaries`` of the windows it was made in (``seams.window_boundaries``); ``run``: the run's own
    numbers (time, memory, windows) to carry along. The conventions (``metrics``: CLIP_CLAMPS, SSIM_CONVENTIONS) are
    recorded in the report."""
    frames = len(image_embeds)
    report: dict = {"frames": frames, "per_frame": {}}
    conventions = report.setdefault("conventions", {})
    conventions["scores"] = SCORE_CONVENTIONS[pooled is not None]
    if frames >= 2:
        report["frame_consistency"] = metrics.frame_consistency(image_embeds)
        report["consecutive_consistency"] = metrics.consecutive_consistency(image_embeds)
        report["per_frame"]["consistency_to_neighbours"] = metrics.neighbour_consistency(image_embeds).tolist()
        if pooled is not None:
            report["v2vbench_frame_consistency"] = metrics.v2vbench_frame_consistency(pooled)
    if text_embed is not None:
        scores = metrics.clip_scores(image_embeds, text_embed)
        report["text_alignment"] = metrics.text_alignment(image_embeds, text_embed, clip_clamp)
        report["per_frame"]["clip_score"] = scores.tolist()
        conventions["clip_score_clamp"] = clip_clamp
        if pooled is not None:
            report["v2vbench_text_alignment"] = metrics.v2vbench_text_alignment(image_embeds, text_embed)
    if source is not None and edit is not None:
        ssim = lambda a, b, m=None: metrics.ssim(a, b, m, ssim_convention)
        conventions["ssim"] = ssim_convention
        for name, fn in (("psnr", metrics.psnr), ("ssim", ssim)):
            values = fn(source, edit)
            report[name], report["per_frame"][name] = _mean(values), values.tolist()
            if mask is not None:
                inside = _edit_region(mask)
                outside = fn(source, edit, ~inside)  # the background: what a local edit should keep (FiVE's)
                report[f"{name}_inside"] = _mean(fn(source, edit, inside))
                report[f"{name}_outside"], report["per_frame"][f"{name}_outside"] = _mean(outside), outside.tolist()
        drift = colour_drift(source, edit)
        report.update(drift_summary(drift))
        report["per_frame"]["colour_drift"] = drift.tolist()
    if edit is not None and len(edit) >= 2:  # seams: where the windows hand over, and the largest jump anyway
        found = seams(edit, image_embeds if frames >= 2 else None, boundaries or [])
        report["per_frame"]["pixel_change"] = [math.nan, *pixel_changes(edit).tolist()]
        report["largest_jump_frame"], report["largest_jump_ratio"] = found["largest_jump_frame"], found["largest_jump_ratio"]
        if boundaries is not None:
            report.update({"boundaries": list(boundaries), "seam_boundaries": found["boundaries"],
                           "seam_pixel_ratio": found["pixel_ratio"]})
            if "clip_ratio" in found:
                report["seam_clip_ratio"] = found["clip_ratio"]
    if run:
        report["run"] = run
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


def _boundaries(report: dict) -> str:
    return f"; window boundaries at frames {', '.join(map(str, report['boundaries']))}" if report.get("boundaries") else ""


def table(report: dict) -> str:
    """The report as lines of text, the values in a column aligned with spaces (what the CLI prints)."""
    rows = [(LABELS[k], report[k]) for k in LABELS if k in report]
    rows += [(RUN_LABELS[k], report["run"][k]) for k in RUN_LABELS if k in report.get("run", {})]
    width = max([len(label) for label, _ in rows], default=0)
    lines = [f"{label:<{width}}  {value:8.3f}" for label, value in rows]
    if "largest_jump_frame" in report:
        lines.append(f"largest jump into frame {report['largest_jump_frame']}{_boundaries(report)}")
    conventions = report.get("conventions", {})
    said = [CONVENTIONS[k, v] for k, v in conventions.items()]
    return "\n".join([f"{report['frames']} frames", *lines] + ([f"({'; '.join(said)})"] if said else []))


def summary(report: dict) -> str:
    """The report's numbers in a few lines that read in any font, for a node (the editor's proportional font, a box
    of about ten lines): one line per kind of measure; the conventions are left out, as the node's widgets show them."""
    lines = []
    for title, parts in SUMMARY:
        values = report.get("run", {}) if title == "run" else report
        said = [f"{values[key]:.3f} {words}" for key, words in parts if key in values]
        if said and title == "largest frame-to-frame change":
            said.append(f"into frame {report['largest_jump_frame']}")
        lines += [f"{title}: {', '.join(said)}"] if said else []
    return "\n".join([f"{report['frames']} frames{_boundaries(report)}", *lines])


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
    """Per frame: consistency with the neighbouring frames, CLIP score to the prompt, pixel change from the previous
    frame (window boundaries marked), and with the source the colour drift and PSNR/SSIM (over the whole frame and
    outside the mask); one panel each, three to a row with short titles, to read on a node (wide and low)."""
    per_frame = report["per_frame"]
    with_outside = lambda key: {"whole frame": per_frame[key], **(
        {"outside mask": per_frame[f"{key}_outside"]} if f"{key}_outside" in per_frame else {})}
    panels = [(title, series(key)) for key, title, series in (
        ("consistency_to_neighbours", "consistency to neighbours", lambda k: {"consistency": per_frame[k]}),
        ("clip_score", "CLIP score to the prompt", lambda k: {"CLIP score": per_frame[k]}),
        ("pixel_change", "pixel change (0-255)", lambda k: {"change": per_frame[k]}),
        ("colour_drift", "colour drift (delta E)", lambda k: {"drift": per_frame[k]}),
        ("psnr", "PSNR to the source (dB)", with_outside), ("ssim", "SSIM to the source", with_outside))
        if key in per_frame]
    return line_chart(panels or [("no per-frame scores", {})], "frame", width=1200, panel_height=140, columns=3,
                      marks=report.get("boundaries", ()))
