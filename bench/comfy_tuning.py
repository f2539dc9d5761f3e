"""One-Shot Tune's memory in ComfyUI against the headless engine, planned and measured on the CPU.

    python -m bench.comfy_tuning --frames 8 --size 128        # needs .cache/ComfyUI and the test checkpoint

The ComfyUI path's frozen weights: as loaded for real in a graph (inference tensors, copied once per use for
autograd), as loaded outside inference mode (used as they are: the usual case on a GPU, where load_models_gpu
moves them outside inference mode), and the first release's way (every weight copied twice, once kept). Each is
planned (tav_core.memory.trace on fake tensors) and measured (the exact peak of the tensors two real steps allocate,
``bench.run.peak_bytes``).
"""

import argparse
import sys
import warnings
from pathlib import Path

import torch

from bench import save_results
from tests.comfy.in_process import CHECKPOINT, import_pack

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import_pack()
    import comfy.sd
    from tav_pack.nodes import autograd
    from tav_pack.nodes.memory_plan import plan_comfy_tuning
    from tav_pack.nodes.tuning import tune_model
    from tav_pack.nodes.video_model import inflate_model, temporal_layers

    from bench.run import peak_bytes
    from tav_core import TuneAVideo, TuneConfig, load_components
    from tav_core.memory.trace import Settings, plan_pipeline
    cpu = torch.device("cpu")

    frames, size = args.frames, args.size
    samples, cond = torch.randn(frames, 4, size // 8, size // 8), torch.randn(1, 77, 768)
    config = TuneConfig(steps=2, posterior="mean")
    rows = []

    def row(name, plan, measured_extra, predicted_extra):
        rows.append({"path": name, "frames": frames, "size": size, "planned_mb": predicted_extra / 2 ** 20,
                     "measured_mb": measured_extra / 2 ** 20, "saved_mb": plan.saved / 2 ** 20,
                     "step_peak_mb": plan.step_peak / 2 ** 20})
        print(f"{name:45} planned {predicted_extra / 2 ** 20:7.0f} MB   measured {measured_extra / 2 ** 20:7.0f} MB",
              flush=True)

    pipe = TuneAVideo(load_components(CHECKPOINT, config=CHECKPOINT.parent / "tiny-sd15-config"))
    plan = plan_pipeline(dict(pipe.c.unet.config), Settings(frames, size, size))
    latents = pipe.encode_video(__import__("tav_core").demo_video(frames, size, size))
    _, measured = peak_bytes(cpu, lambda: pipe.tune(latents, "a square", config, progress=False))
    row("headless engine", plan, measured, plan.optimizer + plan.step_peak)

    for name, inference, first_release in (("ComfyUI, weights loaded in a graph", True, False),
                                           ("ComfyUI, weights loaded outside inference mode", False, False),
                                           ("ComfyUI, first release (every weight copied twice)", True, True)):
        autograd.keep = torch.clone if first_release else (lambda w: w)
        with torch.inference_mode(inference):
            model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False,
                                                                         output_clip=False)[0])
        settings = Settings(frames, size, size, weights_dtype=model.model.get_dtype(), clone_frozen_weights=inference)
        plan = plan_comfy_tuning(model, settings)
        _, measured = peak_bytes(cpu, lambda: tune_model(model, temporal_layers(model), cond, samples, config))
        row(name, plan, measured, plan.trained + plan.optimizer + plan.step_peak)
    save_results(f"comfy-tuning-f{frames}-s{size}",
                 {"command": f"python -m bench.comfy_tuning --frames {frames} --size {size}", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
