"""LoRA tuning in ComfyUI: One-Shot Tune's method lora against the engine, a LoRA file through Load Tuned Weights,
DDIM Invert and Video KSampler against the engine, strength, and the stock LoRA loader on the same file."""

import torch
from graphs import latent_graph, load_latent, run_ok

from support import CKPT, EPS, FRAMES, SIZE, nudge, relative, run_in_comfyui, within
from tav_core import demo_video
from tav_core.loading.tuned import read_metadata


def engine(test_models):
    from tav_core import TuneAVideo, load_components
    return TuneAVideo(load_components(test_models / CKPT, config=test_models / "tiny-sd15-config"))


def test_one_shot_tune_lora_equals_the_engine(comfy, test_models):
    """The loss of the second step (after one AdamW update of the adapters) equal: ComfyUI's own trainable LoRA on the
    query projections and PEFT's on the temporal layers, against PEFT's on diffusers' UNet."""
    from tav_core import TuneConfig
    pipe = engine(test_models)
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    graph = latent_graph(comfy, pipe, latents, "lora-tune")
    graph.update({
        "5": {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0]}},
        "7": {"class_type": "TuneAVideoTune", "inputs": {"model": ["5", 0], "positive": ["2", 0],
              "latent_image": ["4", 0], "seed": 0, "steps": 2, "learning_rate": 1e-3, "save_name": "lora-tuned",
              "memory": "off", "method": "lora", "lora_rank": 4}}})
    run_ok(comfy, graph)
    meta = read_metadata(comfy.base / "models" / "tuneavideo" / "lora-tuned_00001_.safetensors")
    assert (meta["method"], meta["lora_rank"], meta["lora_alpha"]) == ("lora", 4, 4.0)
    config = TuneConfig(steps=2, learning_rate=1e-3, posterior="mean", lora_rank=4)
    ours = pipe.tune(latents, "a red square", config, progress=False)[-1]
    moved = engine(test_models).tune(nudge(latents), "a red square", config, progress=False)[-1]
    # ComfyUI's UNet and CLIP vs diffusers' (and merged LoRA weights vs PEFT's unmerged layers): limit 100x how far the
    # engine's loss moves when the latents move by one ulp (or the loss's own ulp)
    floor = max(abs(moved - ours), EPS * ours)
    assert within(abs(meta["final_loss"] - ours), floor, 100, "LoRA tuning, ComfyUI vs engine")


def test_an_engine_lora_edits_in_comfyui_as_in_the_engine_at_any_strength(comfy, test_models):
    """The engine's LoRA file through Load Tuned Weights (strength 1 and 0.5), DDIM Invert and Video KSampler equals
    the engine's invert and sample with the file loaded at that strength; strength 0 equals Inflate Model's edit."""
    from tav_core import TuneConfig
    pipe = engine(test_models)
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    config = TuneConfig(steps=3, learning_rate=1e-2, lora_rank=4, lora_alpha=8.0)
    pipe.tune(latents, "a red square", config, progress=False)
    pipe.save_tuned(comfy.base / "models/tuneavideo/lora-eq.safetensors", "a red square", FRAMES, SIZE, SIZE, config)
    graph = latent_graph(comfy, pipe, latents, "lora-eq")
    steps = 4

    def edit_nodes(model, first: int, prefix: str) -> dict:
        a, b, c = str(first), str(first + 1), str(first + 2)
        return {a: {"class_type": "TuneAVideoInvert", "inputs": {"model": model, "latent_image": ["4", 0],
                                                                 "conditioning": ["3", 0], "steps": steps}},
                b: {"class_type": "TuneAVideoSampler", "inputs": {"model": model, "positive": ["6", 0],
                    "negative": ["3", 0], "latent_image": [a, 0], "cfg": 5.0, "steps": 0, "eta": 0.0, "seed": 0}},
                c: {"class_type": "SaveLatent", "inputs": {"samples": [b, 0], "filename_prefix": prefix}}}
    for i, strength in enumerate((1.0, 0.5, 0.0)):
        node = str(10 + 10 * i)
        graph[node] = {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {
            "model": ["1", 0], "weights_name": "lora-eq.safetensors", "strength": strength}}
        graph.update(edit_nodes([node, 0], 11 + 10 * i, f"tav-test/lora-{strength}"))
    graph["50"] = {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0]}}
    graph.update(edit_nodes(["50", 0], 51, "tav-test/lora-base"))
    run_ok(comfy, graph)
    # strength 0 is the base model: the same graph computation as the untuned one, repeated (same process, same CPU)
    assert torch.equal(load_latent(comfy, "tav-test/lora-0.0"), load_latent(comfy, "tav-test/lora-base"))
    for strength in (1.0, 0.5):
        at = engine(test_models)
        at.load_tuned(comfy.base / "models/tuneavideo/lora-eq.safetensors", strength)
        ours = at.sample(at.invert(latents, steps), "a yellow square", "", guidance_scale=5.0, steps=steps)
        moved = at.sample(at.invert(nudge(latents), steps), "a yellow square", "", guidance_scale=5.0, steps=steps)
        theirs = load_latent(comfy, f"tav-test/lora-{strength}") * pipe.scaling
        # ComfyUI's modules vs diffusers': limit 100x how far the engine's result moves (max, relative) when the
        # latents move by one ulp (CFG 5 amplifies it)
        assert within(relative(theirs, ours), relative(moved, ours), 100, f"LoRA edit at strength {strength}")
    untuned = load_latent(comfy, "tav-test/lora-base")
    assert relative(load_latent(comfy, "tav-test/lora-1.0"), untuned) > 1e-3  # the adapters act


def test_lora_files_load_back_as_tuned_and_the_stock_lora_loader_applies_their_image_part(test_models):
    """One-Shot Tune's LoRA run in ComfyUI's process, planned within 10% of its measured memory: saved and loaded back
    it is the tuned MODEL (same numbers: the
    same host LoRA patches and the same temporal sums), strength 0 is the base model bit for bit, and the stock LoRA
    loader (Load LoRA's function) puts the same query weights in as Load Tuned Weights; a full-tuning file loads at
    strengths 0, 0.5 and 1 as W0 + s (W - W0)."""
    out = run_in_comfyui("lora_host.py", "4")
    print(out)
    assert out["tuned moved queries"] > 1e-3 and out["tuned temporal out"] > 1e-3  # 3 steps at lr 1e-2 moved both
    # One-Shot Tune's memory plan of the LoRA run (its host UNet, its LoraDiff and PEFT layers on fake tensors) against
    # the run's measured allocations
    assert out["planned lora"] == 4 and "tuning needs about" in out["report"]
    assert abs(out["planned"] / out["measured"] - 1) < 0.1, (out["planned"], out["measured"])
    # the same host patches and the same float32 sums, or sums in another order: within a few ulps of weights of
    # magnitude ~0.1 (~1e-8 each)
    for what in ("loaded vs tuned queries", "loaded vs tuned temporal", "stock vs tuned queries"):
        assert out[what] < 1e-6, (what, out[what])
    assert out["strength 0 queries equal base"] and out["strength 0 temporal out"] == 0
    # a full-tuning file at a strength: W0 + s (W - W0) as the host's patches, the temporal output scaled
    assert out["full: strength 0 queries equal base"] and out["full: strength 0 temporal out"] == 0
    assert out["full: tuned moved queries"] > 1e-3
    for what in ("full: strength 1 vs tuned queries", "full: strength 0.5 vs halfway queries",
                 "full: strength 0.5 vs half the temporal out"):
        assert out[what] < 1e-6, (what, out[what])
    # 2 query and 4 temporal adapters a transformer block, 3 tensors an adapter; the query ones under lora_unet_ names
    assert out["keys"] == out["blocks"] * 6 * 3 and out["spatial keys"] == out["blocks"] * 2 * 3 and out["rank"] == 4


def test_lora_tuning_of_a_tuned_model_is_refused(comfy, test_models):
    """A LoRA file names its temporal base by the seed only: One-Shot Tune refuses LoRA on a tuned MODEL (whose
    temporal attention is not the seed's draw). (A strength that is not a number: the every-float-input test.)"""
    from server import error_message
    from tav_core import TuneConfig
    pipe = engine(test_models)
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    pipe.tune(latents, "a red square", TuneConfig(steps=1, learning_rate=1e-2), progress=False)
    pipe.save_tuned(comfy.base / "models/tuneavideo/full-for-lora.safetensors", "a red square", FRAMES, SIZE, SIZE,
                    TuneConfig(steps=1))
    graph = latent_graph(comfy, pipe, latents, "lora-refused")
    graph.update({
        "5": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {"model": ["1", 0],
                                                                     "weights_name": "full-for-lora.safetensors"}},
        "7": {"class_type": "TuneAVideoTune", "inputs": {"model": ["5", 0], "positive": ["2", 0],
              "latent_image": ["4", 0], "seed": 0, "steps": 1, "learning_rate": 1e-3, "save_name": "",
              "method": "lora", "lora_rank": 4}}})
    error = error_message(comfy.run(graph)) or ""
    assert "LoRA tuning starts from an untuned video model" in error and "Inflate Model" in error, error
