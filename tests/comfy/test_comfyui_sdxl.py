"""SDXL in ComfyUI: the host's own SDXL MODEL and CLIP (Load Checkpoint on the toy SDXL checkpoint, which the test
server recognises as SDXL through tests/comfy/tav_test_tiny_sdxl.py) through the pack's nodes, against the headless
engine on diffusers' modules loaded from the same file."""


from graphs import control_node, latent_graph, load_latent, run_ok

from support import EPS, FRAMES, SDXL_CKPT, SIZE, nudge, relative, run_in_comfyui, within
from tav_core import demo_video
from tav_core.loading.tuned import read_metadata


def engine(test_models):
    from tav_core import TuneAVideo, load_components
    return TuneAVideo(load_components(test_models / SDXL_CKPT, config=test_models / "tiny-sdxl-config"))


def test_one_shot_tune_on_sdxl_equals_the_engine(comfy, test_models):
    """One-Shot Tune on the host's SDXL MODEL (its ADM vector built from CLIP Text Encode's pooled output and the
    clip's size, or CLIP Text Encode SDXL's sizes) tunes as the engine does: the loss of its second step (after one
    AdamW update) equal."""
    from tav_core import TuneConfig
    pipe = engine(test_models)
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    graph = latent_graph(comfy, pipe, latents, "sdxl-tune", SDXL_CKPT)
    graph.update({
        "5": {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0]}},
        "7": {"class_type": "TuneAVideoTune", "inputs": {"model": ["5", 0], "positive": ["2", 0],
              "latent_image": ["4", 0], "seed": 0, "steps": 2, "learning_rate": 1e-3, "save_name": "sdxl-tuned",
              "memory": "off"}}})  # (auto may choose bf16 autocast on a busy machine)
    for name, size in (("sdxl-frame-size", SIZE), ("sdxl-1024", 1024)):  # CLIP Text Encode SDXL: its sizes are read
        graph[name] = {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["1", 1], "width": size, "height": size, "crop_w": 0, "crop_h": 0, "target_width": size,
            "target_height": size, "text_g": "a red square", "text_l": "a red square"}}
        graph[f"{name}-tune"] = {"class_type": "TuneAVideoTune", "inputs": {
            **graph["7"]["inputs"], "positive": [name, 0], "save_name": name}}
    run_ok(comfy, graph)
    folder = comfy.base / "models" / "tuneavideo"
    losses = {name: read_metadata(folder / f"{name}_00001_.safetensors")["final_loss"]
              for name in ("sdxl-tuned", "sdxl-frame-size", "sdxl-1024")}
    config = TuneConfig(steps=2, learning_rate=1e-3, posterior="mean")
    ours = pipe.tune(latents, "a red square", config, progress=False)[-1]
    moved = engine(test_models).tune(nudge(latents), "a red square", config, progress=False)[-1]
    # ComfyUI's UNet and CLIP vs diffusers': limit 100x how far the engine's loss moves when the latents move by one
    # ulp (or the loss's own ulp, where that nudge does not move a mean); CLIP Text Encode SDXL at the frame size
    # conditions as CLIP Text Encode does (the engine's size ids), at 1024 it conditions otherwise
    floor = max(abs(moved - ours), EPS * ours)
    assert within(abs(losses["sdxl-tuned"] - ours), floor, 100, "SDXL tuning, ComfyUI vs engine")
    assert within(abs(losses["sdxl-frame-size"] - ours), floor, 100, "CLIP Text Encode SDXL at the frame size")
    assert abs(losses["sdxl-1024"] - ours) > 1000 * floor


def test_sdxl_inversion_edit_null_text_and_p2p_equal_the_engine(comfy, test_models):
    """The same SDXL checkpoint, tuned weights and latents: DDIM Invert + Video KSampler, and Null-Text Invert + Video
    KSampler with Attention Control (the source branch conditioned on the source prompt's pooled embedding too),
    against the engine's invert/sample and null_text_invert/edit."""
    from tav_core import TuneConfig
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit, null_text_invert
    pipe = engine(test_models)
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    pipe.tune(latents, "a red square", TuneConfig(steps=3, learning_rate=1e-2), progress=False)  # non-zero temporal
    pipe.save_tuned(comfy.base / "models/tuneavideo/sdxl-eq.safetensors", "a red square", FRAMES, SIZE, SIZE,
                    TuneConfig(steps=3))
    graph = latent_graph(comfy, pipe, latents, "sdxl-eq", SDXL_CKPT)
    steps, cfg = 4, 7.5
    graph.update({
        "5": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {"model": ["1", 0],
                                                                     "weights_name": "sdxl-eq.safetensors"}},
        "7": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["5", 0], "latent_image": ["4", 0],
                                                           "conditioning": ["3", 0], "steps": steps}},
        "8": {"class_type": "TuneAVideoSampler", "inputs": {"model": ["5", 0], "positive": ["6", 0],
              "negative": ["3", 0], "latent_image": ["7", 0], "cfg": 5.0, "steps": 0, "eta": 0.0, "seed": 0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "tav-test/sdxl-edit"}},
        "10": {"class_type": "TuneAVideoNullTextInvert", "inputs": {"model": ["5", 0], "positive": ["2", 0],
               "negative": ["3", 0], "latent_image": ["4", 0], "steps": steps, "cfg": cfg, "inner_steps": 3,
               "save_name": ""}},
        "11": control_node("a red square", "a yellow square", blend_source_words="square",
                           blend_edit_words="square", blend_start=0.0),
        "12": {"class_type": "TuneAVideoSampler", "inputs": {"model": ["5", 0], "seed": 0, "steps": 0, "cfg": cfg,
               "eta": 0.0, "positive": ["6", 0], "negative": ["3", 0], "latent_image": ["10", 0],
               "control": ["11", 0], "source_positive": ["2", 0]}},
        "13": {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "tav-test/sdxl-p2p"}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["12", 1],
                                                      "filename_prefix": "tav-test/sdxl-p2p-source"}},
    })
    run_ok(comfy, graph)
    control = EditControl("a red square", "a yellow square", cross_steps=0.4, blend_words=(["square"], ["square"]),
                          blend_start=0.0)

    def results(z):
        plain = pipe.sample(pipe.invert(z, steps), "a yellow square", "", guidance_scale=5.0, steps=steps)
        source, edited = edit(pipe, null_text_invert(pipe, z, "a red square", steps, cfg, inner_steps=3), control)
        return {"sdxl-edit": plain, "sdxl-p2p": edited, "sdxl-p2p-source": source}
    ours, moved = results(latents), results(nudge(latents))
    for name in ours:
        theirs = load_latent(comfy, f"tav-test/{name}") * pipe.scaling
        # ComfyUI's modules vs diffusers': limit 100x how far the engine's result moves (max, relative) when the
        # latents move by one ulp; CFG and Adam on the null text amplify it
        assert within(relative(theirs, ours[name]), relative(moved[name], ours[name]), 100,
                      f"SDXL, ComfyUI vs engine: {name}")


def test_sd_and_sdxl_models_are_taken_and_other_families_refused_by_name():
    """The host's own model classes: SD 1.x and SDXL (and SDXL's distillations) are taken; the SDXL refiner, SD3,
    Flux, Stable Cascade and EDM models (Playground 2.5) are refused with a message naming them."""
    said = run_in_comfyui("family_refusals.py", timeout=600)
    assert said["SD1.5"] is None and said["SDXL"] is None and said["SSD-1B"] is None
    for family, model in (("SDXL refiner", "SDXLRefiner"), ("SD3", "SD3"), ("Flux", "Flux"),
                          ("Stable Cascade", "StableCascade_C")):
        assert said[family].startswith(f"Inflate Model got a {model} MODEL") and "1.x/2.x and SDXL" in said[family]
    assert "got a EDM model" in said["Playground 2.5 (EDM)"] and "eps- or v-prediction" in said["Playground 2.5 (EDM)"]


def test_an_sdxl_lora_tuned_in_the_engine_edits_in_comfyui_as_in_the_engine(comfy, test_models):
    """The SDXL workflow tunes LoRA: an engine SDXL LoRA file (its query adapters under diffusers' SDXL block names)
    becomes the host's LoRA patches on its own SDXL MODEL; DDIM Invert + Video KSampler equal the engine's edit."""
    from tav_core import TuneConfig
    pipe = engine(test_models)
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    config = TuneConfig(steps=3, learning_rate=1e-2, lora_rank=4)
    pipe.tune(latents, "a red square", config, progress=False)
    pipe.save_tuned(comfy.base / "models/tuneavideo/sdxl-lora.safetensors", "a red square", FRAMES, SIZE, SIZE, config)
    graph = latent_graph(comfy, pipe, latents, "sdxl-lora", SDXL_CKPT)
    steps = 4
    graph.update({
        "5": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {"model": ["1", 0],
                                                                     "weights_name": "sdxl-lora.safetensors"}},
        "7": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["5", 0], "latent_image": ["4", 0],
                                                           "conditioning": ["3", 0], "steps": steps}},
        "8": {"class_type": "TuneAVideoSampler", "inputs": {"model": ["5", 0], "positive": ["6", 0],
              "negative": ["3", 0], "latent_image": ["7", 0], "cfg": 5.0, "steps": 0, "eta": 0.0, "seed": 0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "tav-test/sdxl-lora"}}})
    run_ok(comfy, graph)
    ours = pipe.sample(pipe.invert(latents, steps), "a yellow square", "", guidance_scale=5.0, steps=steps)
    moved = pipe.sample(pipe.invert(nudge(latents), steps), "a yellow square", "", guidance_scale=5.0, steps=steps)
    theirs = load_latent(comfy, "tav-test/sdxl-lora") * pipe.scaling
    # ComfyUI's modules vs diffusers': limit 100x how far the engine's result moves when the latents move by one ulp
    assert within(relative(theirs, ours), relative(moved, ours), 100, "SDXL LoRA edit, ComfyUI vs engine")
