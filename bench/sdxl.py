"""SDXL on a 24 GB GPU, every stage planned at real size (random weights never needed): what fits, and with what.

    python -m bench.sdxl                                   # 768 and 1024, 8/16/24 frames: about an hour on 2 CPU cores
    python -m bench.sdxl --sizes 768 --frames 16 --name sdxl-quick

For each size and clip length, every stage of a run (VAE encode, tuning with the reference's tuned set, DDIM
inversion, CFG sampling, null-text inversion, the P2P edit, VAE decode) is fitted by the planner the CLI and the
nodes use (``tav_core.memory.fit.fit_stage``, memory mode "auto") against a GPU of ``--gib`` GiB less the CUDA
context, starting from fp16 weights and fp16 autocast (``--fp16``: what an SDXL user on such a card runs): the
settings it chooses (the cheapest that fit) and the predicted peak allocation with the planner's 10% margin.
Results: bench/results/<name>.json and a Markdown table.
"""

import argparse
import sys
import time

import torch

from bench import save_results
from tav_core.errors import TavError
from tav_core.memory.fit import fit_stage
from tav_core.memory.stages import STAGE_NAMES, STAGES, ModelConfigs, plan_stage
from tav_core.memory.trace import Settings

GB = 2 ** 30
CUDA_CONTEXT = 0.5 * GB


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[768, 1024])
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 24])
    p.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--gib", type=float, default=24.0, help="the GPU's memory (default 24)")
    p.add_argument("--name", default="sdxl")
    args = p.parse_args(argv)
    configs, rows, start = ModelConfigs.shipped("sdxl"), [], time.perf_counter()
    free = args.gib * GB - CUDA_CONTEXT
    for size in args.sizes:
        for frames in args.frames:
            for stage in args.stages:
                began = time.perf_counter()
                asked = Settings(frames, size, size, torch.float16, "fp16")
                try:
                    chosen, report = fit_stage(configs, stage, asked, torch.device("cuda"), "auto", lambda _: free)
                    total = plan_stage(configs, stage, chosen).total
                except TavError as e:
                    chosen, report, total = None, str(e), None
                rows.append({"size": size, "frames": frames, "stage": stage, "fits": chosen is not None,
                             "total_gb": total and total / GB, "report": report,
                             "settings": chosen and describe(chosen), "plan_seconds": time.perf_counter() - began})
                print(f"{size} {frames:3} frames {STAGE_NAMES[stage]:22} {report}", flush=True)
    report = {"command": " ".join(["python -m bench.sdxl", *(argv if argv is not None else sys.argv[1:])]),
              "model": "SDXL base 1.0's architecture (tav_core/configs/sdxl), fp16 weights, fp16 autocast to start",
              "memory": f"fitted against {args.gib:g} GiB less {CUDA_CONTEXT / GB:g} GiB of CUDA context; total_gb: "
                        "predicted peak CUDA allocation of the chosen settings, before the planner's 10% margin",
              "rows": rows, "seconds": round(time.perf_counter() - start)}
    print(table(rows))
    save_results(args.name, report)
    return 0


def describe(s: Settings) -> str:
    parts = [f"{s.mixed_precision} autocast"]
    if s.gradient_checkpointing:
        parts.append("gradient checkpointing")
    if s.frame_window:
        parts.append(f"frame window {s.frame_window}")
    if s.windows is not None:
        parts.append(f"windows {s.windows.length}/{s.windows.overlap}")
    if not s.batch_cfg:
        parts.append("CFG halves apart")
    if s.vae_tiling:
        parts.append("VAE tiles")
    return ", ".join(parts)


def table(rows: list[dict]) -> str:
    keys = sorted({(r["size"], r["frames"]) for r in rows})
    lines = ["| stage | " + " | ".join(f"{s}x{s}, {f} frames" for s, f in keys) + " |",
             "| --- |" + " --- |" * len(keys)]
    for stage in STAGES:
        cells = []
        for key in keys:
            r = next((r for r in rows if (r["size"], r["frames"]) == key and r["stage"] == stage), None)
            cells.append("" if r is None else "does not fit" if not r["fits"] else
                         f"**{r['total_gb']:.1f} GB** {r['settings']}")
        lines.append(f"| {STAGE_NAMES[stage]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
