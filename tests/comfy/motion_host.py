"""AnimateDiff motion modules on ComfyUI's own MODEL (imported as its server imports it, the tiny SD1.5 checkpoint),
against the engine on the same checkpoint and module. Prints JSON:

    exact       one UNet call of the inflated MODEL with the module (its APPLY_MODEL wrapper, the motion hooks on
                ComfyUI's UNet layout) against the engine's, and the engine's own movement when the latents move by
                one ulp; how much the module changes the call
    cache       the module is read once per file version
    tuning      One-Shot Tune's runs with the module (full, LoRA): what they train and save
    plans       One-Shot Tune's planned growth over the loaded UNet against the measured allocations (full, LoRA)
    engine      the engine's tuned files (full, LoRA) loaded by Load Tuned Weights: one call against the engine's
    refusals    Load Tuned Weights' messages for files and MODELs whose modules do not match
    long clips  a clip longer than the module encodes through the stock sampler: refused, and run in context windows
"""

import copy
import dataclasses
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
from in_process import CHECKPOINT, import_pack  # noqa: E402
from tiny_motion import MOTION, OTHER_MOTION, write_motion_modules  # noqa: E402

FRAMES = 4
folder = write_motion_modules(Path(tempfile.mkdtemp()) / "animatediff_models")
import_pack()
import comfy.model_management  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.sd  # noqa: E402
import folder_paths  # noqa: E402
from tav_pack.nodes.loaders import load_motion_module  # noqa: E402
from tav_pack.nodes.memory_plan import plan_comfy_tuning, resident_bytes, with_context_windows  # noqa: E402
from tav_pack.nodes.tuned_weights import load_tuned_model, save_tuned_model  # noqa: E402
from tav_pack.nodes.tuning import tune_model  # noqa: E402
from tav_pack.nodes.video_model import attach, diffusion_model, inflate_model, temporal_layers  # noqa: E402
from tav_pack.tav_core import TavError, TuneAVideo, TuneConfig, load_components  # noqa: E402
from tav_pack.tav_core.loading.motion import load_motion_module as engine_motion_module  # noqa: E402
from tav_pack.tav_core.loading.tuned import read_metadata  # noqa: E402
from tav_pack.tav_core.memory.trace import AllocationPeak, Settings  # noqa: E402
from tav_pack.tav_core.sampling.windows import ContextWindows  # noqa: E402

folder_paths.add_model_folder_path("animatediff_models", str(folder))
g = torch.Generator().manual_seed(1)
x, cond = torch.randn(FRAMES, 4, 8, 8, generator=g), torch.randn(1, 77, 768, generator=g) * 0.5
out = {}


def comfy_call(model, latents=x) -> torch.Tensor:
    """The UNet's raw output for ``latents`` at timestep 500, through the MODEL's apply_model (its wrappers)."""
    comfy.model_management.load_models_gpu([model])
    sigma = model.get_model_object("model_sampling").sigmas[500].reshape(1).expand(len(latents))
    seen = []
    hook = diffusion_model(model).register_forward_hook(lambda m, a, o: seen.append(o.detach().clone()))
    try:
        model.model.apply_model(latents * (sigma[:, None, None, None] ** 2 + 1) ** 0.5, sigma,
                                c_crossattn=cond.expand(len(latents), -1, -1),
                                transformer_options={"wrappers": model.wrappers, "cond_or_uncond": [0]})
    finally:
        hook.remove()
    return seen[-1].float()


def engine(module=None) -> TuneAVideo:
    return TuneAVideo(load_components(CHECKPOINT, config=CHECKPOINT.parent / "tiny-sd15-config"), motion_module=module)


def engine_call(pipe, latents=x) -> torch.Tensor:
    with torch.no_grad(), pipe.inflation.video(len(latents)):
        return pipe.raw_unet_fn(latents, torch.tensor([500] * len(latents)), cond.expand(len(latents), -1, -1))


def relative(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def nudge(t):
    return t + t.abs() * torch.finfo(t.dtype).eps


def layer(key: str) -> str:
    """A LoRA file's key without its part: the layer it adapts."""
    for part in (".lora_down.weight", ".lora_up.weight", ".alpha"):
        key = key.removesuffix(part)
    return key


def error(fn) -> str:
    try:
        fn()
    except TavError as e:
        return str(e)
    return ""


tmp = Path(tempfile.mkdtemp())
engine_files = {}  # the engine's tuned files (tuned outside inference mode, as the engine runs)
for name, config in (("full", TuneConfig(steps=2, learning_rate=1e-3)),
                     ("lora", TuneConfig(steps=2, learning_rate=1e-2, lora_rank=2))):
    tuner = engine(engine_motion_module(folder / MOTION))
    tuner.tune(torch.randn(FRAMES, 4, 8, 8, generator=g), "a red square", config, progress=False)
    engine_files[name] = tmp / f"engine-{name}.safetensors"
    tuner.save_tuned(engine_files[name], "a red square", FRAMES, 64, 64, config)

with torch.inference_mode():  # as ComfyUI runs nodes
    base = comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False, output_clip=False)[0]
    motion = load_motion_module(MOTION)
    model = inflate_model(base, None, motion=motion)
    layers = temporal_layers(model)
    pipe = engine(engine_motion_module(folder / MOTION))
    ours, theirs, moved = comfy_call(model), engine_call(pipe), engine_call(pipe, nudge(x))
    plain = comfy_call(inflate_model(base))
    out["exact"] = {"difference": relative(ours, theirs), "floor": relative(moved, theirs),
                    "module's effect": relative(ours, plain), "frame_attention": layers.frame_attention,
                    "group_norm": layers.group_norm, "version": motion.version,
                    "same fingerprint": motion.fingerprint == pipe.inflation.motion.fingerprint}

    again = load_motion_module(MOTION)
    os.utime(folder / MOTION, (0, 1))  # a changed file: read again
    out["cache"] = {"same object on a re-run": again is motion, "read again once changed": load_motion_module(MOTION) is not motion}

    samples = torch.randn(FRAMES, 4, 8, 8, generator=g)
    start = {k: p.detach().clone() for k, p in layers.named_parameters()}
    plans = {}
    for name, rank in (("full", None), ("lora", 2)):  # One-Shot Tune's plan: its growth over the loaded UNet
        plan = plan_comfy_tuning(model, Settings(FRAMES, 64, 64, model.model.get_dtype(), lora_rank=rank,
                                                 clone_frozen_weights=True), count_flops=False)
        plans[name] = plan.total - resident_bytes(model)
    with AllocationPeak() as measured_full:
        full, _ = tune_model(model, layers, cond, samples, TuneConfig(steps=2, seed=5, posterior="mean",
                                                                      learning_rate=1e-3))
    save_tuned_model(tmp / "full.safetensors", model, full, frames=FRAMES, width=64, height=64)
    with AllocationPeak() as measured_lora:
        lora, _ = tune_model(model, layers, cond, samples, TuneConfig(steps=2, seed=5, posterior="mean",
                                                                      learning_rate=1e-2, lora_rank=2))
    out["plans"] = {"full": [plans["full"], measured_full.peak], "lora": [plans["lora"], measured_lora.peak]}
    save_tuned_model(tmp / "lora.safetensors", model, lora, frames=FRAMES, width=64, height=64)
    from safetensors import safe_open
    keys = {n: set(safe_open(str(tmp / f"{n}.safetensors"), "pt").keys()) for n in ("full", "lora")}
    meta = read_metadata(tmp / "full.safetensors")
    trained = dict(full.layers.named_parameters())
    out["tuning"] = {
        "full trains": sorted({k.split(".")[0] for k in full.params}),
        "full motion params trained": sum(k.startswith("motion.") for k in full.params),
        "motion params": len(start),
        "motion params moved": sum(not torch.equal(trained[k], start[k]) for k in start),
        "input MODEL's module unchanged": all(torch.equal(p, start[k]) for k, p in layers.named_parameters()),
        "meta": {k: meta.get(k) for k in ("frame_attention", "group_norm", "motion_version")},
        "meta names the module": meta.get("motion_fingerprint") == motion.fingerprint,
        "full file motion keys": sum(k.startswith("motion.") for k in keys["full"]),
        "lora motion layers": sorted({layer(k).split("transformer_blocks.0.")[1] for k in keys["lora"]
                                      if k.startswith("motion.")}),
        "lora leaves no PEFT layer": not any("lora_" in k or "base_layer" in k for k, _ in lora.layers.named_parameters()),
        "lora moved the module": sum(not torch.equal(p, start[k]) for k, p in lora.layers.named_parameters()),
    }
    # the engine's files through Load Tuned Weights, at strength 1, against the engine with them loaded
    results = {}
    for name, path in engine_files.items():
        loaded = engine(engine_motion_module(folder / MOTION))
        loaded.load_tuned(path)
        tuned = load_tuned_model(path, model)[0]
        theirs = engine_call(loaded)
        results[name] = {"difference": relative(comfy_call(tuned), theirs),
                         "floor": relative(engine_call(loaded, nudge(x)), theirs),
                         "tuning's effect": relative(theirs, engine_call(pipe))}
    out["engine"] = results
    other = inflate_model(base, None, motion=load_motion_module(OTHER_MOTION))
    plain_file = tmp / "plain.safetensors"
    plain_model = inflate_model(base)
    plain_run, _ = tune_model(plain_model, temporal_layers(plain_model), cond, samples, TuneConfig(steps=1, posterior="mean"))
    save_tuned_model(plain_file, plain_model, plain_run, frames=FRAMES, width=64, height=64)
    out["refusals"] = {
        "another module": error(lambda: load_tuned_model(tmp / "full.safetensors", other)),
        "no module": error(lambda: load_tuned_model(tmp / "full.safetensors", base)),
        "plain file, module": error(lambda: load_tuned_model(plain_file, model)),
        "module on an inflated MODEL": error(lambda: inflate_model(plain_model, None, motion=motion)),
        "LoRA on a tuned module": error(lambda: load_tuned_model(
            tmp / "lora.safetensors", load_tuned_model(tmp / "full.safetensors", model)[0])),
    }

    # a clip longer than the module encodes (here: a module made to encode 2 frames, a 4-frame clip) through the stock
    # sampler: refused naming the length, and run in the host's context windows of 2
    short = copy.copy(layers)
    short.motion_module = dataclasses.replace(layers.motion_module, max_frames=2)
    short_model = attach(model.clone(), short)
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(2))

    def stock_sample(m) -> torch.Tensor:
        return comfy.sample.sample(m, noise, 2, 1.0, "ddim", "ddim_uniform", [[cond, {}]], [[cond, {}]],
                                   torch.zeros_like(noise), seed=0)
    windowed = stock_sample(with_context_windows(short_model, ContextWindows(2, 1)))
    out["long clips"] = {"whole clip": error(lambda: stock_sample(short_model)),
                         "in windows finite": bool(torch.isfinite(windowed).all()),
                         "in windows differs from the whole clip": relative(windowed, stock_sample(model))}
print(json.dumps(out))
