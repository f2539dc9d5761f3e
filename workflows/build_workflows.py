"""Writes the pack's UI-format workflows (the files beside this script) from one short description each.

Run with the object_info JSON of a ComfyUI that has the pack installed:
    curl -s http://127.0.0.1:8188/object_info > object_info.json
    python workflows/build_workflows.py object_info.json
Widget values are listed in each node's input order, as ComfyUI's editor stores them. Each file's name is its
title in the template browser. The graphs run left to right in the order of the work, one group per stage; the
files carry a view (``extra.ds``) that shows the whole graph, with readable text, in a 1600x900 window. Thumbnails
(``<name>.jpg``) are screenshots of the graphs, made by ``workflows/make_thumbnails.py``.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
CHECKPOINT = {"name": "v1-5-pruned-emaonly-fp16.safetensors", "directory": "checkpoints",
              "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                     "v1-5-pruned-emaonly-fp16.safetensors?download=true"}
CANNY = {"name": "control_v11p_sd15_canny_fp16.safetensors", "directory": "controlnet",
         "url": "https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/"
                "control_v11p_sd15_canny_fp16.safetensors"}
CLIP_VISION = {"name": "clip-vit-large-patch14.safetensors", "directory": "clip_vision",
               "url": "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/model.safetensors"}
CLIP_TEXT = {"name": "clip_l.safetensors", "directory": "text_encoders",
             "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"}
VIDEO = "skiing.mp4"
SAVE_NAME = "skiing"
SOURCE = "a man is skiing"
EDIT = "spider man is skiing on the beach, cartoon style"
P2P_EDIT = "a spider man is skiing"  # Prompt-to-Prompt keeps what the prompt does not change: the slope stays
# layout, in canvas units: columns of nodes, one group per stage of the work
WIDTH, COLUMN_GAP, ROW_GAP, TITLE, GROUP_TOP = 340, 60, 20, 30, 50
SLOT, WIDGET = 20, 26
# room for a square preview, a text box, the loss curve or the score chart shown on the node after a run
HEIGHT = {"LoadVideo": 400, "CLIPTextEncode": 110, "PrimitiveStringMultiline": 110, "SaveVideo": 440,
          "TuneAVideoTune": 380, "TuneAVideoScoreVideo": 400, "TuneAVideoAttentionControl": 400}
BYPASSED = 4  # a node's mode when it is skipped on Run (Ctrl+B in the editor)
STAGE_COLORS = ["#3f789e", "#8a6b3f", "#5e8a3f", "#7a3f8a", "#3f8a7a"]
# the view stored in the files: a 1600x900 window, less the editor's bars and overlays (measured in frontend
# 1.32.9 with its first-run banner showing): sidebar on the left, tabs and floating menus on top, the minimap
# and zoom buttons in the bottom-right corner; at zoom below 0.6 the editor draws nodes without their text
WINDOW = dict(left=65, top=135, right=1590, bottom=890, corner_left=1335, corner_top=635)
MIN_ZOOM = 0.62
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

NOTE_START = """**Start here**

1. **Load Video**: your clip (put it in ComfyUI/input).
2. **Frames to edit**: which frames (the paper: 24, every 2nd frame); **Resize**: 512x512 for SD 1.5.
3. **Checkpoint**: an SD 1.x/2.x checkpoint.
4. **Prompts**: the source prompt describes the clip as it is; the edited prompt says what it should become.

Then press Run. Optional, **6. Measure**: select the group and press Ctrl+B to score the edit as the paper
does (needs CLIP ViT-L/14 vision and clip_l, offered for download on opening)."""
NOTE_TUNE = """**One-Shot Tune** learns this clip (paper: 500 steps, lr 3e-5). It is the slow part: minutes on a GPU,
hours on a CPU. Memory grows with frames x size. Before the first step the node plans the run's peak memory
against what is free; with *memory* on auto (the default) it turns on gradient checkpointing, half-precision
autocast or a shorter *frame_window* when needed and says so on the node (24 frames at 512x512 fit a 12 GB GPU).

With a *save name* the tuned weights go to models/tuneavideo/<name>_00001_.safetensors: tune once, then edit
as often as you like with the **Edit with saved weights** template. The seed stays fixed, so running the graph
again with the same settings does not tune again."""
NOTE_REUSE = """**Edit with saved weights**

No tuning here: **Load Tuned Weights** takes a file that One-Shot Tune saved (run **Tune and save weights**
first; the list is empty until then). Use the checkpoint and the frames (count, size) it was tuned on.

Change the edited prompt and run: inversion and sampling take a fraction of the tuning time. Optional,
**6. Measure**: select the group and press Ctrl+B to score the edit."""
NOTE_SAVE = """**Tune and save weights**

Only tunes: One-Shot Tune saves models/tuneavideo/skiing_00001_.safetensors (the next number if it exists).
Then open **Edit with saved weights** to edit the clip as often as you like."""
NOTE_ZERO = """**Zero-shot edit**

No tuning: the inflated model edits the clip with sparse-causal attention only (the temporal layers start at
zero). Quick, but less faithful to the motion than a tuned model."""
NOTE_P2P = """**Prompt-to-Prompt** (Video-P2P): keeps what the edit prompt does not change.

**Null-Text Invert** makes the source branch retrace the clip (inner_steps backward passes per step: slower than
DDIM Invert; save it to reuse). **Attention Control** then gives the edit the source's attention for the first
steps; *local blend* keeps everything outside the blend words' region equal to the source. Its prompts come from
the two String nodes, the same texts that are encoded."""
NOTE_LONG = """**A long clip**: 64 frames here, any number in general. Memory stays that of a short clip:

- One-Shot Tune learns from random runs of *frame_window* (8) consecutive frames.
- **Context Windows (Manual)** (ComfyUI's own) makes DDIM Invert and Video KSampler run the clip in overlapping
  windows of 16 frames; every window still attends to the clip's first frame, so the windows agree.

With *memory* on auto, DDIM Invert and Video KSampler pick windows themselves when a clip does not fit."""
NOTE_CONTROLNET = """**ControlNet**: one Canny hint per frame keeps the edit on the source's outlines. Raise
*strength* in Apply ControlNet for a closer structure, lower it for freer edits."""


class Graph:
    def __init__(self, info: dict):
        self.info, self.nodes, self.links, self.groups = info, [], [], []
        self.columns = []  # [x, y of the next node] per column
        self.current = None  # the column nodes go into
        self.mode = 0  # the mode given to new nodes (BYPASSED for optional stages)

    def stage(self, title: str, under: tuple[int, int] | None = None, mode: int = 0):
        """Start a new group (one stage of the work): to the right of the last column, or ``under`` the nodes of
        existing columns (first, last) where they leave room."""
        group = {"title": title, "bounding": [0, 0, 0, 0], "color": STAGE_COLORS[len(self.groups) % 5],
                 "font_size": 24, "flags": {}, "columns": [], "top": 0}
        self.groups.append(group)
        self.mode = mode
        if under:
            group["span"] = list(range(under[0], under[1] + 1))
            group["top"] = max(self.columns[i][1] for i in group["span"]) + ROW_GAP
            for i in group["span"]:
                self.columns[i][1] = group["top"] + GROUP_TOP
        self.column()

    def column(self):
        """Continue the current stage in its next column."""
        group = self.groups[-1]
        if "span" in group:
            self.current = group["span"][len(group["columns"])]
        else:
            x = max(c[0] for c in self.columns) + WIDTH + COLUMN_GAP if self.columns else 0
            self.columns.append([x, GROUP_TOP])
            self.current = len(self.columns) - 1
        group["columns"].append(self.current)

    def _place(self, height: int) -> tuple[list, list]:
        column = self.columns[self.current]
        at, size = [column[0], column[1] + TITLE], [WIDTH, height]  # a node's title bar sits above its position
        column[1] += TITLE + height + ROW_GAP
        return at, size

    def node(self, kind: str, *widgets, title=None, models=None, **connections):
        """Add a node below the last one of this column; ``connections`` map input names to (node, slot)."""
        spec = self.info[kind]
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(spec["output_name"], spec["output"]))]
        sockets = max(len(spec["input_order"]["required"]) + len(spec["input_order"].get("optional", [])) - len(widgets),
                      len(outputs))
        at, size = self._place(HEIGHT.get(kind, SLOT * sockets + WIDGET * len(widgets) + 12))
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": at, "size": size, "flags": {},
                "order": len(self.nodes), "mode": self.mode, "inputs": [], "outputs": outputs,
                "properties": {"Node name for S&R": kind}, "widgets_values": list(widgets)}
        if models:
            node["properties"]["models"] = models  # the editor offers downloads when the file is missing
        if title:
            node["title"] = title
        self.nodes.append(node)
        specs = {**spec["input"]["required"], **spec["input"].get("optional", {})}
        for name in spec["input_order"]["required"] + spec["input_order"].get("optional", []):
            if name in connections:
                source, slot = connections.pop(name)
                link = len(self.links) + 1
                kind_of = source["outputs"][slot]["type"]
                node["inputs"].append({"name": name, "type": kind_of, "link": link})
                if isinstance(specs[name][0], list) or specs[name][0] in WIDGET_TYPES:
                    node["inputs"][-1]["widget"] = {"name": name}  # a widget fed by a link
                source["outputs"][slot]["links"].append(link)
                self.links.append([link, source["id"], slot, node["id"], len(node["inputs"]) - 1, kind_of])
        assert not connections, f"{kind} has no inputs {list(connections)}"
        return node

    def note(self, text: str, column: int | None = None):
        """A note below the last node of this column (or of an earlier ``column`` with room to spare)."""
        lines = sum(1 + len(line) // 60 for line in text.splitlines())  # wrapped at the note's width
        current, self.current = self.current, self.current if column is None else column
        at, size = self._place(36 + 12 * lines)  # the editor's markdown: about 12 units a line
        self.current = current
        self.nodes.append({"id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": at, "size": size, "flags": {},
                           "order": len(self.nodes), "mode": self.mode, "properties": {}, "widgets_values": [text],
                           "color": "#432", "bgcolor": "#653"})

    def _view(self, height: int) -> dict:
        """Zoom and offset that show the whole graph in the free part of a 1600x900 editor window."""
        width = self.columns[-1][0] + WIDTH + COLUMN_GAP / 2
        zoom = min(1.0, (WINDOW["right"] - WINDOW["left"]) / width, (WINDOW["bottom"] - WINDOW["top"]) / height)
        for x, bottom in self.columns:  # columns reaching the bottom-right corner must end above its overlays
            if WINDOW["left"] + (x + WIDTH) * zoom > WINDOW["corner_left"]:
                zoom = min(zoom, (WINDOW["corner_top"] - WINDOW["top"]) / bottom)
        assert zoom >= MIN_ZOOM, f"the graph is too large to show with its text at 1600x900 (zoom {zoom:.2f})"
        left = -COLUMN_GAP / 2
        return {"scale": round(zoom, 4), "offset": [round(WINDOW["left"] / zoom - left, 1), round(WINDOW["top"] / zoom, 1)]}

    def json(self) -> dict:
        for group in self.groups:
            cols = [self.columns[i] for i in group.pop("columns")]
            top = group.pop("top")
            group.pop("span", None)
            group["bounding"] = [cols[0][0] - COLUMN_GAP / 2 + 6, top, cols[-1][0] - cols[0][0] + WIDTH + COLUMN_GAP - 12,
                                 max(y for _, y in cols) - top]
        height = max(y for _, y in self.columns)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {"ds": self._view(height)},
                "version": 0.4}


def video_in(g: Graph, note: str, frames: int = 8):
    g.stage("1. Source video")
    g.note(note)
    video = g.node("LoadVideo", VIDEO, "image", title="Load Video (your clip)")
    parts = g.node("GetVideoComponents", video=(video, 0))
    frames = g.node("ImageFromBatch", 0, frames, title="Frames to edit", image=(parts, 0))
    return g.node("ImageScale", "bicubic", 512, 512, "center", title="Resize (SD 1.5: 512x512)", image=(frames, 0))


def checkpoint_and_prompts(g: Graph, loader="TuneAVideoLoadInflateCheckpoint", source=True, edit=True,
                           source_text=False, edit_prompt=EDIT):
    """The model and the prompts; a prompt other nodes also read is one text (a String node) that is encoded."""
    g.stage("2. Model and prompts")
    ckpt = g.node(loader, CHECKPOINT["name"], title="Checkpoint (SD 1.x/2.x)", models=[CHECKPOINT])
    prompts = {}
    if source and source_text:
        prompts["source_text"] = g.node("PrimitiveStringMultiline", SOURCE, title="Source prompt (the clip as it is)")
        prompts["source"] = g.node("CLIPTextEncode", SOURCE, title="Source prompt, encoded", clip=(ckpt, 1),
                                   text=(prompts["source_text"], 0))
    elif source:
        prompts["source"] = g.node("CLIPTextEncode", SOURCE, title="Source prompt (the clip as it is)", clip=(ckpt, 1))
    prompts["empty"] = g.node("CLIPTextEncode", "", title="Empty prompt", clip=(ckpt, 1))
    if edit:
        prompts["edit_text"] = g.node("PrimitiveStringMultiline", edit_prompt, title="Edited prompt (what it should become)")
        prompts["edit"] = g.node("CLIPTextEncode", edit_prompt, title="Edited prompt, encoded", clip=(ckpt, 1),
                                 text=(prompts["edit_text"], 0))
    return ckpt, prompts


def controlnet_hints(g: Graph, frames):
    """Canny hints and the ControlNet, in the room under the model and prompts."""
    g.stage("ControlNet hints", under=(1, 1))
    hints = g.node("Canny", 0.4, 0.8, title="Canny hint per frame", image=(frames, 0))
    net = g.node("ControlNetLoader", CANNY["name"], models=[CANNY])
    return hints, net


def invert_and_sample(g: Graph, model, latent, prompts, controlnet=None, windows=False):
    g.stage("4. Invert and edit")
    if windows:
        model = (g.node("ContextWindowsManual", 16, 4, "standard_static", 1, False, "pyramid", 0,
                        title="Context Windows (16 frames)", model=model), 0)
    noise = g.node("TuneAVideoInvert", 50, "auto", model=model, conditioning=(prompts["empty"], 0),
                   latent_image=(latent, 0))
    positive, negative = (prompts["edit"], 0), (prompts["empty"], 0)
    if controlnet is not None:
        hints, net = controlnet
        apply = g.node("ControlNetApplyAdvanced", 1.0, 0.0, 1.0, positive=positive, negative=negative,
                       control_net=(net, 0), image=(hints, 0))
        positive, negative = (apply, 0), (apply, 1)
        g.note(NOTE_CONTROLNET)
    return g.node("TuneAVideoSampler", 0, 0, 12.5, 0.0, "auto", model=model, positive=positive, negative=negative,
                  latent_image=(noise, 0))


def video_out(g: Graph, vae, latent, name: str):
    g.stage("5. Edited video")
    images = g.node("VAEDecode", samples=(latent, 0), vae=(vae, 2))
    video = g.node("CreateVideo", 8.0, images=(images, 0))
    g.node("SaveVideo", f"tuneavideo/{name}", "auto", "auto", video=(video, 0))
    return images


def measure(g: Graph, edited, source, prompts):
    """Score Video on the edit: shipped bypassed, as it needs two CLIP files that not everyone has."""
    g.stage("6. Measure (Ctrl+B: on)", mode=BYPASSED)
    vision = g.node("CLIPVisionLoader", CLIP_VISION["name"], models=[CLIP_VISION])
    clip = g.node("CLIPLoader", CLIP_TEXT["name"], "stable_diffusion", "default", models=[CLIP_TEXT])
    g.node("TuneAVideoScoreVideo", EDIT, images=(edited, 0), clip_vision=(vision, 0), clip=(clip, 0),
           prompt=(prompts["edit_text"], 0), source_images=(source, 0))


def tune_stage(g: Graph, ckpt, frames, prompts, note: str, save_name: str, frame_window: int = 0):
    g.stage("3. Encode and tune")
    latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
    tuned = g.node("TuneAVideoTune", 0, 500, 3e-5, save_name, frame_window, False, "auto", model=(ckpt, 0),
                   positive=(prompts["source"], 0), latent_image=(latent, 0))
    g.note(note)
    return latent, tuned


def edit_workflow(info, tune=True, controlnet=False, name="edit") -> dict:
    g = Graph(info)
    frames = video_in(g, NOTE_START)
    ckpt, prompts = checkpoint_and_prompts(g, source=tune)
    hints = controlnet_hints(g, frames) if controlnet else None
    model = (ckpt, 0)
    if tune:
        latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_TUNE, SAVE_NAME)
        model = (tuned, 0)
    else:
        g.stage("3. Encode")
        latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
        g.note(NOTE_ZERO)
    edited = video_out(g, ckpt, invert_and_sample(g, model, latent, prompts, hints), name)
    measure(g, edited, frames, prompts)
    return g.json()


def long_workflow(info) -> dict:
    """A clip longer than memory allows at once: tuning on frame windows, editing in the host's context windows."""
    g = Graph(info)
    frames = video_in(g, NOTE_START, frames=64)
    ckpt, prompts = checkpoint_and_prompts(g)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_LONG, SAVE_NAME + "-long", frame_window=8)
    edited = video_out(g, ckpt, invert_and_sample(g, (tuned, 0), latent, prompts, windows=True), "long")
    measure(g, edited, frames, prompts)
    return g.json()


def p2p_workflow(info) -> dict:
    """Video-P2P on the tuned model: null-text inversion, then the source and the edit sampled together."""
    g = Graph(info)
    frames = video_in(g, NOTE_START)
    ckpt, prompts = checkpoint_and_prompts(g, source_text=True, edit_prompt=P2P_EDIT)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_TUNE, SAVE_NAME)
    g.stage("4. Null text and attention control")
    noise = g.node("TuneAVideoNullTextInvert", 50, 7.5, 10, "", "auto", model=(tuned, 0), positive=(prompts["source"], 0),
                   negative=(prompts["empty"], 0), latent_image=(latent, 0))
    control = g.node("TuneAVideoAttentionControl", SOURCE, P2P_EDIT, "auto", 0.2, 0.5, "spider:2", "man", "man", 0.3,
                     0.2, source_prompt=(prompts["source_text"], 0), edit_prompt=(prompts["edit_text"], 0))
    edited = g.node("TuneAVideoSampler", 0, 0, 7.5, 0.0, "auto", model=(tuned, 0), positive=(prompts["edit"], 0),
                    negative=(prompts["empty"], 0), latent_image=(noise, 0), control=(control, 0),
                    source_positive=(prompts["source"], 0))
    g.note(NOTE_P2P, column=2)  # under the tuning, where there is room
    images = video_out(g, ckpt, edited, "p2p")
    measure(g, images, frames, prompts)
    return g.json()


def tune_and_save_workflow(info) -> dict:
    g = Graph(info)
    frames = video_in(g, NOTE_START.replace("4. **Prompts**: the source prompt describes the clip as it is; the edited "
                                            "prompt says what it should become.", "4. **Source prompt**: describe "
                                            "the clip as it is."))
    ckpt, prompts = checkpoint_and_prompts(g, edit=False)
    tune_stage(g, ckpt, frames, prompts, NOTE_SAVE, SAVE_NAME)
    return g.json()


def reuse_workflow(info) -> dict:
    g = Graph(info)
    frames = video_in(g, NOTE_REUSE)
    ckpt, prompts = checkpoint_and_prompts(g, loader="CheckpointLoaderSimple", source=False)
    g.stage("3. Tuned weights")
    tuned = g.node("TuneAVideoLoadTunedWeights", f"{SAVE_NAME}_00001_.safetensors", model=(ckpt, 0))
    latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
    edited = video_out(g, ckpt, invert_and_sample(g, (tuned, 0), latent, prompts), "reuse")
    measure(g, edited, frames, prompts)
    return g.json()


def workflows(info: dict) -> dict[str, dict]:
    """File name (the template's title) -> workflow."""
    return {"Tune and edit a video.json": edit_workflow(info, name="edit"),
            "Tune and save weights.json": tune_and_save_workflow(info),
            "Edit with saved weights.json": reuse_workflow(info),
            "Tune and edit with ControlNet.json": edit_workflow(info, controlnet=True, name="edit-controlnet"),
            "Tune and edit with Prompt-to-Prompt.json": p2p_workflow(info),
            "Tune and edit a long video.json": long_workflow(info),
            "Zero-shot edit (no tuning).json": edit_workflow(info, tune=False, name="zero-shot")}


if __name__ == "__main__":
    info = json.loads(Path(sys.argv[1]).read_text())
    for old in HERE.glob("*.json"):
        if old.name not in workflows(info):
            old.unlink()
    for name, workflow in workflows(info).items():
        (HERE / name).write_text(json.dumps(workflow, indent=1) + "\n")
        print("wrote", HERE / name)
