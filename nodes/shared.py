"""What several nodes share: their category, model folders, common inputs, the text under a node, previews,
numbered saves; and the node API the pack is written against: ComfyUI's versioned ``comfy_api.v0_0_2``
(``io.ComfyNode``, ``io.Schema``, ``ComfyExtension``), the newest numbered version of the host the tests run
(0.3.75). A numbered version is what the host keeps answering as it moves on; ``comfy_api.latest`` moves with it (in
0.3.75 both are the same classes)."""

import dataclasses
import logging
import math
import os
import re

from comfy_api.v0_0_2 import ComfyExtension, io  # noqa: F401

from ..tav_core.errors import TavError, check
from ..tav_core.files import NAME_MAX, save_or_fallback
from ..tav_core.memory.fit import MEMORY_MODES
from . import host

INVERSION_STEPS = "tav_inversion_steps"
NULL_TEXT, NULL_TEXT_CFG = "tav_null_text", "tav_null_text_cfg"  # a null-text inversion's embeddings and its CFG
CONTROL = io.Custom("TAV_ATTENTION_CONTROL")  # an Attention Control's settings, for Video KSampler
CATEGORY = "Tune-A-Video"
FOLDER, INVERSIONS = "tuneavideo", "tuneavideo_inversions"  # models/ folders: tuned weights, null-text inversions
NONE = "none"  # a file input left empty
MOTION_FOLDER, NO_MOTION = "animatediff_models", NONE  # AnimateDiff-Evolved's folder of motion modules; no module
AUTO = "auto"  # a video option left to ``tav_core.model.inflation.video_defaults``


@dataclasses.dataclass
class NodeInfo(io.NodeInfoV1):
    search_aliases: list[str] = None


@dataclasses.dataclass
class Schema(io.Schema):
    """``io.Schema`` with the words a person types to find the node (``search_aliases``, as later ComfyUI's schema
    has them): sent with the node's definition, where the editor searches them (frontends without them natively:
    web/js/search_aliases.js)."""
    search_aliases: list[str] = dataclasses.field(default_factory=list)

    def get_v1_info(self, cls) -> NodeInfo:
        info = super().get_v1_info(cls)
        return NodeInfo(**{f.name: getattr(info, f.name) for f in dataclasses.fields(info)},
                        search_aliases=list(self.search_aliases))


def hidden(node: type[io.ComfyNode], name: str):
    """A hidden input the host gave this run of ``node`` (unique_id, prompt, extra_pnginfo); None when the node is
    called directly, as benchmarks and tests do."""
    return getattr(node.hidden, name, None)


def finite_floats(node: type[io.ComfyNode], **values) -> bool | str:
    """``validate_inputs``' check of a node's FLOAT widgets, before the graph runs: each value given (None: linked,
    checked when it arrives) a finite number within the schema's range. The host lets NaN through (it only
    compares with the bounds), and does not range-check an input that ``validate_inputs`` takes, so both are here."""
    specs = {i.id: i for i in node.define_schema().inputs if isinstance(i, io.Float.Input)}
    for name, value in values.items():
        if value is None:
            continue
        spec = specs[name]
        low, high = spec.min, spec.max
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            return f"{name} is {value}; give a finite number from {low:g} to {high:g}"
    return True


def require_finite(node: type[io.ComfyNode], **values) -> None:
    """The same when the node runs, for values that came through links (unknown at validation)."""
    verdict = finite_floats(node, **values)
    if verdict is not True:
        raise TavError(verdict)


def show_text(unique_id, text: str) -> None:
    """A line under the node in the editor."""
    server = getattr(host.server.PromptServer, "instance", None)  # (None in a script)
    if unique_id is not None and server is not None:
        server.send_progress_text(text, unique_id)


def preview_with_workflow(image, api_prompt=None, extra_pnginfo=None) -> dict:
    """A chart shown on its node as a preview image that, like the stock previews, carries the workflow (drag it
    into the editor to open the graph that made it)."""
    return host.stock_nodes.PreviewImage().save_images(image, prompt=api_prompt, extra_pnginfo=extra_pnginfo)["ui"]


def show_report(unique_id, report: str) -> None:
    """A memory plan's decision: under the node and in the console."""
    if report:
        logging.info(report)
        show_text(unique_id, report)


def memory_input(checkpointing: bool = False) -> io.Combo.Input:
    first = "with gradient checkpointing (the same result), then if need be " if checkpointing else ""
    return io.Combo.Input("memory", options=list(MEMORY_MODES), default="auto", optional=True, tooltip="Before the "
                          "first step, this node's peak memory is planned against the device's free memory. auto: if "
                          f"the clip does not fit, run it {first}in overlapping frame windows (as Context Windows "
                          "(Manual) would, each window anchored on the clip's first frame) of the longest length that "
                          "fits; check: refuse instead, saying what fits; off: no planning.")


def seed_input(tooltip: str, label: str | None = None) -> io.Int.Input:
    """A seed that stays as set (no "randomize after generate"): an unchanged graph is not run again."""
    return io.Int.Input("seed", display_name=label, default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                        control_after_generate=False, tooltip=tooltip)


def check_save_name(name: str) -> str:
    """A save name that will become a file in models/tuneavideo: checked before any tuning is done."""
    name = name.strip().removesuffix(".safetensors")
    check(bool(re.fullmatch(r"[\w\-. ]+", name)) and not name.startswith("."),
          f"save name {name!r} may use letters, digits, '-', '_', '.' and spaces, and may not start with a dot "
          "(it becomes a file in models/tuneavideo)")
    longest = f"{name}_{0:05}_.safetensors"
    check(len(longest.encode()) <= NAME_MAX, f"save name {name[:40]!r}... is too long: with the number and "
                                             f"'.safetensors' it must fit in {NAME_MAX} bytes")
    return name


def numbered_path(name: str, models_folder: str = FOLDER) -> str:
    """models/<folder>/<name>_00001_.safetensors, the next free number: as ComfyUI's own savers, never overwriting."""
    folder, filename, counter, _, _ = host.folder_paths.get_save_image_path(name, host.folder_paths.get_folder_paths(models_folder)[0])
    return os.path.join(folder, f"{filename}_{counter:05}_.safetensors")


def save_numbered(unique_id, name: str, folder: str, what: str, save) -> str:
    """Save into models/<folder>/<name>_NNNNN_.safetensors; on a full disk into the temp folder instead (the work
    is kept: the node then says where, in its text and the console). Returns the line shown."""
    path = numbered_path(name, folder)
    where, error = save_or_fallback(save, path)
    if error is None:
        said = f"saved models/{folder}/{os.path.basename(path)}"
    else:
        said = (f"{what} NOT saved in models/{folder} ({error.strerror or error}): saved in {where} instead; move it "
                f"to models/{folder} once there is room")
        logging.warning(said)
    show_text(unique_id, said)
    return said
