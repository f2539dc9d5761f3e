"""One-Shot Tune run in this process (ComfyUI imported as its server imports it) with the free memory the host
reports set to argv[1] bytes and the memory mode argv[2]; prints JSON: the settings tuning ran with, or the error."""

import json
import logging
import sys
import warnings

import torch

warnings.filterwarnings("ignore")
free, mode = int(sys.argv[1]), sys.argv[2]
from bench.comfy_tuning import CHECKPOINT, import_pack  # noqa: E402

import_pack()
import comfy.model_management  # noqa: E402
import comfy.sd  # noqa: E402

comfy.model_management.get_free_memory = lambda device=None, torch_free_too=False: (free, free) if torch_free_too else free
from tav_pack.nodes import tuning  # noqa: E402
from tav_pack.nodes.video_model import inflate_model  # noqa: E402

ran = {}
original = tuning.tune_model


def spy(model, layers, cond, samples, config, gradient_checkpointing=False, callback=None):
    ran.update(mixed_precision=config.mixed_precision, frame_window=config.frame_window,
               gradient_checkpointing=gradient_checkpointing)
    return original(model, layers, cond, samples, config, gradient_checkpointing, callback)


tuning.tune_model = spy
records = []
logging.getLogger().addHandler(type("Keep", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
logging.getLogger().setLevel(logging.INFO)
with torch.inference_mode():  # as ComfyUI runs nodes
    model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0])
    samples, cond = torch.randn(8, 4, 16, 16), [[torch.randn(1, 77, 768), {}]]
    try:
        tuning.OneShotTune().tune(model, cond, {"samples": samples}, 0, 1, 3e-5, "", memory=mode)
        print(json.dumps({"ran": ran, "log": [r for r in records if "memory" in r]}))
    except Exception as e:  # noqa: BLE001  (reported to the test)
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "ran": ran}))
