"""First plans: the seconds each SD1.5 stage's memory plan takes where no plan is on disk yet (a first run; later
runs read it, ``tav_core.memory.cache``), each in a fresh process, so the fake-tensor caches start cold as they do
for a user. Windowed stages also without replayed UNet passes (``tav_core.memory.replay``), to show what replay saves;
the two plans must be byte-equal, or the bench fails.

    python -m bench.plan_time                        # 24 and 64 frames at 512x512: about 10 minutes on 2 CPU cores
    python -m bench.plan_time --frames 40 --size 64 --model tiny --stages null_text --name plan-time-smoke

Settings per stage as ``bench.stages``: the small GPU's (fp16, checkpointing, 8-frame tuning windows, 16-frame
context windows overlapping by 4) and the whole clip in fp32. Imports are not counted (``bench.startup`` has them).
Results: bench/results/<name>.json.
"""

import argparse
import json
import sys
import time
from dataclasses import asdict, replace

from bench import run_child, save_results
from bench.stages import settings


def child(payload: dict) -> dict:
    from tav_core.loading.configs import ModelConfigs
    from tav_core.loading.tiny import tiny_components
    from tav_core.memory.stages import _traced
    configs = ModelConfigs.of(tiny_components(0)) if payload["model"] == "tiny" else ModelConfigs.shipped("sd1")
    s = replace(settings(payload["stage"], payload["frames"], payload["small_gpu"]), height=payload["size"],
                width=payload["size"])
    began = time.perf_counter()
    plan = _traced(configs, payload["stage"], s, "cuda", replay=payload["replay"])
    return {"seconds": time.perf_counter() - began, "plan": asdict(plan)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", nargs="+", type=int, default=[24, 64])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--model", choices=("sd1", "tiny"), default="sd1")
    p.add_argument("--stages", nargs="+", default=["encode", "tune", "invert", "sample", "null_text", "p2p", "decode"])
    p.add_argument("--name", default="plan-time-cpu")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    rows, start = [], time.perf_counter()
    for frames in args.frames:
        for small_gpu in (True, False):
            for stage in args.stages:
                base = dict(stage=stage, frames=frames, small_gpu=small_gpu, size=args.size, model=args.model)
                replayed = run_child("bench.plan_time", dict(base, replay=True))
                row = dict(base, seconds=round(replayed["seconds"], 2))
                windowed = settings(stage, frames, small_gpu).windows is not None
                if windowed:
                    traced = run_child("bench.plan_time", dict(base, replay=False))
                    if traced["plan"] != replayed["plan"]:
                        raise SystemExit(f"{stage} at {frames} frames: the plan with replayed passes differs "
                                         f"({replayed['plan']} against {traced['plan']})")
                    row["seconds_without_replay"] = round(traced["seconds"], 2)
                rows.append(row)
                print(f"{frames:4} frames {'small GPU' if small_gpu else 'fp32 whole':10} {stage:10} "
                      f"{row['seconds']:6.2f} s" + (f" (without replay {row['seconds_without_replay']:.2f} s)"
                                                   if windowed else ""), flush=True)
    report = {"command": " ".join(["python -m bench.plan_time", *(argv if argv is not None else sys.argv[1:])]),
              "what": "seconds of one stage's first memory plan in a fresh process (imports not counted)",
              "rows": rows, "slowest_s": max(r["seconds"] for r in rows), "seconds": round(time.perf_counter() - start)}
    save_results(args.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
