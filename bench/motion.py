"""Every stage with an AnimateDiff motion module planned at real size (random weights never needed): SD1.5 with v3
(and v2, whose mid-block module adds a little) at 16 frames 512x512, SDXL with the SDXL beta module at 16 frames
1024x1024.

    python -m bench.motion                       # both families; minutes on 2 CPU cores
    python -m bench.motion --family sd1

Per stage the predicted peak CUDA allocation (``tav_core.memory.stages``, as ``bench.stages``), fp32 whole and as a
24 GB GPU runs it: fp16 weights and autocast, gradient checkpointing; tuning fully (queries + the whole module) and
through LoRA of rank 16 (queries + the module's attentions). The released modules' architecture is stated here (no
file is needed to plan). Whether the plans hold: tests/core/test_memory.py measures the same plans against the tiny
model's allocations (within 4%). Results: bench/results/<name>.json and a Markdown table.
"""

import argparse
import sys
import time
from dataclasses import replace

import torch

from bench import save_results
from tav_core.memory.stages import STAGE_NAMES, STAGES, ModelConfigs, plan_stage
from tav_core.memory.trace import Settings

GB = 2 ** 30
CASES = {"sd1": [("v3", 512), ("v2", 512)], "sdxl": [("sdxl", 1024)]}
FRAMES = 16


def released(version: str) -> dict:
    """``tav_core.loading.motion.motion_config`` of a released module (AnimateDiff's: 8 heads, 32 groups)."""
    channels = (320, 640, 1280) if version == "sdxl" else (320, 640, 1280, 1280)
    length = 24 if version == "v1" else 32
    adapter = dict(block_out_channels=channels, motion_layers_per_block=2, motion_mid_block_layers_per_block=1,
                   motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=length,
                   use_motion_mid_block=version == "v2", conv_in_channels=None)
    return {"adapter": adapter, "version": version, "max_frames": length}


def cases(size: int):
    """(label, settings) of each way a stage runs here: fp32 whole, and a 24 GB GPU's fp16 with checkpointing."""
    whole = Settings(FRAMES, size, size)
    gpu = Settings(FRAMES, size, size, torch.float16, "fp16", gradient_checkpointing=True)
    return [("fp32", whole), ("fp16 + checkpointing", gpu)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--name", default="motion")
    args = p.parse_args(argv)
    rows, start = [], time.perf_counter()
    for family in args.family:
        for version, size in CASES[family]:
            configs = replace(ModelConfigs.shipped(family), motion=released(version))
            for label, settings in cases(size):
                for stage in args.stages:
                    for rank in ((None, 16) if stage == "tune" else (None,)):
                        began = time.perf_counter()
                        plan = plan_stage(configs, stage, replace(settings, lora_rank=rank))
                        row = {"family": family, "module": version, "size": size, "frames": FRAMES, "settings": label,
                               "stage": stage, "lora_rank": rank, "total_gb": plan.total / GB,
                               "weights_gb": plan.resident / GB, "held_gb": plan.held / GB,
                               "step_peak_gb": plan.step_peak / GB, "plan_seconds": time.perf_counter() - began}
                        rows.append(row)
                        print(f"{family} {version} {label:21} {STAGE_NAMES[stage]:22} {'LoRA 16' if rank else '':8}"
                              f"{plan.total / GB:7.2f} GB", flush=True)
    report = {"command": " ".join(["python -m bench.motion", *(argv if argv is not None else sys.argv[1:])]),
              "memory": "predicted peak CUDA allocation; the CUDA context and allocator fragmentation come on top",
              "rows": rows, "seconds": round(time.perf_counter() - start)}
    print(table(rows))
    save_results(args.name, report)
    return 0


def table(rows: list[dict]) -> str:
    """One line per stage (tuning: full and LoRA 16), one column per module and settings."""
    columns = list(dict.fromkeys((r["family"], r["module"], r["size"], r["settings"]) for r in rows))
    head = "| stage | " + " | ".join(f"{m} {s}² {label}" for _, m, s, label in columns) + " |"
    lines = [head, "| --- |" + " ---: |" * len(columns)]
    for stage in STAGES:
        for rank in ((None, 16) if stage == "tune" else (None,)):
            cells = [next((f"{r['total_gb']:.1f} GB" for r in rows if (r["family"], r["module"], r["size"],
                                                                         r["settings"]) == c and r["stage"] == stage
                           and r["lora_rank"] == rank), "") for c in columns]
            name = STAGE_NAMES[stage] + (f" (LoRA {rank})" if rank else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
