"""Every stage of an edit planned at real size (SD1.5 at 512x512, random weights never needed): what a long clip costs.

    python -m bench.stages                                  # 24 / 64 / 128 / 256 frames: about an hour on 2 CPU cores
    python -m bench.stages --frames 24 128 --name stages-quick

Per stage (VAE encode, tuning, DDIM inversion, CFG sampling, null-text inversion, the P2P edit, VAE decode) the
predicted peak CUDA allocation (``tav_core.memory.stages``: weights, what the stage keeps for the clip, its step's
peak), with the whole clip at once and with the settings a small GPU takes: fp16 weights, gradient checkpointing,
an 8-frame tuning window, 16-frame context windows (overlap 4) for every editing stage. The reference recipe's
tuning step beside them (``bench.plan.reference_plan``). The CUDA context (~0.3-0.5 GB) and the allocator's
fragmentation (the planner allows 10%) come on top. Results: bench/results/<name>.json and a Markdown table.
"""

import argparse
import sys
import time

import torch

from bench import save_results
from bench.plan import reference_plan
from tav_core.memory.stages import STAGE_NAMES, STAGES, ModelConfigs, plan_stage
from tav_core.memory.trace import Settings
from tav_core.sampling.windows import ContextWindows

GB = 2 ** 30
WINDOW, TUNING_WINDOW = ContextWindows(16, 4), 8


def settings(stage: str, frames: int, small_gpu: bool) -> Settings:
    """The whole clip in fp32 (``small_gpu`` False), or what fits a small GPU: fp16 weights, checkpointing, windows."""
    if not small_gpu:
        return Settings(frames, 512, 512)
    base = Settings(frames, 512, 512, torch.float16, "fp16", gradient_checkpointing=True)
    if stage == "tune":
        return Settings(frames, 512, 512, torch.float16, "fp16", True, TUNING_WINDOW if frames > TUNING_WINDOW else None)
    if stage in ("encode", "decode"):
        return base
    return Settings(frames, 512, 512, torch.float16, "fp16", True, windows=WINDOW if frames > WINDOW.length else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", nargs="+", type=int, default=[24, 64, 128, 256])
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--name", default="stages")
    args = p.parse_args(argv)
    configs, rows, start = ModelConfigs.shipped("sd1"), [], time.perf_counter()
    for frames in args.frames:
        for small_gpu in (True, False):
            for stage in args.stages:
                s = settings(stage, frames, small_gpu)
                began = time.perf_counter()
                plan = plan_stage(configs, stage, s)
                rows.append({"frames": frames, "stage": stage, "small_gpu": small_gpu, "total_gb": plan.total / GB,
                             "weights_gb": (plan.resident) / GB, "held_gb": plan.held / GB,
                             "step_peak_gb": plan.step_peak / GB, "plan_seconds": time.perf_counter() - began})
                print(f"{frames:4} frames {'small GPU' if small_gpu else 'fp32 whole':10} {STAGE_NAMES[stage]:22} "
                      f"{plan.total / GB:7.2f} GB", flush=True)
        reference = reference_plan("sd1", Settings(frames, 512, 512, torch.float32, "fp16", True))
        rows.append({"frames": frames, "stage": "tune", "recipe": "reference", "total_gb": reference.total / GB})
        print(f"{frames:4} frames reference tuning {reference.total / GB:7.2f} GB", flush=True)
    report = {"command": " ".join(["python -m bench.stages", *(argv if argv is not None else sys.argv[1:])]),
              "memory": "predicted peak CUDA allocation; the CUDA context and allocator fragmentation come on top",
              "small_gpu": "fp16 weights and autocast, gradient checkpointing, tuning window 8, context windows 16/4",
              "rows": rows, "seconds": round(time.perf_counter() - start)}
    print(table(rows))
    save_results(args.name, report)
    return 0


def table(rows: list[dict]) -> str:
    frames = sorted({r["frames"] for r in rows})
    head = "| stage | " + " | ".join(f"{f} frames" for f in frames) + " |"
    lines = [head, "| --- |" + " ---: |" * len(frames)]
    for stage in STAGES:
        cells = []
        for f in frames:
            small = next((r for r in rows if r["frames"] == f and r["stage"] == stage and r.get("small_gpu")), None)
            whole = next((r for r in rows if r["frames"] == f and r["stage"] == stage and r.get("small_gpu") is False), None)
            cells.append(f"**{small['total_gb']:.1f}** ({whole['total_gb']:.1f})" if small and whole else "")
        lines.append(f"| {STAGE_NAMES[stage]} | " + " | ".join(cells) + " |")
    ref = [next((r for r in rows if r["frames"] == f and r.get("recipe") == "reference"), None) for f in frames]
    lines.append("| reference recipe, tuning | " + " | ".join(f"{r['total_gb']:.1f}" if r else "" for r in ref) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
