"""Resumable tuning: the optimiser's state saved every N steps, with the identity of the run it belongs to.

A state only continues the run that wrote it: same base model (the trained tensors' starting values), same
video latents, same prompt embedding and the same settings that change the result. Anything else is refused
with a message naming what differs, so a resume can never mix two runs into one file.
"""

import json
import re
from pathlib import Path

import torch

from ..errors import TavError, check, summary
from ..files import read_safetensors, write_safetensors
from ..loading.fingerprint import fingerprint_of

# TuneConfig fields that change what is learnt, with the words a message uses for them
RESULT_FIELDS = {"learning_rate": "learning rate", "weight_decay": "weight decay", "max_grad_norm": "gradient clip",
                 "seed": "seed", "mixed_precision": "mixed precision", "frame_window": "frame window",
                 "posterior": "posterior", "lora_rank": "LoRA rank", "lora_alpha": "LoRA alpha"}


def _tensors_identity(tensors: list[torch.Tensor]) -> dict:
    return {"shapes": [list(t.shape) for t in tensors], "samples": fingerprint_of(tensors)}


# the clip's selection (TuneConfig.clip), named first when it differs (the file's path may move: not compared)
CLIP_FIELDS = {"frames": "frame count (--frames)", "start": "first frame (--start)", "stride": "frame stride (--stride)",
               "width": "width", "height": "height"}


def tuned_layers(params: dict) -> list[str]:
    """The layers a run trains, named once each (``attn1.to_q``, ``attn_temp.to_k.lora_A``, a motion module's
    ``motion.down_blocks.motion_modules.transformer_blocks.attn1.to_q.lora_A``...)."""
    name = lambda k: k.split(".", 2)[2] if k.startswith("blocks.") else re.sub(r"\.\d+(?=\.)", "", k)  # noqa: E731
    return sorted({name(k).removesuffix(".weight").removesuffix(".bias") for k in params})


def run_identity(base: dict, params: dict, latents: torch.Tensor, latent_std: torch.Tensor | None,
                 cond: torch.Tensor, config) -> dict:
    """What a run is: call before the trained tensors move. ``base``: the tensors that identify the base model (full
    tuning: the trained tensors' starting values; LoRA: the adapted layers' own weights)."""
    video = [latents] if latent_std is None else [latents, latent_std]
    identity = {words: config.clip[field] for field, words in CLIP_FIELDS.items() if field in config.clip}
    identity.update({"base model": _tensors_identity(list(base.values())), "video": _tensors_identity(video),
                     "prompt": _tensors_identity([cond])})
    if config.lora_rank is not None:  # (full tuning's layers are the state's tensor names, checked on resume)
        identity["tuned layers"] = tuned_layers(params)
    identity.update({words: getattr(config, field) for field, words in RESULT_FIELDS.items()})
    return identity


def _differences(saved: dict, current: dict) -> list[str]:
    """What differs, named: a setting with both values, an input by its name."""
    def same(old, new):
        if isinstance(new, dict):
            try:
                return old["shapes"] == new["shapes"] and torch.allclose(
                    torch.tensor(old["samples"]), torch.tensor(new["samples"]), rtol=1e-3, atol=1e-4)
            except (KeyError, TypeError, ValueError, RuntimeError):
                return False
        return old == new
    return [key if isinstance(value, dict) else f"{key} ({saved.get(key)!r}, here {value!r})"
            for key, value in current.items() if not same(saved.get(key), value)]


def save_state(path, params, optimizer, scaler, generator, step: int, losses: list[float], identity: dict) -> None:
    tensors = {f"param/{k}": p.detach().cpu().contiguous() for k, p in params.items()}
    for k, p in params.items():
        for name, v in optimizer.state.get(p, {}).items():
            tensors[f"opt/{k}/{name}"] = v.detach().cpu().contiguous()
    tensors["rng"] = generator.get_state()
    meta = {"step": str(step), "losses": json.dumps(losses), "identity": json.dumps(identity),
            "scaler": json.dumps(scaler.state_dict())}
    write_safetensors(path, tensors, meta)


def load_state(path, params, optimizer, scaler, generator, identity: dict) -> tuple[int, list[float]]:
    """Restore a state into ``params``/``optimizer``/``scaler``/``generator``; returns (step, losses so far)."""
    fresh = "delete it to start afresh"
    meta, tensors = read_safetensors(path, fresh, f"training state {path}")
    check("identity" in meta, f"training state {path} was written by an older version and does not say which run "
                              f"it belongs to: {fresh}")
    try:
        step, losses, saved = int(meta["step"]), json.loads(meta["losses"]), json.loads(meta["identity"])
        scaler_state = json.loads(meta.get("scaler", "{}"))
        check(isinstance(saved, dict) and isinstance(losses, list) and 0 <= step == len(losses) and "rng" in tensors,
              "inconsistent")
    except (KeyError, ValueError, TypeError) as e:
        raise TavError(f"training state {path} is damaged (its {summary(e)}): {fresh}") from None
    differ = _differences(saved, identity)
    check(not differ, f"training state {path} belongs to another run: its {', '.join(differ)} "
                      f"{'differs' if len(differ) == 1 else 'differ'} from this run's; resume with the same inputs "
                      f"and settings, or {fresh}")
    names = {k.split("/", 1)[1] for k in tensors if k.startswith("param/")}
    shapes_fit = names == set(params) and all(tensors[f"param/{k}"].shape == p.shape for k, p in params.items())
    check(shapes_fit, f"training state {path} belongs to a model of another architecture: {fresh}")
    check(all(bool(torch.isfinite(v).all()) for k, v in tensors.items() if v.is_floating_point()),
          f"training state {path} holds NaN or infinite values: it is damaged: {fresh}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[f"param/{k}"])
            state = {name.rsplit("/", 1)[1]: v for name, v in tensors.items() if name.startswith(f"opt/{k}/")}
            if state:
                optimizer.state[p] = {n: v if n == "step" else v.to(p.device) for n, v in state.items()}
    try:
        generator.set_state(tensors["rng"])
    except (RuntimeError, TypeError) as e:
        raise TavError(f"training state {path} is damaged (its random generator state: {summary(e)}): {fresh}") from None
    if scaler_state:  # empty when fp16 loss scaling is off
        scaler.load_state_dict(scaler_state)
    return step, losses


def remove_state(path) -> None:
    """A finished run's state is of no further use (its weights are saved): free its disk space."""
    Path(path).unlink(missing_ok=True)
