"""AnimateDiff motion modules in ComfyUI: Load & Inflate Checkpoint / Inflate Model with a module from
models/animatediff_models, the inflated MODEL against the engine on the same module, One-Shot Tune of the module (full
and LoRA), tuned files that name their module, and the graphs that run with it on a real server."""

import json

import pytest
import torch
from graphs import base_graph, load_latent, run_ok, tune_node
from tiny_motion import MOTION, OTHER_MOTION

from server import error_message
from support import CKPT, FRAMES, SIZE, relative, run_in_comfyui, within
from tav_core.loading.tuned import read_metadata

LOADER = {"class_type": "TuneAVideoLoadInflateCheckpoint", "inputs": {"ckpt_name": CKPT, "motion_module": MOTION}}


@pytest.fixture(scope="module")
def motion_host(test_models):
    result = run_in_comfyui("motion_host.py")
    print(json.dumps(result, indent=1))
    return result


def test_the_inflated_model_with_a_module_is_the_engines_on_the_same_weights(motion_host):
    """One UNet call of the MODEL (its wrapper, the module's hooks on ComfyUI's input/middle/output blocks) against the
    engine's on diffusers' UNet, same checkpoint and module file: limit 10x how far the engine's call moves when the
    latents move by one ulp. The module acts (30% of the output), with AnimateDiff v2's per-frame attention and norm."""
    exact = motion_host["exact"]
    assert within(exact["difference"], exact["floor"], 10, "ComfyUI vs engine, with a motion module")
    assert exact["module's effect"] > 0.05 and exact["same fingerprint"]
    assert (exact["version"], exact["frame_attention"], exact["group_norm"]) == ("v2", "per_frame", "frame")
    assert motion_host["cache"] == {"same object on a re-run": True, "read again once changed": True}


def test_one_shot_tune_trains_the_module_and_its_files_name_it(motion_host):
    tuning = motion_host["tuning"]
    assert tuning["full trains"] == ["blocks", "motion"]  # the queries and the module
    assert tuning["full motion params trained"] == tuning["motion params"] == tuning["motion params moved"] > 0
    assert tuning["full file motion keys"] == tuning["motion params"]  # parameters only: not the encodings
    assert tuning["input MODEL's module unchanged"]
    assert tuning["meta"] == {"frame_attention": "per_frame", "group_norm": "frame", "motion_version": "v2"}
    assert tuning["meta names the module"]
    # LoRA on both attentions' four projections of every motion module; merged back, no PEFT layer left
    assert tuning["lora motion layers"] == sorted(f"{a}.{p}" for a in ("attn1", "attn2")
                                                  for p in ("to_q", "to_k", "to_v", "to_out.0"))
    assert tuning["lora leaves no PEFT layer"] and tuning["lora moved the module"] == 4 * 8  # 4 modules, 8 layers


def test_one_shot_tunes_memory_plan_with_a_module_holds(motion_host):
    """The plan's growth over the loaded UNet (the run's own copy of the module, what it trains, AdamW, the step)
    against the allocations measured while One-Shot Tune's runs tune: within 10%, fully and through LoRA."""
    for method, (planned, measured) in motion_host["plans"].items():
        assert abs(planned / measured - 1) < 0.1, (method, planned, measured)


def test_a_clip_longer_than_the_module_encodes_is_refused_or_runs_in_context_windows(motion_host):
    long_clips = motion_host["long clips"]
    assert "at most 2 frames and this pass has 4" in long_clips["whole clip"]
    assert long_clips["in windows finite"] and long_clips["in windows differs from the whole clip"] > 1e-3


@pytest.mark.parametrize("method", ["full", "lora"])
def test_an_engine_file_tuned_with_a_module_computes_in_comfyui_as_in_the_engine(motion_host, method):
    """Load Tuned Weights of the engine's file on the MODEL with the same module: one UNet call against the engine
    with the file loaded, limit 10x the engine's own one-ulp movement; tuning did change the call."""
    result = motion_host["engine"][method]
    assert within(result["difference"], result["floor"], 10, f"engine {method} file with a module, ComfyUI vs engine")
    assert result["tuning's effect"] > 1e-2


def test_files_and_modules_that_do_not_match_are_refused_by_name(motion_host):
    refusals = motion_host["refusals"]
    assert "tuned with another motion module" in refusals["another module"]
    assert "tuned with an AnimateDiff motion module (v2); give that module" in refusals["no module"]
    assert "motion module is tuned already, and a LoRA file adds to the module as loaded" in \
        refusals["LoRA on a tuned module"]
    assert "tuned without a motion module; load the model without one" in refusals["plain file, module"]
    assert "inflated already with other temporal layers" in refusals["module on an inflated MODEL"]


def test_the_model_with_a_module_samples_in_ksampler_and_video_ksampler(comfy):
    sampler = {"seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
               "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["8", 0]}
    graph = base_graph({
        "9": {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0], "motion_module": MOTION}},
        "10": {"class_type": "KSampler", "inputs": {**sampler, "model": ["9", 0]}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "tav-test/mm-ksampler"}},
        "12": {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0]}},
        "13": {"class_type": "KSampler", "inputs": {**sampler, "model": ["12", 0]}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["13", 0], "filename_prefix": "tav-test/mm-plain"}},
        "15": {"class_type": "TuneAVideoSampler", "inputs": {"model": ["9", 0], "seed": 0, "steps": 2, "cfg": 5.0,
               "eta": 0.0, "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["8", 0]}},
        "16": {"class_type": "SaveLatent", "inputs": {"samples": ["15", 0], "filename_prefix": "tav-test/mm-video"}},
    })
    run_ok(comfy, graph)
    with_module, plain = load_latent(comfy, "tav-test/mm-ksampler"), load_latent(comfy, "tav-test/mm-plain")
    assert with_module.shape == (FRAMES, 4, SIZE // 8, SIZE // 8) and bool(torch.isfinite(with_module).all())
    assert relative(with_module, plain) > 1e-2  # the module took part
    assert bool(torch.isfinite(load_latent(comfy, "tav-test/mm-video")).all())


def test_tune_save_load_invert_and_edit_with_a_module_and_mismatches_reach_the_user(comfy):
    """One-Shot Tune (full and LoRA) of the MODEL with a module, saved; Load Tuned Weights on the MODEL with that
    module, DDIM Invert and Video KSampler's edit; the file on a MODEL without a module, or with another, is refused
    in the node's error."""
    folder = comfy.base / "models" / "tuneavideo"
    graph = base_graph({"9": LOADER})
    graph.update({"10": tune_node(["9", 0], save_name="mm-full", steps=1),
                  "11": tune_node(["9", 0], save_name="mm-lora", steps=1)})
    graph["11"]["inputs"].update(method="lora", lora_rank=2)
    run_ok(comfy, graph)
    for name in ("mm-full", "mm-lora"):
        meta = read_metadata(folder / f"{name}_00001_.safetensors")
        assert (meta["motion_version"], meta["frame_attention"], meta["group_norm"]) == ("v2", "per_frame", "frame")
    graph = base_graph({"9": LOADER})
    for i, name in enumerate(("mm-full", "mm-lora")):
        a, b, c, d = (str(20 + 10 * i + j) for j in range(4))
        graph.update({
            a: {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {"model": ["9", 0],
                                                                       "weights_name": f"{name}_00001_.safetensors"}},
            b: {"class_type": "TuneAVideoInvert", "inputs": {"model": [a, 0], "latent_image": ["8", 0],
                                                             "conditioning": ["3", 0], "steps": 2}},
            c: {"class_type": "TuneAVideoSampler", "inputs": {"model": [a, 0], "positive": ["2", 0], "negative": ["3", 0],
                "latent_image": [b, 0], "cfg": 5.0, "steps": 0, "eta": 0.0, "seed": 0}},
            d: {"class_type": "SaveLatent", "inputs": {"samples": [c, 0], "filename_prefix": f"tav-test/{name}-edit"}}})
    run_ok(comfy, graph)
    for name in ("mm-full", "mm-lora"):
        assert bool(torch.isfinite(load_latent(comfy, f"tav-test/{name}-edit")).all())
    for model, expected in (({"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0]}},
                             "was tuned with an AnimateDiff motion module (v2); give that module"),
                            ({**LOADER, "inputs": {**LOADER["inputs"], "motion_module": OTHER_MOTION}},
                             "was tuned with another motion module")):
        graph = base_graph({"9": model, "20": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {
            "model": ["9", 0], "weights_name": "mm-full_00001_.safetensors"}},
            "21": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["20", 0], "latent_image": ["8", 0],
                                                                 "conditioning": ["3", 0], "steps": 2}},
            "22": {"class_type": "SaveLatent", "inputs": {"samples": ["21", 0], "filename_prefix": "tav-test/mm-no"}}})
        error = error_message(comfy.run(graph)) or ""
        assert error.startswith("TuneAVideoLoadTunedWeights: ") and expected in error, error


def test_a_module_not_in_the_folder_is_refused_before_anything_runs(comfy):
    for node in ({**LOADER, "inputs": {**LOADER["inputs"], "motion_module": "missing.safetensors"}},
                 {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0],
                                                                     "motion_module": "missing.safetensors"}}):
        answer = comfy.post("/prompt", {"prompt": base_graph({"9": node, "10": tune_node(["9", 0])})})
        assert answer.get("http_error") == 400, answer
        assert "'missing.safetensors' not in models/animatediff_models" in json.dumps(answer)


def test_workflows_saved_before_the_module_load_and_mean_what_they_meant(comfy, object_info):
    """A Load & Inflate Checkpoint saved before (widgets: ckpt_name, frame_attention "sparse_causal") converts as the
    editor converts it (the new widgets after it take their defaults) and samples as "auto" does without a module,
    bit for bit (one computation repeated); per_frame, the default with a module, samples otherwise."""
    from workflow_api import ui_to_api
    old = {"nodes": [{"id": 9, "type": "TuneAVideoLoadInflateCheckpoint", "widgets_values": [CKPT, "sparse_causal"]}],
           "links": []}
    saved = ui_to_api(old, object_info)["9"]["inputs"]
    assert saved == {"ckpt_name": CKPT, "frame_attention": "sparse_causal"}
    graph = base_graph({})
    for i, inputs in enumerate((saved, {"ckpt_name": CKPT}, {"ckpt_name": CKPT, "frame_attention": "per_frame"})):
        loader, sampler, save = str(20 + 3 * i), str(21 + 3 * i), str(22 + 3 * i)
        graph.update({loader: {"class_type": "TuneAVideoLoadInflateCheckpoint", "inputs": inputs},
                      sampler: {"class_type": "KSampler", "inputs": {
                          "seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
                          "denoise": 1.0, "model": [loader, 0], "positive": ["2", 0], "negative": ["3", 0],
                          "latent_image": ["8", 0]}},
                      save: {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0],
                                                                    "filename_prefix": f"tav-test/saved-{i}"}}})
    run_ok(comfy, graph)
    old_save, auto, per_frame = (load_latent(comfy, f"tav-test/saved-{i}") for i in range(3))
    assert torch.equal(old_save, auto)
    assert relative(per_frame, auto) > 1e-3
