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
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
CHECKPOINT = {"name": "v1-5-pruned-emaonly-fp16.safetensors", "directory": "checkpoints",
              "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                     "v1-5-pruned-emaonly-fp16.safetensors?download=true"}
SDXL_CHECKPOINT = {"name": "sd_xl_base_1.0.safetensors", "directory": "checkpoints",
                   "url": "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
                          "sd_xl_base_1.0.safetensors"}
CANNY = {"name": "control_v11p_sd15_canny_fp16.safetensors", "directory": "controlnet",
         "url": "https://huggingface.co/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/"
                "control_v11p_sd15_canny_fp16.safetensors"}
MOTION_MODULE = {"name": "mm_sd15_v2.safetensors", "directory": "animatediff_models",  # AnimateDiff v2, fp16
                 "url": "https://huggingface.co/conrevo/AnimateDiff-A1111/resolve/main/motion_module/"
                        "mm_sd15_v2.safetensors"}
CLIP_VISION = {"name": "clip-vit-large-patch14.safetensors", "directory": "clip_vision",
               "url": "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/model.safetensors"}
CLIP_TEXT = {"name": "clip_l.safetensors", "directory": "text_encoders",
             "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"}
VIDEO = "tuneavideo-example.mp4"  # drawn by the pack and put in ComfyUI/input when it loads (tav_core/example_clip.py)
SAVE_NAME = "ball"
SOURCE = "a red ball is rolling on the grass"
EDIT = "a glowing blue globe is rolling on the beach, cartoon style"
P2P_EDIT = "a blue ball is rolling on the grass"  # Prompt-to-Prompt keeps what the prompt does not change
# file names: the template browser's titles and descriptions; numbered so its A-Z sort lists the main one first
MAIN, CONTROLNET, P2P = "1. Video edit - tune, then edit", "2. Video edit with ControlNet", "3. Video edit with Prompt-to-Prompt"
LONG, SAVE, REUSE = "4. Long video edit (64 frames)", "5. Tune and save weights", "6. Video edit with saved weights"
ZERO, MEASURE = "7. Zero-shot video edit (no tuning)", "8. Measure an edit (CLIP scores, PSNR)"
SDXL, MOTION = "9. Tune and edit a video (SDXL)", "10. Video edit with an AnimateDiff motion module"
# layout, in canvas units: columns of nodes, one group per stage of the work
WIDTH, COLUMN_GAP, ROW_GAP, TITLE, GROUP_TOP = 340, 60, 20, 30, 50
SLOT, WIDGET = 20, 26
# room for a square preview, a text box, the loss curve or the score chart shown on the node after a run
# (sizes measured in the editor after a run; the browser tests check that no node then covers another)
HEIGHT = {"LoadVideo": 420, "CLIPTextEncode": 110, "PrimitiveStringMultiline": 110, "SaveVideo": 440,
          "TuneAVideoTune": 600, "TuneAVideoScoreVideo": 860 + 2 * WIDGET,
          "TuneAVideoAttentionControl": 400}
PROGRESS_TEXT = 50  # the line under a node that says what its memory plan chose, shown after a run
SHOWS_TEXT = {"TuneAVideoInvert", "TuneAVideoSampler", "TuneAVideoNullTextInvert"}
STAGE_COLORS = ["#3f789e", "#8a6b3f", "#5e8a3f", "#7a3f8a", "#3f8a7a"]
# the view stored in the files: a 1600x900 window, less the editor's bars and overlays (measured in frontend
# 1.32.9 with its first-run banner showing): sidebar on the left, tabs and floating menus on top, the minimap
# and zoom buttons in the bottom-right corner; at zoom below 0.6 the editor draws nodes without their text
WINDOW = dict(left=65, top=135, right=1590, bottom=890, corner_left=1335, corner_top=635)
MIN_ZOOM = 0.62
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# notes are written as level-2 headings: the editor draws a note's plain text at 10 canvas units (6 px on screen
# at the files' zoom), its headings at 15
NOTE_LINE, NOTE_CHARS = 22, 40  # canvas units per line, characters per line, at a note's width

NOTE_TUNE = """## **One-Shot Tune** learns the clip: minutes on a GPU (500 steps), hours on a CPU.
## With a *save_name* the weights go to `models/tuneavideo`: reuse them in **6. Video edit with saved weights**."""
NOTE_MEASURE = f"""## Scores an edit as the paper does: frame consistency and text alignment (CLIP), PSNR and SSIM.
## 1. **Load Video (the source)**: the clip that was edited, with the same frames and size.
## 2. **Load Video (the edit)**: *choose file to upload*, pick it in `ComfyUI/output/tuneavideo`.
## 3. Run: the editor offers the two CLIP files ([ViT-L/14]({CLIP_VISION["url"]}), [clip_l]({CLIP_TEXT["url"]}))."""
NOTE_REUSE = """## No tuning: **Load Tuned Weights** takes a file One-Shot Tune saved (**5. Tune and save weights**).
## New files show in its list after pressing R (refresh). Use the checkpoint and frames they were tuned on."""
NOTE_SAVE = f"""## Tunes only: the weights go to `models/tuneavideo/{SAVE_NAME}_00001_.safetensors` (next number if taken).
## Then edit with **6. Video edit with saved weights**, as often as you like."""
NOTE_ZERO = """## No tuning: the inflated model edits with sparse-causal attention only. Quick, less faithful to the motion."""
NOTE_P2P = """## Prompt-to-Prompt keeps what the edited prompt does not change.
## **Null-Text Invert** makes the source retrace the clip; **Attention Control** gives the edit the source's \
attention; its prompts come from the two String nodes."""
NOTE_LONG = """## A long clip (64 frames) in the memory of a short one: One-Shot Tune learns from 8-frame windows; \
**Context Windows (16 frames)** makes inversion and sampling run in windows that all see frame 1."""
NOTE_OUT = f"""## The edit is saved in `output/tuneavideo`. To score it: **{MEASURE}**."""
NOTE_CONTROLNET = """## One Canny hint per frame keeps the edit on the source's outlines: *strength* sets how closely."""
PROMPTS = {"both": "Say what the clip shows and what it should become in the prompts",
           "source": "Say what the clip shows in the source prompt", "edit": "Say what the clip should become"}


NOTE_SDXL = """## SDXL at 768x768, 16 frames, tuned as LoRA (**One-Shot Tune**'s method lora, rank 16): it plans \
within a 16 GB GPU (ComfyUI loads SDXL in fp16; the memory plan turns on gradient checkpointing) and saves 61 MB, \
not 2.3 GB. The paper's recipe is method full: on a 24 GB card, set it for the paper's result."""


NOTE_MOTION = """## An AnimateDiff motion module (in `models/animatediff_models`, AnimateDiff-Evolved's folder) is the \
temporal layers: a motion prior trained on videos, with AnimateDiff's per-frame attention (frame_attention auto).
## **One-Shot Tune** adapts its attentions (method lora); method full tunes the whole module. For stronger appearance \
consistency set frame_attention to sparse_causal in **Checkpoint (SD 1.x/2.x)**."""


def start_note(prompts: str = "both", model: str = "SD 1.x/2.x", models: str = "an SD 1.x or 2.x model") -> str:
    """The first note: the three things to set before Run (only the prompts the graph has)."""
    return f"""## 1. **Load Video (your clip)**: the example clip, or yours (ComfyUI/input).
## 2. **Checkpoint ({model})**: {models}.
## 3. {PROMPTS[prompts]}, then press Run."""


class Graph:
    def __init__(self, info: dict):
        self.info, self.nodes, self.links, self.groups = info, [], [], []
        self.columns = []  # [x, y of the next node, width] per column
        self.current = None  # the column nodes go into

    def stage(self, title: str, under: tuple[int, int] | None = None, width: int = WIDTH):
        """Start a new group (one stage of the work): to the right of the last column (``width`` wide), or
        ``under`` the nodes of existing columns (first, last) where they leave room."""
        group = {"title": title, "bounding": [0, 0, 0, 0], "color": STAGE_COLORS[len(self.groups) % 5],
                 "font_size": 24, "flags": {}, "columns": [], "top": 0}
        self.groups.append(group)
        if under:
            group["span"] = list(range(under[0], under[1] + 1))
            group["top"] = max(self.columns[i][1] for i in group["span"]) + ROW_GAP
            for i in group["span"]:
                self.columns[i][1] = group["top"] + GROUP_TOP
        self.column(width)

    def column(self, width: int = WIDTH):
        """Continue the current stage in its next column."""
        group = self.groups[-1]
        if "span" in group:
            self.current = group["span"][len(group["columns"])]
        else:
            x = max(c[0] + c[2] for c in self.columns) + COLUMN_GAP if self.columns else 0
            self.columns.append([x, GROUP_TOP, width])
            self.current = len(self.columns) - 1
        group["columns"].append(self.current)

    def _place(self, height: int) -> tuple[list, list]:
        column = self.columns[self.current]
        at, size = [column[0], column[1] + TITLE], [column[2], height]  # a node's title bar sits above its position
        column[1] += TITLE + height + ROW_GAP
        return at, size

    def node(self, kind: str, *widgets, title=None, models=None, **connections):
        """Add a node below the last one of this column; ``connections`` map input names to (node, slot)."""
        spec = self.info[kind]
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(spec["output_name"], spec["output"]))]
        sockets = max(len(spec["input_order"]["required"]) + len(spec["input_order"].get("optional", [])) - len(widgets),
                      len(outputs))
        at, size = self._place(HEIGHT.get(kind, SLOT * sockets + WIDGET * len(widgets) + 12
                                          + PROGRESS_TEXT * (kind in SHOWS_TEXT)))
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": at, "size": size, "flags": {},
                "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": outputs,
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
        shown = re.sub(r"\[([^]]*)\]\([^)]*\)|[*`#]", r"\1", text)  # what is drawn: no links' addresses, no marks
        lines = sum(1 + len(line.strip()) // NOTE_CHARS for line in shown.splitlines())  # wrapped at the width
        current, self.current = self.current, self.current if column is None else column
        at, size = self._place(30 + NOTE_LINE * lines)
        self.current = current
        self.nodes.append({"id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": at, "size": size, "flags": {},
                           "order": len(self.nodes), "mode": 0, "properties": {}, "widgets_values": [text],
                           "color": "#432", "bgcolor": "#653"})

    def _view(self, height: int) -> dict:
        """Zoom and offset that show the whole graph in the free part of a 1600x900 editor window."""
        width = self.columns[-1][0] + self.columns[-1][2] + COLUMN_GAP / 2
        zoom = min(1.0, (WINDOW["right"] - WINDOW["left"]) / width, (WINDOW["bottom"] - WINDOW["top"]) / height)
        for x, bottom, column_width in self.columns:  # columns reaching the bottom-right corner end above its
            if WINDOW["left"] + (x + column_width) * zoom > WINDOW["corner_left"]:  # overlays, or left of them
                zoom = min(zoom, max((WINDOW["corner_top"] - WINDOW["top"]) / bottom,
                                     (WINDOW["corner_left"] - WINDOW["left"]) / (x + column_width)))
        assert zoom >= MIN_ZOOM, f"the graph is too large to show with its text at 1600x900 (zoom {zoom:.2f})"
        left = -COLUMN_GAP / 2
        return {"scale": round(zoom, 4), "offset": [round(WINDOW["left"] / zoom - left, 1), round(WINDOW["top"] / zoom, 1)]}

    def json(self) -> dict:
        for group in self.groups:
            cols = [self.columns[i] for i in group.pop("columns")]
            top = group.pop("top")
            group.pop("span", None)
            group["bounding"] = [cols[0][0] - COLUMN_GAP / 2 + 6, top, cols[-1][0] - cols[0][0] + cols[-1][2] + COLUMN_GAP - 12,
                                 max(y for _, y, _ in cols) - top]
        height = max(y for _, y, _ in self.columns)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {"ds": self._view(height)},
                "version": 0.4}


def video_in(g: Graph, note: str, frames: int = 8, size: int = 512, model: str = "SD 1.5"):
    g.stage("1. Start here: source video")
    g.note(note)
    video = g.node("LoadVideo", VIDEO, "image", title="Load Video (your clip)")
    parts = g.node("GetVideoComponents", video=(video, 0))
    frames = g.node("ImageFromBatch", 0, frames, title="Frames to edit", image=(parts, 0))
    return g.node("ImageScale", "bicubic", size, size, "center", title=f"Resize ({model}: {size}x{size})",
                  image=(frames, 0))


def checkpoint_and_prompts(g: Graph, loader="TuneAVideoLoadInflateCheckpoint", source=True, edit=True,
                           source_text=False, edit_prompt=EDIT, checkpoint=CHECKPOINT, model="SD 1.x/2.x", motion=None):
    """The model (``motion``: with that motion module) and the prompts; a prompt other nodes also read is one text (a
    String node) that is encoded."""
    g.stage("2. Model and prompts")
    models = [checkpoint, *([motion] if motion else [])]
    # frame attention, motion module, group norm
    options = ["auto", motion["name"] if motion else "none", "auto"] if loader == "TuneAVideoLoadInflateCheckpoint" else []
    ckpt = g.node(loader, checkpoint["name"], *options, title=f"Checkpoint ({model})", models=models)
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
    """Canny hints and the ControlNet, side by side in the room under the model, the prompts and the tuning."""
    g.stage("ControlNet hints", under=(1, 2))
    hints = g.node("Canny", 0.4, 0.8, title="Canny hint per frame", image=(frames, 0))
    g.column()
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


def video_out(g: Graph, vae, latent, name: str) -> None:
    g.stage("5. Edited video")
    images = g.node("VAEDecode", samples=(latent, 0), vae=(vae, 2))
    video = g.node("CreateVideo", 8.0, images=(images, 0))
    g.node("SaveVideo", f"tuneavideo/{name}", "auto", "auto", video=(video, 0))
    g.note(NOTE_OUT)


def measure_workflow(info) -> dict:
    """Score an edit as the paper does: its own graph, as it needs two CLIP files the edit does not."""
    g = Graph(info)
    g.stage("1. Source and edit")
    video = g.node("LoadVideo", VIDEO, "image", title="Load Video (the source)")
    parts = g.node("GetVideoComponents", video=(video, 0))
    frames = g.node("ImageFromBatch", 0, 8, title="Frames that were edited", image=(parts, 0))
    source = g.node("ImageScale", "bicubic", 512, 512, "center", title="Resize (as for the edit)", image=(frames, 0))
    g.column()
    g.note(NOTE_MEASURE)
    edit = g.node("LoadVideo", VIDEO, "image", title="Load Video (the edit)")
    edited = g.node("GetVideoComponents", video=(edit, 0))
    g.stage("2. CLIP and prompt")
    vision = g.node("CLIPVisionLoader", CLIP_VISION["name"], models=[CLIP_VISION])
    clip = g.node("CLIPLoader", CLIP_TEXT["name"], "stable_diffusion", "default", models=[CLIP_TEXT])
    prompt = g.node("PrimitiveStringMultiline", EDIT, title="Edited prompt (as in the edit)")
    g.stage("3. Scores", width=2 * WIDTH)
    g.node("TuneAVideoScoreVideo", EDIT, "frame", "whole_frame", images=(edited, 0), clip_vision=(vision, 0), clip=(clip, 0),
                   prompt=(prompt, 0), source_images=(source, 0))
    return g.json()


def tune_stage(g: Graph, ckpt, frames, prompts, note: str, save_name: str, frame_window: int = 0,
               method: str = "full"):
    g.stage("3. Encode and tune")
    latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
    tuned = g.node("TuneAVideoTune", 0, 500, 3e-5, save_name, frame_window, False, "auto", method, 16, model=(ckpt, 0),
                   positive=(prompts["source"], 0), latent_image=(latent, 0))
    g.note(note)
    return latent, tuned


def sdxl_workflow(info) -> dict:
    """The main workflow on SDXL: 16 frames at 768x768, SDXL's checkpoint, LoRA tuning (what plans within 16 GB)."""
    g = Graph(info)
    frames = video_in(g, start_note(model="SDXL", models="SDXL base 1.0 or a fine-tune of it"), frames=16, size=768,
                      model="SDXL")
    ckpt, prompts = checkpoint_and_prompts(g, checkpoint=SDXL_CHECKPOINT, model="SDXL")
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_SDXL, SAVE_NAME + "-sdxl", method="lora")
    video_out(g, ckpt, invert_and_sample(g, (tuned, 0), latent, prompts), "edit-sdxl")
    return g.json()


def motion_workflow(info) -> dict:
    """The main workflow with an AnimateDiff motion module as the temporal layers, tuned as LoRA (MotionDirector's
    targets: the module's attentions)."""
    g = Graph(info)
    frames = video_in(g, start_note())
    ckpt, prompts = checkpoint_and_prompts(g, motion=MOTION_MODULE)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_MOTION, SAVE_NAME + "-motion", method="lora")
    video_out(g, ckpt, invert_and_sample(g, (tuned, 0), latent, prompts), "edit-motion")
    return g.json()


def edit_workflow(info, tune=True, controlnet=False, name="edit") -> dict:
    g = Graph(info)
    frames = video_in(g, start_note("both" if tune else "edit"))
    ckpt, prompts = checkpoint_and_prompts(g, source=tune)
    model = (ckpt, 0)
    if tune:
        latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_TUNE, SAVE_NAME)
        model = (tuned, 0)
    else:
        g.stage("3. Encode")
        latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
        g.note(NOTE_ZERO)
    hints = controlnet_hints(g, frames) if controlnet else None
    video_out(g, ckpt, invert_and_sample(g, model, latent, prompts, hints), name)
    return g.json()


def long_workflow(info) -> dict:
    """A clip longer than memory allows at once: tuning on frame windows, editing in the host's context windows."""
    g = Graph(info)
    frames = video_in(g, start_note(), frames=64)
    ckpt, prompts = checkpoint_and_prompts(g)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_LONG, SAVE_NAME + "-long", frame_window=8)
    video_out(g, ckpt, invert_and_sample(g, (tuned, 0), latent, prompts, windows=True), "long")
    return g.json()


def p2p_workflow(info) -> dict:
    """Video-P2P on the tuned model: null-text inversion, then the source and the edit sampled together."""
    g = Graph(info)
    frames = video_in(g, start_note())
    ckpt, prompts = checkpoint_and_prompts(g, source_text=True, edit_prompt=P2P_EDIT)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_TUNE, SAVE_NAME)
    g.stage("4. Null text and attention control")
    noise = g.node("TuneAVideoNullTextInvert", 50, 7.5, 10, "", "auto", model=(tuned, 0), positive=(prompts["source"], 0),
                   negative=(prompts["empty"], 0), latent_image=(latent, 0))
    control = g.node("TuneAVideoAttentionControl", SOURCE, P2P_EDIT, "auto", 0.2, 0.5, "blue:2", "ball", "ball", 0.3,
                     0.2, "spatial", True, source_prompt=(prompts["source_text"], 0), edit_prompt=(prompts["edit_text"], 0))
    edited = g.node("TuneAVideoSampler", 0, 0, 7.5, 0.0, "auto", model=(tuned, 0), positive=(prompts["edit"], 0),
                    negative=(prompts["empty"], 0), latent_image=(noise, 0), control=(control, 0),
                    source_positive=(prompts["source"], 0))
    g.note(NOTE_P2P, column=2)  # under the tuning, where there is room
    video_out(g, ckpt, edited, "p2p")
    return g.json()


def tune_and_save_workflow(info) -> dict:
    g = Graph(info)
    frames = video_in(g, start_note("source"))
    ckpt, prompts = checkpoint_and_prompts(g, edit=False)
    tune_stage(g, ckpt, frames, prompts, NOTE_SAVE, SAVE_NAME)
    return g.json()


def reuse_workflow(info) -> dict:
    g = Graph(info)
    frames = video_in(g, start_note("edit"))
    ckpt, prompts = checkpoint_and_prompts(g, loader="CheckpointLoaderSimple", source=False)
    g.stage("3. Tuned weights")
    tuned = g.node("TuneAVideoLoadTunedWeights", f"{SAVE_NAME}_00001_.safetensors", 1.0, model=(ckpt, 0))
    g.note(NOTE_REUSE)
    latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
    video_out(g, ckpt, invert_and_sample(g, (tuned, 0), latent, prompts), "reuse")
    return g.json()


def workflows(info: dict) -> dict[str, dict]:
    """File name (the template's title) -> workflow."""
    return {f"{MAIN}.json": edit_workflow(info, name="edit"),
            f"{CONTROLNET}.json": edit_workflow(info, controlnet=True, name="edit-controlnet"),
            f"{P2P}.json": p2p_workflow(info),
            f"{LONG}.json": long_workflow(info),
            f"{SAVE}.json": tune_and_save_workflow(info),
            f"{REUSE}.json": reuse_workflow(info),
            f"{ZERO}.json": edit_workflow(info, tune=False, name="zero-shot"),
            f"{MEASURE}.json": measure_workflow(info),
            f"{SDXL}.json": sdxl_workflow(info),
            f"{MOTION}.json": motion_workflow(info)}


if __name__ == "__main__":
    info = json.loads(Path(sys.argv[1]).read_text())
    for old in [*HERE.glob("*.json"), *HERE.glob("*.jpg")]:
        if old.with_suffix(".json").name not in workflows(info):
            old.unlink()
    for name, workflow in workflows(info).items():
        (HERE / name).write_text(json.dumps(workflow, indent=1) + "\n")
        print("wrote", HERE / name)
