"""Seams and colour drift of long-clip edits: the pack's example clip (24 frames, the paper's length) and the command
line's built-in clip at 64 frames, edited whole and in frame windows of 16 overlapping by 4, on the tiny random model.

    python -m bench.seams                 # minutes on 2 CPU cores
    python -m bench.seams --steps 20

Each edit is DDIM inversion and a CFG-12.5 edit (untuned: tuning does not change the mechanism measured). For every
edit, at the boundaries the 16/4 windows would have (the whole-clip edit is measured at the same frames, as a
baseline): the pixel change into each boundary frame against the change inside (``tav_core.scoring.seams``), the
largest jump between frames, the colour drift from the source (CIELAB delta E, ``tav_core.scoring.drift``) and PSNR.
On a random model these show the mechanism, not an edit's quality: a real checkpoint's numbers differ.
Results: bench/results/<name>.json and a Markdown table.
"""

import argparse
import sys
import time

import torch

from bench import save_results
from tav_core.editing.pipeline import TuneAVideo
from tav_core.example_clip import example_clip
from tav_core.video import demo_video
from tav_core.loading.tiny import tiny_components
from tav_core.sampling.windows import ContextWindows, Passes
from tav_core.scoring.drift import colour_drift, drift_summary
from tav_core.scoring.metrics import psnr
from tav_core.scoring.seams import pixel_changes, seam_ratio, window_boundaries

WINDOWS = ContextWindows(16, 4)


def demo_clip(frames: int, size: int):
    return demo_video(frames, size, size)


def edit(pipe: TuneAVideo, video, windows: ContextWindows | None, steps: int):
    """Invert the clip and edit it (whole, or in ``windows``): uint8 frames and seconds."""
    start = time.perf_counter()
    latents = pipe.encode_video(video)
    passes = Passes(windows=windows)
    noise = pipe.invert(latents, steps, passes=passes)
    edited = pipe.sample(noise, "a blue ball rolls across a meadow", steps=steps, passes=passes)
    return pipe.decode(edited), time.perf_counter() - start


def measure(source, edited, boundaries: list[int]) -> dict:
    changes = pixel_changes(edited)
    drift = drift_summary(colour_drift(source, edited))
    return {"seam_pixel_ratio": seam_ratio(changes, boundaries), "source_seam_pixel_ratio":
            seam_ratio(pixel_changes(source), boundaries), "largest_jump_ratio": float(changes.max() / changes.median()),
            **drift, "psnr": float(psnr(source, edited).double().mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps of the inversion and the edit (default 10)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--name", default="seams")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    pipe = TuneAVideo(tiny_components(0))
    rows, start = [], time.perf_counter()
    for clip_name, frames, draw in (("example clip", 24, example_clip), ("built-in clip", 64, demo_clip)):
        video = draw(frames, args.size)
        boundaries = window_boundaries(frames, WINDOWS.windows(frames))
        for mode, windows in (("whole clip", None), ("windows 16/4", WINDOWS)):
            edited, seconds = edit(pipe, video, windows, args.steps)
            row = {"clip": clip_name, "frames": frames, "mode": mode, "boundaries": boundaries, "seconds": seconds,
                   **measure(video, edited, boundaries)}
            rows.append(row)
            print(f"{clip_name:14} {mode:12} seams {row['seam_pixel_ratio']:.3f} (source {row['source_seam_pixel_ratio']:.3f}) "
                  f"jump {row['largest_jump_ratio']:.2f} drift {row['colour_drift']:.2f} (last "
                  f"{row['colour_drift_last']:.2f}) PSNR {row['psnr']:.2f}", flush=True)
    report = {"command": " ".join(["python -m bench.seams", *(argv if argv is not None else sys.argv[1:])]),
              "model": "tiny random (tav_core.loading.tiny): the mechanism, not an edit's quality",
              "rows": rows, "seconds": round(time.perf_counter() - start)}
    print(table(rows))
    save_results(args.name, report)
    return 0


def table(rows: list[dict]) -> str:
    lines = ["| clip | edited | seams: change at boundaries / inside (source) | largest jump / median | colour drift "
             "mean / last (delta E) | PSNR (dB) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['clip']} ({r['frames']} frames) | {r['mode']} | {r['seam_pixel_ratio']:.2f} "
                     f"({r['source_seam_pixel_ratio']:.2f}) | {r['largest_jump_ratio']:.2f} | {r['colour_drift']:.2f} / "
                     f"{r['colour_drift_last']:.2f} | {r['psnr']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
