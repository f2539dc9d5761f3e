"""SDXL in ComfyUI at real size, planned on the host's own UNet class (no weights, no GPU): what One-Shot Tune and
the inference nodes add over the loaded MODEL, as their memory plans see it.

    python -m bench.comfy_sdxl                             # 768x768, 8/16/24 frames: ~15 minutes on 2 CPU cores
    python -m bench.comfy_sdxl --sizes 1024 --frames 16
    python -m bench.comfy_sdxl --frames 16 --stages tune --lora-rank 16 --gib 16 --name comfy-sdxl-lora

The MODEL is the host's SDXL definition (``comfy.supported_models.SDXL``, base 1.0's UNet shape) in fp16, as the host
loads SDXL on a GPU, with attention as a CUDA host runs it (PyTorch SDPA). Per stage: the settings the node's plan
would take against a 24 GB card (the MODEL and its temporal layers loaded, the CUDA context aside) and the planned
growth. Results: bench/results/<name>.json.
"""

import argparse
import sys
import time
import types

import torch

from bench import save_results
from tests.comfy.in_process import import_pack

GB = 2 ** 30
SDXL_UNET = {"model_channels": 320, "use_linear_in_transformer": True, "transformer_depth": [0, 0, 2, 2, 10, 10],
             "context_dim": 2048, "adm_in_channels": 2816, "use_temporal_attention": False, "in_channels": 4,
             "out_channels": 4, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "image_size": 32,
             "use_temporal_resblock": False, "num_classes": "sequential", "use_spatial_transformer": True,
             "legacy": False}


def sdxl_model(tav):
    """A stand-in MODEL: the host's SDXL config and its UNet class on fake tensors (``tav_core.memory.trace.planning``)."""
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.model_base
    import comfy.ops
    import comfy.supported_models
    config = comfy.supported_models.SDXL(SDXL_UNET)
    with tav.tav_core.memory.trace.planning():
        unet = openaimodel.UNetModel(**config.unet_config, dtype=torch.float16, device="cpu",
                                     operations=comfy.ops.disable_weight_init)
    base = types.SimpleNamespace(model_config=config, manual_cast_dtype=None, diffusion_model=unet, adm_channels=2816,
                                 get_dtype=lambda: torch.float16, model_type=comfy.model_base.ModelType.EPS)
    sampling = comfy.model_base.model_sampling(config, comfy.model_base.ModelType.EPS)
    return types.SimpleNamespace(model=base, load_device=torch.device("cuda"), get_model_object=lambda name: sampling)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[768])
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 24])
    p.add_argument("--gib", type=float, default=24.0)
    p.add_argument("--stages", nargs="+", default=["tune", "invert", "sample", "null_text", "p2p"])
    p.add_argument("--lora-rank", type=int, help="plan One-Shot Tune's method lora at this rank")
    p.add_argument("--name", default="comfy-sdxl")
    args = p.parse_args(argv)
    command = " ".join(["python -m bench.comfy_sdxl", *(argv if argv is not None else sys.argv[1:])])
    tav = import_pack()  # (sets the host's own command line)
    import comfy.ldm.modules.attention as attention
    attention.optimized_attention = attention.optimized_attention_masked = attention.attention_pytorch  # CUDA's
    from tav_pack.nodes.memory_plan import plan_comfy_stage, plan_comfy_tuning, resident_bytes, window_candidates
    from tav_pack.tav_core.memory.fit import candidates, fit
    from tav_pack.tav_core.memory.trace import Settings
    from tav_pack.tav_core.model.inflation import TemporalLayers
    model = sdxl_model(tav)
    with tav.tav_core.memory.trace.planning():
        layers = sum(p.numel() * 4 for p in TemporalLayers(model.model.diffusion_model).parameters())  # fp32
    loaded = resident_bytes(model) + layers
    free = args.gib * GB - 0.5 * GB - loaded
    rows, start = [], time.perf_counter()
    for size in args.sizes:
        for frames in args.frames:
            for stage in args.stages:
                asked = Settings(frames, size, size, torch.float16, "fp16",
                                 lora_rank=args.lora_rank if stage == "tune" else None)
                began = time.perf_counter()
                if stage == "tune":
                    plan_for, options, already = (lambda s: plan_comfy_tuning(model, s, count_flops=False)), \
                        candidates, resident_bytes(model)
                else:
                    plan_for, options, already = (lambda s, st=stage: plan_comfy_stage(model, st, s)), \
                        window_candidates, 0
                chosen, report = fit(plan_for, asked, already, lambda _: free, "cuda", "auto", stage, options)
                rows.append({"size": size, "frames": frames, "stage": stage, "report": report,
                             "plan_seconds": time.perf_counter() - began})
                print(f"{size} {frames:3} frames {stage:10} {report}", flush=True)
    save_results(args.name, {"command": command,
                             "loaded_gb": loaded / GB, "free_gb": free / GB, "rows": rows,
                             "seconds": round(time.perf_counter() - start)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
