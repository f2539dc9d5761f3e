"""Bad input and faults on the real server: refused at validation where the inputs show it, before any model runs
where they do not; a full disk never loses a node's work; a plan at any size answers."""

import json
import math
import os
import subprocess

import pytest
from graphs import base_graph, control_node, run_ok, score_nodes, tune_node

from server import error_message
from support import CKPT, CLIP_VISION, FRAMES, fill, run_in_comfyui

PACK = "TuneAVideo"


def refused(comfy, graph) -> dict:
    """The validation errors of a prompt the server refused to queue (nothing ran)."""
    answer = comfy.post("/prompt", {"prompt": graph, "client_id": "faults"})
    assert answer.get("http_error") == 400, f"the prompt was queued: {answer}"
    return answer["node_errors"]


FLOAT_CHECK = "float-check.safetensors"  # Load Tuned Weights validates its strength once the file is listed


def float_graphs() -> dict[str, dict]:
    """For each node of the pack with FLOAT inputs, a graph whose one output needs it (node "X"), with no other
    output node upstream: the host queues a prompt whose other outputs are valid, and runs those."""
    invert = {"class_type": "TuneAVideoInvert", "inputs": {"model": ["9", 0], "conditioning": ["3", 0],
                                                           "latent_image": ["8", 0], "steps": 2}}
    sampler = {"class_type": "TuneAVideoSampler", "inputs": {
        "model": ["9", 0], "seed": 0, "steps": 0, "cfg": 7.5, "eta": 0.0, "positive": ["2", 0], "negative": ["3", 0],
        "latent_image": ["20", 0]}}
    save = lambda node: {"class_type": "SaveLatent", "inputs": {"samples": [node, 0], "filename_prefix": "tav-test/f"}}
    return {
        "TuneAVideoTune": {"X": tune_node(["9", 0])},
        "TuneAVideoOneShotTune": {"X": {"class_type": "TuneAVideoOneShotTune", "inputs": {
            "model": ["9", 0], "conditioning": ["2", 0], "latent": ["8", 0], "steps": 1, "learning_rate": 1e-4,
            "seed": 0, "save_name": ""}}},
        "TuneAVideoNullTextInvert": {"X": {"class_type": "TuneAVideoNullTextInvert", "inputs": {
            "model": ["9", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["8", 0], "steps": 2,
            "cfg": 7.5, "inner_steps": 1, "save_name": ""}}},
        "TuneAVideoSampler": {"20": invert, "X": sampler, "30": save("X")},
        "TuneAVideoAttentionControl": {"20": invert, "X": control_node("a red square", "a blue square"),
                                       "22": {**sampler, "inputs": {**sampler["inputs"], "control": ["X", 0],
                                                                    "source_positive": ["2", 0]}}, "30": save("22")},
        "TuneAVideoVideoKSampler": {"20": invert, "X": {"class_type": "TuneAVideoVideoKSampler", "inputs": {
            "model": ["9", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["20", 0], "cfg": 7.5,
            "steps": 0, "eta": 0.0, "seed": 0}}, "30": save("X")},
        "TuneAVideoLoadTunedWeights": {"X": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {
            "model": ["1", 0], "weights_name": FLOAT_CHECK, "strength": 1.0}},
            "20": {**invert, "inputs": {**invert["inputs"], "model": ["X", 0]}}, "30": save("20")},
    }


def test_every_float_input_of_every_node_refuses_non_finite_values_at_validation(comfy, object_info):
    (comfy.base / "models" / "tuneavideo" / FLOAT_CHECK).write_bytes(b"")  # listed: the file itself is never read
    floats = {(node, name) for node, info in object_info.items() if node.startswith(PACK)
              for part in ("required", "optional") for name, spec in info["input"].get(part, {}).items()
              if spec[0] == "FLOAT"}
    graphs = float_graphs()
    assert {node for node, _ in floats} == set(graphs), "the graphs must cover exactly the nodes with FLOAT inputs"
    assert len(floats) >= 10
    for node, name in sorted(floats):
        for value in (math.nan, math.inf, -math.inf):
            bad = base_graph(json.loads(json.dumps(graphs[node])))
            bad["X"]["inputs"][name] = value
            errors = refused(comfy, bad)
            assert set(errors) == {"X"}, (node, name, errors)
            details = json.dumps(errors["X"]["errors"])
            assert f"{name} is {value}; give a finite number" in details, (node, name, details)


def p2p_graph(source, edit, **control) -> dict:
    return base_graph({
        "20": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["9", 0], "conditioning": ["3", 0],
                                                            "latent_image": ["8", 0], "steps": 2}},
        "21": control_node(source, edit, **control),
        "22": {"class_type": "TuneAVideoSampler", "inputs": {
            "model": ["9", 0], "seed": 0, "steps": 0, "cfg": 7.5, "eta": 0.0, "positive": ["2", 0],
            "negative": ["3", 0], "latent_image": ["20", 0], "control": ["21", 0], "source_positive": ["2", 0]}},
        "23": {"class_type": "SaveLatent", "inputs": {"samples": ["22", 0], "filename_prefix": "tav-test/p2p"}}})


@pytest.mark.parametrize("linked", [False, True], ids=["typed", "from String nodes"])
def test_attention_control_words_are_checked_at_validation(comfy, linked):
    source, edit = "a red square", "a yellow square"
    for control, message in ((dict(blend_source_words="cat", blend_edit_words="square"),
                              "'cat' is not a word of the prompt 'a red square'"),
                             (dict(reweight="dog:2"), "dog")):
        graph = p2p_graph(source, edit, **control)
        if linked:  # as the shipped workflows do: one String node per prompt
            graph["40"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": source}}
            graph["41"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": edit}}
            graph["21"]["inputs"].update(source_prompt=["40", 0], edit_prompt=["41", 0])
        errors = refused(comfy, graph)
        assert set(errors) == {"21"} and message in json.dumps(errors), errors


def test_a_bad_attention_control_is_named_when_queued_even_beside_a_null_text_inversion(comfy):
    """Null-Text Invert is an output of its own (a graph may only invert and save): the host queues it and runs it
    (its result is cached for the corrected graph), but names the bad Attention Control at once, before it runs."""
    graph = p2p_graph("a red square", "a yellow square", blend_source_words="cat", blend_edit_words="square")
    graph["20"] = {"class_type": "TuneAVideoNullTextInvert", "inputs": {
        "model": ["9", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["8", 0], "steps": 2,
        "cfg": 7.5, "inner_steps": 1, "save_name": ""}}
    answer = comfy.post("/prompt", {"prompt": graph, "client_id": "faults"})
    assert set(answer["node_errors"]) == {"21"}, answer
    assert "'cat' is not a word of the prompt 'a red square'" in json.dumps(answer["node_errors"])
    entry = comfy.wait(answer["prompt_id"])
    assert error_message(entry) is None and "23" not in entry["outputs"]  # the edit (its SaveLatent) never ran


def test_score_video_refuses_bad_input_before_clip_runs(comfy, test_models):
    bad = base_graph(score_nodes(["7", 0], ["7", 0], None, None, ""))
    del bad["54"]["inputs"]["clip"], bad["54"]["inputs"]["mask"]
    bad["54"]["inputs"]["ssim_convention"] = "gaussian"
    assert "ssim_convention 'gaussian' is not one of" in json.dumps(refused(comfy, bad))
    for inputs, message in (({"window_length": 8, "window_overlap": 8}, "window_overlap 8 must be below window_length 8"),
                            ({"tuned_weights": "missing.safetensors"}, "tuned_weights: 'missing.safetensors' not in "
                                                                        "models/tuneavideo"),
                            ({"scores": "fvd"}, "scores 'fvd' is not one of")):
        wrong = json.loads(json.dumps(bad))
        wrong["54"]["inputs"].update(ssim_convention="whole_frame", **inputs)
        assert message in json.dumps(refused(comfy, wrong)), inputs
    # a CLIP Vision file of its own, so that its first use (encode_image) shows in the log as a model load
    own = comfy.base / "models" / "clip_vision" / "faults-vision.safetensors"
    if not own.exists():
        own.symlink_to(test_models / CLIP_VISION)
    cases = {"mask": ({"52": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}},
                      ["7", 0], ["52", 0], "mask is (1, 32, 32); give one mask of the frames' size"),
             "frames": ({"52": {"class_type": "ImageFromBatch", "inputs": {"image": ["7", 0], "batch_index": 0,
                                                                           "length": FRAMES - 1}}},
                        ["52", 0], None, "source_images are")}
    for name, (extra, source, mask, message) in cases.items():
        graph = base_graph({**extra, **score_nodes(["7", 0], source, mask, None, "")})
        graph["50"]["inputs"]["clip_name"] = own.name
        del graph["54"]["inputs"]["clip"]
        if mask is None:
            del graph["54"]["inputs"]["mask"]
        log_before = len(comfy.log_text())
        entry = comfy.run(graph)
        assert message in (error_message(entry) or ""), (name, error_message(entry))
        assert "Requested to load CLIPVision" not in comfy.log_text()[log_before:], f"{name}: CLIP ran first"
    log_before = len(comfy.log_text())  # the same graph with good input: CLIP runs, and the log says so
    graph = base_graph(score_nodes(["7", 0], ["7", 0], None, None, ""))
    graph["50"]["inputs"]["clip_name"] = own.name
    del graph["54"]["inputs"]["clip"], graph["54"]["inputs"]["mask"]
    run_ok(comfy, graph)
    assert "Requested to load CLIPVision" in comfy.log_text()[log_before:]


def test_a_damaged_checkpoint_is_named_with_what_is_wrong(comfy):
    damaged = comfy.base / "models" / "checkpoints" / "damaged.safetensors"
    damaged.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}" + b"\0" * 64)
    graph = {"1": {"class_type": "TuneAVideoLoadInflateCheckpoint", "inputs": {"ckpt_name": "damaged.safetensors"}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["1", 1]}},
             "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
             "4": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "tav-test/d"}},
             "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "6": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["1", 0], "conditioning": ["3", 0],
                                                                 "latent_image": ["5", 0], "steps": 1}},
             "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "tav-test/d"}}}
    error = error_message(comfy.run(graph))
    assert error and "models/checkpoints/damaged.safetensors cannot be read (SafetensorError" in error, error
    assert "not a safetensors file or it is truncated" in error


def test_a_full_models_folder_keeps_the_tuned_weights_in_the_temp_folder(comfy, tmp_path):
    folder = comfy.base / "models" / "tuneavideo"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        fill(folder)
        log_before = len(comfy.log_text())
        run_ok(comfy, base_graph({"10": tune_node(["9", 0], save_name="full-disk")}))
        said = [line for line in comfy.log_text()[log_before:].splitlines() if "NOT saved in models/tuneavideo" in line]
        assert len(said) == 1 and "No space left on device" in said[0], comfy.log_text()[log_before:][-2000:]
        where = said[0].split("saved in ")[-1].split(" instead")[0]
        from tav_core.loading.tuned import read_metadata
        assert read_metadata(where)["frames"] == FRAMES
        os.remove(where)
        assert sorted(p.name for p in folder.iterdir()) == ["filler"]  # nothing half-written
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_one_shot_tunes_plan_of_a_huge_latent_answers(comfy):
    """16384x16384 pixels, 2 frames: refused by the plan (check), which traces as many operations as at 64 pixels."""
    graph = {"1": {"class_type": "TuneAVideoLoadInflateCheckpoint", "inputs": {"ckpt_name": CKPT}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
             "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 16384, "height": 16384, "batch_size": 2}},
             "4": {**tune_node(["1", 0], conditioning=("2", 0))}}
    graph["4"]["inputs"].update(latent_image=["3", 0], memory="check")
    error = error_message(comfy.run(graph))
    assert error and error.startswith("TuneAVideoTune:") and "needs about" in error, error


def test_a_plan_traces_the_same_operations_at_any_size():
    """The host's chunked attention is planned as one operation: the trace's length does not grow with the size."""
    sizes = run_in_comfyui("plan_cost.py", 64, 2048)
    assert sizes["64"] == sizes["2048"] > 100, sizes
