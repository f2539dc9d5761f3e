"""Writes each workflow's template-browser thumbnail (``<name>.jpg``): a screenshot of the graph in the real editor.

    python workflows/make_thumbnails.py        # needs .cache/ComfyUI (bash .ci/install-comfyui) and Chromium

Starts ComfyUI with the pack on loopback, opens every workflow in headless Chromium in a large window, centres
the graph well away from the editor's bars and overlays, crops the screenshot to it and pads it to the square of
the template cards.
"""

import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "comfy"))
from browser import Frontend  # noqa: E402
from server import ComfyServer  # noqa: E402

SIZE = 640
WINDOW = (2400, 1500)
CENTRE_GRAPH_JS = """([width, height]) => { const ds = app.canvas.ds, b = app.graph._groups.map(g => g._bounding);
    const x0 = Math.min(...b.map(r => r[0])), y0 = Math.min(...b.map(r => r[1]));
    const x1 = Math.max(...b.map(r => r[0] + r[2])), y1 = Math.max(...b.map(r => r[1] + r[3]));
    ds.scale = Math.min(0.8, 0.6 * width / (x1 - x0), 0.6 * height / (y1 - y0));
    ds.offset = [width / 2 / ds.scale - (x0 + x1) / 2, height / 2 / ds.scale - (y0 + y1) / 2];
    app.canvas.setDirty(true, true); app.canvas.draw(true, true);
    return {x: (x0 + ds.offset[0]) * ds.scale, y: (y0 + ds.offset[1]) * ds.scale,
            width: (x1 - x0) * ds.scale, height: (y1 - y0) * ds.scale}; }"""


def square(shot: Path, box: dict, out: Path) -> None:
    """The graph cut out of the screenshot, centred on a square of the canvas's own background."""
    page = Image.open(shot).convert("RGB")
    background = page.getpixel((int(box["x"]) - 20, int(box["y"]) - 20))  # empty canvas beside the graph
    graph = page.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    side = max(graph.size) + 40
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(graph, ((side - graph.width) // 2, (side - graph.height) // 2))
    canvas.resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(out, "JPEG", quality=88)


def main() -> None:
    server = ComfyServer(ROOT / ".cache" / "ComfyUI", Path(tempfile.mkdtemp()))
    try:
        frontend = Frontend(server, *WINDOW, settings={"Comfy.Workflow.ShowMissingModelsWarning": False,
                                                       "Comfy.Minimap.Visible": False})
        for path in sorted(HERE.glob("*.json")):
            frontend.load(path)
            frontend.close_dialogs()
            box = frontend.page.evaluate(CENTRE_GRAPH_JS, list(WINDOW))
            frontend.page.wait_for_timeout(800)  # DOM widgets (notes, prompts) follow the canvas
            square(frontend.screenshot(Path(tempfile.mkdtemp()) / "page.png"), box, path.with_suffix(".jpg"))
            print("wrote", path.with_suffix(".jpg"))
        frontend.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
