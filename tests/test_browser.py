"""The pack in the real ComfyUI frontend (1.32.9, headless Chromium) as a person uses it: the shipped workflows
open ready to use, the template browser shows them, and the main one runs from the Run button.

On failure a screenshot goes to .cache/browser-failures/<test>.png.
"""

import json
import os

import pytest

from browser import Frontend
from conftest import CKPT, ROOT
from tav_core import read_video

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
FAILURES = ROOT / ".cache" / "browser-failures"


@pytest.fixture(scope="module")
def frontend(comfy):
    frontend = Frontend(comfy)  # 1600x900, the editor's default settings (missing-models warning on)
    yield frontend
    frontend.close()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request, frontend):
    yield
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        path = frontend.screenshot(FAILURES / f"{request.node.name}.png")
        print(f"screenshot of the failure: {path}")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_ready_to_use(frontend, path):
    workflow = json.loads(path.read_text())
    frontend.console.clear()
    nodes = {n["id"]: n for n in frontend.load(path)}

    assert all(n["registered"] for n in nodes.values()), "the editor lacks a node type of the workflow"
    dialogs = frontend.dialog_text()
    assert "missing nodes" not in dialogs.lower()
    for saved in workflow["nodes"]:  # every widget holds the value the file gives it, in the editor's own order
        values = list(nodes[saved["id"]]["widgets"].values())  # (previews add display-only widgets after them)
        assert values[:len(saved["widgets_values"])] == saved["widgets_values"], saved["type"]
    needed = {m["name"] for n in workflow["nodes"] for m in n["properties"].get("models", [])}
    assert needed and all(name in dialogs for name in needed), "the missing-models dialog did not offer downloads"

    frontend.close_dialogs()
    assert frontend.page.evaluate("app.canvas.ds.scale") >= 0.6, "zoomed out so far that the editor drops the text"
    assert frontend.covered_title_points() == []
    assert frontend.errors() == []


def test_template_browser_shows_the_workflows_with_titles_and_thumbnails(frontend):
    frontend.close_dialogs()
    frontend.page.get_by_text("Templates", exact=True).first.click()
    frontend.page.get_by_text("Tune-A-Video", exact=True).first.click()  # the category, named by locales/
    frontend.page.wait_for_function("document.querySelectorAll('.p-dialog img').length >= 5", timeout=600_000)
    frontend.page.wait_for_timeout(1500)
    text = frontend.dialog_text()
    assert all(path.stem in text for path in WORKFLOWS)
    widths = frontend.page.evaluate("() => [...document.querySelectorAll('.p-dialog img')].map(i => i.naturalWidth)")
    assert len(widths) == len(WORKFLOWS) and min(widths) >= 256, f"thumbnails not loaded: {widths}"
    frontend.close_dialogs()


def test_tune_and_edit_runs_from_the_run_button(frontend, comfy):
    """As a person would: open the template, make it small, press Run; the video is saved and shown in place."""
    workflow_checkpoint = comfy.base / "models" / "checkpoints" / "v1-5-pruned-emaonly-fp16.safetensors"
    if not workflow_checkpoint.exists():
        os.symlink(comfy.base / "models" / "checkpoints" / CKPT, workflow_checkpoint)
    frontend.load(ROOT / "workflows" / "Tune and edit a video.json")
    frontend.close_dialogs()
    frontend.set_widgets("ImageFromBatch", {"length": 3})
    frontend.set_widgets("ImageScale", {"width": 64, "height": 64})
    frontend.set_widgets("TuneAVideoTune", {"steps": 2, "save_name": "from-the-ui"})
    frontend.set_widgets("TuneAVideoInvert", {"steps": 3})
    entry = frontend.run()
    assert entry["status"]["status_str"] == "success", entry["status"]
    videos = sorted((comfy.base / "output" / "tuneavideo").glob("edit_*.mp4"))
    assert videos and read_video(videos[-1]).shape == (3, 64, 64, 3)
    assert list((comfy.base / "models" / "tuneavideo").glob("from-the-ui_00001_.safetensors"))
    frontend.page.wait_for_function("document.querySelector('video[src*=\"edit_\"]')?.videoWidth > 0", timeout=600_000)
    inside = frontend.page.evaluate("""() => {  // the result's preview stays inside Save Video, clear of overlays
        const v = document.querySelector('video[src*="edit_"]').getBoundingClientRect();
        const n = app.graph._nodes.find(n => n.type === 'SaveVideo'), ds = app.canvas.ds;
        const bottom = (n.pos[1] + n.size[1] + ds.offset[1]) * ds.scale;
        const corner = document.elementFromPoint(v.right - 2, v.bottom - 2);
        return [v.bottom <= bottom + 1, corner.closest('video, .dom-widget') !== null, n.size[1]]; }""")
    assert inside[:2] == [True, True], f"Save Video's preview spills out of its node or under an overlay: {inside}"
    assert frontend.errors() == []
