"""Full tuning against LoRA: file sizes, planned memory at real sizes, and CPU step time and memory measured.

    python -m bench.lora                      # all three parts: about ten minutes on 2 CPU cores
    python -m bench.lora --parts files plans  # what needs no training

files: the tuned-weights file each method writes for SD1.5 and SDXL (the real writer, zero-filled tensors of the
architecture's shapes, so its exact size on disk), full against LoRA at ranks 4, 16 and 64. plans: the tuning step
planned by ``tav_core.memory.stages.plan_stage`` (fake tensors of the real architecture, fp16 weights and autocast),
SD1.5 24 frames at 512x512, SDXL 16 frames at 768x768 and 1024x1024, with and without gradient checkpointing, full
against LoRA rank 16. flops: a tuning step's FLOPs at SD1.5's size, full against LoRA at ranks 4, 16 and 64.
cpu: the small benchmark model tuned on the CPU, full and LoRA steps alternated in one process
(one thread, ``OMP_WAIT_POLICY=PASSIVE``): median step time and peak allocation. Results: bench/results/<name>.json.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import save_results
from tav_core.loading.tuned import lora_file_tensors, video_parameters, write_tuned
from tav_core.memory.stages import ModelConfigs, plan_stage
from tav_core.memory.trace import AllocationPeak, Settings, planning
from tav_core.model.inflation import inflate, transformer_blocks
from tav_core.model.lora import SPATIAL, TEMPORAL

GB, MB = 2 ** 30, 2 ** 20
RANKS = (4, 16, 64)
PLANS = (("sd1", 24, 512), ("sdxl", 16, 768), ("sdxl", 16, 1024))


def tuned_shapes(model: str) -> tuple[dict, list[str], dict]:
    """(full tuning's tensor shapes, the blocks' diffusers names, each adapted layer's (in, out)) of an architecture."""
    from diffusers import UNet2DConditionModel
    with planning():
        unet = UNet2DConditionModel.from_config(ModelConfigs.shipped(model).unet)
        inflate(unet)
        full = {k: tuple(p.shape) for k, p in video_parameters(unet).items()}
        blocks = transformer_blocks(unet)
        layers = {f"blocks.{i}.{layer}": (block.get_submodule(layer).in_features, block.get_submodule(layer).out_features)
                  for i, (_, block) in enumerate(blocks) for layer in SPATIAL + TEMPORAL}
    return full, [name for name, _ in blocks], layers


def file_sizes() -> list[dict]:
    rows = []
    meta = dict(prompt="a man is skiing", frames=24, width=512, height=512, frame_attention="sparse_causal")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "w.safetensors"
        for model in ("sd1", "sdxl"):
            full, names, layers = tuned_shapes(model)
            write_tuned(path, {k: torch.zeros(s) for k, s in full.items()}, [0.0] * 64, **meta)
            rows.append({"model": model, "method": "full", "bytes": path.stat().st_size,
                         "parameters": sum(torch.Size(s).numel() for s in full.values())})
            for rank in RANKS:
                adapters = {}
                for layer, (fan_in, fan_out) in layers.items():
                    adapters[f"{layer}.lora_A.weight"] = torch.zeros(rank, fan_in)
                    adapters[f"{layer}.lora_B.weight"] = torch.zeros(fan_out, rank)
                write_tuned(path, lora_file_tensors(adapters, names, float(rank)), [0.0] * 64, method="lora",
                            lora_rank=rank, lora_alpha=float(rank), temporal_seed=0, temporal_fingerprint=[0.0] * 96,
                            **meta)
                rows.append({"model": model, "method": f"lora rank {rank}", "bytes": path.stat().st_size,
                             "parameters": sum(t.numel() for t in adapters.values())})
                print(rows[-1], flush=True)
    return rows


def plans() -> list[dict]:
    rows = []
    for model, frames, size in PLANS:
        configs = ModelConfigs.shipped(model)
        for checkpointing in (False, True):
            for rank in (None, 16):
                began = time.perf_counter()
                plan = plan_stage(configs, "tune", Settings(frames, size, size, torch.float16, "fp16", checkpointing,
                                                            lora_rank=rank))
                rows.append({"model": model, "frames": frames, "size": size, "gradient_checkpointing": checkpointing,
                             "method": "full" if rank is None else f"lora rank {rank}", "total_gb": plan.total / GB,
                             "trained_gb": plan.trained / GB, "optimizer_gb": plan.optimizer / GB,
                             "gradients_gb": plan.gradients / GB, "saved_gb": plan.saved / GB,
                             "frozen_gb": sum(plan.frozen.values()) / GB,
                             "plan_seconds": round(time.perf_counter() - began, 1)})
                print(rows[-1], flush=True)
    return rows


def flops() -> list[dict]:
    """FLOPs of a tuning step (forward, backward, AdamW) at SD1.5's size, full against LoRA: what the CPU bench's small
    model cannot show (its layers are 64-128 wide, so rank-16 adapters are not small beside them)."""
    from tav_core.memory.trace import plan_pipeline
    rows = []
    for rank in (None, 4, 16, 64):
        plan = plan_pipeline(ModelConfigs.shipped("sd1").unet, Settings(24, 512, 512, torch.float16, "fp16", True,
                                                                         lora_rank=rank))
        rows.append({"model": "sd1", "frames": 24, "size": 512, "method": "full" if rank is None else f"lora rank {rank}",
                     "tflop_per_step": plan.flops / 1e12})
        print(rows[-1], flush=True)
    return rows


def cpu_steps(frames: int = 8, size: int = 128, steps: int = 6) -> list[dict]:
    """Full and LoRA tuning of the small model, alternated: each round tunes ``steps`` steps of each from fresh
    weights; the first step of each run (its set-up) is left out of the times."""
    from bench.models import bench_components
    from tav_core import TuneAVideo, TuneConfig, demo_video
    torch.set_num_threads(1)
    times, peaks = {"full": [], "lora rank 16": []}, {}
    latents = TuneAVideo(bench_components("small")).encode_video(demo_video(frames, size, size))
    for _ in range(3):
        for method, rank in (("full", None), ("lora rank 16", 16)):
            pipe = TuneAVideo(bench_components("small"))
            stamps = []
            with AllocationPeak() as peak:
                pipe.tune(latents, "a red square", TuneConfig(steps=steps, posterior="mean", lora_rank=rank),
                          callback=lambda step, loss: stamps.append(time.perf_counter()), progress=False)
            times[method] += [b - a for a, b in zip(stamps, stamps[1:])]
            peaks[method] = peak.peak
    return [{"method": m, "frames": frames, "size": size, "median_step_seconds": statistics.median(t),
             "steps_timed": len(t), "peak_allocation_mb": peaks[m] / MB} for m, t in times.items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=["files", "plans", "flops", "cpu"],
                   default=["files", "plans", "flops", "cpu"])
    p.add_argument("--name", default="lora")
    args = p.parse_args(argv)
    start, report = time.perf_counter(), {"command": " ".join(["python -m bench.lora", *(argv or sys.argv[1:])])}
    parts = {"files": file_sizes, "plans": plans, "flops": flops, "cpu": cpu_steps}
    for part in args.parts:
        report[part] = parts[part]()
    report["seconds"] = round(time.perf_counter() - start)
    save_results(args.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
