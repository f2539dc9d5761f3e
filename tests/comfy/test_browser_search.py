"""Finding the pack's nodes in the editor's node search (double-click on the canvas) by the word a person types,
and Video KSampler's widgets saying what their 0 means, in the real frontend (1.32.9)."""

import json
import time

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from support import ROOT

OBVIOUS = {"sampler": "Video KSampler", "invert": "DDIM Invert", "p2p": "Attention Control (Prompt-to-Prompt)",
           "video edit": "One-Shot Tune", "prompt to prompt": "Attention Control (Prompt-to-Prompt)",
           "clip score": "Score Video"}
pytestmark = pytest.mark.usefixtures("screenshot_on_failure")
RESULTS_JS = """() => [...document.querySelectorAll('.comfy-vue-node-search-box .p-autocomplete-option')]
    .map(e => (e.querySelector('.option-display-name') ?? e).innerText.split('\\n')[0].trim())"""


def search(frontend, words: str) -> list[str]:
    """The node search's results for ``words``, as a person sees them: double-click an empty spot, type."""
    frontend.close_dialogs()  # (the editor's start-up dialogs, the first time)
    page = frontend.page
    page.evaluate("() => { app.graph.clear(); app.canvas.setDirty(true, true); }")  # an empty canvas to click on
    box = page.locator(".comfy-vue-node-search-container input").first
    deadline = time.time() + 600
    # the editor takes two presses whose timestamps are over 300 ms apart (as on a loaded machine) for two single
    # clicks: then, as a person would, double-click again
    while not box.is_visible():
        assert time.time() < deadline, "double-clicking the canvas never opened the node search"
        page.mouse.dblclick(800, 500)
        try:
            box.wait_for(timeout=15_000)
        except PlaywrightTimeout:
            pass
    box.fill(words)
    page.wait_for_function(f"({RESULTS_JS})().length > 0", timeout=600_000)
    page.wait_for_timeout(500)  # the list settles after the last keystroke
    found = page.evaluate(RESULTS_JS)
    page.locator(".node-search-box-dialog-mask").click(position={"x": 5, "y": 5})  # as a click beside it closes it
    page.wait_for_function("!document.querySelector('.comfy-vue-node-search-container input')", timeout=600_000)
    return found


@pytest.mark.parametrize("words", OBVIOUS)
def test_the_obvious_word_finds_the_packs_node_in_the_top_three(frontend, words):
    found = search(frontend, words)
    assert OBVIOUS[words] in found[:3], f"searching {words!r} gives {found[:10]}"
    assert frontend.errors() == []


def test_aliases_do_not_push_aside_what_the_words_name_exactly(frontend):
    """A node named by the typed words stays above an alias' match; other searches are the editor's own."""
    assert search(frontend, "ksampler")[0] == "KSampler"
    assert search(frontend, "Invert Image")[0] == "Invert Image"


def test_video_ksampler_says_what_zero_means(frontend, object_info):
    """Its steps and seed are 0 by default; the widgets' labels say what 0 means (no hovering needed)."""
    labels = frontend.page.evaluate("""() => Object.fromEntries(LiteGraph.createNode('TuneAVideoSampler').widgets
                                       .map(w => [w.name, [w.label, w.value]]))""")
    assert labels["steps"] == ["steps (0: DDIM Invert's)", 0] and labels["seed"] == ["seed (if eta > 0)", 0], labels
    locale = json.loads((ROOT / "locales" / "en" / "nodeDefs.json").read_text())
    for node, spec in locale.items():  # the labels are the schema's display names (ComfyUI's later editors show those)
        for name, shown in spec["inputs"].items():
            inputs = {**object_info[node]["input"]["required"], **object_info[node]["input"].get("optional", {})}
            assert inputs[name][1]["display_name"] == shown["name"], (node, name)
