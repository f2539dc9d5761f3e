"""Writes the pack's UI-format workflows (the files beside this script) from one short description each.

Run with the object_info JSON of a ComfyUI that has the pack installed:
    curl -s http://127.0.0.1:8188/object_info > object_info.json
    python workflows/build_workflows.py object_info.json
Widget values are listed in each node's input order, as ComfyUI's editor stores them. Each file's name is its
title in the template browser. The graphs run left to right in the order of the work, one group per stage; the
files carry a view (``extra.ds``) that shows the whole graph, clear of the editor's overlays, with its text readable
(at least 9 px on screen), in a 1600x900 window. The template browser's cards (``<name>.jpg``) are made by
``workflows/make_thumbnails.py``.
"""

import json
import math
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
SAVE_NAME = "ball"  # One-Shot Tune saves only where asked: in the tune-only workflow
SOURCE = "a red ball is rolling on the grass"
EDIT = "a glowing blue globe is rolling on the beach, cartoon style"
P2P_EDIT = "a blue ball is rolling on the grass"  # Prompt-to-Prompt keeps what the prompt does not change
# file names: the template browser's titles, and its descriptions (ComfyUI 0.3.75 lists a pack's workflows by file
# name only; frontend 1.32.9 makes each card's description of the name, '-' and '_' turned into spaces). Numbered in
# the order of use: web/js/template_order.js keeps that order in the browser, whose default sort leaves them as listed
MAIN, CONTROLNET, P2P = "1. Video edit (tune, then edit)", "2. Video edit with ControlNet", "3. Video edit with Prompt-to-Prompt"
LONG, SAVE, REUSE = "4. Long video edit (64 frames)", "5. Tune and save weights", "6. Video edit with saved weights"
ZERO, MEASURE = "7. Zero-shot video edit (no tuning)", "8. Measure an edit (CLIP scores, PSNR)"
SDXL, MOTION = "9. Tune and edit a video (SDXL)", "10. Video edit with an AnimateDiff motion module"
# the edits go to output/ itself, as tuneavideo-<name>_00001_.mp4 and on: the editor's Assets panel adds a saved file
# to a graph by name, without its subfolder (frontend 1.32.9), so an edit in output/tuneavideo/ could not be picked
FIRST_EDIT = "tuneavideo-edit_00001_.mp4"  # the main workflow's first edit
# layout, in canvas units: columns of nodes, one group per stage of the work
WIDTH, COLUMN_GAP, ROW_GAP, TITLE, GROUP_TOP = 300, 36, 12, 30, 44
VIDEO_WIDTH = 220  # Load Video's preview of a square clip is as wide as the node, which grows that much taller
SLOT, WIDGET = 20, 26
# room for a preview, a text box, the loss curve or the score chart shown on the node after a run (sizes measured in
# the editor after a run; the browser tests check that no node then covers another and that the reports under the
# nodes do not scroll; Score Video's is longer than the 200 px the editor allows such a box, and scrolls at any size)
HEIGHT = {"LoadVideo": VIDEO_WIDTH + 74, "CLIPTextEncode": 96, "PrimitiveStringMultiline": 96, "SaveVideo": WIDTH + 98,
          "TuneAVideoTune": 620, "TuneAVideoScoreVideo": 860 + 2 * WIDGET, "TuneAVideoAttentionControl": 400}
PROGRESS_TEXT = 90  # the report under a node (what its memory plan chose) after a run: 4 lines of the editor's 12 px
SHOWS_TEXT = {"TuneAVideoInvert", "TuneAVideoSampler", "TuneAVideoNullTextInvert"}
STAGE_COLORS = ["#3f789e", "#8a6b3f", "#5e8a3f", "#7a3f8a", "#3f8a7a"]
# the view stored in the files: a 1600x900 window, less the editor's bars and overlays (measured in frontend
# 1.32.9 with its first-run banner showing): sidebar on the left, tabs and floating menus on top, the minimap
# and zoom buttons in the bottom-right corner
WINDOW = dict(left=65, top=135, right=1590, bottom=890, corner_left=1335, corner_top=635)
# the editor draws the text of nodes (widget labels and values, slot names) at LiteGraph.NODE_SUBTEXT_SIZE, 12 px
# at zoom 1 (titles at 14); at the opening zoom it must be READABLE px on screen, so that zoom is at least their ratio
NODE_TEXT, READABLE = 12, 9
MIN_ZOOM = READABLE / NODE_TEXT
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# notes are written as level-2 headings: the editor draws a note's plain text at the textarea font size (10 px by
# default: 7.5 px on screen at the opening zoom), its headings at 1.5 times that, bold Arial (code in monospace),
# 1.15 lines, 0.83 em between paragraphs; a note is its lines (wrapped at spaces, at the note's width), the
# room between its paragraphs and its frame
NOTE_FONT, NOTE_LINE, NOTE_GAP, NOTE_FRAME = 15, 17.25, 12.5, 26
NOTE_TEXT_WIDTH = WIDTH - 25  # the note's text box is 20 narrower than the node; Chromium wrapped a line of 275.9 here
# Arial Bold's advance widths (Liberation Sans Bold, as Chromium draws Arial on Linux), per 1000 of the font size,
# of the characters ' ' to '~'; monospace's is 602
ARIAL_BOLD = [int(w) for w in """278 333 474 556 556 889 722 238 333 333 389 584 278 333 278 278 556 556 556 556 556 556
    556 556 556 556 333 333 584 584 584 611 975 722 722 722 722 667 611 778 722 278 556 722 611 833 722 778 667 778 722 667
    611 722 667 944 667 667 611 333 278 333 584 556 333 556 611 556 611 556 333 611 611 278 278 556 278 889 611 611 611
    611 389 556 333 611 556 778 556 556 500 389 280 389 584""".split()]
MONOSPACE = 602

FRAMES, SIZE = 8, 512  # what the SD 1.5 workflows edit


def tuning_time(frames: int = FRAMES, size: int = SIZE) -> str:
    """How long 500 steps take at the workflows' size: the plan's FLOPs a step (``bench.plan``: SD 1.5 in float32)
    over an A100 at 40% of its peak and over one CPU core at its rate measured here (``bench.duration``)."""
    from tav_core.memory.duration import STEP_SHARE, duration_text  # (torch: only when a note is written)
    results = HERE.parent / "bench" / "results"
    plan = next(r for r in json.loads((results / "plan.json").read_text())["rows"]
                if (r["model"], r["frames"], r["size"], r["precision"], r["gradient_checkpointing"])
                == ("sd15", frames, size, "fp32", False))
    cpu = next(r for r in json.loads((results / "duration-cpu.json").read_text())["rows"] if r["size"] == size)
    on_a_core = 500 * plan["tuning_tflop"] * 1e12 / (cpu["probe_gflops"] * 1e9 * STEP_SHARE)
    return (f"500 steps of {plan['tuning_tflop']:.0f} TFLOP, about {plan['estimated_500_steps_min']:g} min on an A100, "
            f"{duration_text(on_a_core)} on a CPU core")


NOTE_TUNE = f"""## **One-Shot Tune** learns the clip: {tuning_time()}.
## It saves no file: to keep the weights, give it a *save_name*, or use **5. Tune and save weights**."""
NOTE_MEASURE = f"""## Scores an edit as the paper does: frame consistency and text alignment (CLIP), PSNR and SSIM.
## 1. **Load Video (the source)**: the clip that was edited, with the same frames and size.
## 2. **Load Video (the edit)** reads `{FIRST_EDIT}` in `output/`, the first edit of **{MAIN}**. \
For another, in *Assets* (left bar): its menu, *Add to current workflow*; connect the new node to **Get Video \
Components** here.
## 3. Run: the editor offers the two CLIP files ([ViT-L/14]({CLIP_VISION["url"]}), [clip_l]({CLIP_TEXT["url"]}))."""
NOTE_REUSE = """## No tuning: **Load Tuned Weights** takes a file One-Shot Tune saved (**5. Tune and save weights**).
## New files show in its list after pressing R (refresh). Use the checkpoint and frames they were tuned on."""
NOTE_SAVE = f"""## Tunes only, and saves the weights in `models/tuneavideo` as `{SAVE_NAME}_00001_.safetensors` (the next \
number if taken).
## Then edit with **6. Video edit with saved weights**, as often as you like."""
NOTE_ZERO = """## No tuning: the inflated model edits with sparse-causal attention only. Quick, less faithful to the motion."""
NOTE_P2P = """## Prompt-to-Prompt keeps what the edited prompt does not change.
## **Null-Text Invert** makes the source retrace the clip; **Attention Control** gives the edit the source's \
attention; its prompts come from the two String nodes."""
NOTE_LONG = """## A long clip (64 frames) in the memory of a short one: One-Shot Tune learns from 8-frame windows; \
**Context Windows (16 frames)** makes inversion and sampling run in windows that all see frame 1."""
NOTE_OUT = f"""## The edit is saved in `output/` (and shown in *Assets*, left bar). To score it: **{MEASURE}**."""
NOTE_CONTROLNET = """## One Canny hint per frame keeps the edit on the source's outlines: *strength* sets how closely."""
PROMPTS = {"both": "say what the clip shows and what it should become", "source": "say what the clip shows",
           "edit": "say what the clip should become"}


NOTE_SDXL = """## SDXL at 768x768, 16 frames, tuned as LoRA (**One-Shot Tune**'s method lora, rank 16): it plans \
within a 16 GB GPU (ComfyUI loads SDXL in fp16; the memory plan turns on gradient checkpointing), and its weights \
are 61 MB, not 2.3 GB. The paper's recipe is method full: on a 24 GB card, set it for the paper's result."""


NOTE_MOTION = """## An AnimateDiff motion module (in `models/animatediff_models`, AnimateDiff-Evolved's folder) is the \
temporal layers: a motion prior trained on videos, with AnimateDiff's per-frame attention (frame_attention auto).
## **One-Shot Tune** adapts its attentions (method lora); method full tunes the whole module. For stronger appearance \
consistency set frame_attention to sparse_causal in **Checkpoint (SD 1.x/2.x)**."""


def note_lines(text: str) -> int:
    """How many lines a note's text takes in the editor: each paragraph wrapped at spaces to the note's width. A word
    wider than that would break inside (as 'safet/ensors' did): refused."""
    lines = 0
    for paragraph in text.splitlines():
        shown = re.sub(r"\[([^]]*)\]\([^)]*\)|[*#]", r"\1", paragraph).strip()  # no links' addresses, no marks
        words, code, width = [[]], False, 0.0  # the words as (width per character) lists; code spans in monospace
        for char in shown:
            if char == "`":
                code = not code
            elif char == " ":
                words.append([])
            else:
                words[-1].append((MONOSPACE if code else ARIAL_BOLD[ord(char) - 32]) * NOTE_FONT / 1000)
        space = ARIAL_BOLD[0] * NOTE_FONT / 1000
        lines += 1
        for word in filter(None, words):
            assert sum(word) <= NOTE_TEXT_WIDTH, f"a word of the note is wider than the note: {paragraph!r}"
            if width and width + space + sum(word) > NOTE_TEXT_WIDTH:
                lines, width = lines + 1, 0.0
            width += (space if width else 0) + sum(word)
    return lines


def start_note(prompts: str = "both", model: str = "SD 1.x/2.x", models: str = "an SD 1.x or 2.x model") -> str:
    """The first note: the three things to set before Run (only the prompts the graph has)."""
    return f"""## 1. **Load Video (your clip)**: the example clip, or yours (ComfyUI/input).
## 2. **Checkpoint ({model})**: {models}.
## 3. Prompts: {PROMPTS[prompts]}. Then Run."""


class Graph:
    def __init__(self, info: dict):
        self.info, self.nodes, self.links, self.groups = info, [], [], []
        self.columns = []  # [x, y of the next node, width] per column
        self.current = None  # the column nodes go into

    def stage(self, title: str, width: int = WIDTH):
        """Start a new group (one stage of the work) in a new column (``width`` wide) right of the last one."""
        self.groups.append({"title": title, "bounding": [0, 0, 0, 0], "color": STAGE_COLORS[len(self.groups) % 5],
                            "font_size": 24, "flags": {}, "columns": []})
        self.column(width)

    def column(self, width: int = WIDTH):
        """Continue the current stage in a new column to the right."""
        x = max(c[0] + c[2] for c in self.columns) + COLUMN_GAP if self.columns else 0
        self.columns.append([x, GROUP_TOP, width])
        self.current = len(self.columns) - 1
        self.groups[-1]["columns"].append(self.current)

    def _place(self, height: int, width: int | None) -> tuple[list, list]:
        column = self.columns[self.current]
        at, size = [column[0], column[1] + TITLE], [width or column[2], height]  # the title bar sits above pos
        column[1] += TITLE + height + ROW_GAP
        return at, size

    def node(self, kind: str, *widgets, title=None, models=None, width=None, **connections):
        """Add a node below the last one of this column; ``connections`` map input names to (node, slot)."""
        spec = self.info[kind]
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(spec["output_name"], spec["output"]))]
        sockets = max(len(spec["input_order"]["required"]) + len(spec["input_order"].get("optional", [])) - len(widgets),
                      len(outputs))
        at, size = self._place(HEIGHT.get(kind, SLOT * sockets + WIDGET * len(widgets) + 12
                                          + PROGRESS_TEXT * (kind in SHOWS_TEXT)), width)
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

    def note(self, text: str):
        """A note below the last node of this column, as tall as its text."""
        paragraphs = len(text.splitlines())
        at, size = self._place(math.ceil(NOTE_FRAME + NOTE_LINE * note_lines(text) + NOTE_GAP * (paragraphs - 1)), None)
        self.nodes.append({"id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": at, "size": size, "flags": {},
                           "order": len(self.nodes), "mode": 0, "properties": {}, "widgets_values": [text],
                           "color": "#432", "bgcolor": "#653"})

    def _view(self, height: int) -> dict:
        """Zoom and offset that show the whole graph in the free part of a 1600x900 editor window, with its text
        readable (``MIN_ZOOM``): columns that reach the bottom-right corner's overlays end above them."""
        width = self.columns[-1][0] + self.columns[-1][2] + COLUMN_GAP / 2
        zoom = min(1.0, (WINDOW["right"] - WINDOW["left"]) / (width + COLUMN_GAP / 2),
                   (WINDOW["bottom"] - WINDOW["top"]) / height)
        for x, bottom, column_width in self.columns:  # columns reaching the bottom-right corner end above its
            if WINDOW["left"] + (x + column_width + COLUMN_GAP / 2) * zoom > WINDOW["corner_left"]:  # overlays
                zoom = min(zoom, max((WINDOW["corner_top"] - WINDOW["top"]) / bottom,  # or left of them
                                     (WINDOW["corner_left"] - WINDOW["left"]) / (x + column_width + COLUMN_GAP / 2)))
        zoom = math.floor(zoom * 1e4) / 1e4
        assert zoom >= MIN_ZOOM, f"the graph is too large to show with readable text at 1600x900 (zoom {zoom:.3f})"
        return {"scale": zoom, "offset": [round(WINDOW["left"] / zoom + COLUMN_GAP / 2, 1), round(WINDOW["top"] / zoom, 1)]}

    def json(self) -> dict:
        for group in self.groups:
            cols = [self.columns[i] for i in group.pop("columns")]
            group["bounding"] = [cols[0][0] - COLUMN_GAP / 2 + 6, 0, cols[-1][0] - cols[0][0] + cols[-1][2] + COLUMN_GAP - 12,
                                 max(y for _, y, _ in cols)]
        height = max(y for _, y, _ in self.columns)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "extra": {"ds": self._view(height)},
                "version": 0.4}


def video_in(g: Graph, note: str, frames: int = FRAMES, size: int = SIZE, model: str = "SD 1.5"):
    g.stage("1. Start here: source video")
    g.note(note)
    video = g.node("LoadVideo", VIDEO, "image", title="Load Video (your clip)", width=VIDEO_WIDTH)
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


def controlnet_hints(g: Graph, frames, prompts) -> tuple:
    """Canny hints and the ControlNet applied to the prompts: the conditioning the edit samples with."""
    g.stage("ControlNet hints")
    hints = g.node("Canny", 0.4, 0.8, title="Canny hint per frame", image=(frames, 0))
    net = g.node("ControlNetLoader", CANNY["name"], models=[CANNY])
    apply = g.node("ControlNetApplyAdvanced", 1.0, 0.0, 1.0, positive=(prompts["edit"], 0),
                   negative=(prompts["empty"], 0), control_net=(net, 0), image=(hints, 0))
    g.note(NOTE_CONTROLNET)
    return (apply, 0), (apply, 1)


def decoded(g: Graph, vae, latent):
    """The edited latents as a video (the last nodes of the stage that edits)."""
    images = g.node("VAEDecode", samples=(latent, 0), vae=(vae, 2))
    return g.node("CreateVideo", 8.0, images=(images, 0))


def invert_and_sample(g: Graph, ckpt, model, latent, prompts, conditioning=None, windows=False):
    """Inversion and the edit (in the host's context windows: two columns), decoded into a video."""
    g.stage("4. Invert and edit")
    if windows:
        model = (g.node("ContextWindowsManual", 16, 4, "standard_static", 1, False, "pyramid", 0,
                        title="Context Windows (16 frames)", model=model), 0)
    noise = g.node("TuneAVideoInvert", 50, "auto", model=model, conditioning=(prompts["empty"], 0),
                   latent_image=(latent, 0))
    positive, negative = conditioning or ((prompts["edit"], 0), (prompts["empty"], 0))
    edited = g.node("TuneAVideoSampler", 0, 0, 12.5, 0.0, "auto", model=model, positive=positive, negative=negative,
                    latent_image=(noise, 0))
    if windows:
        g.column()
    return decoded(g, ckpt, edited)


def video_out(g: Graph, video, name: str) -> None:
    g.stage("5. Edited video")
    g.node("SaveVideo", f"tuneavideo-{name}", "auto", "auto", video=(video, 0))
    g.note(NOTE_OUT)


def measure_workflow(info) -> dict:
    """Score an edit as the paper does: its own graph, as it needs two CLIP files the edit does not. The edit is the
    main workflow's first, where it was saved (ComfyUI's name for a file in output/: '<name> [output]')."""
    g = Graph(info)
    g.stage("1. Source and edit")
    video = g.node("LoadVideo", VIDEO, "image", title="Load Video (the source)", width=VIDEO_WIDTH)
    parts = g.node("GetVideoComponents", video=(video, 0))
    frames = g.node("ImageFromBatch", 0, 8, title="Frames that were edited", image=(parts, 0))
    source = g.node("ImageScale", "bicubic", 512, 512, "center", title="Resize (as for the edit)", image=(frames, 0))
    g.column()
    g.note(NOTE_MEASURE)
    edit = g.node("LoadVideo", f"{FIRST_EDIT} [output]", "image", title="Load Video (the edit)", width=VIDEO_WIDTH)
    edited = g.node("GetVideoComponents", video=(edit, 0))
    g.stage("2. CLIP and prompt")
    vision = g.node("CLIPVisionLoader", CLIP_VISION["name"], models=[CLIP_VISION])
    clip = g.node("CLIPLoader", CLIP_TEXT["name"], "stable_diffusion", "default", models=[CLIP_TEXT])
    prompt = g.node("PrimitiveStringMultiline", EDIT, title="Edited prompt (as in the edit)")
    g.stage("3. Scores", width=2 * WIDTH + COLUMN_GAP)
    g.node("TuneAVideoScoreVideo", EDIT, "frame", "whole_frame", images=(edited, 0), clip_vision=(vision, 0), clip=(clip, 0),
           prompt=(prompt, 0), source_images=(source, 0))
    return g.json()


def tune_stage(g: Graph, ckpt, frames, prompts, note: str, save_name: str = "", frame_window: int = 0,
               method: str = "full", note_apart: bool = False):
    """Encoding and One-Shot Tune (saving the weights only under a ``save_name``); its ``note`` below it, or in a
    column of its own (``note_apart``: a long one)."""
    g.stage("3. Encode and tune")
    latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
    tuned = g.node("TuneAVideoTune", 0, 500, 3e-5, save_name, frame_window, False, "auto", method, 16, model=(ckpt, 0),
                   positive=(prompts["source"], 0), latent_image=(latent, 0))
    if note_apart:
        g.column()
    g.note(note)
    return latent, tuned


def sdxl_workflow(info) -> dict:
    """The main workflow on SDXL: 16 frames at 768x768, SDXL's checkpoint, LoRA tuning (what plans within 16 GB)."""
    g = Graph(info)
    frames = video_in(g, start_note(model="SDXL", models="SDXL base 1.0 or a fine-tune of it"), frames=16, size=768,
                      model="SDXL")
    ckpt, prompts = checkpoint_and_prompts(g, checkpoint=SDXL_CHECKPOINT, model="SDXL")
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_SDXL, method="lora", note_apart=True)
    video_out(g, invert_and_sample(g, ckpt, (tuned, 0), latent, prompts), "edit-sdxl")
    return g.json()


def motion_workflow(info) -> dict:
    """The main workflow with an AnimateDiff motion module as the temporal layers, tuned as LoRA (MotionDirector's
    targets: the module's attentions)."""
    g = Graph(info)
    frames = video_in(g, start_note())
    ckpt, prompts = checkpoint_and_prompts(g, motion=MOTION_MODULE)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_MOTION, method="lora", note_apart=True)
    video_out(g, invert_and_sample(g, ckpt, (tuned, 0), latent, prompts), "edit-motion")
    return g.json()


def edit_workflow(info, tune=True, controlnet=False, name="edit") -> dict:
    g = Graph(info)
    frames = video_in(g, start_note("both" if tune else "edit"))
    ckpt, prompts = checkpoint_and_prompts(g, source=tune)
    model = (ckpt, 0)
    if tune:
        latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_TUNE)
        model = (tuned, 0)
    else:
        g.stage("3. Encode")
        latent = g.node("VAEEncode", pixels=(frames, 0), vae=(ckpt, 2))
        g.note(NOTE_ZERO)
    conditioning = controlnet_hints(g, frames, prompts) if controlnet else None
    video_out(g, invert_and_sample(g, ckpt, model, latent, prompts, conditioning), name)
    return g.json()


def long_workflow(info) -> dict:
    """A clip longer than memory allows at once: tuning on frame windows, editing in the host's context windows."""
    g = Graph(info)
    frames = video_in(g, start_note(), frames=64)
    ckpt, prompts = checkpoint_and_prompts(g)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_LONG, frame_window=8)
    video_out(g, invert_and_sample(g, ckpt, (tuned, 0), latent, prompts, windows=True), "long")
    return g.json()


def p2p_workflow(info) -> dict:
    """Video-P2P on the tuned model: null-text inversion, then the source and the edit sampled together."""
    g = Graph(info)
    frames = video_in(g, start_note())
    ckpt, prompts = checkpoint_and_prompts(g, source_text=True, edit_prompt=P2P_EDIT)
    latent, tuned = tune_stage(g, ckpt, frames, prompts, NOTE_TUNE)
    g.stage("4. Null text and attention control")
    noise = g.node("TuneAVideoNullTextInvert", 50, 7.5, 10, "", "auto", model=(tuned, 0), positive=(prompts["source"], 0),
                   negative=(prompts["empty"], 0), latent_image=(latent, 0))
    control = g.node("TuneAVideoAttentionControl", SOURCE, P2P_EDIT, "auto", 0.2, 0.5, "blue:2", "ball", "ball", 0.3,
                     0.2, "spatial", True, source_prompt=(prompts["source_text"], 0), edit_prompt=(prompts["edit_text"], 0))
    g.column()
    g.note(NOTE_P2P)
    edited = g.node("TuneAVideoSampler", 0, 0, 7.5, 0.0, "auto", model=(tuned, 0), positive=(prompts["edit"], 0),
                    negative=(prompts["empty"], 0), latent_image=(noise, 0), control=(control, 0),
                    source_positive=(prompts["source"], 0))
    video_out(g, decoded(g, ckpt, edited), "p2p")
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
    video_out(g, invert_and_sample(g, ckpt, (tuned, 0), latent, prompts), "reuse")
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
