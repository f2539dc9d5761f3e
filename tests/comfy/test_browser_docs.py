"""The pack's node docs pages in the real ComfyUI frontend (1.32.9, headless Chromium), opened as a person opens
them: select the node on the canvas, press the selection toolbox's info button. Every node's page, the three
"(old)" nodes' included, comes from the first URL the editor asks for (no 404, no console error) and reads in the
side panel's default width without scrolling sideways.

On failure a screenshot goes to .cache/browser-failures/<test>.png; the pages as shown go to
.cache/browser-screenshots/docs/<NodeId>.png.
"""

import json
import re

import pytest

from support import ROOT

PACK = "tuneavideo-comfy"
pytestmark = pytest.mark.usefixtures("screenshot_on_failure")
SHOTS = ROOT / ".cache" / "browser-screenshots" / "docs"
DEFAULT_SIZE = "calc(20% - 4px)"  # the side bar panel's flex-basis as GraphView's SplitterPanel sets it (size 20)
WINDOWS = [(1600, 900), (1280, 800)]  # px: the tests' window, and a small laptop's (its panel 242 px wide)
OFFLINE = ("ERR_NAME_NOT_RESOLVED", "ERR_INTERNET_DISCONNECTED")  # the editor's calls to the internet, none here
OPEN_JS = """(type) => {
    for (const n of [...app.graph._nodes]) app.graph.remove(n);
    const n = LiteGraph.createNode(type), ds = app.canvas.ds;
    n.pos = [700 / ds.scale - ds.offset[0], 250 / ds.scale - ds.offset[1]];  // right of the side panel, on screen
    app.graph.add(n); app.canvas.selectNode(n); app.canvas.setDirty(true, true); }"""
# the panel's width and size; of the scrolling box, the content and each table and code block, what scrolls
# sideways; every element that reaches past the content's text box (into its padding or out: a long word, a table)
MEASURE_JS = """() => {
    const content = document.querySelector('.node-help-content'), panel = content.closest('.side-bar-panel');
    const scroller = content.parentElement, style = getComputedStyle(content), box = content.getBoundingClientRect();
    const left = box.left + parseFloat(style.paddingLeft), right = box.right - parseFloat(style.paddingRight);
    const inside = [...content.querySelectorAll('*')], end = e => e.getBoundingClientRect().right;
    const boxes = [['scroller', scroller], ['content', content],
                   ...inside.filter(e => e.matches('table, pre')).map(e => [e.tagName.toLowerCase(), e])];
    return {panel: panel.getBoundingClientRect().width, size: panel.style.flexBasis, text: right - left,
            widest: Math.max(...inside.map(end)) - left, scroll: scroller.scrollWidth, client: scroller.clientWidth,
            scrolling: boxes.filter(([, e]) => e.scrollWidth > e.clientWidth + 1)
                            .map(([name, e]) => `${name} ${e.scrollWidth} > ${e.clientWidth}`),
            sticking_out: inside.filter(e => end(e) > right + 1).map(e =>
                `${e.tagName.toLowerCase()} '${e.innerText.slice(0, 40)}' by ${Math.round(end(e) - right)} px`)}; }"""




def open_docs(frontend, node_id: str, title: str) -> str:
    """Put the node on the canvas, select it, press the selection toolbox's info button; the page's text once its
    title shows."""
    frontend.page.evaluate(OPEN_JS, node_id)
    frontend.page.locator(".selection-toolbox button:has(i.icon-\\[lucide--info\\])").first.click()
    frontend.page.wait_for_function("title => document.querySelector('.node-help-content h1')?.innerText === title",
                                    arg=title, timeout=600_000)
    return frontend.page.locator(".node-help-content").inner_text()


def test_every_nodes_page_opens_from_the_first_url_and_reads_in_the_default_panel_width(frontend, comfy):
    nodes = {k: v for k, v in comfy.get("/object_info").items() if v.get("python_module") == f"custom_nodes.{PACK}"}
    assert len(nodes) == 13 and sum(bool(v.get("deprecated")) for v in nodes.values()) == 3
    responses, console = [], len(frontend.console)
    frontend.page.on("response", lambda r: responses.append((r.status, r.url)) if "/extensions/" in r.url else None)
    widths, shown, problems = {}, {}, []
    for width, height in WINDOWS:
        frontend.page.set_viewport_size({"width": width, "height": height})
        for node_id, info in nodes.items():
            shown[node_id] = open_docs(frontend, node_id, info["display_name"])
            m = frontend.page.evaluate(MEASURE_JS)
            widths[f"{node_id} {width}"] = (f"widest {m['widest']:.0f} px of {m['text']:.0f}, scrolls "
                                            f"{m['scroll']}/{m['client']} px, panel {m['panel']:.0f} px")
            problems += [f"{node_id} at {width} px: {p}" for p in m["scrolling"] + m["sticking_out"]]
            if m["size"] != DEFAULT_SIZE:
                problems.append(f"{node_id}: the panel is {m['size']} ({m['panel']} px) wide, not {DEFAULT_SIZE}")
            box = frontend.page.locator(".side-bar-panel").first.bounding_box()
            frontend.screenshot(SHOTS / f"{node_id}-{width}.png", clip={**box, "height": height - box["y"]})
    (SHOTS / "widths.json").write_text(json.dumps(widths, indent=1))  # the record
    assert not problems, "\n".join(problems + [json.dumps(widths, indent=1)])

    asked = [url for _, url in responses if f"/extensions/{PACK}/docs/" in url]
    assert set(asked) == {f"{comfy.url}/extensions/{PACK}/docs/{n}/en.md" for n in nodes}, asked  # the first URL
    assert [r for r in responses if r[0] >= 400] == []
    assert [m for m in frontend.console[console:] if not any(o in m for o in OFFLINE)] == []

    page = (ROOT / "web" / "docs" / "TuneAVideoTune" / "en.md").read_text()
    explained = re.findall(r"^\*\*`(\w+)`\*\*:", page, flags=re.M)  # each input's paragraph starts with its name
    tune = shown["TuneAVideoTune"]
    assert len(explained) == 12 and all(name in tune for name in explained), tune[:2000]
    assert "in the order you meet them" in tune and "one-shot tuning" in tune
