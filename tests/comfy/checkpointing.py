"""Gradient checkpointing on the host's UNet (ComfyUI imported as its server imports it, the tiny SD1.5 checkpoint).
One-Shot Tune: what a step keeps for backward, planned with and without it (and under bf16 autocast for the CPU and
for a GPU, whose autocast keeps the norms' float32 results), and the tensors two tuning steps give
with it, without it, and without it on latents moved by one ulp. Null-Text Invert: its planned step peak with and
without it, and its output when the free memory makes "auto" take it, without it ("off") and without it on latents
moved by one ulp. Prints JSON."""

import json
import warnings

import torch

warnings.filterwarnings("ignore")
from in_process import CHECKPOINT, import_pack  # noqa: E402

import_pack()
import comfy.sd  # noqa: E402
from tav_pack.nodes.memory_plan import plan_comfy_tuning  # noqa: E402
from tav_pack.nodes.tuning import tune_model  # noqa: E402
from tav_pack.nodes.video_model import inflate_model, temporal_layers  # noqa: E402
from tav_pack.tav_core.memory.trace import Settings  # noqa: E402
from tav_pack.tav_core.tuning.tune import TuneConfig  # noqa: E402

with torch.inference_mode():  # as ComfyUI runs nodes
    model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0])
saved = {ck: plan_comfy_tuning(model, Settings(4, 128, 128, gradient_checkpointing=ck), count_flops=False).saved
         for ck in (False, True)}
half = {}  # bf16 autocast, planned for the CPU and (the norms in float32, as CUDA's autocast runs them) for a GPU
for device in ("cpu", "cuda"):
    model.load_device = torch.device(device)
    half[device] = {str(ck): plan_comfy_tuning(model, Settings(4, 128, 128, mixed_precision="bf16",
                                                               gradient_checkpointing=ck), count_flops=False).saved
                    for ck in (False, True)}
model.load_device = torch.device("cpu")
g = torch.Generator().manual_seed(0)
samples, cond = torch.randn(4, 4, 16, 16, generator=g), torch.randn(1, 77, 768, generator=g)
moved = samples + samples.abs() * torch.finfo(torch.float32).eps
tuned = []
for ck, x in ((False, samples), (True, samples), (False, moved)):
    run, _ = tune_model(model, temporal_layers(model), cond, x, TuneConfig(steps=2, learning_rate=1e-3,
                                                                           posterior="mean"), ck)
    tuned.append({**run.layers.state_dict(), **run.weights})
plain, checkpointed, nudged = tuned
largest = lambda a, b: max((a[k].float() - b[k].float()).abs().max().item() for k in a)  # noqa: E731

import comfy.model_management  # noqa: E402
import tav_pack.nodes.editing as editing  # noqa: E402
from tav_pack.nodes.editing import NullTextInvert  # noqa: E402
from tav_pack.nodes.memory_plan import compute_precision, has_inference_weights, plan_comfy_stage  # noqa: E402
from tav_pack.tav_core.memory.fit import OVERHEAD  # noqa: E402

asked = Settings(4, 128, 128, model.model.get_dtype(), compute_precision(model),
                 clone_frozen_weights=has_inference_weights(model))  # what the node plans
needs = {ck: int(plan_comfy_stage(model, "null_text", Settings(**{**asked.__dict__, "gradient_checkpointing": ck})).total
                 * OVERHEAD["cpu"]) for ck in (False, True)}
took, outputs = [], []
original = editing.autograd_unet
editing.autograd_unet = lambda model, gradient_checkpointing=False: (took.append(gradient_checkpointing),
                                                                     original(model, None, gradient_checkpointing))[1]
for memory, x in (("off", samples), ("auto", samples), ("off", moved)):
    free = (needs[True] + needs[False]) // 2  # between the two: "auto" must take checkpointing
    comfy.model_management.get_free_memory = \
        lambda device=None, torch_free_too=False: (free, free) if torch_free_too else free
    with torch.inference_mode():
        out = NullTextInvert.execute(model, [[cond, {}]], [[torch.zeros_like(cond), {}]], {"samples": x}, 3, 7.5, 2,
                                     "", memory=memory).result[0]
    outputs.append({"noise": out["samples"], "embeddings": out["tav_null_text"]})
off, auto, off_moved = outputs
print(json.dumps({"saved": {str(k): v for k, v in saved.items()}, "half": half, "difference": largest(checkpointed, plain),
                  "floor": largest(nudged, plain), "null_text_needs": {str(k): v for k, v in needs.items()},
                  "null_text_checkpointing": took, "null_text_difference": largest(auto, off),
                  "null_text_floor": largest(off_moved, off)}))
