"""A node of the pack run in this process (ComfyUI imported as its server imports it) with the free memory the host
reports set by argv[1] and the memory mode argv[2]; argv[3] the node: "tune" (One-Shot Tune), "invert" (DDIM
Invert), "null_text" (Null-Text Invert), "sample" (Video KSampler). argv[1] is bytes, or for the inference nodes
"tight": just enough for 4-frame windows. Prints JSON: the settings the node ran with, its memory lines, the
planned needs of the windows it could take (inference nodes), or the error."""

import json
import logging
import sys
import warnings

import torch

warnings.filterwarnings("ignore")
free_spec, mode, node = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "tune"
from in_process import CHECKPOINT, import_pack  # noqa: E402

import_pack()
import comfy.model_management  # noqa: E402
import comfy.sd  # noqa: E402
from tav_pack.nodes import editing, memory_plan, sampling, tuning  # noqa: E402
from tav_pack.nodes.memory_plan import plan_comfy_stage  # noqa: E402
from tav_pack.nodes.memory_plan import window_candidates  # noqa: E402
from tav_pack.nodes.video_model import inflate_model  # noqa: E402
from tav_pack.tav_core.memory.fit import OVERHEAD  # noqa: E402
from tav_pack.tav_core.memory.trace import Settings  # noqa: E402

ran, needs = {}, {}
records = []
logging.getLogger().addHandler(type("Keep", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
logging.getLogger().setLevel(logging.INFO)
original_tune = tuning.tune_model


def spy_tune(model, layers, cond, samples, config, gradient_checkpointing=False, callback=None):
    ran.update(mixed_precision=config.mixed_precision, frame_window=config.frame_window,
               gradient_checkpointing=gradient_checkpointing)
    return original_tune(model, layers, cond, samples, config, gradient_checkpointing, callback)


def spy_run(original):
    def run(model, *args, **kwargs):
        handler = model.model_options.get("context_handler")
        ran.update(windows=handler and [handler.context_length, handler.context_overlap])
        return original(model, *args, **kwargs)
    return run


tuning.tune_model = spy_tune
sampling._run = spy_run(sampling._run)
original_inversion = editing.null_text_inversion
editing.null_text_inversion = lambda model, *a, **k: (ran.update(windowed=type(model).__name__ == "Windowed"),
                                                      original_inversion(model, *a, **k))[1]
with torch.inference_mode():  # as ComfyUI runs nodes
    model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0])
    frames = 8 if node == "tune" else 16
    samples, cond = torch.randn(frames, 4, 16, 16), [[torch.randn(1, 77, 768), {}]]
    if node == "tune":  # what the node plans for 8 frames with checkpointing, bf16 and a window of 4
        from tav_pack.nodes.memory_plan import has_inference_weights, plan_comfy_tuning, resident_bytes
        window4 = Settings(frames, 128, 128, model.model.get_dtype(), "bf16", True, 4,
                           clone_frozen_weights=has_inference_weights(model))
        needs["frame window of 4"] = int((plan_comfy_tuning(model, window4, count_flops=False).total
                                          - resident_bytes(model)) * OVERHEAD["cpu"])
    else:
        stage = "sample" if node == "sample" else node
        asked = Settings(frames, 128, 128, model.model.get_dtype(),
                         clone_frozen_weights=node == "null_text" and any(
                             p.is_inference() for p in model.model.diffusion_model.parameters()))
        for name, settings in [("whole clip", asked), *window_candidates(asked, "cpu", stage)]:
            needs[name] = int(plan_comfy_stage(model, stage, settings).total * OVERHEAD["cpu"])
    smallest = list(needs.values())[-1] if needs else 0  # the last candidate: the shortest windows
    free = smallest + 2 ** 20 if free_spec == "tight" else int(free_spec)
    comfy.model_management.get_free_memory = \
        lambda device=None, torch_free_too=False: (free, free) if torch_free_too else free
    latent = {"samples": samples}
    try:
        forecasts = []
        if node == "tune":
            tuning.OneShotTune.execute(model, cond, latent, 0, 1, 3e-5, "", memory=mode)
            memory_plan.LONG = 0  # every run long: the forecast names what half the frames or size would take
            forecasts = [memory_plan.tuning_forecast(model, latent["samples"], tuning.TuneConfig(steps=500), False)]
        elif node == "invert":
            sampling.DDIMInvert.execute(model, cond, latent, 1, memory=mode)
        elif node == "null_text":
            editing.NullTextInvert.execute(model, cond, cond, latent, 1, 7.5, 1, "", memory=mode)
        else:
            inverted = {**latent, sampling.INVERSION_STEPS: 1}
            sampling.VideoKSampler.execute(model, 0, 0, 7.5, 0.0, cond, cond, inverted, memory=mode)
        print(json.dumps({"ran": ran, "log": [r for r in records if "memory" in r], "needs": needs, "free": free,
                          "forecast": [r for r in records if "steps of" in r] + [text for _, text in forecasts]}))
    except Exception as e:  # noqa: BLE001  (reported to the test)
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "ran": ran, "needs": needs, "free": free}))
