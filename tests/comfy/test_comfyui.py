"""The node pack on a real ComfyUI 0.3.75 server (CPU, loopback): workflows, composition, bad input."""

import io
import json
import re
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import safetensors.torch
import torch
from graphs import base_graph, control_node, controlled_edit_nodes, load_latent, run_ok, score_nodes, tune_node
from PIL import Image
from tiny_motion import MOTION

from server import error_message
from support import (CKPT, CLIP_TEXT, CLIP_VISION, COMFYUI, CONTROLNET, EPS, FRAMES, IP2P, ROOT, SDXL_CKPT, SIZE, TUNED,
                     max_abs, module_at, nudge, relative, within)
from tav_core import demo_video, read_video, write_video
from tav_core.loading.tuned import read_metadata, write_tuned
from workflow_api import ui_to_api

build_workflows = module_at(ROOT / "workflows" / "build_workflows.py")
MEASURE, REUSE, SAVE, SDXL_CHECKPOINT, VIDEO, workflows = (getattr(build_workflows, n) for n in (
    "MEASURE", "REUSE", "SAVE", "SDXL_CHECKPOINT", "VIDEO", "workflows"))

NODES = ["TuneAVideoLoadInflateCheckpoint", "TuneAVideoInflateModel", "TuneAVideoTune", "TuneAVideoLoadTunedWeights",
         "TuneAVideoInvert", "TuneAVideoSampler"]
LEGACY = ["TuneAVideoOneShotTune", "TuneAVideoDDIMInvert", "TuneAVideoVideoKSampler"]


def test_pack_imports_cleanly_and_every_node_is_listed(comfy, object_info):
    log = comfy.log_text()
    assert "tuneavideo-comfy" in log and not any("IMPORT FAILED" in l and "tuneavideo" in l for l in log.splitlines())
    for name in NODES:
        node = object_info[name]
        assert node["category"] == "Tune-A-Video" and node["description"] and not node.get("deprecated")
        assert "Tune-A-Video" not in node["display_name"]  # the category says it already
        for spec in [*node["input"]["required"].values(), *node["input"].get("optional", {}).values()]:
            assert spec[1].get("tooltip"), f"{name} has an input without tooltip"
        tooltips = node.get("output_tooltips") or []
        assert len(tooltips) == len(node["output"]) and all(tooltips), f"{name} lacks output tooltips"
        for seed in ("seed", "noise_seed"):  # the editor randomises a seed after every run unless told not to
            spec = node["input"]["required"].get(seed)
            assert spec is None or spec[1].get("control_after_generate") is False, f"{name}'s seed would randomise"
    assert set(object_info["TuneAVideoSampler"]["input"]["required"]) == {
        "model", "positive", "negative", "latent_image", "cfg", "steps", "eta", "seed"}


def test_every_node_has_a_docs_page_that_explains_each_of_its_inputs(comfy, object_info):
    """web/docs/<NodeId>/en.md, served at the first URL the editor's node docs panel asks for (the page in its
    locale); a deprecated node's page names the node that replaces it and the inputs renamed since."""
    nodes = {k: v for k, v in object_info.items() if v.get("python_module") == "custom_nodes.tuneavideo-comfy"}
    assert len(nodes) == 13
    by_title = {v["display_name"]: v for v in nodes.values()}

    def names(info) -> list[str]:
        return [n for section in ("required", "optional") for n in info["input_order"].get(section, [])]

    for node_id, info in nodes.items():
        with urllib.request.urlopen(f"{comfy.url}/extensions/tuneavideo-comfy/docs/{node_id}/en.md") as r:
            page = r.read().decode()
        assert page.startswith(f"# {info['display_name']}\n")
        inputs = names(info)
        if info.get("deprecated"):  # its page: the replacement, and the inputs renamed (old and new names)
            title = info["display_name"].removesuffix(" (old)")
            now = names(by_title[title])
            inputs = [n for n in inputs if n not in now] + [n for n in now if n not in inputs]
            assert f"**{title}**" in page and inputs, f"docs/{node_id}/en.md does not name {title}"
        missing = [n for n in inputs if f"`{n}`" not in page]
        assert not missing, f"docs/{node_id}/en.md does not explain {missing}"


def requirement_names(lines) -> set[str]:
    return {re.split(r"[<>=~!;\[ ]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip() and not line.strip().startswith("#")}


def test_pyproject_reads_as_the_registry_reads_it_and_requirements_are_what_comfyui_lacks():
    """The host's own parser of a pack's pyproject.toml (comfy_config, kept in step with comfy-cli's registry
    types), and the registry's documented rules for the fields it reads."""
    sys.path.insert(0, str(COMFYUI))
    from comfy_config.config_parser import extract_node_configuration
    config = extract_node_configuration(str(ROOT))
    project, tool = config.project, config.tool_comfy
    name = project.name
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name) \
        and "comfyui" not in name.lower()  # letters first, no doubled special characters, no "ComfyUI"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project.version)
    assert project.supported_os == ["POSIX :: Linux"]  # the parser keeps only classifiers the registry knows
    assert tool.display_name == "Tune-A-Video" and tool.icon == "" and tool.publisher_id == ""  # none invented
    tested = re.search(r'"([\d.]+)"', (COMFYUI / "comfyui_version.py").read_text()).group(1)
    assert project.supported_comfyui_version == f">={tested}"
    icon = Image.open(ROOT / "web" / "icon.png")
    assert icon.format == "PNG" and icon.size == (400, 400)
    runtime = requirement_names(project.dependencies)
    host = requirement_names((COMFYUI / "requirements.txt").read_text().splitlines())
    assert requirement_names((ROOT / "requirements.txt").read_text().splitlines()) == runtime - host == {"diffusers", "peft"}


def test_workflow_files_are_current_and_listed_as_templates_with_thumbnails(comfy, object_info):
    for name, workflow in workflows(object_info).items():
        assert json.loads((ROOT / "workflows" / name).read_text()) == workflow, \
            f"workflows/{name} is stale: run workflows/build_workflows.py"
    templates = comfy.get("/workflow_templates")
    stems = [Path(n).stem for n in workflows(object_info)]
    assert sorted(templates["tuneavideo-comfy"]) == sorted(stems)
    cards = {}
    for stem in stems:
        served = comfy.get(f"/api/workflow_templates/tuneavideo-comfy/{quote(stem)}.json")
        assert served["nodes"] and served["links"]
        with urllib.request.urlopen(f"{comfy.url}/api/workflow_templates/tuneavideo-comfy/{quote(stem)}.jpg") as r:
            thumbnail = Image.open(io.BytesIO(r.read()))
        assert thumbnail.format == "JPEG" and min(thumbnail.size) >= 256, f"{stem}.jpg is not a usable thumbnail"
        cards[stem] = np.asarray(thumbnail.convert("RGB").resize((64, 64)), np.float32)
    for a in cards:  # they differ at a glance: in the mean colour of a 64x64 copy, by far more than JPEG noise
        for b in cards:
            assert a == b or np.abs(cards[a] - cards[b]).mean() > 5, f"the cards of {a} and {b} look alike"


def test_the_example_clip_is_in_the_input_folder_and_never_replaces_a_users_file(comfy, tmp_path):
    """The pack wrote it when the server loaded it, so the workflows' Load Video has a clip; a file of that name that
    is already there stays as it was."""
    from tav_core.example_clip import EXAMPLE_CLIP, install_example_clip
    assert VIDEO == EXAMPLE_CLIP
    assert read_video(comfy.base / "input" / EXAMPLE_CLIP).shape == (64, 512, 512, 3)
    (tmp_path / EXAMPLE_CLIP).write_bytes(b"the user's own clip")
    assert install_example_clip(tmp_path) is None
    assert (tmp_path / EXAMPLE_CLIP).read_bytes() == b"the user's own clip"
    assert install_example_clip(tmp_path / "new") == tmp_path / "new" / EXAMPLE_CLIP
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [EXAMPLE_CLIP]  # no scratch file left behind


def small(prompt: dict, name: str) -> dict:
    """Shrink a shared workflow to test size (inputs, models, steps); the graph itself is unchanged."""
    overrides = {"LoadVideo": {"file": "skiing.mp4"}, "ImageFromBatch": {"length": FRAMES},
                 "ImageScale": {"width": SIZE, "height": SIZE},
                 "TuneAVideoLoadInflateCheckpoint": {"ckpt_name": CKPT}, "CheckpointLoaderSimple": {"ckpt_name": CKPT},
                 "ControlNetLoader": {"control_net_name": CONTROLNET},
                 "TuneAVideoTune": {"steps": 3, "learning_rate": 1e-3, "save_name": "test-skiing"},
                 "TuneAVideoOneShotTune": {"steps": 3, "learning_rate": 1e-3, "save_name": "test-skiing"},
                 "TuneAVideoLoadTunedWeights": {"weights_name": TUNED},
                 "TuneAVideoInvert": {"steps": 4}, "TuneAVideoDDIMInvert": {"steps": 4},
                 "CLIPVisionLoader": {"clip_name": CLIP_VISION}, "CLIPLoader": {"clip_name": CLIP_TEXT},
                 "TuneAVideoNullTextInvert": {"steps": 4, "inner_steps": 2},
                 "ContextWindowsManual": {"context_length": 2, "context_overlap": 1},  # windows of a 4-frame clip
                 "SaveVideo": {"filename_prefix": f"tav-test/{name}"}}
    for node in prompt.values():
        sdxl = node["inputs"].get("ckpt_name") == SDXL_CHECKPOINT["name"]
        node["inputs"].update(overrides.get(node["class_type"], {}))
        if sdxl:  # the SDXL workflow runs on the toy SDXL checkpoint
            node["inputs"]["ckpt_name"] = SDXL_CKPT
        if node["inputs"].get("motion_module", "none") != "none":  # a motion module that fits the tiny checkpoint
            node["inputs"]["motion_module"] = MOTION
    return prompt


def run_workflow(comfy, object_info, path: Path, name: str) -> dict:
    return run_ok(comfy, small(ui_to_api(json.loads(path.read_text()), object_info), name))


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "workflows").glob("*.json") if p.stem != MEASURE))
def test_shared_workflows_run(comfy, object_info, name):
    folder = comfy.base / "models" / "tuneavideo"
    if name == REUSE and not (folder / TUNED).exists():
        run_workflow(comfy, object_info, ROOT / "workflows" / f"{SAVE}.json", "tune-first")
    saved_before = set(folder.glob("test-skiing_*"))
    run_workflow(comfy, object_info, ROOT / "workflows" / f"{name}.json", name)
    if name == SAVE:  # a graph that only tunes: its output is the saved file
        new = set(folder.glob("test-skiing_*")) - saved_before
        assert len(new) == 1
        meta = read_metadata(new.pop())
        assert meta["frames"] == FRAMES and meta["width"] == SIZE and meta["tuning"]["steps"] == 3
        return
    videos = sorted((comfy.base / "output" / "tav-test").glob(f"{name}_*.mp4"))
    assert videos, f"{name} wrote no video"
    assert read_video(videos[-1]).shape == (FRAMES, SIZE, SIZE, 3)


def test_the_measuring_workflow_scores_an_edit_against_its_source(comfy, object_info):
    """Its own graph (the edit's graphs need no CLIP files): the source's frames as they were edited, the edit as
    saved, Score Video between them."""
    write_video(comfy.base / "input" / "tav-test-edit.mp4", demo_video(FRAMES, SIZE, SIZE)[::-1].copy())
    workflow = json.loads((ROOT / "workflows" / f"{MEASURE}.json").read_text())
    assert not any(n.get("mode") for n in workflow["nodes"]), "nothing is shipped bypassed"
    prompt = small(ui_to_api(workflow, object_info), "measured")
    edit = next(n for n in workflow["nodes"] if n.get("title") == "Load Video (the edit)")
    prompt[str(edit["id"])]["inputs"]["file"] = "tav-test-edit.mp4"
    outputs = run_ok(comfy, prompt)["outputs"]
    score_id = next(k for k, n in prompt.items() if n["class_type"] == "TuneAVideoScoreVideo")
    report = json.loads(outputs[score_id]["report"][0])
    assert report["frames"] == FRAMES and {"frame_consistency", "text_alignment", "psnr", "ssim"} <= set(report)
    chart = outputs[score_id]["images"][0]  # the chart on the node carries the graph, as stock previews do
    shown = Image.open(comfy.base / chart["type"] / chart["subfolder"] / chart["filename"])
    assert json.loads(shown.info["prompt"])[score_id]["class_type"] == "TuneAVideoScoreVideo"


def test_first_release_workflows_still_load_and_run(comfy, object_info):
    """Its node IDs stay registered (deprecated: hidden from search) with their old inputs and widget order."""
    for legacy in LEGACY:
        assert object_info[legacy]["deprecated"] is True
    path = ROOT / "tests" / "comfy" / "legacy" / "tune_invert_edit-0.1.json"
    run_workflow(comfy, object_info, path, "legacy")
    assert read_video(sorted((comfy.base / "output" / "tav-test").glob("legacy_*.mp4"))[-1]).shape[0] == FRAMES


def invert_and_sample(model, positive, negative, prefix, first=20):
    """Nodes that invert the source latents with ``model`` and sample them back, saving the result."""
    a, b, c = str(first), str(first + 1), str(first + 2)
    return {a: {"class_type": "TuneAVideoInvert", "inputs": {"model": model, "latent_image": ["8", 0],
                                                              "conditioning": ["3", 0], "steps": 3}},
            b: {"class_type": "TuneAVideoSampler", "inputs": {"model": model, "positive": positive,
                "negative": negative, "latent_image": [a, 0], "cfg": 5.0, "steps": 0, "eta": 0.0, "seed": 0}},
            c: {"class_type": "SaveLatent", "inputs": {"samples": [b, 0], "filename_prefix": prefix}}}


def nudged_run(graph: dict, sampler: str, first: int, prefix: str, output: int = 0) -> dict:
    """Nodes that run ``graph``'s sampler node ``sampler`` once more on its latent moved by one or two float32 ulps
    (LatentMultiply by 1 + eps), saving its ``output`` under ``prefix``: how far rounding alone carries."""
    a, b, c = str(first), str(first + 1), str(first + 2)
    inputs = graph[sampler]["inputs"]
    return {a: {"class_type": "LatentMultiply", "inputs": {"samples": inputs["latent_image"], "multiplier": 1 + EPS}},
            b: {"class_type": graph[sampler]["class_type"], "inputs": {**inputs, "latent_image": [a, 0]}},
            c: {"class_type": "SaveLatent", "inputs": {"samples": [b, output], "filename_prefix": prefix}}}


def test_original_model_is_bit_identical_after_an_inflated_branch_ran(comfy):
    sampler = {"seed": 7, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
               "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0]}
    graph = base_graph({
        "10": {"class_type": "KSampler", "inputs": {**sampler, "latent_image": ["8", 0]}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "tav-test/before"}},
        # the inflated branch starts from latents that depend on the first KSampler (x + 0 * y): it runs after it
        "12": {"class_type": "LatentMultiply", "inputs": {"samples": ["10", 0], "multiplier": 0.0}},
        "13": {"class_type": "LatentAdd", "inputs": {"samples1": ["8", 0], "samples2": ["12", 0]}},
        "14": {"class_type": "TuneAVideoTune", "inputs": {"model": ["9", 0], "positive": ["2", 0],
               "latent_image": ["13", 0], "steps": 2, "learning_rate": 1e-3, "seed": 0, "save_name": "",
               "frame_window": 3, "gradient_checkpointing": True}},
        **invert_and_sample(["14", 0], ["2", 0], ["3", 0], "tav-test/inflated"),
        # ... and the second KSampler on the original MODEL runs after the inflated branch
        "30": {"class_type": "LatentMultiply", "inputs": {"samples": ["21", 0], "multiplier": 0.0}},
        "31": {"class_type": "LatentAdd", "inputs": {"samples1": ["8", 0], "samples2": ["30", 0]}},
        "32": {"class_type": "KSampler", "inputs": {**sampler, "latent_image": ["31", 0]}},
        "33": {"class_type": "SaveLatent", "inputs": {"samples": ["32", 0], "filename_prefix": "tav-test/after"}},
        "34": {"class_type": "KSampler", "inputs": {**sampler, "model": ["14", 0], "latent_image": ["31", 0]}},
        "35": {"class_type": "SaveLatent", "inputs": {"samples": ["34", 0], "filename_prefix": "tav-test/stock-on-tuned"}},
    })
    graph.update(nudged_run(graph, "10", 40, "tav-test/before-nudged"))
    run_ok(comfy, graph)
    before, after = load_latent(comfy, "tav-test/before"), load_latent(comfy, "tav-test/after")
    assert torch.equal(before, after)  # the same KSampler on the same model and latents, repeated: bit for bit
    stock_on_tuned = load_latent(comfy, "tav-test/stock-on-tuned")  # the stock KSampler takes the video model too
    floor = max_abs(load_latent(comfy, "tav-test/before-nudged"), before)
    print(f"stock KSampler, tuned video model vs original: {max_abs(stock_on_tuned, before):.2e} (floor {floor:.2e})")
    # another model: it must move the result far beyond rounding (1000x how far a 1-ulp latent nudge moves it)
    assert stock_on_tuned.shape == before.shape and max_abs(stock_on_tuned, before) > 1000 * floor


def test_a_stock_image_graph_gives_the_same_image_before_and_after_a_video_graph_ran(comfy):
    """Separate prompts in one server, the executor's cache emptied between them (so the image graph really runs
    again): the video graph (tuning, inversion, sampling on the same checkpoint) leaves nothing behind in the shared
    UNet. The same computation repeated in one process: bit for bit."""
    def image_graph(prefix):
        return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
                "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
                "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
                "4": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 2}},
                "5": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 3, "cfg": 5.0, "sampler_name": "euler",
                      "scheduler": "normal", "denoise": 1.0, "model": ["1", 0], "positive": ["2", 0],
                      "negative": ["3", 0], "latent_image": ["4", 0]}},
                "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}}}
    run_ok(comfy, image_graph("tav-test/image-before"))
    run_ok(comfy, base_graph({
        "14": {"class_type": "TuneAVideoTune", "inputs": {"model": ["9", 0], "positive": ["2", 0],
               "latent_image": ["8", 0], "steps": 2, "learning_rate": 1e-3, "seed": 0, "save_name": ""}},
        **invert_and_sample(["14", 0], ["2", 0], ["3", 0], "tav-test/video-between")}))
    comfy.post("/free", {"free_memory": True})  # the next prompt runs with the executor's caches emptied
    run_ok(comfy, image_graph("tav-test/image-after"))
    before, after = load_latent(comfy, "tav-test/image-before"), load_latent(comfy, "tav-test/image-after")
    assert before.shape == (2, 4, SIZE // 8, SIZE // 8) and torch.equal(before, after)


def test_lora_before_inflate_equals_lora_after_and_changes_the_output(comfy):
    unet_keys = safetensors.torch.load_file(str(comfy.base / "models/checkpoints" / CKPT))
    lora = {}
    g = torch.Generator().manual_seed(0)
    for key, w in unet_keys.items():
        if key.startswith("model.diffusion_model.") and key.endswith((".attn1.to_k.weight", ".attn2.to_v.weight")):
            base = key.removeprefix("model.").removesuffix(".weight")
            lora[f"{base}.lora_up.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.3
            lora[f"{base}.lora_down.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.3
    safetensors.torch.save_file(lora, str(comfy.base / "models/loras/tav-test-lora.safetensors"))
    lora_node = lambda model: {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": model, "lora_name": "tav-test-lora.safetensors", "strength_model": 1.0}}
    graph = base_graph({
        "10": lora_node(["1", 0]),
        "11": {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["10", 0]}},
        "12": lora_node(["9", 0]),
        **invert_and_sample(["11", 0], ["2", 0], ["3", 0], "tav-test/lora-then-inflate", 20),
        **invert_and_sample(["12", 0], ["2", 0], ["3", 0], "tav-test/inflate-then-lora", 30),
        **invert_and_sample(["9", 0], ["2", 0], ["3", 0], "tav-test/no-lora", 40),
    })
    graph.update(nudged_run(graph, "41", 50, "tav-test/no-lora-nudged"))
    run_ok(comfy, graph)
    first, second = load_latent(comfy, "tav-test/lora-then-inflate"), load_latent(comfy, "tav-test/inflate-then-lora")
    # inflating attaches layers and patches no weight: in either order the MODEL holds the same LoRA weight patch,
    # computed by the same code on the same shared model, then sampled the same way: bit for bit
    assert torch.equal(first, second)
    no_lora = load_latent(comfy, "tav-test/no-lora")
    floor = max_abs(load_latent(comfy, "tav-test/no-lora-nudged"), no_lora)
    print(f"the LoRA moves the result by {max_abs(first, no_lora):.2e} (floor {floor:.2e})")
    assert max_abs(first, no_lora) > 1000 * floor  # the LoRA acts: far beyond how far a 1-ulp latent nudge moves it


def controlnet_nodes(hint_frames: int, strength: float, first: int) -> dict:
    a, b, c = str(first), str(first + 1), str(first + 2)
    return {a: {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}},
            b: {"class_type": "ImageFromBatch", "inputs": {"image": ["7", 0], "batch_index": 0, "length": hint_frames}},
            c: {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["2", 0], "negative": ["3", 0],
                "control_net": [a, 0], "image": [b, 0], "strength": strength, "start_percent": 0.0, "end_percent": 1.0}}}


def test_controlnet_hints_change_the_output(comfy):
    graph = base_graph({**controlnet_nodes(FRAMES, 1.0, 10), **controlnet_nodes(FRAMES, 0.0, 13),
                        **invert_and_sample(["9", 0], ["12", 0], ["12", 1], "tav-test/cn-on", 20),
                        **invert_and_sample(["9", 0], ["15", 0], ["15", 1], "tav-test/cn-off", 30),
                        **invert_and_sample(["9", 0], ["2", 0], ["3", 0], "tav-test/cn-none", 40)})
    graph.update(nudged_run(graph, "41", 50, "tav-test/cn-none-nudged"))
    run_ok(comfy, graph)
    on, off = load_latent(comfy, "tav-test/cn-on"), load_latent(comfy, "tav-test/cn-off")
    none = load_latent(comfy, "tav-test/cn-none")
    floor = max_abs(load_latent(comfy, "tav-test/cn-none-nudged"), none)
    print(f"ControlNet at strength 1 moves the result by {max_abs(on, off):.2e} (floor {floor:.2e})")
    assert max_abs(on, off) > 1000 * floor  # the hints act: far beyond how far a 1-ulp latent nudge moves it
    # ControlNet at strength 0 vs none (other code paths): limit 100x how far a 1-ulp latent nudge moves the sampling
    # (~1e-2 here, while the hints at strength 1 move it by 15)
    assert within(max_abs(off, none), floor, 100, "ControlNet at strength 0 vs none")


def expect_error(comfy, graph, message):
    entry = comfy.run(graph)
    error = error_message(entry)
    assert error is not None and message in error, error
    return next(data for kind, data in entry["status"]["messages"] if kind == "execution_error")


def test_bad_input_stops_the_prompt_with_a_clear_message_and_the_server_goes_on(comfy):
    expect_error(comfy, base_graph({**controlnet_nodes(FRAMES - 1, 1.0, 10),
                                    **invert_and_sample(["9", 0], ["12", 0], ["12", 1], "tav-test/bad", 20)}),
                 f"ControlNet hint has {FRAMES - 1} images but the video has {FRAMES} frames")
    error = expect_error(comfy, base_graph({"10": tune_node(["1", 0]), **invert_and_sample(
        ["10", 0], ["2", 0], ["3", 0], "tav-test/untuned", 20)}),
        "One-Shot Tune needs an inflated MODEL: put 'Inflate Model' (or 'Load & Inflate Checkpoint') before it")
    assert error["exception_type"] == "TavError"  # the class, not the pack's install path
    blocks = 3  # the tiny UNet: down, middle, up
    tensors = {f"blocks.{i}.attn1.to_q.weight": torch.zeros(1) for i in range(blocks)}
    write_tuned(comfy.base / "models/tuneavideo/other-base.safetensors", tensors, [0.5] * 64, prompt="elsewhere")
    expect_error(comfy, base_graph({"10": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {
        "model": ["1", 0], "weights_name": "other-base.safetensors"}},
        **invert_and_sample(["10", 0], ["2", 0], ["3", 0], "tav-test/other", 20)}), "different base model")
    run_ok(comfy, base_graph(invert_and_sample(["9", 0], ["2", 0], ["3", 0], "tav-test/still-serving")))
    assert load_latent(comfy, "tav-test/still-serving").shape[0] == FRAMES


def test_cancel_stops_tuning_and_leaves_no_file(comfy):
    graph = base_graph({"10": tune_node(["9", 0], "cancelled", steps=100000),
                        **invert_and_sample(["10", 0], ["2", 0], ["3", 0], "tav-test/cancelled", 20)})
    prompt_id = comfy.queue(graph)
    deadline = time.time() + 1200  # a generous limit: waits for the event, however slow the machine
    while "/100000" not in comfy.log_text() and time.time() < deadline:  # tuning has started: its bar is in the log
        time.sleep(0.2)
    assert "/100000" in comfy.log_text(), "tuning never started"
    comfy.post("/interrupt", {})
    entry = comfy.wait(prompt_id)
    messages = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in messages
    assert list((comfy.base / "models" / "tuneavideo").glob("cancelled*")) == []
    assert list((comfy.base / "models" / "tuneavideo").glob(".*")) == []  # no temporary file either
    said = re.search(r"One-Shot Tune: cancelled at step (\d+)/100000: nothing was saved; Run tunes from the start",
                     comfy.log_text())
    assert said, "the node did not say it was cancelled"
    run_ok(comfy, base_graph(invert_and_sample(["9", 0], ["2", 0], ["3", 0], "tav-test/after-cancel")))
    graph["10"]["inputs"]["steps"] = 2  # the same node again: it says it starts over
    run_ok(comfy, graph)
    assert f"One-Shot Tune: starting over: the run cancelled at step {said[1]}/100000 kept nothing" in comfy.log_text()


def test_weights_tuned_headless_load_in_comfyui(comfy, test_models):
    """The engine's files key tensors by transformer-block order, the same in diffusers' and ComfyUI's UNets."""
    from tav_core import TuneAVideo, TuneConfig, load_components
    pipe = TuneAVideo(load_components(test_models / CKPT, config=test_models / "tiny-sd15-config"))
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    pipe.tune(latents, "a red square", TuneConfig(steps=2, learning_rate=1e-2), progress=False)
    pipe.save_tuned(comfy.base / "models/tuneavideo/headless.safetensors", "a red square", FRAMES, SIZE, SIZE,
                    TuneConfig(steps=2))
    graph = base_graph({"10": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {
        "model": ["1", 0], "weights_name": "headless.safetensors"}},
        **invert_and_sample(["10", 0], ["2", 0], ["3", 0], "tav-test/headless", 20),
        **invert_and_sample(["9", 0], ["2", 0], ["3", 0], "tav-test/untuned", 30)})
    run_ok(comfy, {**graph, **nudged_run(graph, "31", 40, "tav-test/untuned-nudged")})
    untuned = load_latent(comfy, "tav-test/untuned")
    floor = max_abs(load_latent(comfy, "tav-test/untuned-nudged"), untuned)
    print(f"the tuned weights move the result by {max_abs(load_latent(comfy, 'tav-test/headless'), untuned):.2e} "
          f"(floor {floor:.2e})")
    # the weights act: far beyond how far a 1-ulp latent nudge moves the result
    assert max_abs(load_latent(comfy, "tav-test/headless"), untuned) > 1000 * floor


def test_nodes_compute_what_the_engine_computes(comfy, test_models):
    """Same checkpoint, same tuned weights, same latents: ComfyUI's DDIM Invert and Video KSampler (ComfyUI's
    UNet, CLIP and sampler with the pack's hooks) agree with the headless engine on diffusers' modules. 7 steps:
    a count that does not divide 1000, where ComfyUI's own ddim_uniform schedule would take 8."""
    from tav_core import TuneAVideo, TuneConfig, load_components
    pipe = TuneAVideo(load_components(test_models / CKPT, config=test_models / "tiny-sd15-config"))
    latents = pipe.encode_video(demo_video(FRAMES, SIZE, SIZE))
    pipe.tune(latents, "a red square", TuneConfig(steps=3, learning_rate=1e-2), progress=False)  # non-zero temporal layers
    pipe.save_tuned(comfy.base / "models/tuneavideo/equivalence.safetensors", "a red square", FRAMES, SIZE, SIZE,
                    TuneConfig(steps=3))
    safetensors.torch.save_file({"latent_tensor": latents / pipe.scaling, "latent_format_version_0": torch.tensor([])},
                                str(comfy.base / "input" / "equivalence.latent"))
    run_ok(comfy, {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a yellow square", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadLatent", "inputs": {"latent": "equivalence.latent"}},
        "5": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {"model": ["1", 0], "weights_name": "equivalence.safetensors"}},
        "6": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["5", 0], "latent_image": ["4", 0], "conditioning": ["3", 0], "steps": 7}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "tav-test/eq-noise"}},
        "8": {"class_type": "TuneAVideoSampler", "inputs": {"model": ["5", 0], "positive": ["2", 0], "negative": ["3", 0],
              "latent_image": ["6", 0], "cfg": 5.0, "steps": 0, "eta": 0.0, "seed": 0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "tav-test/eq-edit"}},
    })
    noise, nudged = pipe.invert(latents, 7), pipe.invert(nudge(latents), 7)
    edit = pipe.sample(noise, "a yellow square", "", guidance_scale=5.0, steps=7)
    edit_nudged = pipe.sample(nudged, "a yellow square", "", guidance_scale=5.0, steps=7)
    for what, ours, moved in (("noise", noise, nudged), ("edit", edit, edit_nudged)):
        theirs = load_latent(comfy, f"tav-test/eq-{what}") * pipe.scaling
        # ComfyUI's UNet and sampler vs diffusers' and the engine's: limit 100x how far the engine's result moves
        # (max, relative) when the latents move by one ulp (7 steps and CFG 5 amplify it)
        assert within(relative(theirs, ours), relative(moved, ours), 100, f"ComfyUI vs engine: {what}")


def test_save_names_are_checked_before_tuning_and_never_overwrite(comfy):
    folder = comfy.base / "models" / "tuneavideo"
    for name, message in (("..", "may not start with a dot"), (".hidden", "may not start with a dot"),
                          ("x" * 240, "is too long"), ("a/b", "may use letters")):
        started = time.time()
        expect_error(comfy, base_graph({"10": tune_node(["9", 0], name, steps=100000)}), message)
        assert time.time() - started < 60  # refused at once, not after 100000 steps
    for seed in (0, 1):
        run_ok(comfy, base_graph({"10": tune_node(["9", 0], "numbered", seed=seed)}))
    assert sorted(p.name for p in folder.glob("numbered*")) == ["numbered_00001_.safetensors", "numbered_00002_.safetensors"]
    assert not list(folder.glob(".*"))


def test_sampling_steps_other_than_the_inversions_are_refused(comfy):
    graph = base_graph(invert_and_sample(["9", 0], ["2", 0], ["3", 0], "tav-test/steps"))
    graph["21"]["inputs"]["steps"] = 5  # DDIM Invert used 3
    expect_error(comfy, graph, "this LATENT was inverted with 3 steps; sampling it with 5")


def test_models_that_are_not_plain_sd_are_refused_at_once(comfy):
    unet = {"99": {"class_type": "UNETLoader", "inputs": {"unet_name": IP2P, "weight_dtype": "default"}}}
    expect_error(comfy, base_graph({**unet, "10": {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["99", 0]}},
                                    **invert_and_sample(["10", 0], ["2", 0], ["3", 0], "tav-test/ip2p")}),
                 "Inflate Model got a SD15_instructpix2pix MODEL")
    expect_error(comfy, base_graph({**unet, **invert_and_sample(["99", 0], ["2", 0], ["3", 0], "tav-test/ip2p")}),
                 "DDIM Invert got a SD15_instructpix2pix MODEL")


def test_a_caption_longer_than_77_tokens_is_tuned_on_whole(comfy):
    """CLIP Text Encode encodes long prompts in 77-token chunks; nothing is cut, and tuning takes all of them."""
    long = {"40": {"class_type": "CLIPTextEncode", "inputs": {"text": " ".join(["a red square on a gradient"] * 20),
                                                               "clip": ["1", 1]}}}
    run_ok(comfy, base_graph({**long, "10": tune_node(["9", 0], conditioning=("40", 0)),
                              **invert_and_sample(["10", 0], ["40", 0], ["3", 0], "tav-test/long")}))
    assert load_latent(comfy, "tav-test/long").shape[0] == FRAMES


def test_missing_tuned_weights_are_explained_before_anything_runs(comfy):
    graph = base_graph({"10": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {
        "model": ["1", 0], "weights_name": "skiing_00001_.safetensors"}},
        **invert_and_sample(["10", 0], ["2", 0], ["3", 0], "tav-test/no-weights")})
    with pytest.raises(AssertionError, match="no tuned weights named 'skiing_00001_.safetensors' in models/tuneavideo; "
                                             "tune first"):
        comfy.queue(graph)


def test_score_video_measures_what_the_engine_measures(comfy, test_models):
    """The edit here is the inverted source; the mask is the red square of each frame (its red channel)."""
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    from tav_core.scoring import metrics
    from tav_core.scoring.clip import clip_pixels, clip_processor
    graph = base_graph({"52": {"class_type": "ImageInvert", "inputs": {"image": ["7", 0]}},
                        "53": {"class_type": "ImageToMask", "inputs": {"image": ["7", 0], "channel": "red"}},
                        "55": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "tav-test/src"}},
                        "56": {"class_type": "SaveImage", "inputs": {"images": ["52", 0], "filename_prefix": "tav-test/inv"}},
                        **score_nodes(["52", 0], ["7", 0], ["53", 0], ["51", 0], "a red square")})
    graph["54"]["inputs"].update(scores="v2vbench", window_length=2, window_overlap=0)
    outputs = run_ok(comfy, graph)["outputs"]
    report = json.loads(outputs["54"]["report"][0])
    assert report["boundaries"] == list(range(2, FRAMES, 2)) and "colour_drift" in report  # windows of 2, no overlap
    assert len(report["per_frame"]["psnr_outside"]) == FRAMES
    assert outputs["54"]["images"]  # the chart is shown on the node
    read = lambda prefix: np.stack([np.asarray(Image.open(p).convert("RGB"))
                                    for p in sorted((comfy.base / "output" / "tav-test").glob(f"{prefix}_*.png"))[-FRAMES:]])
    source, edit = read("src"), read("inv")
    mask = source[..., 0] > 127
    for name, fn in (("psnr", metrics.psnr), ("ssim", metrics.ssim)):
        assert report[name] == pytest.approx(float(fn(source, edit).double().mean()), rel=1e-5)
        assert report[f"{name}_inside"] == pytest.approx(float(fn(source, edit, mask).double().mean()), rel=1e-5)
    from make_models import SD1, VIT_L
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPVisionConfig
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L))
    vision.load_state_dict({k: v.float() for k, v in load_file(str(test_models / CLIP_VISION)).items()}, strict=False)
    text = CLIPTextModelWithProjection(CLIPTextConfig(**json.loads((SD1 / "text_encoder" / "config.json").read_text())))
    text.load_state_dict({k: v.float() for k, v in load_file(str(test_models / CLIP_TEXT)).items()}, strict=False)
    from tav_core.loading.configs import clip_tokenizer
    with torch.no_grad():  # transformers' CLIP on CLIPProcessor's pixels, as papers score
        pixels = clip_pixels(edit, clip_processor(224))
        image_embeds = vision(pixel_values=pixels).image_embeds
        pooled = vision.vision_model(pixel_values=pixels).pooler_output
        ids = clip_tokenizer()("a red square", padding="max_length", max_length=77, return_tensors="pt").input_ids
        text_embed = text(input_ids=ids).text_embeds
    for name, fn, embeds in (("frame_consistency", metrics.frame_consistency, image_embeds),
                             ("text_alignment", lambda e: metrics.text_alignment(e, text_embed), image_embeds),
                             ("v2vbench_frame_consistency", metrics.v2vbench_frame_consistency, pooled)):
        # ComfyUI's CLIP modules vs transformers': limit 100x how far the number moves when the embeddings move by
        # one ulp (the two towers round differently; a cosine near 1 hardly moves when the pixels do)
        expected = fn(embeds)
        assert within(abs(report[name] - expected), abs(fn(nudge(embeds)) - expected), 100,
                      f"Score Video vs transformers: {name}")


def test_score_video_refuses_a_text_encoder_without_clip_projection(comfy):
    graph = base_graph(score_nodes(["7", 0], None, None, ["1", 1], "a red square"))
    del graph["54"]["inputs"]["source_images"], graph["54"]["inputs"]["mask"]
    expect_error(comfy, graph, "this CLIP has no text projection (SD 1.x checkpoints do not store it)")


def test_one_shot_tune_shows_and_returns_its_loss_curve(comfy):
    graph = base_graph({"10": tune_node(["9", 0], steps=3),
                        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 1], "filename_prefix": "tav-test/loss"}}})
    log_before = len(comfy.log_text())
    outputs = run_ok(comfy, graph)["outputs"]
    assert "not writable" not in comfy.log_text()[log_before:]  # (torch's warning about a read-only chart array)
    preview = outputs["10"]["images"][0]  # previewed on the node itself, carrying the graph as stock previews do
    shown = Image.open(comfy.base / preview["type"] / preview["subfolder"] / preview["filename"])
    assert json.loads(shown.info["prompt"])["10"]["class_type"] == "TuneAVideoTune"
    saved = sorted((comfy.base / "output" / "tav-test").glob("loss_*.png"))[-1]
    from tav_core.charts import loss_chart
    assert Image.open(saved).size == loss_chart([1.0, 0.5]).shape[1::-1]  # one chart of the default size


def equivalence_setup(comfy, test_models, name: str, frames: int = FRAMES, frame_attention: str | None = None):
    """The headless engine on the test checkpoint with tuned (non-zero) temporal layers, saved for ComfyUI too."""
    from tav_core import TuneAVideo, TuneConfig, load_components
    pipe = TuneAVideo(load_components(test_models / CKPT, config=test_models / "tiny-sd15-config"),
                      frame_attention=frame_attention)
    latents = pipe.encode_video(demo_video(frames, SIZE, SIZE))
    pipe.tune(latents, "a red square", TuneConfig(steps=3, learning_rate=1e-2), progress=False)
    pipe.save_tuned(comfy.base / f"models/tuneavideo/{name}.safetensors", "a red square", frames, SIZE, SIZE,
                    TuneConfig(steps=3))
    safetensors.torch.save_file({"latent_tensor": latents / pipe.scaling, "latent_format_version_0": torch.tensor([])},
                                str(comfy.base / "input" / f"{name}.latent"))
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
             "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
             "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
             "4": {"class_type": "LoadLatent", "inputs": {"latent": f"{name}.latent"}},
             "5": {"class_type": "TuneAVideoLoadTunedWeights", "inputs": {"model": ["1", 0],
                                                                          "weights_name": f"{name}.safetensors"}},
             "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a yellow square", "clip": ["1", 1]}}}
    return pipe, latents, graph


def test_null_text_inversion_and_controlled_edit_equal_the_engine(comfy, test_models):
    """Same checkpoint, tuned weights and latents: Null-Text Invert, and Video KSampler with Attention Control
    (word swap, reweighting, local blend) from it, against tav_core's null_text_invert and edit."""
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit, null_text_invert
    pipe, latents, graph = equivalence_setup(comfy, test_models, "p2p")
    steps, cfg = 4, 7.5
    control = dict(reweight="yellow:2", blend_source_words="square", blend_edit_words="square", blend_start=0.0)
    graph.update({
        "7": {"class_type": "TuneAVideoNullTextInvert", "inputs": {"model": ["5", 0], "positive": ["2", 0],
              "negative": ["3", 0], "latent_image": ["4", 0], "steps": steps, "cfg": cfg, "inner_steps": 3,
              "save_name": "p2p"}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "tav-test/nt-noise"}},
        "9": control_node("a red square", "a yellow square", **control),
        **controlled_edit_nodes(cfg, "tav-test/p2p"),
    })
    run_ok(comfy, graph)
    inversion = null_text_invert(pipe, latents, "a red square", steps, cfg, inner_steps=3)
    p2p = EditControl("a red square", "a yellow square", cross_steps=0.4, reweight={"yellow": 2.0},
                      blend_words=(["square"], ["square"]), blend_start=0.0)
    source, edited = edit(pipe, inversion, p2p)
    moved = null_text_invert(pipe, nudge(latents), "a red square", steps, cfg, inner_steps=3)
    moved_source, moved_edit = edit(pipe, moved, p2p)
    from tav_core.editing.null_text import NullTextInversion
    saved = NullTextInversion.load(comfy.base / "models" / "tuneavideo_inversions" / "p2p_00001_.safetensors")
    for name, ours, nudged, theirs in (
            ("nt-noise", inversion.noise, moved.noise, load_latent(comfy, "tav-test/nt-noise") * pipe.scaling),
            ("p2p-source", source, moved_source, load_latent(comfy, "tav-test/p2p-source") * pipe.scaling),
            ("p2p-edit", edited, moved_edit, load_latent(comfy, "tav-test/p2p-edit") * pipe.scaling),
            ("embeddings", inversion.embeddings, moved.embeddings, saved.embeddings)):
        # ComfyUI's modules vs diffusers': limit 100x how far the engine's result moves (max, relative) when the
        # latents move by one ulp; CFG 7.5 and Adam on the null text amplify it. One inner step fewer moves the
        # embeddings by 2e-2, reweighting 2.5 instead of 2 moves the edit by 6e-2
        assert within(relative(theirs, ours), relative(nudged, ours), 100, f"ComfyUI vs engine: {name}")


def test_video_p2p_recipe_equals_the_engine(comfy, test_models):
    """Video-P2P's recipe: weights tuned with first-frame attention (Load Tuned Weights takes it from the file),
    --fast (DDIM Invert with the source prompt, the source branch unguided) and self-attention control on the
    temporal layers, against the engine's."""
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit
    pipe, latents, graph = equivalence_setup(comfy, test_models, "videop2p", frame_attention="first_frame")
    steps, cfg = 4, 7.5
    graph.update({
        "7": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["5", 0], "conditioning": ["2", 0],
                                                           "latent_image": ["4", 0], "steps": steps}},
        "9": control_node("a red square", "a yellow square", self_attention="temporal", source_cfg=False),
        **controlled_edit_nodes(cfg, "tav-test/vp2p"),
    })
    run_ok(comfy, graph)
    control = EditControl("a red square", "a yellow square", cross_steps=0.4, self_control="temporal",
                          source_cfg=False)
    results = [edit(pipe, pipe.invert(x, steps, "a red square"), control, cfg, steps) for x in (latents, nudge(latents))]
    (source, edited), (moved_source, moved_edit) = results
    for name, ours, nudged in (("vp2p-source", source, moved_source), ("vp2p-edit", edited, moved_edit)):
        theirs = load_latent(comfy, f"tav-test/{name}") * pipe.scaling
        # ComfyUI's modules vs diffusers': limit 100x how far the engine's result moves when the latents move by
        # one ulp (CFG 7.5 amplifies it on the edit)
        assert within(relative(theirs, ours), relative(nudged, ours), 100, f"ComfyUI vs engine: {name}")


def test_identity_edit_reproduces_the_source_branch_and_bad_controls_are_named(comfy):
    graph = base_graph({"20": {"class_type": "TuneAVideoInvert", "inputs": {"model": ["9", 0], "conditioning": ["3", 0],
                                                                            "latent_image": ["8", 0], "steps": 3}},
                        "21": control_node("a red square", "a red square", blend_source_words="square",
                                           blend_edit_words="square", cross_steps=1.0, self_steps=1.0),
                        "22": {"class_type": "TuneAVideoSampler", "inputs": {"model": ["9", 0], "seed": 0, "steps": 0,
                               "cfg": 7.5, "eta": 0.0, "positive": ["2", 0], "negative": ["3", 0],
                               "latent_image": ["20", 0], "control": ["21", 0], "source_positive": ["2", 0]}},
                        "23": {"class_type": "SaveLatent", "inputs": {"samples": ["22", 0], "filename_prefix": "tav-test/id-edit"}},
                        "24": {"class_type": "SaveLatent", "inputs": {"samples": ["22", 1], "filename_prefix": "tav-test/id-source"}}})
    run_ok(comfy, {**graph, **nudged_run(graph, "22", 30, "tav-test/id-source-nudged", output=1)})
    source = load_latent(comfy, "tav-test/id-source")
    floor = max_abs(load_latent(comfy, "tav-test/id-source-nudged"), source)
    # the edit rows run other attention calls (source maps on a sub-batch) than the source rows: limit 100x how far
    # the source moves when its latent moves by one ulp (CFG 7.5 amplifies it)
    assert within(max_abs(load_latent(comfy, "tav-test/id-edit"), source), floor, 100, "identity edit vs source")
    graph["21"] = control_node("a red square", "a yellow square", blend_source_words="cat", blend_edit_words="square")
    answer = comfy.post("/prompt", {"prompt": graph})  # refused at validation: nothing runs
    assert answer.get("http_error") == 400 and "'cat' is not a word of the prompt 'a red square'" in json.dumps(answer)
    graph["21"] = control_node("a red square", "a yellow square")
    del graph["22"]["inputs"]["source_positive"]
    expect_error(comfy, graph, "Attention Control needs source_positive")


def test_host_context_windows_run_anchored_and_equal_the_engines_windows(comfy, test_models):
    """Context Windows (Manual) on the tuned MODEL: DDIM Invert, Video KSampler, Null-Text Invert and a controlled
    edit run window by window with the clip's frame 0 as every window's anchor, as tav_core's windows do."""
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit, null_text_invert
    from tav_core.sampling.windows import ContextWindows, Passes
    frames, steps, cfg = 8, 3, 7.5
    pipe, latents, graph = equivalence_setup(comfy, test_models, "windows", frames)
    graph.update({
        "7": {"class_type": "ContextWindowsManual", "inputs": {
            "model": ["5", 0], "context_length": 4, "context_overlap": 2, "context_schedule": "standard_static",
            "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid", "dim": 0}},
        **invert_and_sample(["7", 0], ["6", 0], ["3", 0], "tav-test/w-edit", 20),
        "30": {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": "tav-test/w-noise"}},
        "31": {"class_type": "TuneAVideoNullTextInvert", "inputs": {"model": ["7", 0], "positive": ["2", 0],
               "negative": ["3", 0], "latent_image": ["4", 0], "steps": steps, "cfg": cfg, "inner_steps": 2,
               "save_name": ""}},
        "32": control_node("a red square", "a yellow square", blend_source_words="square", blend_edit_words="square",
                           blend_start=0.0),
        "33": {"class_type": "TuneAVideoSampler", "inputs": {"model": ["7", 0], "seed": 0, "steps": 0, "cfg": cfg,
               "eta": 0.0, "positive": ["6", 0], "negative": ["3", 0], "latent_image": ["31", 0],
               "control": ["32", 0], "source_positive": ["2", 0]}},
        "34": {"class_type": "SaveLatent", "inputs": {"samples": ["33", 0], "filename_prefix": "tav-test/w-p2p"}},
    })
    graph["20"]["inputs"]["latent_image"] = ["4", 0]
    run_ok(comfy, graph)
    passes = Passes(windows=ContextWindows(4, 2, "pyramid"))
    noise = pipe.invert(latents, 3, passes=passes)
    edited = pipe.sample(noise, "a yellow square", guidance_scale=5.0, steps=3, passes=passes)
    inversion = null_text_invert(pipe, latents, "a red square", steps, cfg, inner_steps=2, passes=passes)
    control = EditControl("a red square", "a yellow square", cross_steps=0.4, blend_words=(["square"], ["square"]),
                          blend_start=0.0)
    _, p2p = edit(pipe, inversion, control, passes=passes)
    moved_noise = pipe.invert(nudge(latents), 3, passes=passes)
    moved_edited = pipe.sample(moved_noise, "a yellow square", guidance_scale=5.0, steps=3, passes=passes)
    moved_inversion = null_text_invert(pipe, nudge(latents), "a red square", steps, cfg, inner_steps=2, passes=passes)
    _, moved_p2p = edit(pipe, moved_inversion, control, passes=passes)
    for name, ours, nudged in (("w-noise", noise, moved_noise), ("w-edit", edited, moved_edited),
                               ("w-p2p", p2p, moved_p2p)):
        theirs = load_latent(comfy, f"tav-test/{name}") * pipe.scaling
        # ComfyUI's windows and modules vs the engine's: limit 100x how far the engine's result moves (max,
        # relative) when the latents move by one ulp
        assert within(relative(theirs, ours), relative(nudged, ours), 100, f"windows, ComfyUI vs engine: {name}")
    whole = pipe.invert(latents, 3)
    # the windows did change the computation (5e-3): far beyond rounding (1000x the windowed inversion's floor)
    assert relative(noise, whole) > 1000 * relative(moved_noise, noise)
