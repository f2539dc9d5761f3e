"""Writes the pack's UI-format workflows (the files beside this script) from one short description each.

Run with the object_info JSON of a ComfyUI that has the pack installed:
    curl -s http://127.0.0.1:8188/object_info > object_info.json
    python workflows/build_workflows.py object_info.json
Widget values are listed in each node's input order, as ComfyUI's editor stores them.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
SOURCE = "a man is skiing"
EDIT = "spider man is skiing on the beach, cartoon style"


class Graph:
    def __init__(self, info: dict):
        self.info, self.nodes, self.links = info, [], []

    def node(self, kind: str, *widgets, at=(0, 0), title=None, **connections):
        """Add a node; ``connections`` map input names to (node, output slot) pairs."""
        spec = self.info[kind]
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": list(at), "size": [320, 60 + 26 * len(widgets)],
                "flags": {}, "order": len(self.nodes), "mode": 0, "inputs": [],
                "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                            for i, (n, t) in enumerate(zip(spec["output_name"], spec["output"]))],
                "properties": {"Node name for S&R": kind}, "widgets_values": list(widgets)}
        if title:
            node["title"] = title
        self.nodes.append(node)
        for name in spec["input_order"]["required"] + spec["input_order"].get("optional", []):
            if name in connections:
                source, slot = connections.pop(name)
                link = len(self.links) + 1
                kind_of = source["outputs"][slot]["type"]
                node["inputs"].append({"name": name, "type": kind_of, "link": link})
                source["outputs"][slot]["links"].append(link)
                self.links.append([link, source["id"], slot, node["id"], len(node["inputs"]) - 1, kind_of])
        assert not connections, f"{kind} has no inputs {list(connections)}"
        return node

    def json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


def video_in(g: Graph):
    video = g.node("LoadVideo", "skiing.mp4", "image", at=(0, 0))
    parts = g.node("GetVideoComponents", at=(0, 420), video=(video, 0))
    clip = g.node("ImageFromBatch", 0, 8, at=(0, 560), title="Frames (first 8)", image=(parts, 0))
    return g.node("ImageScale", "bicubic", 512, 512, "center", at=(0, 720), image=(clip, 0))


def video_out(g: Graph, vae, latent, name: str):
    images = g.node("VAEDecode", at=(1760, 300), samples=(latent, 0), vae=(vae, 2))
    video = g.node("CreateVideo", 8.0, at=(1760, 420), images=(images, 0))
    g.node("SaveVideo", f"tuneavideo/{name}", "auto", "auto", at=(1760, 560), video=(video, 0))


def prompts(g: Graph, clip):
    source = g.node("CLIPTextEncode", SOURCE, at=(400, 300), title="Source prompt (caption of the video)", clip=(clip, 1))
    empty = g.node("CLIPTextEncode", "", at=(400, 520), title="Empty prompt", clip=(clip, 1))
    edit = g.node("CLIPTextEncode", EDIT, at=(400, 700), title="Edited prompt", clip=(clip, 1))
    return source, empty, edit


def edit_workflow(info, tune=True, controlnet=False, name="edit") -> dict:
    g = Graph(info)
    frames = video_in(g)
    ckpt = g.node("TuneAVideoLoadInflateCheckpoint", CHECKPOINT, at=(400, 0))
    source, empty, edit = prompts(g, ckpt)
    latent = g.node("VAEEncode", at=(800, 0), pixels=(frames, 0), vae=(ckpt, 2))
    model = (ckpt, 0)
    if tune:
        model = (g.node("TuneAVideoOneShotTune", 500, 3e-5, 0, "fixed", "skiing", 0, False, at=(800, 150),
                        model=model, conditioning=(source, 0), latent=(latent, 0)), 0)
    noise = g.node("TuneAVideoDDIMInvert", 50, at=(1200, 0), model=model, latent=(latent, 0), conditioning=(empty, 0))
    positive, negative = (edit, 0), (empty, 0)
    if controlnet:
        net = g.node("ControlNetLoader", "control_v11p_sd15_canny.safetensors", at=(800, 600))
        hints = g.node("Canny", 0.4, 0.8, at=(400, 900), title="Canny hint per frame", image=(frames, 0))
        apply = g.node("ControlNetApplyAdvanced", 1.0, 0.0, 1.0, at=(1200, 500), positive=positive,
                       negative=negative, control_net=(net, 0), image=(hints, 0))
        positive, negative = (apply, 0), (apply, 1)
    out = g.node("TuneAVideoVideoKSampler", 12.5, 0, 0.0, 0, "fixed", at=(1200, 250), model=model,
                 positive=positive, negative=negative, latent=(noise, 0))
    video_out(g, ckpt, out, name)
    return g.json()


def reuse_workflow(info) -> dict:
    g = Graph(info)
    frames = video_in(g)
    ckpt = g.node("CheckpointLoaderSimple", CHECKPOINT, at=(400, 0))
    tuned = g.node("TuneAVideoLoadTunedWeights", "skiing_00001_.safetensors", at=(800, 150), model=(ckpt, 0))
    _, empty, edit = prompts(g, ckpt)
    latent = g.node("VAEEncode", at=(800, 0), pixels=(frames, 0), vae=(ckpt, 2))
    noise = g.node("TuneAVideoDDIMInvert", 50, at=(1200, 0), model=(tuned, 0), latent=(latent, 0), conditioning=(empty, 0))
    out = g.node("TuneAVideoVideoKSampler", 12.5, 0, 0.0, 0, "fixed", at=(1200, 250), model=(tuned, 0),
                 positive=(edit, 0), negative=(empty, 0), latent=(noise, 0))
    video_out(g, ckpt, out, "reuse")
    return g.json()


def workflows(info: dict) -> dict[str, dict]:
    return {"tune_invert_edit.json": edit_workflow(info, name="edit"),
            "tune_invert_edit_controlnet.json": edit_workflow(info, controlnet=True, name="edit-controlnet"),
            "zero_shot_edit.json": edit_workflow(info, tune=False, name="zero-shot"),
            "reuse_tuned_weights.json": reuse_workflow(info)}


if __name__ == "__main__":
    info = json.loads(Path(sys.argv[1]).read_text())
    for name, workflow in workflows(info).items():
        (HERE / name).write_text(json.dumps(workflow, indent=1) + "\n")
        print("wrote", HERE / name)
