"""Load Stable Diffusion 1.x/2.x and SDXL components offline: single-file checkpoints and diffusers folders.

Single-file loading is diffusers' own ``from_single_file``, pointed at the small config folders shipped in
``tav_core/configs`` (sd1, sd2, sdxl) so nothing is fetched from a hub.
"""

import json
import pickle
import zipfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import safe_open
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..errors import TavError, check, summary
from ..model.conditioning import is_sdxl_unet
from ..options import PICKLE_SUFFIXES
from .configs import CONFIGS, FOLDER_PARTS, SDXL_PARTS, Components, ModelConfigs, clip_tokenizer, folder_parts

SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


def inspect_checkpoint(path: str | Path, allow_pickle: bool = False, config: str | Path | None = None) -> ModelConfigs:
    """Everything about a checkpoint that can be checked without loading its weights (seconds, not minutes): that it
    exists, its suffix and the pickle policy, that it is an SD 1.x/2.x or SDXL text-to-image UNet (safetensors
    header), that a folder has every part; returns its parts' configs."""
    path = Path(path)
    check(path.exists(), f"checkpoint {path} does not exist; give the path of a .safetensors file or a "
                         "diffusers model folder")
    if path.is_dir():
        check((path / "unet" / "config.json").is_file(),
              f"{path} is not a diffusers model folder (no unet/config.json); give a folder saved by diffusers' "
              "save_pretrained or a single .safetensors checkpoint")
        for part, name in folder_parts(path).items():
            check((path / part / name).is_file(), f"{path} lacks {part}/{name}: the model folder is incomplete; "
                                                  f"copy its {part}/ folder too, or give a single-file checkpoint")
        configs = ModelConfigs.read(path)
    else:
        shapes = _single_file_shapes(path, allow_pickle)
        given = config is not None
        family = single_file_family(shapes)
        config = Path(config) if given else CONFIGS / family
        parts = SDXL_PARTS if family == "sdxl" else FOLDER_PARTS
        for part, name in parts.items():
            check((config / part / name).is_file(), f"config folder {config} lacks {part}/{name}; give a diffusers "
                                                    f"model folder's configs (model_index.json, {', '.join(parts)})")
        configs = ModelConfigs.read(config)
        _check_unet_shape(path, shapes, configs.unet, "the config folder given" if given else f"SD's ({config.name})")
    check(configs.unet.get("in_channels", 4) == 4,
          f"{path} is a UNet with {configs.unet.get('in_channels')} input channels (an inpainting or instruct model); "
          "Tune-A-Video needs a plain text-to-image SD 1.x/2.x or SDXL checkpoint (4 latent channels)")
    return configs


def _check_unet_shape(path: Path, shapes: dict[str, tuple], unet: dict, whose: str) -> None:
    """The checkpoint's UNet has the config's number of input blocks and its cross-attention width (header only)."""
    prefix = "model.diffusion_model.input_blocks."
    blocks = len({k[len(prefix):].split(".")[0] for k in shapes if k.startswith(prefix)})
    levels, per_level = len(unet["block_out_channels"]), unet["layers_per_block"]
    expected = 1 + levels * per_level + levels - 1  # the input conv, the ResNet layers, the downsamplers
    to_k = next((shape for k, shape in shapes.items() if k.startswith(prefix) and k.endswith("attn2.to_k.weight")), None)
    context = unet["cross_attention_dim"]
    fits = blocks in (0, expected) and (to_k is None or to_k[-1] == context)  # 0: not the original layout; loading tells
    check(fits, f"{path}'s UNet is of another shape than {whose} config ({blocks} input blocks and cross-attention "
                f"width {to_k[-1] if to_k else '?'}, the config {expected} and {context}); if it is an {SUPPORTED} model "
                "of another shape, give its diffusers config folder (--config)")


def load_components(path: str | Path, prediction_type: str | None = None, allow_pickle: bool = False,
                    config: str | Path | None = None) -> Components:
    """Load a single-file checkpoint or a diffusers folder. ``config`` overrides the shipped config folder."""
    path = Path(path)
    inspect_checkpoint(path, allow_pickle, config)
    components = _load_folder(path) if path.is_dir() else _load_single_file(path, allow_pickle, config)
    if prediction_type:
        components.scheduler_config["prediction_type"] = prediction_type
    return components


def _load_folder(path: Path) -> Components:
    try:
        quiet = dict(local_files_only=True, low_cpu_mem_usage=False)  # no "accelerate not found" warning
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **quiet)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **quiet)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True)
        tokenizer = _folder_tokenizer(path, "tokenizer", text_encoder.config.hidden_size == 1024)
        scheduler_config = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        second = {}
        if is_sdxl_unet(unet.config):
            second = dict(text_encoder_2=CLIPTextModelWithProjection.from_pretrained(
                path, subfolder="text_encoder_2", local_files_only=True),
                tokenizer_2=_folder_tokenizer(path, "tokenizer_2", True))
    except (OSError, ValueError, RuntimeError) as e:
        raise TavError(f"could not load diffusers folder {path} ({summary(e)}); check that it is complete") from e
    return Components(unet, vae, text_encoder, tokenizer, scheduler_config, **second)


def _folder_tokenizer(path: Path, part: str, pads_with_bang: bool) -> CLIPTokenizer:
    """A folder's own tokenizer, else the shipped one (OpenCLIP's towers pad with "!")."""
    if (path / part).is_dir():
        return CLIPTokenizer.from_pretrained(path, subfolder=part, local_files_only=True)
    return clip_tokenizer(pads_with_bang)


def _state_shapes(path: Path) -> dict[str, tuple]:
    """Tensor names and shapes of a checkpoint, without reading its tensors (safetensors' header; a pickle's tensors
    memory-mapped, untouched, as torch's zip format allows) or running code (pickles)."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


# key prefixes of model families that are not SD 1.x/2.x or SDXL base, with their names
OTHER_FAMILIES = {"conditioner.embedders.0.model.": "SDXL refiner", "model.diffusion_model.joint_blocks.": "SD3",
                  "model.diffusion_model.double_blocks.": "Flux", "double_blocks.": "Flux",
                  "model.diffusion_model.down_blocks.": "Stable Cascade", "down_blocks.0.0.channelwise.": "Stable Cascade",
                  "edm_mean": "Playground 2.5 (EDM, not DDIM's schedule)",
                  "edm_vpred.": "EDM v-prediction (not DDIM's schedule)"}
SDXL_TEXT_ENCODERS = ("conditioner.embedders.0.transformer.", "conditioner.embedders.1.model.")
SUPPORTED = "SD 1.x/2.x or SDXL (base or a fine-tune of it)"


def _check_family(path: Path, shapes: dict[str, tuple]) -> None:
    family = next((name for prefix, name in OTHER_FAMILIES.items() if any(k.startswith(prefix) for k in shapes)), None)
    check(family is None, f"{path} is a {family} checkpoint; Tune-A-Video here inflates {SUPPORTED} UNets only: give "
                          "such a checkpoint")
    check(any(k.startswith("model.diffusion_model.") for k in shapes),
          f"{path} holds no Stable Diffusion UNet (no model.diffusion_model.* keys); give an {SUPPORTED} checkpoint")
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    check(conv_in is None or conv_in[1] == 4,
          f"{path} is a UNet with {conv_in and conv_in[1]} input channels (an inpainting or instruct model); "
          f"Tune-A-Video needs a plain text-to-image {SUPPORTED} checkpoint (4 latent channels)")
    if any(k.startswith("model.diffusion_model.label_emb.") for k in shapes):
        found = [p for p in SDXL_TEXT_ENCODERS if any(k.startswith(p) for k in shapes)]
        check(len(found) == 2, f"{path} has an SDXL UNet but not both of SDXL's text encoders (CLIP-L under "
                               "conditioner.embedders.0, OpenCLIP bigG under conditioner.embedders.1); give a full "
                               "SDXL checkpoint, or a diffusers SDXL folder")


def single_file_family(shapes: dict[str, tuple]) -> str:
    """The shipped config folder a single-file checkpoint of these tensors needs: "sd1", "sd2" or "sdxl"."""
    if any(k.startswith("model.diffusion_model.label_emb.") for k in shapes):
        return "sdxl"
    return "sd2" if any(k.startswith("cond_stage_model.model.") for k in shapes) else "sd1"


def _single_file_shapes(path: Path, allow_pickle: bool) -> dict[str, tuple]:
    """A single-file checkpoint's tensor names and shapes, checked: suffix, pickle policy, family."""
    check(path.suffix in SINGLE_FILE_SUFFIXES,
          f"{path} has suffix {path.suffix!r}; give a .safetensors checkpoint (or .ckpt with --allow-pickle)")
    check(path.suffix == ".safetensors" or allow_pickle,
          f"{path} is a pickle checkpoint ({path.suffix}), which can run arbitrary code when loaded; convert it "
          "to .safetensors, or pass allow_pickle=True (--allow-pickle) if you trust its source")
    try:
        shapes = _state_shapes(path)
    except pickle.UnpicklingError as e:
        if "allowed global" not in str(e) and "Unsupported global" not in str(e):  # not a refused object: bad bytes
            raise TavError(f"{path} is not a readable checkpoint (its bytes are not a pickle: {summary(e)}); the file "
                           "may be truncated or corrupt: download or save it again") from e
        raise TavError(f"{path} holds Python objects besides tensors, which cannot be loaded safely; convert it to "
                       ".safetensors with a tool you trust") from e
    except Exception as e:
        raise TavError(f"{path} is not a readable checkpoint ({summary(e)}); the file may be truncated or "
                       "corrupt: download or save it again") from e
    _check_family(path, shapes)
    return shapes


def _load_single_file(path: Path, allow_pickle: bool, config: str | Path | None) -> Components:
    # diffusers' pipelines and their single-file loader (its safety checker, an HTTP client): only for a single file
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    family = single_file_family(_single_file_shapes(path, allow_pickle))
    config = Path(config) if config else CONFIGS / family
    try:
        if family == "sdxl":  # CLIP-L pads with its end token, OpenCLIP bigG with "!"
            pipe = StableDiffusionXLPipeline.from_single_file(
                str(path), config=str(config), local_files_only=True, tokenizer=clip_tokenizer(False),
                tokenizer_2=clip_tokenizer(True))
        else:
            pipe = StableDiffusionPipeline.from_single_file(
                str(path), config=str(config), local_files_only=True, tokenizer=clip_tokenizer(family == "sd2"),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    except Exception as e:
        raise TavError(f"could not load {path} with the {config.name} config ({summary(e)}); if it is an {SUPPORTED} "
                       "model of another shape, give its diffusers config folder (--config)") from e
    scheduler_config = json.loads((config / "scheduler" / "scheduler_config.json").read_text())
    second = dict(text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2) if family == "sdxl" else {}
    return Components(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler_config, **second)


