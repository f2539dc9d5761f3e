"""Score Video: an edit's CLIP numbers and its preservation of the source, with ComfyUI's own model types.

Text alignment needs a text tower that carries CLIP's projection and shares the vision tower's embedding space:
ViT-L/14 vision (clip-vit-large-patch14) with clip_l.safetensors (Load CLIP, type stable_diffusion), 768 dims;
ViT-H/14 (clip_vision_h) with an SD 2.x checkpoint's CLIP, 1024. SD 1.x checkpoints store no text projection.
"""

import math

import numpy as np
import torch

from ..tav_core.choices import CLIP_CLAMPS, SCORE_CONVENTIONS, SSIM_CONVENTIONS
from ..tav_core.editing.null_text import NullTextInversion
from ..tav_core.errors import check
from ..tav_core.loading.tuned import read_metadata
from ..tav_core.sampling.windows import ContextWindows
from ..tav_core.scoring import report as scoring
from ..tav_core.scoring.clip import clip_frames
from ..tav_core.scoring.seams import window_boundaries
from . import host
from .shared import CATEGORY, FOLDER, INVERSIONS, NONE, Schema, hidden, io, preview_with_workflow, show_text

PAIRS = ("pair CLIP ViT-L/14 vision (clip-vit-large-patch14) with clip_l.safetensors (Load CLIP, type stable_diffusion),"
         " or ViT-H/14 (clip_vision_h) with an SD 2.x checkpoint's CLIP")


def text_projection(clip) -> torch.Tensor:
    """The text tower's projection into CLIP's joint space; refused when the CLIP has none (SD 1.x checkpoints)
    or several towers (SDXL: use the single-tower file)."""
    found = [m.weight for name, m in clip.cond_stage_model.named_modules() if name.endswith("text_projection")]
    check(len(found) == 1, f"this CLIP has {len(found)} text towers; text alignment needs one CLIP text encoder with "
                           f"its projection: {PAIRS}")
    towers = [m for m in clip.cond_stage_model.modules() if isinstance(m, host.sd1_clip.SDClipModel)]
    weight = found[0].detach().float()
    eye = torch.eye(*weight.shape, device=weight.device)
    check(all(getattr(t, "tav_projection_loaded", True) for t in towers) and bool(torch.isfinite(weight).all())
          and bool(weight.abs().sum() > 0) and not torch.equal(weight, eye),
          f"this CLIP has no text projection (SD 1.x checkpoints do not store it), so its text embedding is not in "
          f"CLIP's joint space: {PAIRS}")
    return weight


def text_embedding(clip, prompt: str) -> torch.Tensor:
    _, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled="unprojected")
    weight = text_projection(clip)
    return pooled.float().cpu() @ weight.cpu().T


def pooled_output(clip_vision, encoded) -> torch.Tensor:
    """The vision tower's pooled output before its projection (what V2VBench's consistency reads): the host returns
    the last hidden state before CLIP's final LayerNorm, which the pooled output applies to the class token."""
    vision = clip_vision.model.vision_model
    check(not getattr(vision, "output_layernorm", False), "V2VBench's scores are defined on a CLIP vision tower; this "
                                                          "CLIP Vision model is another kind: load a CLIP one")
    norm = vision.post_layernorm
    with torch.no_grad():
        token = encoded["last_hidden_state"][:, 0].to(norm.weight.device, norm.weight.dtype)
        return norm(token).float().cpu()


def run_numbers(tuned_weights: str, inversion: str) -> dict:
    """The time and peak memory One-Shot Tune and Null-Text Invert recorded in the files they saved."""
    run = {}
    if tuned_weights != NONE:
        run.update(read_metadata(host.folder_paths.get_full_path_or_raise(FOLDER, tuned_weights)).get("run") or {})
    if inversion != NONE:
        path = host.folder_paths.get_full_path_or_raise(INVERSIONS, inversion)
        run.update(NullTextInversion.read_metadata(path).get("run") or {})
    return run


def uint8_frames(images: torch.Tensor) -> np.ndarray:
    """IMAGE -> uint8 frames as ComfyUI's own savers write them (255 x, clamped, truncated)."""
    return (images[..., :3] * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()


class ScoreVideo(io.ComfyNode):
    TITLE = "Score Video"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return Schema(
            node_id="TuneAVideoScoreVideo", display_name=cls.TITLE, category=CATEGORY,
            search_aliases=["score", "metrics", "clip score", "evaluate", "psnr", "ssim", "v2vbench", "frame consistency"],
            description="Measures an edited video as the Tune-A-Video paper does: CLIP frame consistency (all pairs, "
                        "and consecutive frames) and text alignment (CLIP score to the prompt), optionally also as "
                        "V2VBench computes them; with the source frames, PSNR and SSIM to them (also inside/outside a "
                        "mask, per frame) and the colour drift from them; the seams at the edit's frame windows and "
                        "the largest jump between frames. Shows a per-frame chart.",
            inputs=[
                io.Image.Input("images", tooltip="The edited frames (VAE Decode of Video KSampler's output)."),
                io.ClipVision.Input("clip_vision", tooltip="CLIP Vision Loader: e.g. clip-vit-large-patch14 "
                                                           "(ViT-L/14)."),
                io.Clip.Input("clip", optional=True, tooltip=f"For text alignment, a CLIP text encoder with its "
                                                             f"projection: {PAIRS}."),
                io.String.Input("prompt", multiline=True, default="", optional=True, tooltip="The edit prompt (text "
                                                                                             "alignment)."),
                io.Image.Input("source_images", optional=True, tooltip="The source frames the edit started from (PSNR "
                                                                       "and SSIM)."),
                io.Mask.Input("mask", optional=True, tooltip="The edited region (white): PSNR/SSIM also inside and "
                                                             "outside it."),
                io.Combo.Input("clip_score_clamp", options=list(CLIP_CLAMPS), default="frame", optional=True,
                               tooltip="Text alignment: clamp each frame's CLIP score at 0, then average them (the "
                                       "paper averages per-frame CLIP scores), or clamp the mean (torchmetrics' "
                                       "CLIPScore over the frames)."),
                io.Combo.Input("ssim_convention", options=list(SSIM_CONVENTIONS), default="whole_frame", optional=True,
                               tooltip="SSIM averaged over the whole frame (torchmetrics) or without the 5-pixel "
                                       "border (scikit-image)."),
                io.Combo.Input("scores", options=list(SCORE_CONVENTIONS), default="paper", optional=True,
                               tooltip="paper: the CLIP numbers as the Tune-A-Video paper computes them; v2vbench: "
                                       "also V2VBench's (consistency of the vision tower's pooled output over "
                                       "consecutive frames, clamped at 0, 0-1; text alignment 100 cos, not clamped)."),
                io.Int.Input("window_length", default=0, min=0, max=4096, optional=True,
                             tooltip="The frame windows the edit was made in (Context Windows' context_length; 0: "
                                     "none): measures the seams, the change from one frame to the next at window "
                                     "boundaries against inside them, and marks the boundaries on the chart."),
                io.Int.Input("window_overlap", default=4, min=0, max=4096, optional=True,
                             tooltip="The windows' overlap (Context Windows' context_overlap)."),
                io.Combo.Input("tuned_weights", options=[NONE, *host.folder_paths.get_filename_list(FOLDER)],
                               default=NONE, optional=True,
                               tooltip="The tuned weights the edit used (saved by One-Shot Tune): the report shows "
                                       "their tuning's time and peak memory."),
                io.Combo.Input("inversion", options=[NONE, *host.folder_paths.get_filename_list(INVERSIONS)],
                               default=NONE, optional=True,
                               tooltip="The null-text inversion the edit used (saved by Null-Text Invert): the report "
                                       "shows its time and peak memory."),
            ],
            outputs=[
                io.Float.Output(display_name="frame_consistency", tooltip="Mean CLIP cosine over all pairs of frames, "
                                                                          "x100 (paper: 92.40)."),
                io.Float.Output(display_name="consecutive_consistency", tooltip="Mean CLIP cosine of consecutive "
                                "frames, x100 (V2VBench's temporal consistency)."),
                io.Float.Output(display_name="text_alignment", tooltip="Mean CLIP score of the frames to the prompt "
                                "(paper: 27.58); NaN without CLIP and prompt."),
                io.Float.Output(display_name="psnr", tooltip="Mean PSNR to the source frames in dB; NaN without "
                                                             "source images."),
                io.Float.Output(display_name="ssim", tooltip="Mean SSIM to the source frames; NaN without source "
                                                             "images."),
                io.String.Output(display_name="report", tooltip="All numbers as a table."),
                io.Image.Output(display_name="chart", tooltip="Per-frame chart: consistency to the neighbouring "
                                "frames, CLIP score to the prompt, PSNR/SSIM."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True)

    @classmethod
    def validate_inputs(cls, clip_score_clamp=None, ssim_convention=None, scores=None, window_length=None,
                        window_overlap=None, tuned_weights=None, inversion=None):
        """The conventions' names and the windows, before the graph runs (the host does not check these lists)."""
        for name, value, options in (("clip_score_clamp", clip_score_clamp, CLIP_CLAMPS),
                                     ("ssim_convention", ssim_convention, SSIM_CONVENTIONS),
                                     ("scores", scores, SCORE_CONVENTIONS)):
            if value is not None and value not in options:
                return f"{name} {value!r} is not one of {', '.join(options)}"
        if window_length and window_overlap is not None and not 0 <= window_overlap < window_length:
            return (f"window_overlap {window_overlap} must be below window_length {window_length} (the Context "
                    "Windows the edit was made in), or set window_length 0")
        for name, value, folder in (("tuned_weights", tuned_weights, FOLDER), ("inversion", inversion, INVERSIONS)):
            if value not in (None, NONE) and value not in host.folder_paths.get_filename_list(folder):
                return f"{name}: '{value}' not in models/{folder}; pick a file from the list (or none) and press R"
        return True

    @classmethod
    def execute(cls, images, clip_vision, clip=None, prompt="", source_images=None, mask=None,
                clip_score_clamp="frame", ssim_convention="whole_frame", scores="paper", window_length=0,
                window_overlap=4, tuned_weights=NONE, inversion=NONE) -> io.NodeOutput:
        unique_id = hidden(cls, "unique_id")
        conventions = cls.validate_inputs(clip_score_clamp, ssim_convention, scores, window_length, window_overlap,
                                          tuned_weights, inversion)
        check(conventions is True, str(conventions))
        check(len(images) >= 1, "images is empty; connect the edited frames")
        source = region = None  # every input checked before CLIP runs
        if source_images is not None:
            check(source_images.shape == images.shape, f"source_images are {tuple(source_images.shape)} but images "
                                                       f"{tuple(images.shape)}: give the frames the edit started from, "
                                                       "at the same size")
            source = uint8_frames(source_images)
        if mask is not None:
            check(source_images is not None, "mask marks where PSNR/SSIM to the source are also measured: connect "
                                             "source_images too")
            check(mask.shape[0] in (1, len(images)) and tuple(mask.shape[1:]) == tuple(images.shape[1:3]),
                  f"mask is {tuple(mask.shape)}; give one mask of the frames' size {tuple(images.shape[1:3])} "
                  "or one per frame")
            region = (mask[0] if mask.shape[0] == 1 else mask).cpu().numpy() > 0.5
        if clip is not None and prompt.strip():
            text_projection(clip)  # a CLIP without one is refused before any model runs
        # the frames as saved (8-bit), resized and cropped as transformers' CLIPProcessor does, as papers score them
        frames = uint8_frames(images)
        pixels = clip_frames(frames, clip_vision.image_size)
        encoded = clip_vision.encode_image(pixels, crop=False)
        image_embeds = encoded["image_embeds"].float().cpu()
        pooled = pooled_output(clip_vision, encoded) if scores == "v2vbench" else None
        boundaries = window_boundaries(len(frames), ContextWindows(window_length, window_overlap).windows(len(frames))) \
            if window_length else None
        text = None
        if clip is not None and prompt.strip():
            text = text_embedding(clip, prompt)
            check(text.shape[1] == image_embeds.shape[1], f"CLIP Vision embeds into {image_embeds.shape[1]} dims but "
                                                          f"the CLIP text encoder into {text.shape[1]}: not a pair; {PAIRS}")
        report = scoring.score(image_embeds, text, source, frames, region, clip_score_clamp, ssim_convention,
                               boundaries, pooled, run_numbers(tuned_weights, inversion))
        chart = torch.from_numpy(scoring.chart(report)).float()[None] / 255
        table = scoring.table(report)
        show_text(unique_id, scoring.summary(report))  # (a few lines: the editor's box and font)
        numbers = tuple(report.get(k, math.nan) for k in ("frame_consistency", "consecutive_consistency",
                                                             "text_alignment", "psnr", "ssim"))
        ui = preview_with_workflow(chart, hidden(cls, "prompt"), hidden(cls, "extra_pnginfo"))
        return io.NodeOutput(*numbers, table, chart, ui={**ui, "text": [table], "report": [scoring.to_json(report)]})
