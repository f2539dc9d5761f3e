"""The real ComfyUI frontend in headless Chromium: Debian's browser driven by Playwright (nothing is downloaded).

A ``Frontend`` opens a running ``ComfyServer`` the way a person does: loads workflow files through the editor's
own file input, reads what the editor made of them, edits widgets, presses Run, and takes screenshots.
"""

import json
import shutil
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
# console noise of every start on a machine without internet (see NOTES-comfyui-env.md), not the pack's doing
NETWORK_NOISE = ("ERR_NAME_NOT_RESOLVED", "ERR_INTERNET_DISCONNECTED", "Failed to fetch", "status of 404",
                 "reading 'id'")

NODES_JS = """() => app.graph._nodes.map(n => ({
    id: n.id, type: n.type, title: n.title, registered: n.type in LiteGraph.registered_node_types,
    pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]], mode: n.mode, has_errors: !!n.has_errors,
    widgets: Object.fromEntries((n.widgets || []).map(w => [w.name, w.value]))}))"""


class Frontend:
    def __init__(self, server, width: int = 1600, height: int = 900, settings: dict | None = None):
        self.server = server
        for key, value in {"Comfy.TutorialCompleted": True, **(settings or {})}.items():
            self.set_setting(key, value)
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        self.page = self.browser.new_page(viewport={"width": width, "height": height})
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.goto(server.url)
        self.page.wait_for_function("window.app && app.graph && app.canvas", timeout=600_000)
        time.sleep(2)  # the editor finishes its start-up dialogs and model lists

    def set_setting(self, key: str, value) -> None:
        request = urllib.request.Request(f"{self.server.url}/settings/{key}", data=json.dumps(value).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=300).read()

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions so far that are not known network noise (an extension that does
        not load is an error, though its message says 'Failed to fetch')."""
        return [m for m in self.console
                if "Error loading extension" in m or not any(noise in m for noise in NETWORK_NOISE)]

    def load(self, path: Path) -> list[dict]:
        """Open a workflow file as a user does (the editor's file input); returns the nodes the editor made."""
        expected = len(json.loads(path.read_text())["nodes"])
        self.page.set_input_files("#comfy-file-input", str(path))
        self.page.wait_for_function(f"app.graph._nodes.length === {expected}", timeout=600_000)
        time.sleep(1.5)
        return self.nodes()

    def nodes(self) -> list[dict]:
        return self.page.evaluate(NODES_JS)

    def dialog_text(self) -> str:
        return self.page.evaluate("() => [...document.querySelectorAll('.p-dialog')].map(d => d.innerText).join('\\n')")

    def close_dialogs(self) -> None:
        """Close what the editor opened (missing models, templates...), as a person clicks their X."""
        time.sleep(1)  # some dialogs open a moment after a load
        for _ in range(5):
            masks = self.page.locator(".p-dialog-mask")
            if masks.count() == 0:
                return
            close = self.page.locator(".p-dialog-mask .p-dialog-close-button, .p-dialog-mask button[aria-label='Close'], "
                                      ".p-dialog-mask button:has(.pi-times)")
            if close.count():
                close.first.click()
            else:
                self.page.keyboard.press("Escape")
            time.sleep(0.6)
        raise AssertionError(f"a dialog would not close: {self.dialog_text()[:500]}")

    def covered_node_points(self) -> list[str]:
        """Points of nodes (title bar and body: the four corners and points along the four edges, 1 px inside) that
        are off screen or under the editor's own bars and overlays (menus, minimap, zoom buttons), where a person
        could not read or grab them, as 'title (x, y): what covers it'. A node's own DOM widgets (text boxes, notes,
        previews) are part of it."""
        return self.page.evaluate("""() => {
            const bad = [], ds = app.canvas.ds, box = app.canvas.canvas.getBoundingClientRect();
            const screen = (x, y) => [box.left + (x + ds.offset[0]) * ds.scale, box.top + (y + ds.offset[1]) * ds.scale];
            for (const n of app.graph._nodes) {
                const [l, t] = screen(n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
                const [r, b] = screen(n.pos[0] + n.size[0], n.pos[1] + n.size[1]);
                const points = [];
                for (let i = 0; i <= 10; i++) {
                    const x = l + 1 + i / 10 * (r - l - 2), y = t + 1 + i / 10 * (b - t - 2);
                    points.push([x, t + 1], [x, b - 1], [l + 1, y], [r - 1, y]);
                }
                for (const [x, y] of points) {
                    const el = document.elementFromPoint(x, y);
                    if (el === app.canvas.canvas || el?.closest('.dom-widget')) continue;
                    const what = el ? `${el.tagName.toLowerCase()}.${String(el.className?.baseVal ?? el.className).split(' ')[0]}`
                                    : 'off screen';
                    bad.push(`${n.title} (${Math.round(x)}, ${Math.round(y)}): ${what}`);
                }
            }
            return bad; }""")

    def node_text_px(self) -> dict:
        """The sizes (px on screen: the font's px times the zoom) of the text the canvas draws in nodes (titles, slot
        names, widget labels and values, badges), read from the fonts it draws with in one full redraw."""
        return self.page.evaluate("""() => {
            const canvas = app.canvas, ctx = canvas.ctx, fill = ctx.fillText, fonts = new Set();
            let inNode = 0;
            canvas.drawNode = function (...args) {  // (an own property over LGraphCanvas.prototype.drawNode)
                inNode++;
                try { return Object.getPrototypeOf(canvas).drawNode.apply(this, args); } finally { inNode--; } };
            ctx.fillText = function (...args) { if (inNode) fonts.add(ctx.font); return fill.apply(this, args); };
            try { canvas.draw(true, true); } finally { delete canvas.drawNode; delete ctx.fillText; }
            const px = [...fonts].map(f => parseFloat(/([\\d.]+)px/.exec(f)[1]));
            return {fonts: [...fonts], scale: canvas.ds.scale, smallest: Math.min(...px) * canvas.ds.scale}; }""")

    def image_scales(self) -> dict[str, float]:
        """For each image the canvas draws in one full redraw (a node's preview): its on-screen width over its own
        width in pixels, by its address; text drawn ``s`` px tall in the image is ``s`` times this on screen."""
        return self.page.evaluate("""() => {
            const canvas = app.canvas, ctx = canvas.ctx, draw = ctx.drawImage, scales = {};
            ctx.drawImage = function (image, ...args) {
                if (image instanceof HTMLImageElement && args.length >= 4) {  // (x, y, width, height [of the source])
                    const [shown, own] = args.length >= 8 ? [args[6], args[2]] : [args[2], image.naturalWidth];
                    scales[image.src] = shown * ctx.getTransform().a / devicePixelRatio / own; }
                return draw.call(this, image, ...args); };
            try { canvas.draw(true, true); } finally { delete ctx.drawImage; }
            return scales; }""")

    def set_widgets(self, node_type: str, values: dict) -> None:
        """Change widget values of every node of a type, as typing into them would."""
        self.page.evaluate("""([type, values]) => { for (const n of app.graph._nodes.filter(n => n.type === type))
            for (const [name, value] of Object.entries(values)) {
                const w = n.widgets.find(w => w.name === name); w.value = value; w.callback?.(value); } }""",
                           [node_type, values])

    def run(self, timeout: float = 1800) -> dict:
        """Press Run; returns the history entry of the prompt it queued."""
        before = set(self.server.get("/history"))
        self.page.get_by_role("button", name="Run", exact=True).first.click()
        deadline = time.time() + timeout
        while time.time() < deadline:
            new = set(self.server.get("/history")) - before
            if new:
                return self.server.get("/history")[new.pop()]
            time.sleep(1)
        raise AssertionError(f"the prompt queued by Run did not finish in {timeout} s")

    def screenshot(self, path: Path, clip: dict | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip=clip)
        return path

    def close(self) -> None:
        self.browser.close()
        self._playwright.stop()
