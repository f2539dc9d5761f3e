"""The inference nodes' memory plans against what their runs allocate (ComfyUI imported as its server imports it,
the tiny SD1.5 checkpoint, 8 frames of 128x128): DDIM Invert, Null-Text Invert and Video KSampler, each run under an
allocation tracker with the memory check off, and the stage's plan of the same settings. Prints JSON: {stage:
[planned, measured]} and whether a run left gradients on the MODEL's temporal layers."""

import json
import warnings

import torch

warnings.filterwarnings("ignore")
from in_process import CHECKPOINT, import_pack  # noqa: E402

import_pack()
import comfy.sd  # noqa: E402
from tav_pack.nodes import editing, sampling  # noqa: E402
from tav_pack.nodes.memory_plan import compute_precision, has_inference_weights, plan_comfy_stage  # noqa: E402
from tav_pack.nodes.video_model import inflate_model, temporal_layers  # noqa: E402
from tav_pack.tav_core.memory.trace import AllocationPeak, Settings  # noqa: E402

FRAMES = 8
with torch.inference_mode():  # as ComfyUI runs nodes
    model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0])
g = torch.Generator().manual_seed(0)
latent = {"samples": torch.randn(FRAMES, 4, 16, 16, generator=g)}
cond = [[torch.randn(1, 77, 768, generator=g) * 0.5, {}]]
settings = Settings(FRAMES, 128, 128, model.model.get_dtype(), compute_precision(model))
out, runs = {}, {
    "invert": lambda: sampling.DDIMInvert.execute(model, cond, latent, 1, memory="off"),
    "null_text": lambda: editing.NullTextInvert.execute(model, cond, cond, latent, 1, 7.5, 1, "", memory="off"),
    "sample": lambda: sampling.VideoKSampler.execute(model, 0, 0, 7.5, 0.0, cond, cond,
                                                     {**latent, sampling.INVERSION_STEPS: 1}, memory="off")}
for stage, run in runs.items():
    planned = plan_comfy_stage(model, stage, Settings(**{
        **settings.__dict__, "clone_frozen_weights": stage == "null_text" and has_inference_weights(model)}))
    with AllocationPeak() as measured:
        run()
    out[stage] = [planned.step_peak + planned.held, measured.peak]
layers = temporal_layers(model)
out["gradients left on the temporal layers"] = any(p.grad is not None for p in layers.parameters())
print(json.dumps(out))
