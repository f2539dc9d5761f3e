"""Tune-A-Video benchmark: tuning step time, peak memory, inversion and CFG sampling time.

    python -m bench.run --model small --frames 8 --size 128            # the engine
    python -m bench.run --model small --frames 8 --size 128 --compare  # engine vs reference-recipe baseline
    python -m bench.run --model small --sweep                          # growth with frames and resolution
    python -m bench.run --model sd15 --frames 24 --size 512 --device cuda --compare

Each measurement runs in its own process. Memory: the peak bytes of the tensors that two tuning steps allocate
(the model already loaded is not counted), counted exactly on the CPU (``peak_bytes``) and by CUDA's max-allocated
on a GPU; times come from a separate run without that count. Results go to bench/results/<name>.json plus a table.
"""

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

from bench import run_child, save_results


@dataclass
class Case:
    variant: str = "engine"        # "engine" or "baseline"
    model: str = "small"
    frames: int = 8
    size: int = 128
    steps: int = 4                 # timed tuning steps (one more is run first as warm-up)
    ddim_steps: int = 10
    device: str = "cpu"
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    frame_window: int = 0
    channels_last: bool = False


def peak_bytes(device, run) -> tuple[object, int]:
    """``run()``'s result and the peak bytes of the tensors it allocated: the growth of CUDA's max-allocated, or
    on the CPU the exact count of ``tav_core.memory.trace.AllocationPeak`` (the process's RSS says little: glibc keeps
    and reuses freed memory). The CPU count slows ops down: measure time in a separate run."""
    import torch

    from tav_core.memory.trace import AllocationPeak
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = run()
        torch.cuda.synchronize()
        return result, torch.cuda.max_memory_allocated() - before
    with AllocationPeak() as tracker:
        result = run()
    return result, tracker.peak


def _tune_engine(pipe, video, prompt, case, sync):
    from tav_core import TuneConfig
    stamps = [time.perf_counter()]
    latents, latent_std = pipe.encode_posterior(video)  # once: counted in the first (warm-up) step
    config = TuneConfig(steps=case.steps + 1, mixed_precision=case.mixed_precision,
                        frame_window=case.frame_window or None)
    pipe.tune(latents, prompt, config, callback=lambda *_: (sync(), stamps.append(time.perf_counter())),
              progress=False, latent_std=latent_std)
    return latents, stamps


def _tune_baseline(pipe, video, prompt, case, sync):
    import torch

    from bench.baseline import BaselineTuner
    pixels = torch.from_numpy(video).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(pipe.device)
    tuner = BaselineTuner(pipe, pixels, prompt)
    stamps = [time.perf_counter()]
    for _ in range(case.steps + 1):
        tuner.step()
        sync()
        stamps.append(time.perf_counter())
    pipe.c.unet.requires_grad_(False)
    return pipe.encode_video(video), stamps


def measure(case: Case) -> dict:
    """Run one case in this process."""
    import torch

    from bench.baseline import reference_attention
    from bench.models import bench_components
    from tav_core import TuneAVideo, demo_video

    torch.manual_seed(0)
    device = torch.device(case.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    engine = case.variant == "engine"
    pipe = TuneAVideo(bench_components(case.model, device=device), device, gradient_checkpointing=engine and case.gradient_checkpointing,
                      mixed_precision=case.mixed_precision)  # every pass computes in it: tuning, inversion, sampling
    if case.channels_last:
        pipe.c.unet.to(memory_format=torch.channels_last)
    attention = nullcontext if engine else (lambda: reference_attention(pipe.c.unet))
    video = demo_video(case.frames, case.size, case.size)
    prompt = "a red square moving over a gradient"
    tune = _tune_engine if engine else _tune_baseline
    with attention():
        latents, stamps = tune(pipe, video, prompt, case, sync)
        _, peak = peak_bytes(device, lambda: tune(pipe, video, prompt, replace(case, steps=1), sync))  # 2 steps
    step_times = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # drop the warm-up step
    with attention():
        sync(); t = time.perf_counter()
        noise = pipe.invert(latents, case.ddim_steps)
        sync(); inversion = time.perf_counter() - t
        pipe.sample(noise, "a yellow square moving over a gradient", guidance_scale=12.5, steps=case.ddim_steps)
        sync(); sampling = time.perf_counter() - t - inversion
    return {**asdict(case), "step_s": sum(step_times) / len(step_times), "tune_peak_mb": peak / 2 ** 20,
            "inversion_s": inversion, "sampling_s": sampling, "threads": torch.get_num_threads()}


def table(rows: list[dict]) -> str:
    head = f"{'variant':9} {'model':6} {'frames':>6} {'size':>5} {'prec':>5} {'ckpt':>5} {'win':>4} {'step s':>8} " \
           f"{'tune MB':>8} {'inv s':>7} {'cfg s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['variant']:9} {r['model']:6} {r['frames']:>6} {r['size']:>5} {r['mixed_precision']:>5} "
                     f"{'yes' if r['gradient_checkpointing'] else 'no':>5} {r['frame_window'] or '-':>4} "
                     f"{r['step_s']:>8.3f} {r['tune_peak_mb']:>8.0f} {r['inversion_s']:>7.2f} {r['sampling_s']:>7.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", choices=["small", "sd15"])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed tuning steps")
    p.add_argument("--ddim-steps", type=int, default=10, help="inversion and sampling steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--frame-window", type=int, default=0, help="tune on random windows of this many frames")
    p.add_argument("--channels-last", action="store_true", help="UNet weights in channels-last memory format")
    p.add_argument("--compare", action="store_true", help="also time the reference-recipe baseline")
    p.add_argument("--sweep", action="store_true", help="frames 8/16/24/32 and three resolutions")
    p.add_argument("--name", help="results file name (default from the options)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Case(**json.loads(args.child)))))
        return 0
    base = Case(model=args.model, frames=args.frames, size=args.size, steps=args.steps, ddim_steps=args.ddim_steps,
                device=args.device, mixed_precision=args.mixed_precision,
                gradient_checkpointing=args.gradient_checkpointing, frame_window=args.frame_window,
                channels_last=args.channels_last)
    cases = [base]
    if args.compare:
        cases.insert(0, Case(**{**asdict(base), "variant": "baseline", "mixed_precision": "no",
                                "gradient_checkpointing": False, "frame_window": 0, "channels_last": False}))
    if args.sweep:
        sizes = [args.size // 2, args.size, args.size * 2]
        cases = [Case(**{**asdict(base), "frames": f}) for f in (8, 16, 24, 32)] + \
                [Case(**{**asdict(base), "size": s}) for s in sizes if s != args.size]
    rows = []
    for case in cases:
        rows.append(run_child("bench.run", asdict(case)))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    report = {"command": " ".join([os.path.basename(sys.executable), "-m", "bench.run", *(argv or sys.argv[1:])]),
              "rows": rows}
    if args.compare:
        b, e = rows
        report["ratios"] = {"step_speedup": b["step_s"] / e["step_s"], "memory_ratio": e["tune_peak_mb"] / b["tune_peak_mb"],
                            "inversion_speedup": b["inversion_s"] / e["inversion_s"],
                            "sampling_speedup": b["sampling_s"] / e["sampling_s"]}
    name = args.name or f"{args.model}-{args.device}-f{args.frames}-s{args.size}{'-compare' if args.compare else ''}" \
                        f"{'-sweep' if args.sweep else ''}"
    print("\n" + table(rows))
    if "ratios" in report:
        print("\n" + "  ".join(f"{k} {v:.2f}x" for k, v in report["ratios"].items()))
    save_results(name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
