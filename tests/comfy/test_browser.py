"""The pack in the real ComfyUI frontend (1.32.9, headless Chromium) as a person uses it: the shipped workflows
open ready to use with notes that read at the opening zoom, the template browser shows and finds them, a first
Run fails only for the checkpoint, the main workflow runs from the Run button and its nodes still clear each other
afterwards, and measuring is opening one more workflow and pressing Run.

On failure a screenshot goes to .cache/browser-failures/<test>.png.
"""

import json
import os
import re
import time

import pytest
from PIL import Image

from support import CKPT, CLIP_TEXT, CLIP_VISION, ROOT, module_at
from tav_core import demo_video, read_video, write_video
from tav_core.charts import FONT_SIZE

build_workflows = module_at(ROOT / "workflows" / "build_workflows.py")
MAIN, MEASURE = build_workflows.MAIN, build_workflows.MEASURE

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
pytestmark = pytest.mark.usefixtures("screenshot_on_failure")
SCREENSHOTS = ROOT / ".cache" / "browser-screenshots"
SHOWN_SCORES = "all pairs (paper 92.40)"  # words of what Score Video shows under its widgets (not in the note)
SMALLEST_TEXT = 9  # px on screen: the notes' plain text was 6.4 px at the opening zoom, widget text 7.5, unreadable
# words of the rendered text that run across a line break other than after a hyphen (as 'safet/ensors' did): the
# line of every character, from its own box on screen, whatever CSS made the break
BROKEN_WORDS_JS = """const brokenWords = root => {
    const broken = [], range = document.createRange(), walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let t = walk.nextNode(); t; t = walk.nextNode())
        for (const word of t.textContent.matchAll(/\\S+/g)) {
            let top = null;
            for (let i = word.index; i < word.index + word[0].length; i++) {
                range.setStart(t, i); range.setEnd(t, i + 1);
                const r = range.getClientRects()[0];
                if (!r) continue;
                if (top !== null && r.top > top + r.height / 2 && t.textContent[i - 1] !== '-') {
                    broken.push(`${word[0].slice(0, i - word.index)}/${word[0].slice(i - word.index)}`); break; }
                top = r.top; } }
    return broken; };"""
NOTES_JS = """() => { BROKEN; return [...document.querySelectorAll('.comfy-markdown')].map(m => {
    const box = m.closest('.dom-widget') || m, text = m.querySelector('.tiptap') || m;  // (the text scrolls in it)
    const shown = [...m.querySelectorAll('p, li, h1, h2, h3, h4, a, code')].filter(e => e.innerText.trim());
    return {text: m.innerText, overflow: Math.max(box.scrollHeight - box.clientHeight, text.scrollHeight - text.clientHeight),
            smallest: Math.min(...shown.map(e => e.getBoundingClientRect().height / (e.getClientRects().length || 1))),
            strong: [...m.querySelectorAll('strong')].map(e => e.innerText.trim()),
            em: [...m.querySelectorAll('em')].map(e => e.innerText.trim()),
            code: [...m.querySelectorAll('code')].map(e => e.innerText.trim()),
            broken: brokenWords(text)}; }); }""".replace("BROKEN", BROKEN_WORDS_JS)
# the text boxes in nodes (notes, prompts, the reports nodes show under their widgets): how far each scrolls (px in
# the node's own units) and its text's size on screen
TEXT_BOXES_JS = """() => [...document.querySelectorAll('.dom-widget *')].filter(e => getComputedStyle(e).opacity !== '0'
    && ['auto', 'scroll'].includes(getComputedStyle(e).overflowY) && (e.value ?? e.innerText).trim()).map(e => ({
        text: (e.value ?? e.innerText).trim(), scroll: e.scrollHeight - e.clientHeight,
        px: parseFloat(getComputedStyle(e).fontSize) * app.canvas.ds.scale}))"""
OVERLAPS_JS = """() => { const T = LiteGraph.NODE_TITLE_HEIGHT, nodes = app.graph._nodes, bad = [];
    const box = n => [n.pos[0], n.pos[1] - T, n.pos[0] + n.size[0], n.pos[1] + n.size[1]];
    const meets = (a, b) => a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
    for (let i = 0; i < nodes.length; i++) for (let j = i + 1; j < nodes.length; j++)
        if (meets(box(nodes[i]), box(nodes[j]))) bad.push(`${nodes[i].title} overlaps ${nodes[j].title}`);
    for (const n of nodes) {  // every node inside a group, whole
        const b = box(n), g = app.graph._groups.find(g => meets(b, [g._bounding[0], g._bounding[1],
            g._bounding[0] + g._bounding[2], g._bounding[1] + g._bounding[3]]));
        if (!g || b[0] < g._bounding[0] || b[2] > g._bounding[0] + g._bounding[2] || b[3] > g._bounding[1] + g._bounding[3])
            bad.push(`${n.title} sticks out of its group`); }
    return bad; }"""


def marked(text: str, mark: str) -> list[str]:
    """The spans of a note's Markdown between ``mark`` pairs (** bold, * italic, ` code)."""
    pattern = {"**": r"\*\*(.+?)\*\*", "*": r"(?<!\*)\*([^*]+?)\*(?!\*)", "`": r"`([^`]+)`"}[mark]
    return [m.strip() for m in re.findall(pattern, text)]




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

    offered = set(re.findall(r"^\w+ / (\S+)$", dialogs, re.M))
    assert offered == needed, f"the missing-models dialog offers {offered}; the graph needs {needed}"

    frontend.close_dialogs()
    text = frontend.node_text_px()  # the editor drops the text of nodes when zoomed out far (below 0.6)
    # (the prompt boxes' text is the size set in the editor's settings, 'Textarea widget font size': 10 px by default)
    assert text["fonts"] and text["smallest"] >= SMALLEST_TEXT, f"text in nodes {text['smallest']:.1f} px on screen: {text}"
    assert frontend.covered_node_points() == [], "a node lies (partly) under the editor's overlays or off screen"
    assert frontend.page.evaluate(OVERLAPS_JS) == []
    check_notes(frontend, workflow)
    assert frontend.errors() == []


def check_notes(frontend, workflow) -> None:
    """Every note reads at the opening zoom and fits its box; its Markdown renders as written (a file name's
    underscores stay underscores); its bold names are things the person can find: a node, a group, a template."""
    notes = [n for n in frontend.page.evaluate(NOTES_JS) if n["text"].strip()]  # (Preview Any shows text this way)
    sources = [n["widgets_values"][0] for n in workflow["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == len(sources)
    findable = {n["title"] for n in frontend.nodes()} | {g["title"] for g in workflow["groups"]} \
        | {p.stem for p in WORKFLOWS}
    for note, source in zip(notes, sources):
        assert note["smallest"] >= SMALLEST_TEXT, f"text {note['smallest']:.1f} px tall on screen: {note['text'][:60]}"
        assert note["overflow"] <= 1, f"the note's text runs {note['overflow']} px past its box: {note['text'][:60]}"
        assert note["broken"] == [], f"words broken across lines: {note['broken']}"
        assert note["strong"] == marked(source, "**") and note["em"] == marked(source, "*") \
            and note["code"] == marked(source, "`"), f"the note renders other marks than it has: {note}"
        for name in note["strong"]:
            assert any(f.startswith(name.rstrip(":")) for f in findable), f"the note names {name!r}: not in the graph"
        for prompt in ("source prompt", "what the clip shows"):  # a prompt the note asks for is in the graph
            assert prompt not in note["text"] or any(f.startswith("Source prompt") for f in findable), note["text"]


def test_template_browser_shows_the_workflows_with_titles_and_thumbnails(frontend):
    frontend.close_dialogs()
    frontend.page.get_by_text("Templates", exact=True).first.click()
    frontend.page.get_by_text("Tune-A-Video", exact=True).first.click()  # the category, named by locales/
    frontend.page.wait_for_function("document.querySelectorAll('.p-dialog img').length >= 5", timeout=600_000)
    frontend.page.wait_for_timeout(1500)
    text = frontend.dialog_text()
    assert all(path.stem in text for path in WORKFLOWS)
    shown = frontend.page.evaluate("() => [...document.querySelectorAll('.p-dialog [data-testid^=\"template-workflow-\"]')]"
                                   ".map(e => e.dataset.testid.slice('template-workflow-'.length))")
    numbered = sorted((path.stem for path in WORKFLOWS), key=lambda name: int(name.split(".")[0]))
    assert "Newest" in text and shown == numbered, f"under the default sort the cards are {shown}"  # main one first
    cards = "() => Object.fromEntries([...document.querySelectorAll('.p-dialog img')].map(i => [i.src, i.naturalWidth]))"
    widths = frontend.page.evaluate(cards)  # the cards in view; the browser loads the rest as they scroll into view
    frontend.page.evaluate("() => document.querySelectorAll('.p-dialog *').forEach(e => e.scrollTop = e.scrollHeight)")
    frontend.page.wait_for_timeout(1500)
    widths.update(frontend.page.evaluate(cards))
    assert len(widths) == len(WORKFLOWS) and min(widths.values()) >= 256, f"thumbnails not loaded: {widths}"
    search = frontend.page.locator(".p-dialog input[type='text'], .p-dialog input[placeholder*='earch']").first
    search.fill("video edit")  # what a person types: the main workflow is among the first cards found
    frontend.page.wait_for_timeout(1500)
    found = frontend.page.evaluate("() => document.querySelector('.p-dialog').innerText")
    assert MAIN in found, "searching 'video edit' does not find the main workflow"
    frontend.close_dialogs()


def test_a_first_run_after_installing_fails_only_for_the_checkpoint(frontend, comfy):
    """The example clip is in place (the pack put it there), so Run stops at the one thing a person must bring."""
    assert not (comfy.base / "models" / "checkpoints" / "v1-5-pruned-emaonly-fp16.safetensors").exists()
    frontend.load(ROOT / "workflows" / f"{MAIN}.json")
    frontend.close_dialogs()
    frontend.page.get_by_role("button", name="Run", exact=True).first.click()
    frontend.page.wait_for_function("document.body.innerText.includes('failed validation')", timeout=600_000)
    message = frontend.dialog_text()
    named = {n["type"] for n in frontend.nodes() if f"{n['type']}:" in message}  # the dialog lists nodes by type
    assert named == {"TuneAVideoLoadInflateCheckpoint"}, message
    assert "ckpt_name: 'v1-5-pruned-emaonly-fp16.safetensors' not in" in message, message
    frontend.close_dialogs()
    frontend.console.clear()  # the refused prompt's 400 and the editor's report of it: expected here


def test_tune_and_edit_runs_from_the_run_button(frontend, comfy):
    """As a person would: open the template, make it small, press Run; the video is saved and shown in place, the
    reports under the nodes read in full, and tuned weights are saved only when asked for (save_name)."""
    workflow_checkpoint = comfy.base / "models" / "checkpoints" / "v1-5-pruned-emaonly-fp16.safetensors"
    if not workflow_checkpoint.exists():
        os.symlink(comfy.base / "models" / "checkpoints" / CKPT, workflow_checkpoint)
    frontend.load(ROOT / "workflows" / f"{MAIN}.json")
    frontend.close_dialogs()
    frontend.set_widgets("ImageFromBatch", {"length": 3})
    frontend.set_widgets("ImageScale", {"width": 64, "height": 64})
    frontend.set_widgets("TuneAVideoTune", {"steps": 2})
    frontend.set_widgets("TuneAVideoInvert", {"steps": 3})
    weights = set((comfy.base / "models" / "tuneavideo").glob("*"))
    entry = frontend.run()
    assert entry["status"]["status_str"] == "success", entry["status"]
    videos = sorted((comfy.base / "output").glob("tuneavideo-edit_*.mp4"))
    assert videos and read_video(videos[-1]).shape == (3, 64, 64, 3)
    assert set((comfy.base / "models" / "tuneavideo").glob("*")) == weights, "an edit saved tuned weights unasked"
    frontend.page.wait_for_function("document.querySelector('video[src*=\"edit_\"]')?.videoWidth > 0", timeout=600_000)
    inside = frontend.page.evaluate("""() => {  // the result's preview stays inside Save Video, clear of overlays
        const v = document.querySelector('video[src*="edit_"]').getBoundingClientRect();
        const n = app.graph._nodes.find(n => n.type === 'SaveVideo'), ds = app.canvas.ds;
        const bottom = (n.pos[1] + n.size[1] + ds.offset[1]) * ds.scale;
        const corner = document.elementFromPoint(v.right - 2, v.bottom - 2);
        return [v.bottom <= bottom + 1, corner.closest('video, .dom-widget') !== null, n.size[1]]; }""")
    assert inside[:2] == [True, True], f"Save Video's preview spills out of its node or under an overlay: {inside}"
    frontend.page.wait_for_timeout(1000)  # nodes grow to show what they made (loss curve, memory reports)
    assert frontend.page.evaluate(OVERLAPS_JS) == [], "after the run a node covers another (e.g. the loss curve)"
    assert frontend.covered_node_points() == [], "after the run a node reaches under the editor's overlays"
    boxes = frontend.page.evaluate(TEXT_BOXES_JS)
    reports = [b for b in boxes if "memory:" in b["text"]]  # what DDIM Invert's and Video KSampler's plans chose
    assert len(reports) >= 2 and min(b["px"] for b in reports) >= SMALLEST_TEXT, boxes
    assert [b for b in boxes if b["scroll"] > 1] == [], "a text box scrolls: a person does not see all of its text"
    frontend.screenshot(SCREENSHOTS / "main-workflow-after-a-run.png")
    curve = max((comfy.base / "temp").glob("*.png"), key=lambda p: p.stat().st_mtime)  # the loss curve on the node
    assert chart_text_px(frontend, curve.name) >= SMALLEST_TEXT
    assert json.loads(Image.open(curve).info["workflow"])["nodes"], "the chart does not carry the workflow"

    frontend.set_widgets("TuneAVideoTune", {"save_name": "from-the-ui"})  # asked for: tuned again and saved
    assert frontend.run()["status"]["status_str"] == "success"
    assert list((comfy.base / "models" / "tuneavideo").glob("from-the-ui_00001_.safetensors"))
    frontend.page.wait_for_timeout(1000)
    saying = [b for b in frontend.page.evaluate(TEXT_BOXES_JS) if "from-the-ui" in b["text"]]  # One-Shot Tune's
    assert saying and all(b["scroll"] <= 1 for b in saying), saying

    frontend.page.evaluate("() => document.activeElement?.blur()")  # R refreshes the model lists, as the note says
    frontend.page.keyboard.press("r")
    frontend.page.wait_for_function("""() => LiteGraph.registered_node_types && app.graph._nodes.length &&
        (() => { const n = LiteGraph.createNode('TuneAVideoLoadTunedWeights');
                 return n.widgets[0].options.values.includes('from-the-ui_00001_.safetensors'); })()""",
                                     timeout=600_000)
    again = frontend.run()  # the unchanged graph once more: One-Shot Tune comes from the cache, nothing is tuned
    cached = next(m[1]["nodes"] for m in again["status"]["messages"] if m[0] == "execution_cached")
    assert next(str(n["id"]) for n in frontend.nodes() if n["type"] == "TuneAVideoTune") in cached, cached
    assert frontend.errors() == []


def test_measuring_is_one_workflow_and_run(frontend, comfy):
    """Open the measuring workflow and Run: it scores the main workflow's edit where that saved it (output/), with
    nothing to upload; Score Video's table and chart show in place."""
    write_video(comfy.base / "output" / "tuneavideo-edit_00001_.mp4",  # the main workflow's first edit (a stand-in)
                demo_video(3, 64, 64)[::-1].copy())
    frontend.load(ROOT / "workflows" / f"{MEASURE}.json")
    frontend.close_dialogs()
    frontend.set_widgets("ImageFromBatch", {"length": 3})
    frontend.set_widgets("ImageScale", {"width": 64, "height": 64})
    frontend.set_widgets("CLIPVisionLoader", {"clip_name": CLIP_VISION})
    frontend.set_widgets("CLIPLoader", {"clip_name": CLIP_TEXT})
    loads = next(n for n in frontend.nodes() if n["title"] == "Load Video (the edit)")["widgets"]["file"]
    assert loads == "tuneavideo-edit_00001_.mp4 [output]", loads  # ComfyUI's name for a file in output/
    entry = frontend.run()
    assert entry["status"]["status_str"] == "success", entry["status"]
    frontend.page.wait_for_function("document.querySelector('.comfy-markdown, textarea') !== null")
    deadline = time.time() + 600
    while SHOWN_SCORES not in frontend.page.evaluate("() => [...document.querySelectorAll('.dom-widget')]"
                                                            ".map(w => w.innerText).join(' ')"):
        assert time.time() < deadline, "the table of scores is not shown"
        time.sleep(1)
    frontend.page.wait_for_timeout(1000)
    assert frontend.page.evaluate(OVERLAPS_JS) == [] and frontend.covered_node_points() == []
    boxes = frontend.page.evaluate(TEXT_BOXES_JS)
    report = [b for b in boxes if SHOWN_SCORES in b["text"]]
    assert report and report[0]["scroll"] <= 1 and report[0]["px"] >= SMALLEST_TEXT, report
    chart = max((comfy.base / "temp").glob("*.png"), key=lambda p: p.stat().st_mtime)  # Score Video's, on the node
    assert chart_text_px(frontend, chart.name) >= SMALLEST_TEXT
    assert frontend.errors() == []


def chart_text_px(frontend, name: str) -> float:
    """How tall the text of the chart image ``name`` (its ticks, titles, legend) is on screen, as the node shows it."""
    scales = [scale for src, scale in frontend.image_scales().items() if name in src]
    assert scales, f"the chart {name} is not drawn: {frontend.image_scales()}"
    print(f"chart {name}: text {FONT_SIZE * scales[0]:.1f} px on screen")
    return FONT_SIZE * scales[0]
