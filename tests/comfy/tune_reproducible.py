"""One-Shot Tune's tuning run twice in this process (ComfyUI imported as its server imports it), each on a MODEL
inflated afresh (its temporal layers drawn from the global random state, different each time), with seed 5: prints
a hash of each run's tuned tensors as JSON. The same hashes in another process mean runs reproduce across restarts."""

import hashlib
import json
import warnings

import torch

warnings.filterwarnings("ignore")
from in_process import CHECKPOINT, import_pack  # noqa: E402

import_pack()
import comfy.sd  # noqa: E402
from tav_pack.nodes.tuning import tune_model  # noqa: E402
from tav_pack.nodes.video_model import inflate_model, temporal_layers  # noqa: E402
from tav_pack.tav_core.tuning.tune import TuneConfig  # noqa: E402


def digest(run) -> str:
    h = hashlib.sha256()
    for _, t in sorted({**run.layers.state_dict(), **run.weights}.items()):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


with torch.inference_mode():  # as ComfyUI runs nodes
    base = comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0]
    g = torch.Generator().manual_seed(1)
    samples, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(1, 77, 768, generator=g)
    hashes = []
    for _ in range(2):
        model = inflate_model(base.clone())
        run, _ = tune_model(model, temporal_layers(model), cond, samples,
                            TuneConfig(steps=2, seed=5, posterior="mean", learning_rate=1e-3))
        hashes.append(digest(run))
    print(json.dumps(hashes))
