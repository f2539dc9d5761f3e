import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tav_core.tiny import tiny_components

ROOT = Path(__file__).resolve().parents[1]
COMFYUI = Path(os.environ.get("TAV_COMFYUI", ROOT / ".cache" / "ComfyUI"))
TEST_MODELS = ROOT / ".cache" / "test-models"
sys.path.insert(0, str(ROOT / "tests" / "comfy"))

CKPT, CONTROLNET, IP2P = "tiny-sd15.safetensors", "tiny-sd15-controlnet.safetensors", "tiny-ip2p-unet.safetensors"
CLIP_VISION, CLIP_TEXT = "test-clip-vit-l.safetensors", "test-clip-l.safetensors"
SDXL_CKPT = "tiny-sdxl.safetensors"  # ComfyUI recognises it through tests/comfy/tav_test_tiny_sdxl.py
TUNED = "test-skiing_00001_.safetensors"  # the first file One-Shot Tune saves under the name "test-skiing"
FRAMES, SIZE = 4, 64  # what the server tests shrink the shared workflows to


@pytest.fixture(scope="session")
def test_models() -> Path:
    """Small SD1.5-format checkpoint, ControlNet, refusal UNet, CLIP pair for scoring (built once with ComfyUI's
    key map; see comfy/make_models.py, which writes its stamp last)."""
    from make_models import STAMP
    if not (TEST_MODELS / STAMP).is_file():
        if not (COMFYUI / "main.py").is_file():
            pytest.fail(f"ComfyUI not found at {COMFYUI}: run 'bash .ci/install-comfyui' (or set TAV_COMFYUI)")
        subprocess.run([sys.executable, str(ROOT / "tests" / "comfy" / "make_models.py"), str(TEST_MODELS),
                        str(COMFYUI)], check=True)
    return TEST_MODELS


@pytest.fixture(scope="session")
def comfy(test_models, tmp_path_factory):
    """One real ComfyUI server for all server and browser tests: tiny models, an 8-frame clip in input/."""
    from server import ComfyServer

    from tav_core import demo_video, write_video
    base = tmp_path_factory.mktemp("comfy")
    server = ComfyServer(COMFYUI, base)
    for name, folder in ((CKPT, "checkpoints"), (SDXL_CKPT, "checkpoints"), (CONTROLNET, "controlnet"),
                         (IP2P, "diffusion_models"),
                         (CLIP_VISION, "clip_vision"), (CLIP_TEXT, "text_encoders")):
        (base / "models" / folder / name).symlink_to(test_models / name)
    write_video(base / "input" / "skiing.mp4", demo_video(8, 96, 80))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def object_info(comfy):
    return comfy.get("/object_info")


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model: the error had to come before."""
    from tav_core import cli

    def load(*args):
        raise AssertionError("the model was loaded before the bad input was refused")
    monkeypatch.setattr(cli, "_load", load)


@pytest.fixture
def tiny():
    """Fresh tiny random components (each test may inflate or tune them)."""
    return tiny_components(seed=0)


@pytest.fixture
def cond(tiny):
    tokens = tiny.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return tiny.text_encoder(tokens)[0]


def randomize_temporal(unet, seed=1):
    """Give every temporal layer non-zero weights, so tests see what the temporal attention does."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "attn_temp" in name or "norm_temp" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if name.endswith("norm_temp.weight") else 0))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (the browser tests screenshot their failures)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
