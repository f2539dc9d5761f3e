"""``tuneavideo score``: an edit's CLIP scores and frame metrics, its table, JSON report and chart; also the report
``run``/``edit --clip`` writes. torch and transformers' CLIP only: ``score`` never imports diffusers (seconds)."""

import json
import warnings
from pathlib import Path

from ..errors import TavWarning, check
from ..sampling.windows import ContextWindows
from ..scoring.clip import ClipEmbedder
from ..scoring.report import chart, score as score_video, table, to_json
from ..scoring.seams import window_boundaries
from ..video import read_video
from . import checks
from .shared import device_of, save_output, write_png, write_text


def score_report(embedder, frames, prompt, source, mask, out_json: Path, out_png: Path, clip_clamp: str = "frame",
                 ssim: str = "whole_frame", scores: str = "paper", windows: list | None = None,
                 run: dict | None = None) -> None:
    """Score frames with a ClipEmbedder; print the table, write the JSON and the chart. ``windows`` ([length,
    overlap]): the frame windows the edit was made in (its seams); ``run``: the run's own numbers."""
    text = embedder.text(prompt) if prompt else None
    projected, pooled = embedder.vision(frames)
    boundaries = None
    if windows:
        boundaries = window_boundaries(len(frames), ContextWindows(*windows[:2]).windows(len(frames)))
    report = score_video(projected, text, source, frames, mask, clip_clamp, ssim, boundaries,
                         pooled if scores == "v2vbench" else None, run)
    print(table(report))
    save_output("score report", out_json, lambda path: write_text(path, to_json(report)))
    save_output("score chart", out_png, lambda path: write_png(path, chart(report)))
    print(f"score: {out_json}, chart: {out_png}")


def _run_record(video) -> dict:
    """The run record ``tuneavideo edit`` wrote beside the video (its windows, time, memory), or nothing."""
    path = checks.run_path(video)
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warnings.warn(f"the run record {path} cannot be read ({e}); scored without it", TavWarning)
        return {}
    return record if isinstance(record, dict) else {}


def _mask(path, frames):
    """White = inside: one image for all frames, or a video/folder with one mask frame per edited frame."""
    count, height, width = frames.shape[:3]
    masks = read_video(path, width=width, height=height).mean(-1) > 127
    check(len(masks) == 1 or len(masks) >= count, f"--mask {path} has {len(masks)} frames, the edit {count}; give "
                                                  "one image for all frames or one per frame")
    return masks[0] if len(masks) == 1 else masks[:count]


def score(args) -> None:
    frames = read_video(args.video)
    source = None
    if args.source:
        source = read_video(args.source, len(frames), args.stride, args.start, frames.shape[2], frames.shape[1])
    mask = _mask(args.mask, frames) if args.mask else None
    print(f"loading CLIP from {args.clip}", flush=True)
    embedder = ClipEmbedder(args.clip, device_of(args))
    record = _run_record(args.video)
    windows = args.windows or record.get("windows")
    run = {k: v for k, v in record.items() if k not in ("windows", "frames")}
    score_report(embedder, frames, args.prompt, source, mask, *checks.report_paths(args), args.clip_clamp, args.ssim,
                 args.scores, windows, run)
