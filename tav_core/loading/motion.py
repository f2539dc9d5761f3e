"""AnimateDiff motion modules from the files users keep: original checkpoints (``mm_sd_v14``, ``mm_sd_v15``,
``mm_sd_v15_v2``, ``v3_sd15_mm``, ``mm_sdxl_v10_beta``; ``.safetensors``, or ``.ckpt`` when pickles are allowed) and
diffusers ``MotionAdapter`` folders, loaded into diffusers' ``MotionAdapter`` with diffusers' own key conversion.

The version is read from the keys: v2 alone has a mid-block module; SDXL's has three levels where SD1.5's have four;
v1 and v3 share their keys and differ in the positional encoding's length (24 and 32 frames). Whether a module fits a
UNet is checked when it meets one (``tav_core.model.motion.motion_pairs``). Files that
are not a motion module (a motion LoRA, HotShot-XL, SparseCtrl, AnimateLCM-I2V, a checkpoint) are refused by name.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import TavError, check, summary
from ..files import read_safetensors
from .fingerprint import fingerprint_of

VERSIONS = {"v1": "AnimateDiff v1 (mm_sd_v14/mm_sd_v15)", "v2": "AnimateDiff v2 (mm_sd_v15_v2)",
            "v3": "AnimateDiff v3 (v3_sd15_mm)", "sdxl": "AnimateDiff SDXL beta (mm_sdxl_v10_beta)"}
HEADS, NORM_GROUPS = 8, 32  # every released module's (no tensor shape shows the head count)
PICKLES = (".ckpt", ".pt", ".pth", ".bin")

# what a file is, when it is not a motion module: (how its keys look, its name)
NOT_MOTION = (
    (lambda k: "motion_modules" in k and ("lora" in k.lower() or ".processor." in k),
     "an AnimateDiff motion LoRA (it adapts a motion module, and this pack does not apply motion LoRAs): give the "
     "module itself, e.g. mm_sd_v15_v2"),
    (lambda k: "lora" in k.lower(), "a LoRA"),
    (lambda k: ".temporal_attentions." in k or k.endswith("positional_encoding"), "HotShot-XL's temporal layers"),
    (lambda k: k.startswith("controlnet_"), "an AnimateDiff SparseCtrl ControlNet"),
    (lambda k: k.startswith("img_encoder."), "AnimateLCM-I2V's image adapter"),
    (lambda k: k.startswith(("model.diffusion_model.", "conditioner.", "first_stage_model.")),
     "a Stable Diffusion checkpoint (give it as the model)"),
    (lambda k: ".motion_modules." in k and ".transformer_blocks." in k and ".temporal_transformer." not in k,
     "a diffusers MotionAdapter's weights without their config: give the folder they came in (with its config.json)"),
)


@dataclass
class MotionModule:
    """A loaded motion module: diffusers' ``MotionAdapter``, its version and how many frames it encodes."""
    adapter: torch.nn.Module
    version: str
    max_frames: int
    fingerprint: list[float]


def motion_version(shapes: dict[str, tuple], source) -> str:
    """The version of an original-layout module from its keys and shapes, or ``TavError`` naming what it is."""
    for looks_like, name in NOT_MOTION:
        check(not any(looks_like(k) for k in shapes), f"{source} is {name}, not an AnimateDiff motion module")
    pe = [s for k, s in shapes.items() if k.endswith("pos_encoder.pe")]
    check(any(".temporal_transformer." in k for k in shapes) and pe,
          f"{source} is not an AnimateDiff motion module (no motion_modules.*.temporal_transformer keys with a "
          "positional encoding); give mm_sd_v15_v2, v3_sd15_mm, mm_sdxl_v10_beta or another AnimateDiff module")
    blocks = 1 + max(int(m[1]) for k in shapes if (m := re.match(r"down_blocks\.(\d+)\.", k)))
    return version_of(blocks, any(k.startswith("mid_block.") for k in shapes), pe[0][1], source)


def version_of(levels: int, mid: bool, length: int, source) -> str:
    """A module's version from its build: v2 alone has a mid-block module; the level count only tells SDXL's three
    from SD's four (whether it fits a UNet is checked against it); v1 and v3 differ in their encoding's length."""
    version = "v2" if mid else "sdxl" if levels == 3 else {24: "v1", 32: "v3"}.get(length)
    check(version is not None, f"{source} is a motion module of an unknown kind ({levels} down blocks, no mid block, "
                               f"{length} frames); the pack reads AnimateDiff v1, v2, v3 and the SDXL beta")
    return version


def _read_original(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path, "download or copy it again", f"motion module {path}")[1]
    check(path.suffix.lower() in PICKLES, f"motion module {path}: give a .safetensors file (or a .ckpt with "
                                          "--allow-pickle), or a diffusers MotionAdapter folder")
    check(allow_pickle, f"motion module {path} is a pickle, which can run code when loaded: convert it to "
                        ".safetensors, or allow pickles (--allow-pickle) if you trust its source")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001  (any unreadable pickle: named with the file)
        raise TavError(f"motion module {path} cannot be read ({summary(e)}); download it again") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    check(isinstance(state, dict), f"motion module {path} holds no state dict; give an AnimateDiff module")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def adapter_config(shapes: dict[str, tuple], heads: int, norm_groups: int) -> dict:
    """``MotionAdapter``'s config of an original module, from its shapes (and AnimateDiff's head and group counts)."""
    channels = {int(m[1]): s[0] for k, s in shapes.items()
                if (m := re.fullmatch(r"down_blocks\.(\d+)\.motion_modules\.0\.temporal_transformer\.proj_in\.weight", k))}
    layers = {int(m[1]) for k in shapes if (m := re.match(r"down_blocks\.0\.motion_modules\.(\d+)\.", k))}
    length = next(s[1] for k, s in shapes.items() if k.endswith("pos_encoder.pe"))
    return dict(block_out_channels=[channels[i] for i in sorted(channels)], motion_layers_per_block=len(layers),
                motion_mid_block_layers_per_block=1, motion_num_attention_heads=heads,
                motion_norm_num_groups=norm_groups, motion_max_seq_length=length,
                use_motion_mid_block=any(k.startswith("mid_block.") for k in shapes), conv_in_channels=None)


def load_motion_module(path, allow_pickle: bool = False, heads: int = HEADS, norm_groups: int = NORM_GROUPS) -> MotionModule:
    """A motion module from a file or a diffusers folder. ``heads``/``norm_groups``: AnimateDiff's (tests' tiny
    modules give theirs)."""
    from diffusers import MotionAdapter  # (seconds: only when a motion module is asked for)

    path = Path(path)
    check(path.exists(), f"motion module {path} does not exist; give an AnimateDiff motion module "
                         "(e.g. models/animatediff_models/mm_sd_v15_v2.safetensors)")
    if path.is_dir():
        try:
            adapter = MotionAdapter.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise TavError(f"{path} is not a diffusers MotionAdapter folder ({summary(e)})") from None
        config = adapter.config
        version = version_of(len(config.block_out_channels), config.use_motion_mid_block, config.motion_max_seq_length,
                             f"motion module {path}")
        return _module(adapter, version, config.motion_max_seq_length)
    return motion_module_from_state(_read_original(path, allow_pickle), f"motion module {path}", heads, norm_groups)


def motion_module_from_state(state: dict[str, torch.Tensor], source: str, heads: int = HEADS,
                             norm_groups: int = NORM_GROUPS) -> MotionModule:
    """A motion module from an original-layout state dict (read by whoever holds the file: ComfyUI's safe loader)."""
    # (seconds to import: only when a motion module is asked for)
    from diffusers import MotionAdapter
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    version = motion_version(shapes, source)
    adapter = MotionAdapter(**adapter_config(shapes, heads, norm_groups))
    missing, unexpected = adapter.load_state_dict(convert_animatediff_checkpoint_to_diffusers(state), strict=False)
    missing = [k for k in missing if not k.endswith("pos_embed.pe")]  # rebuilt by diffusers, checked below
    check(not missing and not unexpected, f"{source} does not fit {VERSIONS[version]} (missing "
                                          f"{missing[:2]}, unexpected {unexpected[:2]}); download it again")
    rebuilt = {b.shape[-1]: b for n, b in adapter.named_buffers() if n.endswith("pos_embed.pe")}  # by width
    encodings = [v for k, v in state.items() if k.endswith("pos_encoder.pe")]
    check(all(torch.allclose(pe.float(), rebuilt[pe.shape[-1]][:, :pe.shape[1]].float(), atol=1e-3) for pe in encodings),
          f"{source}: its positional encoding is not AnimateDiff's sinusoid; it is not a module the pack reads")
    return _module(adapter, version, encodings[0].shape[1])


def motion_config(module: MotionModule) -> dict:
    """What a memory plan and the command line's checks need of a module: its ``MotionAdapter`` config, version,
    frame count and fingerprint."""
    return {"adapter": {k: v for k, v in module.adapter.config.items() if not k.startswith("_")},
            "version": module.version, "max_frames": module.max_frames, "fingerprint": module.fingerprint}


def file_motion_config(path, allow_pickle: bool = False) -> dict:
    """``motion_config`` of a module file without loading its weights where it can (a safetensors header); refuses
    what ``load_motion_module`` refuses."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".safetensors":
        try:
            f = safe_open(str(path), "pt")
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # noqa: BLE001  (a damaged header: named with the file)
            raise TavError(f"motion module {path} cannot be read ({summary(e)}); download it again") from None
        with f:
            version = motion_version(shapes, f"motion module {path}")
            first = "down_blocks.0.motion_modules.0.temporal_transformer."  # (the fingerprint ``_module`` takes)
            fingerprint = fingerprint_of([f.get_tensor(first + "proj_in.weight"), f.get_tensor(first + "proj_out.weight")])
        length = next(s[1] for k, s in shapes.items() if k.endswith("pos_encoder.pe"))
        return {"adapter": adapter_config(shapes, HEADS, NORM_GROUPS), "version": version, "max_frames": length,
                "fingerprint": fingerprint}
    return motion_config(load_motion_module(path, allow_pickle))


def planned_module(config: dict, dtype: torch.dtype) -> MotionModule:
    """A module of ``motion_config``'s architecture for a memory plan (inside ``tav_core.memory.trace.planning``)."""
    from diffusers import MotionAdapter  # (seconds to import: only when a plan has a motion module)

    adapter = MotionAdapter.from_config(config["adapter"])
    for t in [*adapter.parameters(), *adapter.buffers()]:
        if t.is_floating_point():
            t.data = t.data.to(dtype)
    return MotionModule(adapter.eval().requires_grad_(False), config["version"], config["max_frames"], [])


def _module(adapter, version: str, max_frames: int) -> MotionModule:
    """The loaded module; its fingerprint (of the first motion module's projections) is the same from either form."""
    first = adapter.down_blocks[0].motion_modules[0]
    return MotionModule(adapter.eval().requires_grad_(False), version, max_frames,
                        fingerprint_of([first.proj_in.weight, first.proj_out.weight]))
