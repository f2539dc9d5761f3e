"""What only a GPU can show, in one run of a few minutes on a CUDA machine: SD1.5's architecture with random weights.

    python -m bench.gpu                                            # a CUDA machine: bench/results/gpu-<gpu>.json
    python -m bench.gpu --device cpu --model small --frames 3 --size 64 --name gpu-dry-run    # the tests' dry run

1. precision: every UNet pass (tuning, inversion, sampling, null-text inversion, the P2P edit) computes its matmuls
   and convolutions in the precision named: float32, fp16 and bf16 autocast, fp16 weights;
2. attention kernels: the SDPA kernel each of the UNet's attentions runs (sparse-causal self-attention, cross-
   attention, temporal attention) at the clip's size, from the profiler's op names;
3. memory: the plan against CUDA's max-allocated for every stage (``bench.memory_check``'s measurement, at
   ``--frames`` and 8 frames);
4. speed: tuning step, inversion and sampling time at ``--frames`` (24) of ``--size`` (512), fp16 autocast with
   gradient checkpointing (``bench.run``).
"""

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict

import torch
from torch import nn

from bench import run_child, save_results

DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SOURCE, EDIT = "a red square", "a yellow square"


@contextmanager
def recorded_dtypes(unet: nn.Module):
    """The dtypes of every Linear and Conv2d output of the UNet while inside (the ops autocast changes)."""
    seen: set[torch.dtype] = set()
    handles = [m.register_forward_hook(lambda m, a, out: seen.add(out.dtype)) for m in unet.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def stages(pipe, latents, passes):
    """Every path that runs the UNet, as (name, run): tuning, inversion, sampling, null-text inversion, P2P."""
    from tav_core import TuneConfig
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit, null_text_invert
    yield "tune", lambda: pipe.tune(latents, SOURCE, TuneConfig(steps=1), progress=False)
    yield "invert", lambda: pipe.invert(latents, 2, passes=passes)
    yield "sample", lambda: pipe.sample(latents, EDIT, steps=2, passes=passes)
    inversion = []
    yield "null_text", lambda: inversion.append(null_text_invert(pipe, latents, SOURCE, 2, inner_steps=1, passes=passes))
    yield "p2p", lambda: edit(pipe, inversion[0], EditControl(SOURCE, EDIT), passes=passes)


def precision_check(components, device, latents) -> list[dict]:
    """Per precision and stage, the dtypes the UNet's matmuls and convolutions gave."""
    from tav_core import TuneAVideo
    from tav_core.sampling.windows import Passes
    rows = []
    for name, weights, precision in (("float32", torch.float32, "no"), ("fp16 autocast", torch.float32, "fp16"),
                                     ("bf16 autocast", torch.float32, "bf16"), ("fp16 weights", torch.float16, None)):
        pipe = TuneAVideo(components, device, dtype=weights, mixed_precision=precision)
        for stage, run in stages(pipe, latents.to(weights), Passes()):
            with recorded_dtypes(pipe.c.unet) as seen:
                run()
            want = DTYPES[pipe.mixed_precision]
            rows.append({"precision": name, "stage": stage, "computed": sorted(str(d) for d in seen),
                         "as_named": seen == {want}})
        components.unet.to(torch.float32)  # (fp16 weights were cast in place)
    return rows


def attention_kernels(pipe, latents) -> dict[str, list[str]]:
    """The attention ops each kind of attention in the UNet ran during one CFG sampling step, from the profiler
    (``aten::_scaled_dot_product_flash_attention``, ``..._efficient_attention``, ``..._cudnn_attention``, math)."""
    from torch.profiler import profile, record_function

    from tav_core.model.attention import TemporalAttention
    kinds = {}
    for name, module in pipe.c.unet.named_modules():
        kind = ("temporal" if isinstance(module, TemporalAttention) else "sparse-causal self" if name.endswith("attn1")
                else "cross" if name.endswith("attn2") else None)
        if kind:
            kinds[module] = kind
    ranges = {}
    enter = lambda module, args: ranges.setdefault(module, []).append(record_function(f"tav:{kinds[module]}").__enter__())
    leave = lambda module, args, out: ranges[module].pop().__exit__(None, None, None)
    handles = [h for m in kinds for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with profile() as prof:
            pipe.sample(latents, EDIT, steps=1)
    finally:
        for h in handles:
            h.remove()
    found: dict[str, set[str]] = {kind: set() for kind in kinds.values()}
    for event in prof.events():
        if "attention" not in event.name or event.name.startswith("tav:"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("tav:"):
            parent = parent.cpu_parent
        if parent is not None:
            found[parent.name.removeprefix("tav:")].add(event.name)
    return {kind: sorted(names) for kind, names in found.items()}


def in_process(args) -> dict:
    """Parts 1 and 2, in this process."""
    from bench.models import bench_components
    from tav_core import TuneAVideo, demo_video
    device = torch.device(args.device)
    components = bench_components(args.model, device=device)
    pipe = TuneAVideo(components, device)
    latents = pipe.encode_video(demo_video(args.frames, args.size, args.size))
    small = latents[:3, :, :32, :32]  # precision does not depend on the size: 3 frames of 256x256 at most
    started = time.perf_counter()
    precision = precision_check(components, device, small)
    checked = time.perf_counter() - started
    kernels = {mode: attention_kernels(TuneAVideo(components, device, mixed_precision=mode), latents)
               for mode in ("no", "fp16")}
    return {"precision": precision, "precision_check_s": checked, "attention_kernels": kernels,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}


def memory_cases(frames: int, size: int) -> list[tuple]:
    """bench.memory_check's cases at the clip's size: every stage, tuning in float32, fp16 and with checkpointing."""
    few = min(frames, 8)
    return [("tune", few, size, False, 0, "no", None), ("tune", few, size, False, 0, "fp16", None),
            ("tune", frames, size, True, 0, "fp16", None), ("invert", frames, size, False, 0, "fp16", None),
            ("sample", frames, size, False, 0, "fp16", None), ("null_text", few, size, False, 0, "no", None),
            ("p2p", frames, size, False, 0, "fp16", None)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="sd15", choices=["small", "sd15"])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--parts", nargs="+", default=["checks", "memory", "speed"], choices=["checks", "memory", "speed"])
    p.add_argument("--name", help="results file name (default gpu-<device name>)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(in_process(argparse.Namespace(**json.loads(args.child)))))
        return 0
    from bench.run import Case
    started = time.perf_counter()
    report = {"command": " ".join(["python -m bench.gpu", *(argv if argv is not None else sys.argv[1:])])}
    if "checks" in args.parts:
        clip = {k: v for k, v in vars(args).items() if k in ("device", "model", "frames", "size")}
        report.update(run_child("bench.gpu", clip))
        wrong = [r for r in report["precision"] if not r["as_named"]]
        print(f"precision: {len(report['precision']) - len(wrong)} of {len(report['precision'])} passes as named"
              + "".join(f"\n  NOT AS NAMED: {r}" for r in wrong), flush=True)
        for mode, kinds in report["attention_kernels"].items():
            print(f"attention ops ({mode}): {kinds}", flush=True)
    if "memory" in args.parts:
        report["memory"] = []
        for case in memory_cases(args.frames, args.size):
            row = run_child("bench.memory_check", [*case, args.device, False, args.model])
            report["memory"].append(row)
            print(f"memory {row['stage']:9} {row['frames']:3} frames {row['mixed_precision']:4} "
                  f"{'ckpt' if row['gradient_checkpointing'] else '':4} planned {row['planned_mb']:8.0f} MB "
                  f"measured {row['measured_mb']:8.0f} MB ({row['planned_over_measured']:.3f})", flush=True)
    if "speed" in args.parts:
        case = Case(model=args.model, frames=args.frames, size=args.size, steps=3, ddim_steps=10, device=args.device,
                    mixed_precision="fp16", gradient_checkpointing=True)
        report["speed"] = run_child("bench.run", asdict(case))
        print(f"speed: tuning step {report['speed']['step_s']:.3f} s, inversion {report['speed']['inversion_s']:.2f} s,"
              f" sampling {report['speed']['sampling_s']:.2f} s (10 DDIM steps), tuning peak "
              f"{report['speed']['tune_peak_mb']:.0f} MB", flush=True)
    report["total_s"] = time.perf_counter() - started
    name = args.name or f"gpu-{report.get('device_name', args.device).lower().replace(' ', '-')}"
    save_results(name, report)
    print(f"in {report['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
