"""Tune-A-Video's memory and FLOPs at real sizes, planned without weights or a GPU (``tav_core.memory.trace``).

    python -m bench.plan                                   # the full grid: a quarter of an hour on 2 CPU cores
    python -m bench.plan --models sd15 --frames 24 --precisions fp16 --name sd15-f24

For SD1.5 at 512x512 and SD2.1 at 768x768, 8-64 frames: every precision (fp32; fp16 or bf16 weights with
autocast of the same type), with and without gradient checkpointing, and an 8-frame window; per tuning step the
predicted peak CUDA allocation (frozen weights, tuned tensors, AdamW state, gradients, saved activations, the
largest transient), the FLOPs of forward + backward, of an inversion step (one UNet pass) and of a CFG sampling
step (two); the reference's own recipe beside them. Times are estimates from FLOPs at a stated share of a stated
GPU's dense peak, not measurements. Results: bench/results/<name>.json and a Markdown table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bench import save_results

CONFIGS = Path(__file__).parents[1] / "tav_core" / "configs"
MODELS = {"sd15": ("sd1", 512), "sd21": ("sd2", 768)}
PRECISIONS = {"fp32": (torch.float32, "no"), "fp16": (torch.float16, "fp16"), "bf16": (torch.bfloat16, "bf16")}
# dense peak of an A100 (TFLOP/s): fp16/bf16 tensor cores, TF32 for fp32 (PyTorch's default for convolutions)
GPU, TFLOPS, UTILISATION = "A100", {"fp16": 312, "bf16": 312, "fp32": 156}, 0.4


def _config(folder: str, part: str) -> dict:
    return json.loads((CONFIGS / folder / part / "config.json").read_text())


def _vae(config):
    from diffusers import AutoencoderKL
    return AutoencoderKL.from_config(config)


def _text_encoder(config):
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(**config))


_OTHERS = (("vae", _vae), ("text_encoder", _text_encoder))


def reference_plan(folder: str, settings):
    """The reference's tuning step (showlab/Tune-A-Video train_tuneavideo.py, its default config; ``settings``: fp32
    UNet weights under fp16 autocast, gradient checkpointing): VAE and text encoder in fp16 on the GPU and run every
    step (the VAE encodes every frame, without gradients; its FLOPs are added to the step's), memory-efficient
    attention (xformers; the VAE's attention is planned memory-efficient too, where diffusers 0.11 materialised
    its scores)."""
    from torch.utils.flop_counter import FlopCounterMode

    from tav_core.memory.trace import FLOPS, AllocationPeak, cast, plan_pipeline, planning
    plan = plan_pipeline(_config(folder, "unet"), settings)
    with planning():
        vae, text = (cast(build(_config(folder, part)), torch.float16) for part, build in _OTHERS)
        plan.frozen["float16"] = sum(p.numel() * 2 for m in (vae, text) for p in m.parameters())
        pixels = torch.randn(settings.frames, 3, settings.height, settings.width, dtype=torch.float16)
        with torch.no_grad(), AllocationPeak() as encoding, FlopCounterMode(display=False, custom_mapping=FLOPS) as flops:
            vae.encode(pixels).latent_dist.sample()
    plan.extra["vae_encode"] = encoding.peak
    plan.flops += flops.get_total_flops()
    return plan


def _row(model, precision, settings, plan, flops_inference, reference=False) -> dict:
    rate = TFLOPS["fp32" if settings.mixed_precision == "no" else settings.mixed_precision] * 1e12 * UTILISATION
    mb = lambda n: round(n / 2 ** 20, 1)
    return {"model": model, "frames": settings.frames, "size": settings.height, "precision": precision,
            "gradient_checkpointing": settings.gradient_checkpointing, "frame_window": settings.frame_window,
            "recipe": "reference" if reference else "this engine",
            "frozen_mb": {k: mb(v) for k, v in plan.frozen.items()}, "trained_mb": mb(plan.trained),
            "adamw_mb": mb(plan.optimizer), "gradients_mb": mb(plan.gradients), "saved_activations_mb": mb(plan.saved),
            "transient_mb": mb(plan.transient), "extra_peaks_mb": {k: mb(v) for k, v in plan.extra.items()},
            "total_gb": round(plan.total / 2 ** 30, 2), "tuning_tflop": round(plan.flops / 1e12, 2),
            "inversion_step_tflop": round(flops_inference[0] / 1e12, 2),
            "cfg_step_tflop": round(flops_inference[1] / 1e12, 2),
            "estimated_tuning_step_s": round(plan.flops / rate, 3),
            "estimated_500_steps_min": round(500 * plan.flops / rate / 60, 1)}


def inference(folder: str, frames: int, size: int) -> tuple[int, int]:
    """FLOPs of one inversion step (the frames once) and one CFG sampling step (twice)."""
    from diffusers import UNet2DConditionModel

    from tav_core.memory.trace import inference_flops, planning
    from tav_core.model.inflation import inflate
    with planning():
        unet = UNet2DConditionModel.from_config(_config(folder, "unet"))
        inflation = inflate(unet)
        latent, context = (frames, 4, size // 8, size // 8), (1, 77, unet.config.cross_attention_dim)
        fn = lambda x, t, c: unet(x, t, encoder_hidden_states=c).sample
        return tuple(inference_flops(fn, latent, context, batch, inflation.video)[0] for batch in (frames, 2 * frames))


def grid(models, frames_list, precisions, window: int):
    from tav_core.memory.trace import Settings
    for model in models:
        for frames in frames_list:
            size = MODELS[model][1]
            for precision in precisions:
                dtype, mixed = PRECISIONS[precision]
                for ckpt in (False, True):
                    yield model, precision, Settings(frames, size, size, dtype, mixed, ckpt), False
            if window and frames > window:
                yield model, "fp16", Settings(frames, size, size, torch.float16, "fp16", True, window), False
            yield model, "fp32 + fp16 autocast", Settings(frames, size, size, torch.float32, "fp16", True), True


def table(rows: list[dict]) -> str:
    lines = ["| model | frames | size | recipe | precision | ckpt | window | weights GB | activations GB | "
             "peak GB | TFLOP/step | est. s/step | est. 500 steps |",
             "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        weights = sum(r["frozen_mb"].values()) / 1024
        lines.append(f"| {r['model']} | {r['frames']} | {r['size']} | {r['recipe']} | {r['precision']} | "
                     f"{'yes' if r['gradient_checkpointing'] else 'no'} | {r['frame_window'] or ''} | {weights:.2f} | "
                     f"{r['saved_activations_mb'] / 1024:.2f} | {r['total_gb']:.2f} | {r['tuning_tflop']:.1f} | "
                     f"{r['estimated_tuning_step_s']:.2f} | {r['estimated_500_steps_min']:.0f} min |")
    return "\n".join(lines)


def slopes(rows: list[dict]) -> dict:
    """Growth per added frame, from 8 to 64 frames, of each configuration's peak and FLOPs."""
    out = {}
    key = lambda r: (r["model"], r["recipe"], r["precision"], r["gradient_checkpointing"], r["frame_window"])
    for k in {key(r) for r in rows}:
        runs = sorted((r for r in rows if key(r) == k), key=lambda r: r["frames"])
        if len(runs) >= 2 and runs[0]["frames"] != runs[-1]["frames"]:
            a, b = runs[0], runs[-1]
            n = b["frames"] - a["frames"]
            out[" ".join(map(str, k))] = {"frames": [a["frames"], b["frames"]],
                                           "gb_per_frame": round((b["total_gb"] - a["total_gb"]) / n, 3),
                                           "tflop_per_frame": round((b["tuning_tflop"] - a["tuning_tflop"]) / n, 3)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 24, 32, 64])
    p.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    p.add_argument("--window", type=int, default=8, help="also plan this frame window (0: none)")
    p.add_argument("--name", default="plan", help="results file name (default plan)")
    args = p.parse_args(argv)
    from tav_core.memory.trace import plan_pipeline
    rows, flops, start = [], {}, time.perf_counter()
    for model, precision, settings, reference in grid(args.models, args.frames, args.precisions, args.window):
        folder = MODELS[model][0]
        if (model, settings.frames) not in flops:
            flops[model, settings.frames] = inference(folder, settings.frames, settings.height)
        plan = reference_plan(folder, settings) if reference else plan_pipeline(
            _config(folder, "unet"), settings, tuple((build, _config(folder, part)) for part, build in _OTHERS))
        rows.append(_row(model, precision, settings, plan, flops[model, settings.frames], reference))
        r = rows[-1]
        print(f"{model} {settings.frames:3}f {r['recipe']:11} {precision:10} ckpt={settings.gradient_checkpointing!s:5} "
              f"window={settings.frame_window or '-':2}  {r['total_gb']:6.2f} GB  {r['tuning_tflop']:7.1f} TFLOP", flush=True)
    report = {"command": " ".join(["python -m bench.plan", *(argv if argv is not None else sys.argv[1:])]),
              "estimates": f"times are estimates: FLOPs / ({GPU} dense peak {TFLOPS} TFLOP/s x {UTILISATION:.0%})",
              "memory": "predicted peak CUDA allocation of a steady-state tuning step; the CUDA context (~0.3-0.5 GB) "
                        "and allocator fragmentation come on top",
              "rows": rows, "slopes_8_to_64": slopes(rows), "seconds": round(time.perf_counter() - start)}
    print(table(rows))
    save_results(args.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
