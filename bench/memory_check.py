"""Does the memory plan hold? Planned against measured memory of the small model, stage by stage, case by case.

    python -m bench.memory_check                      # CPU: tuning (fp32 and autocast) and every editing stage
    python -m bench.memory_check --device cuda        # on a GPU: CUDA's max-allocated
    python -m bench.memory_check --motion             # with an AnimateDiff motion module (its tuning, every stage)

For each case, in its own process: the plan's growth over the loaded model (tuning: AdamW state + the step's peak,
which holds the saved activations; editing stages: the step's peak + what the stage keeps for the clip,
``tav_core.memory.stages``) and the measured growth while the stage runs (``bench.run.peak_bytes``: on the CPU every
tensor allocation counted exactly; on CUDA max-allocated); for tuning on the CPU also the growth of the process's
peak RSS (what ``tav_core.memory.fit.OVERHEAD`` allows for). Results: bench/results/<name>.json.
"""

import argparse
import json
import sys
from pathlib import Path

from bench import run_child, save_results
from bench.run import peak_bytes

# (stage, frames, size, gradient checkpointing, tuning frame window, autocast, context windows (length, overlap))
CASES = [("tune", 8, 64, False, 0, "no", None), ("tune", 8, 128, False, 0, "no", None),
         ("tune", 24, 128, False, 0, "no", None), ("tune", 8, 256, False, 0, "no", None),
         ("tune", 24, 128, True, 0, "no", None), ("tune", 24, 128, False, 8, "no", None),
         ("tune", 8, 128, False, 0, "bf16", None), ("tune", 24, 128, True, 0, "bf16", None),
         ("tune", 24, 128, False, 0, "fp16", None),
         ("invert", 24, 128, False, 0, "no", None), ("invert", 64, 128, False, 0, "no", (16, 4)),
         ("sample", 24, 128, False, 0, "no", None), ("sample", 64, 128, False, 0, "bf16", (16, 4)),
         ("null_text", 16, 128, False, 0, "no", None), ("null_text", 48, 128, False, 0, "no", (8, 2)),
         ("p2p", 16, 128, False, 0, "no", None), ("p2p", 48, 128, False, 0, "no", (8, 2))]
# the same with an AnimateDiff motion module as the temporal layers (tuning: the whole module; --motion)
MOTION_CASES = [("tune", 16, 128, False, 0, "no", None), ("tune", 16, 128, True, 0, "bf16", None),
                ("invert", 16, 128, False, 0, "no", None), ("sample", 16, 128, False, 0, "no", None),
                ("sample", 48, 128, False, 0, "no", (16, 4)), ("null_text", 16, 128, False, 0, "no", None),
                ("p2p", 16, 128, False, 0, "no", None)]
STEPS = 2  # DDIM steps of the editing stages measured (their peak is one step's; the null-text trajectory grows)


def _rss_kb(field: str) -> int:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def measure(stage: str, frames: int, size: int, checkpointing: bool, window: int, precision: str, windows,
            device: str, motion: bool = False, model: str = "small") -> dict:
    import torch

    from bench.models import bench_components, bench_motion_module
    from tav_core import TuneAVideo, TuneConfig, demo_video
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit, null_text_invert
    from tav_core.loading.motion import motion_config
    from tav_core.memory.stages import ModelConfigs, plan_stage
    from tav_core.memory.trace import Settings, plan_pipeline
    from tav_core.sampling.windows import ContextWindows, Passes
    device = torch.device(device)
    module = bench_motion_module(model) if motion else None
    pipe = TuneAVideo(bench_components(model, device=device), device, gradient_checkpointing=checkpointing, motion_module=module)
    latents = pipe.encode_video(demo_video(frames, size, size))
    context = ContextWindows(*windows) if windows else None
    row = {"model": model, "stage": stage, "frames": frames, "size": size, "gradient_checkpointing": checkpointing,
           "frame_window": window, "mixed_precision": precision, "windows": windows, "device": str(device),
           "motion_module": motion}
    if stage == "tune":
        config = TuneConfig(steps=2, posterior="mean", frame_window=window or None, mixed_precision=precision)
        plan = plan_pipeline(dict(pipe.c.unet.config), Settings(frames, size, size, mixed_precision=precision,
                                                                 gradient_checkpointing=checkpointing,
                                                                 frame_window=window or None),
                             motion=motion_config(module) if motion else None, device_type=device.type)
        row["planned_saved_mb"] = plan.saved / 2 ** 20
        row["planned_mb"] = (plan.optimizer + plan.step_peak) / 2 ** 20
        run = lambda: pipe.tune(latents, "a square", config, progress=False)
        if device.type == "cpu":
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS to the current RSS
            before = _rss_kb("VmRSS")
            run()
            row["rss_growth_mb"] = (_rss_kb("VmHWM") - before) / 2 ** 20
    else:
        passes = Passes(precision, context)
        control = EditControl("a square moves", "a circle moves", blend_words=(["square"], ["circle"]))
        run = {"invert": lambda: pipe.invert(latents, STEPS, passes=passes),
               "sample": lambda: pipe.sample(latents, "a circle", steps=STEPS, passes=passes),
               "null_text": lambda: null_text_invert(pipe, latents, "a square", STEPS, inner_steps=2, passes=passes),
               "p2p": lambda: edit(pipe, latents, control, steps=STEPS, passes=passes)}[stage]
        plan = plan_stage(ModelConfigs.of(pipe.c, module), stage, Settings(
            frames, size, size, mixed_precision=precision, windows=context, steps=STEPS), device.type)
        row["planned_mb"] = (plan.step_peak + plan.held) / 2 ** 20
    _, measured = peak_bytes(device, run)
    row["measured_mb"] = measured / 2 ** 20
    row["planned_over_measured"] = row["planned_mb"] / row["measured_mb"]
    if "rss_growth_mb" in row:
        row["rss_over_measured"] = row["rss_growth_mb"] / row["measured_mb"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--stages", nargs="+", help="only these stages (tune, invert, sample, null_text, p2p)")
    p.add_argument("--motion", action="store_true", help="with an AnimateDiff motion module (MOTION_CASES)")
    p.add_argument("--name", help="results file name (default memory-check-<device>)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return 0
    rows = []
    for case in MOTION_CASES if args.motion else CASES:
        if args.stages and case[0] not in args.stages:
            continue
        rows.append(row := run_child("bench.memory_check", [*case, args.device, args.motion]))
        rss = f"  RSS growth {row['rss_growth_mb']:6.0f} MB ({row['rss_over_measured']:.2f}x)" if "rss_growth_mb" in row else ""
        options = ["ckpt" if row["gradient_checkpointing"] else "", f"window {row['frame_window']}" if row["frame_window"]
                   else "", row["mixed_precision"] if row["mixed_precision"] != "no" else "",
                   f"windows {row['windows'][0]}/{row['windows'][1]}" if row["windows"] else ""]
        print(f"{row['stage']:9} {row['frames']:3} frames {row['size']:4} px {' '.join(o for o in options if o):22} "
              f"planned {row['planned_mb']:7.1f} MB  measured {row['measured_mb']:7.1f} MB "
              f"({row['planned_over_measured']:.3f}){rss}", flush=True)
    name = args.name or f"memory-check-{'motion-' if args.motion else ''}{args.device}"
    save_results(name, {"command": " ".join(["python -m bench.memory_check", *(argv or sys.argv[1:])]), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
