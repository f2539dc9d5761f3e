"""The pack's view of the host it runs in, printed as JSON (run by test_host.py, ComfyUI imported here):

    drift       the internals the running host lacks as the pack expects (``nodes.host.drift``)
    broken      the same after three internals are changed here as a host upgrade could change them
    entrypoint  what the host looks like before and after the pack's ``comfy_entrypoint`` (importing changes nothing)
    hooks       forward hooks on the shared UNet: before, while and after an inflated MODEL samples and tunes
"""

import asyncio
import json
import sys
import warnings

warnings.filterwarnings("ignore")
from in_process import CHECKPOINT, import_pack  # noqa: E402

mode = sys.argv[1]
pack = import_pack()
import comfy.context_windows  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402
import torch  # noqa: E402
from tav_pack.nodes import host  # noqa: E402


def hooks_on(unet) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in unet.modules())


if mode == "drift":
    print(json.dumps(host.drift()))
elif mode == "broken":
    comfy.sample.sample_custom = lambda model, noise, cfg, sampler, sigmas, positive, negative, latent_image: None
    del comfy.ops.manual_cast
    comfy.context_windows.IndexListContextHandler.execute = lambda self, model, conds, x_in, timestep: None
    print(json.dumps(host.drift()))
elif mode == "entrypoint":
    def state():
        return {"CLIP.load_sd patched": getattr(comfy.sd.CLIP.load_sd, "tav_remembers_projection", False),
                "models/tuneavideo registered": "tuneavideo" in folder_paths.folder_names_and_paths}
    before = state()
    asyncio.run(pack.comfy_entrypoint())
    patched = comfy.sd.CLIP.load_sd
    asyncio.run(pack.comfy_entrypoint())  # asked again: nothing more happens
    print(json.dumps({"before": before, "after": state(), "patched once": comfy.sd.CLIP.load_sd is patched}))
elif mode == "hooks":
    from tav_pack.nodes.tuning import tune_model
    from tav_pack.nodes.video_model import diffusion_model, inflate_model, temporal_layers
    from tav_pack.tav_core.tuning.tune import TuneConfig
    model, clip = comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT))[:2]
    unet = diffusion_model(model)
    counts = {"before": hooks_on(unet)}
    inflated = inflate_model(model)
    counts["inflated, idle"] = hooks_on(unet)
    seen = []
    probe = unet.register_forward_pre_hook(lambda module, args: seen.append(hooks_on(unet) - 1))
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a ball"))
    latent = torch.zeros(4, 4, 8, 8)
    comfy.sample.sample(inflated, torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0)), 2, 5.0,
                        "euler", "normal", cond, cond, latent, seed=0)
    counts["while sampling"], seen[:] = min(seen), []
    counts["after sampling"] = hooks_on(unet) - 1
    samples = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    tune_model(inflated, temporal_layers(inflated), torch.randn(1, 77, 768), samples,
               TuneConfig(steps=1, posterior="mean"))
    counts["while tuning"] = min(seen)
    probe.remove()
    counts["after tuning"] = hooks_on(unet)
    print(json.dumps(counts))
