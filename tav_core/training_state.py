"""Resumable tuning: the optimiser's state saved every N steps, with the identity of the run it belongs to.

A state only continues the run that wrote it: same base model (the trained tensors' starting values), same
video latents, same prompt embedding and the same settings that change the result. Anything else is refused
with a message naming what differs, so a resume can never mix two runs into one file.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import check
from .files import atomic_path, read_safetensors
from .weights import fingerprint_of

# TuneConfig fields that change what is learnt, with the words a message uses for them
RESULT_FIELDS = {"learning_rate": "learning rate", "weight_decay": "weight decay", "max_grad_norm": "gradient clip",
                 "seed": "seed", "mixed_precision": "mixed precision", "frame_window": "frame window",
                 "posterior": "posterior"}


def _tensors_identity(tensors: list[torch.Tensor]) -> dict:
    return {"shapes": [list(t.shape) for t in tensors], "samples": fingerprint_of(tensors)}


def run_identity(params: dict, latents: torch.Tensor, latent_std: torch.Tensor | None, cond: torch.Tensor,
                 config) -> dict:
    """What a run is: call before the trained tensors move (their starting values identify the base model)."""
    video = [latents] if latent_std is None else [latents, latent_std]
    identity = {"base model": _tensors_identity(list(params.values())), "video": _tensors_identity(video),
                "prompt": _tensors_identity([cond])}
    identity.update({words: getattr(config, field) for field, words in RESULT_FIELDS.items()})
    return identity


def _differences(saved: dict, current: dict) -> list[str]:
    def same(old, new):
        if isinstance(new, dict):
            return isinstance(old, dict) and old["shapes"] == new["shapes"] and torch.allclose(
                torch.tensor(old["samples"]), torch.tensor(new["samples"]), rtol=1e-3, atol=1e-4)
        return old == new
    return [key for key, value in current.items() if not same(saved.get(key), value)]


def save_state(path, params, optimizer, scaler, generator, step: int, losses: list[float], identity: dict) -> None:
    tensors = {f"param/{k}": p.detach().cpu().contiguous() for k, p in params.items()}
    for k, p in params.items():
        for name, v in optimizer.state.get(p, {}).items():
            tensors[f"opt/{k}/{name}"] = v.detach().cpu().contiguous()
    tensors["rng"] = generator.get_state()
    meta = {"step": str(step), "losses": json.dumps(losses), "identity": json.dumps(identity),
            "scaler": json.dumps(scaler.state_dict())}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_state(path, params, optimizer, scaler, generator, identity: dict) -> tuple[int, list[float]]:
    """Restore a state into ``params``/``optimizer``/``scaler``/``generator``; returns (step, losses so far)."""
    fresh = "delete it to start afresh"
    meta, tensors = read_safetensors(path, fresh, f"training state {path}")
    check("identity" in meta, f"training state {path} was written by an older version and does not say which run "
                              f"it belongs to: {fresh}")
    names = {k.split("/", 1)[1] for k in tensors if k.startswith("param/")}
    shapes_fit = names == set(params) and all(tensors[f"param/{k}"].shape == p.shape for k, p in params.items())
    check(shapes_fit, f"training state {path} belongs to a model of another architecture: {fresh}")
    differ = _differences(json.loads(meta["identity"]), identity)
    check(not differ, f"training state {path} belongs to another run: its {', '.join(differ)} "
                      f"{'differs' if len(differ) == 1 else 'differ'} from this run's; resume with the same inputs "
                      f"and settings, or {fresh}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(tensors[f"param/{k}"])
            state = {name.rsplit("/", 1)[1]: v for name, v in tensors.items() if name.startswith(f"opt/{k}/")}
            if state:
                optimizer.state[p] = {n: v if n == "step" else v.to(p.device) for n, v in state.items()}
    generator.set_state(tensors["rng"])
    scaler_state = json.loads(meta.get("scaler", "{}"))
    if scaler_state:  # empty when fp16 loss scaling is off
        scaler.load_state_dict(scaler_state)
    return int(meta["step"]), json.loads(meta["losses"])


def remove_state(path) -> None:
    """A finished run's state is of no further use (its weights are saved): free its disk space."""
    Path(path).unlink(missing_ok=True)
