"""The one real ComfyUI server all server and browser tests share (this folder's helpers sit beside it)."""

import pytest

from browser import Frontend
from server import ComfyServer
from support import CKPT, CLIP_TEXT, CLIP_VISION, COMFYUI, CONTROLNET, IP2P, ROOT, SDXL_CKPT
from tav_core import demo_video, write_video
from tiny_motion import write_motion_modules


@pytest.fixture(scope="session")
def comfy(test_models, tmp_path_factory):
    """One real ComfyUI server for all server and browser tests: tiny models (motion modules too), an 8-frame clip in
    input/."""
    base = tmp_path_factory.mktemp("comfy")
    server = ComfyServer(COMFYUI, base)
    for name, folder in ((CKPT, "checkpoints"), (SDXL_CKPT, "checkpoints"), (CONTROLNET, "controlnet"),
                         (IP2P, "diffusion_models"),
                         (CLIP_VISION, "clip_vision"), (CLIP_TEXT, "text_encoders")):
        (base / "models" / folder / name).symlink_to(test_models / name)
    write_video(base / "input" / "skiing.mp4", demo_video(8, 96, 80))
    write_motion_modules(base / "models" / "animatediff_models")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def object_info(comfy):
    return comfy.get("/object_info")


@pytest.fixture(scope="module")
def frontend(comfy):
    """The real editor on the shared server in headless Chromium, one per browser test module: 1600x900, the
    editor's default settings (missing-models warning on)."""
    frontend = Frontend(comfy)
    yield frontend
    frontend.close()


@pytest.fixture
def screenshot_on_failure(request, frontend):
    """A browser test that fails leaves a screenshot in .cache/browser-failures/<test>.png (browser modules use it
    with ``pytestmark``)."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        path = frontend.screenshot(ROOT / ".cache" / "browser-failures" / f"{request.node.name}.png")
        print(f"screenshot of the failure: {path}")
