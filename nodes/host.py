"""Every ComfyUI internal the pack relies on beyond the versioned node API (``comfy_api``), reached through this
module only: the other node modules write ``host.<module>.<name>``, and ``INTERNALS`` names each such name with
the host version it was checked on and why the pack needs it (a test keeps the two in step). ``drift()`` says
which of them the running host no longer has as the pack expects; the pack logs it at start-up, and a test fails on
it, so a host upgrade that breaks the pack says where."""

import functools
import inspect
import logging
import re
from contextlib import ExitStack, contextmanager
from typing import NamedTuple

import comfy.context_windows as context_windows
import comfy.ldm.modules.attention as attention
import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
import comfy.lora as lora
import comfy.model_base as model_base
import comfy.model_management as model_management
import comfy.model_patcher as model_patcher
import comfy.ops as ops
import comfy.patcher_extension as patcher_extension
import comfy.sample as sample
import comfy.samplers as samplers
import comfy.sd as sd
import comfy.sd1_clip as sd1_clip
import comfy.utils as utils
import comfy.weight_adapter as weight_adapter
import folder_paths
import latent_preview

import nodes as stock_nodes
import server

CHECKED_ON = "0.3.75"


class Internal(NamedTuple):
    why: str
    params: tuple[str, ...] = ()  # the parameters the pack passes (or, for a method it overrides, receives)
    checked_on: str = CHECKED_ON


# ``name`` is reached from this module: ``attention.BasicTransformerBlock`` is ``host.attention.BasicTransformerBlock``;
# ``Class().attr`` is an attribute the host sets on its instances (checked in the class's source)
INTERNALS = {
    # loading and running a MODEL
    "model_management.load_models_gpu": Internal("tuning and null-text inversion run the UNet under autograd, "
                                                 "outside the sampler: the MODEL is loaded as the sampler loads it",
                                                 ("models", "memory_required", "force_full_load")),
    "model_management.get_free_memory": Internal("the memory plans measure the device's free memory; while a plan "
                                                 "traces the UNet it answers 'plenty' (``patched_for_planning``)",
                                                 ("dev", "torch_free_too")),
    "model_management.throw_exception_if_processing_interrupted": Internal("Cancel stops tuning, inversion and "
                                                                           "windowed sampling between steps"),
    "model_management.InterruptProcessingException": Internal("what Cancel raises: One-Shot Tune says it was "
                                                              "cancelled and saved nothing"),
    "model_base.BaseModel": Internal("the SD 1.x/2.x MODEL class the pack accepts"),
    "model_base.SDXL": Internal("the SDXL MODEL class the pack accepts"),
    "model_base.ModelType.EPS": Internal("an eps-prediction MODEL (DDIM needs eps or v)"),
    "model_base.ModelType.V_PREDICTION": Internal("a v-prediction MODEL"),
    "model_base.BaseModel().diffusion_model": Internal("the UNet the video hooks go on and tuning runs"),
    "model_patcher.ModelPatcher": Internal("the temporal layers load beside the MODEL as an additional model",
                                           ("model", "load_device", "offload_device")),
    "model_patcher.ModelPatcher().backup": Internal("a weight before this clone's patches (tuned queries are "
                                                    "differences to it)"),
    "model_patcher.ModelPatcher().patches": Internal("a MODEL's LoRA/merge patches, applied to the tuned queries' "
                                                     "start"),
    "model_patcher.ModelPatcher.add_wrapper_with_key": Internal(
        "an inflated MODEL's APPLY_MODEL, CALC_COND_BATCH and OUTER_SAMPLE wrappers",
        ("wrapper_type", "key", "wrapper")),
    "model_patcher.ModelPatcher.remove_wrappers_with_key": Internal("re-inflating replaces them",
                                                                    ("wrapper_type", "key")),
    "model_patcher.ModelPatcher.set_additional_models": Internal("the temporal layers follow the MODEL onto the "
                                                                 "device", ("key", "models")),
    "model_patcher.ModelPatcher.set_attachments": Internal("an inflated MODEL carries its temporal layers",
                                                           ("key", "attachment")),
    "model_patcher.ModelPatcher.get_attachment": Internal("finds them again", ("key",)),
    "patcher_extension.WrappersMP.APPLY_MODEL": Internal("the video hook point: each UNet call runs as a clip"),
    "patcher_extension.WrappersMP.CALC_COND_BATCH": Internal("checks a ControlNet's hint count per call"),
    "patcher_extension.WrappersMP.OUTER_SAMPLE": Internal("swaps the anchored handler in for the host's context "
                                                          "windows while an inflated MODEL samples"),
    "lora.calculate_weight": Internal("a weight with the MODEL's patches, where tuning starts",
                                      ("patches", "weight", "key")),
    "lora.model_lora_keys_unet": Internal("a LoRA file's names of the query projections (the standard ones that "
                                          "diffusers' module paths give)", ("model", "key_map")),
    "lora.load_lora": Internal("a LoRA file's query adapters become the MODEL's own LoRA patches, as Load LoRA adds "
                               "them", ("lora", "to_load")),
    "weight_adapter.lora.LoraDiff": Internal("LoRA tuning trains the host's own trainable LoRA (its LoRA trainer's) "
                                             "on the query projections", ("weights",)),
    "utils.load_torch_file": Internal("a motion module read as the host reads model files (a .ckpt with "
                                      "torch's weights-only loader)", ("ckpt", "safe_load")),
    "utils.get_attr": Internal("a weight of the MODEL by its patch key", ("obj", "attr")),
    "utils.ProgressBar": Internal("the node's progress bar", ("total", "node_id")),
    "ops.disable_weight_init": Internal("the memory plan builds the UNet's layers on the meta device"),
    "ops.manual_cast": Internal("the memory plan builds the layers of MODELs stored in half precision"),
    "openaimodel.UNetModel": Internal("the memory plan builds a meta copy of the UNet"),
    "openaimodel.ResBlock": Internal("gradient checkpointing wraps ResNet blocks"),
    "attention.BasicTransformerBlock": Internal("gradient checkpointing wraps transformer blocks"),
    "attention.optimized_attention": Internal("Prompt-to-Prompt's attention maps: the host's attention function; "
                                              "swapped while a plan traces the UNet (``patched_for_planning``)"),
    "attention.optimized_attention_masked": Internal("the host's masked attention, swapped while a plan traces the "
                                                     "UNet"),
    "attention.attention_basic": Internal("the memory plan's model of the host's attention"),
    "attention.attention_split": Internal("the host's chunked attention, planned as attention_basic"),
    "attention.attention_sub_quad": Internal("the host's chunked attention, planned as attention_basic"),
    # sampling
    "sample.sample_custom": Internal(
        "DDIM Invert and Video KSampler run through the host's sampler (ControlNet, area conds apply)",
        ("model", "noise", "cfg", "sampler", "sigmas", "positive", "negative", "latent_image", "noise_mask", "callback",
         "seed")),
    "samplers.KSAMPLER": Internal("the DDIM functions as host samplers", ("sampler_function", "extra_options")),
    "latent_preview.prepare_callback": Internal("live previews while sampling", ("model", "steps")),
    # context windows
    "context_windows.IndexListContextHandler": Internal("the host's context windows (Context Windows (Manual)), "
                                                        "which an inflated MODEL runs anchored"),
    "context_windows.IndexListContextHandler.execute": Internal(
        "the anchored handler overrides it: windows of both branches, each anchored on frame 0",
        ("calc_cond_batch", "model", "conds", "x_in", "timestep", "model_options")),
    "context_windows.IndexListContextHandler.set_step": Internal("called with one sigma (the host's compares a batch)",
                                                                 ("timestep", "model_options")),
    "context_windows.IndexListContextHandler.should_use_context": Internal(
        "overridden: a clip of two branches counts its frames once", ("model", "conds", "x_in", "timestep",
                                                                      "model_options")),
    "context_windows.IndexListContextHandler.get_resized_cond": Internal("each window's conditioning",
                                                                         ("cond_in", "x_in", "window")),
    "context_windows.IndexListContextHandler().callbacks": Internal("kept when the handler is swapped"),
    "context_windows.IndexListContextWindow": Internal("the window the host's conds are cut to", ("index_list", "dim")),
    "context_windows.ContextFuseMethods.RELATIVE": Internal("the host's relative fusion, as weights"),
    "context_windows.ContextSchedules.STATIC_STANDARD": Internal("the memory plan's window schedule"),
    "context_windows.get_context_weights": Internal("the host's fuse weights of a window",
                                                    ("length", "full_length", "idxs", "handler")),
    "context_windows.get_matching_context_schedule": Internal("the memory plan's windows, as the host makes them"),
    "context_windows.get_matching_fuse_method": Internal("the memory plan's fusion, as the host's"),
    # files, server, stock nodes
    "folder_paths.folder_names_and_paths": Internal("registers models/tuneavideo, models/tuneavideo_inversions and "
                                                    "(unless AnimateDiff-Evolved did) models/animatediff_models"),
    "folder_paths.supported_pt_extensions": Internal("the motion modules' folder lists the files the host's model "
                                                     "folders list, as AnimateDiff-Evolved registers it"),
    "folder_paths.models_dir": Internal("where those folders go"),
    "folder_paths.get_folder_paths": Internal("the folders' paths", ("folder_name",)),
    "folder_paths.get_filename_list": Internal("the files a loader lists", ("folder_name",)),
    "folder_paths.get_full_path_or_raise": Internal("the file a loader opens", ("folder_name", "filename")),
    "folder_paths.get_save_image_path": Internal("numbered saves, as the host's savers",
                                                 ("filename_prefix", "output_dir")),
    "folder_paths.get_input_directory": Internal("the example clip goes into input/"),
    "server.PromptServer": Internal("the running server's class"),
    "server.PromptServer.instance": Internal("the running server (absent in scripts)"),
    "server.PromptServer.send_progress_text": Internal("the text under a node", ("text", "node_id")),
    "server.PromptServer.add_on_prompt_handler": Internal("Attention Control's words are checked when queued",
                                                          ("handler",)),
    "server.PromptServer().on_prompt_handlers": Internal("added once"),
    "stock_nodes.PreviewImage": Internal("charts shown as previews that carry the workflow"),
    "stock_nodes.CheckpointLoaderSimple": Internal("Load & Inflate Checkpoint loads as the stock loader does"),
    "sd.CLIP.load_sd": Internal("patched (``remember_text_projections``): whether a text tower's projection was "
                                "loaded, which its values cannot tell", ("sd", "full_model")),
    "sd1_clip.SDClipModel": Internal("the text towers whose projection Score Video reads"),
}


@functools.cache
def _host_source(cls: type) -> str | None:
    """The source of the methods of a host class and its host base classes, where instance attributes are set (a
    method's source is found by its line number; a class's would parse its whole file)."""
    try:
        return "".join(inspect.getsource(f) for c in inspect.getmro(cls) if c.__module__.startswith(("comfy", "server"))
                       for f in vars(c).values() if inspect.isfunction(f))
    except (OSError, TypeError):
        return None


def _resolve(name: str):
    """The object ``name`` reaches, or a reason it does not."""
    obj = globals()[name.split(".")[0]]
    parts = name.split(".")[1:]
    for i, part in enumerate(parts):
        if part.endswith("()"):  # an attribute the host sets on the instances of this class
            attr = parts[i + 1]
            owner = getattr(obj, part[:-2], None)
            if not inspect.isclass(owner):
                return None, f"has no class {part[:-2]!r}"
            source = _host_source(owner)
            if source is None:  # no source shipped: the attribute cannot be checked here
                return owner, None
            if not re.search(rf"\bself\.{attr}\s*(:[^=]*)?=", source):
                return None, f"{part[:-2]} instances no longer get .{attr}"
            return owner, None
        if not hasattr(obj, part):
            if part == "instance" and inspect.isclass(obj):  # set when the server starts
                return obj, None
            return None, f"{'.'.join(name.split('.')[:i + 1])} has no {part!r}"
        obj = getattr(obj, part)
    return obj, None


def drift() -> list[str]:
    """One line per internal the running host does not have as the pack expects (empty on a matching host)."""
    problems = []
    for name, internal in INTERNALS.items():
        obj, reason = _resolve(name)
        if reason is None and internal.params:
            try:
                have = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                have = {}
            missing = [p for p in internal.params if p not in have]
            if missing and not any(p.kind == p.VAR_KEYWORD for p in have.values()):
                reason = f"takes no {', '.join(missing)} any more"
        if reason is not None:
            problems.append(f"ComfyUI internal {name} (checked on {internal.checked_on}): {reason}; the pack needs it: "
                            f"{internal.why}")
    return problems


def log_drift() -> None:
    """At start-up: a warning per changed internal; never a failure of its own (the nodes still load)."""
    try:
        lines = drift()
    except Exception as e:  # noqa: BLE001  (a check of the host must not stop the pack from loading)
        lines = [f"the check of ComfyUI's internals failed ({type(e).__name__}: {e})"]
    for line in lines:
        logging.warning("Tune-A-Video: %s", line)


def remember_text_projections() -> None:
    """Patch ``CLIP.load_sd`` (once): the host builds a text tower's projection uninitialised and fills it only from
    a file that has one (an SD 1.x checkpoint's CLIP never does), so its values say nothing; each tower records
    whether it was loaded. Both ways a CLIP loads go through ``load_sd``: a checkpoint's (``full_model``, keys
    prefixed with the tower's name) and a text encoder file's (keys of the tower itself)."""
    load_sd = sd.CLIP.load_sd
    if getattr(load_sd, "tav_remembers_projection", False):
        return

    def load(self, state_dict, full_model=False):
        out = load_sd(self, state_dict, full_model)
        for name, tower in self.cond_stage_model.named_modules():
            if isinstance(tower, sd1_clip.SDClipModel):
                key = f"{name}.transformer.text_projection.weight" if full_model else "text_projection.weight"
                tower.tav_projection_loaded = any(k.endswith(key) for k in state_dict)
        return out
    load.tav_remembers_projection = True
    sd.CLIP.load_sd = load


def _plenty_of_memory(device=None, torch_free_too=False):
    return (2 ** 50, 2 ** 50) if torch_free_too else 2 ** 50


@contextmanager
def _swapped(owner, name: str, value):
    """``owner.name`` is ``value`` while inside."""
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


@contextmanager
def patched_for_planning():
    """While a memory plan traces the host's UNet on fake tensors: the host's free-memory query answers "plenty" (the
    plan measures, it must not make the host unload models), and its chunked attentions (sub-quadratic, split: its CPU
    defaults) run as its unchunked one (``attention_basic``): an upper bound of their memory, the same where one
    chunk holds every query (up to 4096 tokens), and one operation whatever the size, so a plan costs the same at 64
    and 65536 pixels (the chunk loop made a 8192x8192 plan take minutes). The fused attentions (PyTorch's SDPA,
    CUDA's default) are one operation already and stay."""
    with ExitStack() as stack:
        stack.enter_context(_swapped(model_management, "get_free_memory", _plenty_of_memory))
        chunked = (attention.attention_sub_quad, attention.attention_split)
        if attention.optimized_attention in chunked or attention.optimized_attention_masked in chunked:
            stack.enter_context(_swapped(attention, "optimized_attention", attention.attention_basic))
            stack.enter_context(_swapped(attention, "optimized_attention_masked", attention.attention_basic))
        yield
