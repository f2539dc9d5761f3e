"""Building and running API-format graphs on the test server: the shared source-video graph, the pack's nodes as
the tests set them, a run that must succeed, a saved latent read back."""

import safetensors.torch
import torch

from server import error_message
from support import CKPT, CLIP_TEXT, CLIP_VISION, FRAMES, SIZE


def run_ok(comfy, prompt) -> dict:
    entry = comfy.run(prompt)
    assert error_message(entry) is None, f"{error_message(entry)}\n{comfy.log_text()[-3000:]}"
    return entry


def load_latent(comfy, prefix: str) -> torch.Tensor:
    files = sorted((comfy.base / "output").glob(f"{prefix}_*.latent"))
    assert files, f"no latent saved under {prefix}"
    return safetensors.torch.load_file(str(files[-1]))["latent_tensor"]


def base_graph(extra: dict) -> dict:
    """Checkpoint, prompts, source-video latents (nodes 1-9); ``extra`` adds the nodes under test."""
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadVideo", "inputs": {"file": "skiing.mp4"}},
        "5": {"class_type": "GetVideoComponents", "inputs": {"video": ["4", 0]}},
        "6": {"class_type": "ImageFromBatch", "inputs": {"image": ["5", 0], "batch_index": 0, "length": FRAMES}},
        "7": {"class_type": "ImageScale", "inputs": {"image": ["6", 0], "upscale_method": "bicubic", "width": SIZE,
                                                     "height": SIZE, "crop": "center"}},
        "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "TuneAVideoInflateModel", "inputs": {"model": ["1", 0]}},
    }
    graph.update(extra)
    return graph


def tune_node(model, save_name="", steps=1, seed=0, conditioning=("2", 0)) -> dict:
    return {"class_type": "TuneAVideoTune", "inputs": {"model": model, "positive": list(conditioning),
            "latent_image": ["8", 0], "steps": steps, "learning_rate": 1e-4, "seed": seed, "save_name": save_name}}


def score_nodes(images, source, mask, clip, prompt: str) -> dict:
    return {"50": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION}},
            "51": {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP_TEXT, "type": "stable_diffusion"}},
            "54": {"class_type": "TuneAVideoScoreVideo", "inputs": {
                "images": images, "clip_vision": ["50", 0], "clip": clip, "prompt": prompt, "source_images": source,
                "mask": mask}}}


def control_node(source: str, edit: str, **settings) -> dict:
    inputs = {"source_prompt": source, "edit_prompt": edit, "mode": "auto", "cross_steps": 0.4, "self_steps": 0.5,
              "reweight": "", "blend_source_words": "", "blend_edit_words": "", "blend_threshold": 0.3,
              "blend_start": 0.2}
    return {"class_type": "TuneAVideoAttentionControl", "inputs": {**inputs, **settings}}


def controlled_edit_nodes(cfg: float, prefix: str) -> dict:
    """Video KSampler (nodes 10-12) on the inverted LATENT of node 7 with the Attention Control of node 9, the MODEL
    of node 5 and the prompts of nodes 6 (edit), 2 (source) and 3 (negative); both branches saved: ``<prefix>-edit``,
    ``<prefix>-source``."""
    return {"10": {"class_type": "TuneAVideoSampler", "inputs": {
                "model": ["5", 0], "seed": 0, "steps": 0, "cfg": cfg, "eta": 0.0, "positive": ["6", 0],
                "negative": ["3", 0], "latent_image": ["7", 0], "control": ["9", 0], "source_positive": ["2", 0]}},
            "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": f"{prefix}-edit"}},
            "12": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 1], "filename_prefix": f"{prefix}-source"}}}


def latent_graph(comfy, pipe, latents, name: str, checkpoint: str = CKPT) -> dict:
    """Checkpoint, prompts (source 2, empty 3, edit 6) and the engine's ``latents`` as a LoadLatent (4): a graph to
    compare with the engine on the very same latents."""
    safetensors.torch.save_file({"latent_tensor": latents / pipe.scaling, "latent_format_version_0": torch.tensor([])},
                                str(comfy.base / "input" / f"{name}.latent"))
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
            "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
            "4": {"class_type": "LoadLatent", "inputs": {"latent": f"{name}.latent"}},
            "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a yellow square", "clip": ["1", 1]}}}
