"""Does the memory plan hold? Planned against measured tuning memory of the small model, case by case.

    python -m bench.memory_check                      # CPU: 8/24 frames, 64/128/256 px, checkpointing, a window
    python -m bench.memory_check --device cuda        # on a GPU: CUDA's max-allocated

For each case, in its own process: the plan's growth over the loaded model (AdamW state + the step's peak, which
holds the saved activations), the measured growth while the first two real steps run (``bench.run.peak_bytes``:
on the CPU every tensor allocation counted exactly; on CUDA max-allocated) and, on the CPU, the growth of the
process's peak RSS (what ``tav_core.memory_budget.OVERHEAD`` allows for). Results: bench/results/<name>.json.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.run import RESULTS, peak_bytes

CASES = [(8, 64, False, 0), (8, 128, False, 0), (24, 128, False, 0), (8, 256, False, 0), (24, 128, True, 0),
         (24, 128, False, 8)]


def _rss_kb(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def measure(frames: int, size: int, checkpointing: bool, window: int, device: str) -> dict:
    import torch

    from bench.models import bench_components
    from tav_core import TuneAVideo, TuneConfig, demo_video
    from tav_core.memory import Settings, plan_pipeline
    device = torch.device(device)
    pipe = TuneAVideo(bench_components("small"), device, gradient_checkpointing=checkpointing)
    latents = pipe.encode_video(demo_video(frames, size, size))
    config = TuneConfig(steps=2, posterior="mean", frame_window=window or None)
    plan = plan_pipeline(dict(pipe.c.unet.config), Settings(frames, size, size, gradient_checkpointing=checkpointing,
                                                             frame_window=window or None))
    row = {"frames": frames, "size": size, "gradient_checkpointing": checkpointing, "frame_window": window,
           "device": str(device), "planned_saved_mb": plan.saved / 2 ** 20,
           "planned_mb": (plan.optimizer + plan.step_peak) / 2 ** 20}
    if device.type == "cpu":
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS to the current RSS
        before = _rss_kb("VmRSS")
        pipe.tune(latents, "a square", config, progress=False)
        row["rss_growth_mb"] = (_rss_kb("VmHWM") - before) / 2 ** 20
        for p in pipe.c.unet.parameters():  # the tuned tensors' state from the first run is gone: start afresh
            p.grad = None
    _, measured = peak_bytes(device, lambda: pipe.tune(latents, "a square", config, progress=False))
    row["measured_mb"] = measured / 2 ** 20
    row["planned_over_measured"] = row["planned_mb"] / row["measured_mb"]
    if "rss_growth_mb" in row:
        row["rss_over_measured"] = row["rss_growth_mb"] / row["measured_mb"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", help="results file name (default memory-check-<device>)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*json.loads(args.child), args.device)))
        return 0
    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, "-m", "bench.memory_check", "--device", args.device,
                              "--child", json.dumps(case)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
        if out.returncode != 0:
            raise RuntimeError(f"case {case} failed:\n{out.stderr[-3000:]}")
        rows.append(row := json.loads(out.stdout.strip().splitlines()[-1]))
        rss = f"  RSS growth {row['rss_growth_mb']:6.0f} MB ({row['rss_over_measured']:.2f}x)" if "rss_growth_mb" in row else ""
        print(f"{row['frames']:3} frames {row['size']:4} px ckpt={row['gradient_checkpointing']!s:5} "
              f"window={row['frame_window'] or '-':2}  planned {row['planned_mb']:6.0f} MB  measured "
              f"{row['measured_mb']:6.0f} MB ({row['planned_over_measured']:.3f}){rss}", flush=True)
    name = args.name or f"memory-check-{args.device}"
    from tav_core.files import atomic_path
    RESULTS.mkdir(exist_ok=True)
    with atomic_path(RESULTS / f"{name}.json") as tmp:
        tmp.write_text(json.dumps({"command": " ".join(["python -m bench.memory_check", *(argv or sys.argv[1:])]),
                                   "rows": rows}, indent=1))
    print(f"written {RESULTS / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
