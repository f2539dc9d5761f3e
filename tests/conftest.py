"""Fixtures every test folder shares: the tiny random components, the test models (built once), the CLI guard."""

import os
import subprocess
import sys

import pytest
import torch

from support import COMFY_SCRIPTS, COMFYUI, TEST_MODELS, module_at
from tav_core.loading.tiny import tiny_components

# every test plans afresh (some change the planner's pieces): the plan cache is tested on its own (test_plan_cache)
os.environ["TUNEAVIDEO_CACHE"] = "off"


@pytest.fixture(scope="session")
def test_models():
    """Small SD1.5-format checkpoint, ControlNet, refusal UNet, CLIP pair for scoring (built once with ComfyUI's
    key map; see comfy/make_models.py, which writes its stamp last)."""
    if not (TEST_MODELS / module_at(COMFY_SCRIPTS / "make_models.py").STAMP).is_file():
        if not (COMFYUI / "main.py").is_file():
            pytest.fail(f"ComfyUI not found at {COMFYUI}: run 'bash .ci/install-comfyui' (or set TAV_COMFYUI)")
        subprocess.run([sys.executable, str(COMFY_SCRIPTS / "make_models.py"), str(TEST_MODELS), str(COMFYUI)],
                       check=True)
    return TEST_MODELS


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model: the error had to come before."""
    from tav_core.cli import commands

    def load(*args):
        raise AssertionError("the model was loaded before the bad input was refused")
    monkeypatch.setattr(commands, "_load", load)


@pytest.fixture
def tiny():
    """Fresh tiny random components (each test may inflate or tune them)."""
    return tiny_components(seed=0)


@pytest.fixture
def cond(tiny):
    tokens = tiny.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return tiny.text_encoder(tokens)[0]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (the browser tests screenshot their failures)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory):
    """A tiny random CLIP saved as a transformers folder (``bench.models.save_tiny_clip``)."""
    from bench.models import save_tiny_clip
    folder = tmp_path_factory.mktemp("clip")
    save_tiny_clip(folder)
    return folder

