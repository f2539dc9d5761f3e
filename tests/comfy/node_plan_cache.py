"""The nodes' plans, kept on disk in the folder argv[1]: plans One-Shot Tune's step (with and without FLOPs) and
DDIM Invert's, Null-Text Invert's and Video KSampler's of the test checkpoint, then the sampler's at another clip
length, in the host's context windows of two lengths and for a CUDA load device, and prints JSON: the stages actually traced and every plan's total (and
three stages in windows traced with and without replayed passes)."""

import json
import os
import sys
import warnings
from dataclasses import replace

import torch

warnings.filterwarnings("ignore")
os.environ["TUNEAVIDEO_CACHE"] = sys.argv[1]
from in_process import CHECKPOINT, import_pack  # noqa: E402

import_pack()
import comfy.sd  # noqa: E402
from tav_pack.nodes import memory_plan  # noqa: E402
from tav_pack.nodes.context_windows import HostWindows  # noqa: E402
from tav_pack.nodes.video_model import inflate_model  # noqa: E402
from tav_pack.tav_core.memory.replay import ReplayedPasses  # noqa: E402
from tav_pack.tav_core.memory.trace import Settings  # noqa: E402
from tav_pack.tav_core.sampling.windows import ContextWindows  # noqa: E402

traced = []
trace_tuning, trace_stage = memory_plan._trace_tuning, memory_plan._trace_stage
memory_plan._trace_tuning = lambda model, s, flops: (traced.append(f"tune {flops}"), trace_tuning(model, s, flops))[1]
memory_plan._trace_stage = lambda model, stage, s: (traced.append(stage), trace_stage(model, stage, s))[1]
with torch.inference_mode():  # as ComfyUI runs nodes
    model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0])
settings = Settings(4, 64, 64, model.model.get_dtype())
totals = {f"tune {flops}": memory_plan.plan_comfy_tuning(model, settings, flops).total for flops in (False, True)}
totals.update({stage: memory_plan.plan_comfy_stage(model, stage, settings).total
               for stage in ("invert", "null_text", "sample")})
totals["sample, 6 frames"] = memory_plan.plan_comfy_stage(model, "sample", replace(settings, frames=6)).total
for length in (2, 3):  # the host's context windows (a fresh handler each time, as each node call makes)
    handler = memory_plan.with_context_windows(model, ContextWindows(length, 1)).model_options["context_handler"]
    windowed = replace(settings, windows=HostWindows(handler))
    totals[f"sample, windows of {length}"] = memory_plan.plan_comfy_stage(model, "sample", windowed).total
replays = []  # (passes traced, passes replayed) of each plan with replay
exit_ = ReplayedPasses.__exit__
ReplayedPasses.__exit__ = lambda self, *exc: (replays.append((self.traced, self.replayed)), exit_(self, *exc))[1]
for stage in ("invert", "null_text", "sample"):  # replayed passes plan what traced passes do, byte for byte
    windowed = replace(settings, frames=8, windows=ContextWindows(2, 1))
    totals[f"{stage} in windows, replay"] = trace_stage(model, stage, windowed, replay=True).total
    totals[f"{stage} in windows, traced"] = trace_stage(model, stage, windowed, replay=False).total
model.load_device = torch.device("cuda")  # (only read by the plan: nothing runs)
totals["sample, cuda"] = memory_plan.plan_comfy_stage(model, "sample", settings).total
print(json.dumps({"traced": traced, "totals": totals, "replays": replays}))
