"""Load Stable Diffusion 1.x/2.x and SDXL components offline: single-file checkpoints, diffusers folders, reference
UNets.

Single-file loading is diffusers' own ``from_single_file``, pointed at the small config folders shipped in
``tav_core/configs`` (sd1, sd2, sdxl) so nothing is fetched from a hub.
"""

import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from .errors import TavError, check, summary
from .inflation import inflate, transformer_blocks
from .options import PICKLE_SUFFIXES
from .weights import load_video_parameters, video_parameters

CONFIGS = Path(__file__).parent / "configs"
SINGLE_FILE_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)


@dataclass
class Components:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict = field(default_factory=dict)
    text_encoder_2: CLIPTextModelWithProjection | None = None  # SDXL: OpenCLIP bigG, whose pooled output the UNet
    tokenizer_2: CLIPTokenizer | None = None                   # also takes (``is_sdxl``)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def is_sdxl(self) -> bool:
        return is_sdxl_unet(self.unet.config)

    @property
    def text_encoders(self) -> list:
        return [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]


def is_sdxl_unet(unet_config) -> bool:
    """SDXL's UNet takes a pooled text embedding and the image's size and crop besides the token embeddings."""
    return unet_config.get("addition_embed_type") == "text_time"


def sd_scheduler_config(sd2: bool = False) -> dict:
    """Stable Diffusion's own DDIM scheduler config (shipped): the schedule, spacing and prediction type."""
    return json.loads((CONFIGS / ("sd2" if sd2 else "sd1") / "scheduler" / "scheduler_config.json").read_text())


def clip_tokenizer(sd2: bool = False) -> CLIPTokenizer:
    """CLIP's BPE tokenizer from the shipped vocabulary; SD2 (OpenCLIP) pads with "!"."""
    return CLIPTokenizer(str(CONFIGS / "clip_tokenizer" / "vocab.json"), str(CONFIGS / "clip_tokenizer" / "merges.txt"),
                         pad_token="!" if sd2 else "<|endoftext|>", model_max_length=77)


@dataclass
class ModelConfigs:
    """The architecture of a model's parts: all a memory plan needs, read without loading any weight."""
    unet: dict
    vae: dict
    text_encoder: dict
    scheduler: dict
    text_encoder_2: dict | None = None

    @classmethod
    def of(cls, components: Components) -> "ModelConfigs":
        second = components.text_encoder_2
        return cls(dict(components.unet.config), dict(components.vae.config), components.text_encoder.config.to_dict(),
                   dict(components.scheduler_config), second.config.to_dict() if second is not None else None)

    @classmethod
    def read(cls, folder: str | Path) -> "ModelConfigs":
        """From a diffusers model folder, or a config folder like the shipped SD1.5 ("configs/sd1"), SD2.1 and SDXL
        ones."""
        folder = Path(folder)
        read = lambda part, name="config.json": json.loads((folder / part / name).read_text())
        unet = read("unet")
        return cls(unet, read("vae"), read("text_encoder"), read("scheduler", "scheduler_config.json"),
                   read("text_encoder_2") if is_sdxl_unet(unet) else None)

    @classmethod
    def shipped(cls, family: str = "sd1") -> "ModelConfigs":
        return cls.read(CONFIGS / family)


FOLDER_PARTS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                "scheduler": "scheduler_config.json"}
SDXL_PARTS = FOLDER_PARTS | {"text_encoder_2": "config.json"}


def folder_parts(folder: Path) -> dict[str, str]:
    """The parts a model folder must hold: SDXL's (by its UNet config) has a second text encoder."""
    unet = folder / "unet" / "config.json"
    return SDXL_PARTS if unet.is_file() and is_sdxl_unet(json.loads(unet.read_text())) else FOLDER_PARTS


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


# where the tensors of ``weights.fingerprint_names`` lie: the input conv and the first transformer block's attn1.to_k
# (the first level's for SD 1.x/2.x, the second's for SDXL, whose first level has no attention)
FINGERPRINT_KEYS = {"single file": ("model.diffusion_model.input_blocks.0.0.weight",
                                    r"model\.diffusion_model\.input_blocks\.(\d+)\.1\.transformer_blocks\.0\.attn1\.to_k\.weight"),
                    "folder": ("conv_in.weight", r"down_blocks\.(\d+)\.attentions\.0\.transformer_blocks\.0\.attn1\.to_k\.weight")}


def checkpoint_fingerprint(path: str | Path) -> list[float] | None:
    """The base-model fingerprint of tuned weights (``weights.fingerprint``), read from a safetensors checkpoint
    without loading it; None where that cannot be done cheaply (pickles, ``.bin`` folders, other layouts): the
    check then happens when the weights load."""
    from .weights import fingerprint_of
    path = Path(path)
    kind, file = ("folder", path / "unet" / "diffusion_pytorch_model.safetensors") if path.is_dir() else \
        ("single file", path)
    if file.suffix != ".safetensors" or not file.is_file():
        return None
    conv, block = FINGERPRINT_KEYS[kind]
    try:
        with safe_open(str(file), "pt") as f:
            blocks = sorted((int(m[1]), m[0]) for k in f.keys() if (m := re.fullmatch(block, k)))
            if conv not in f.keys() or not blocks:
                return None
            return fingerprint_of([f.get_tensor(conv), f.get_tensor(blocks[0][1])])
    except Exception:  # noqa: BLE001  (unreadable here: the full load says why)
        return None


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


_BLOCK_3D_TO_2D = {"CrossAttnDownBlock3D": "CrossAttnDownBlock2D", "DownBlock3D": "DownBlock2D",
                   "CrossAttnUpBlock3D": "CrossAttnUpBlock2D", "UpBlock3D": "UpBlock2D",
                   "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn"}


def load_reference_unet(folder: str | Path) -> UNet2DConditionModel:
    """Load a UNet tuned and saved by the reference Tune-A-Video repo (``UNet3DConditionModel`` folder).

    Its 3D blocks are the 2D ones with extra ``attn_temp``/``norm_temp`` layers, so the weights go into an
    inflated diffusers ``UNet2DConditionModel``.
    """
    folder = Path(folder)
    check((folder / "config.json").is_file(), f"{folder} has no config.json; give the reference repo's saved "
                                              "'unet' folder (config.json + diffusion_pytorch_model.bin/.safetensors)")
    config = json.loads((folder / "config.json").read_text())
    for key in ("down_block_types", "up_block_types"):
        config[key] = [_BLOCK_3D_TO_2D.get(b, b) for b in config[key]]
    config["mid_block_type"] = _BLOCK_3D_TO_2D.get(config.get("mid_block_type", "UNetMidBlock3DCrossAttn"),
                                                   "UNetMidBlock2DCrossAttn")
    config["_class_name"] = "UNet2DConditionModel"
    weights = folder / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        state = load_file(str(weights))
    else:
        weights = folder / "diffusion_pytorch_model.bin"
        check(weights.is_file(), f"{folder} has no diffusion_pytorch_model.safetensors or .bin")
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
    unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"})
    temporal = (".attn_temp.", ".norm_temp.")
    base = {k: v for k, v in state.items() if not any(t in k for t in temporal)}
    missing, unexpected = unet.load_state_dict(base, strict=False)
    check(not missing and not unexpected, f"{folder} does not match the SD UNet layout (missing {missing[:3]}, "
                                          f"unexpected {unexpected[:3]})")
    inflate(unet)
    block_names = [name for name, _ in transformer_blocks(unet)]
    tensors = {}
    for key in video_parameters(unet):
        _, i, rest = key.split(".", 2)
        source = f"{block_names[int(i)]}.{rest}"
        check(source in state, f"{folder} lacks {source}; it is not a Tune-A-Video UNet")
        tensors[key] = state[source]
    load_video_parameters(unet, tensors, str(folder))
    return unet
