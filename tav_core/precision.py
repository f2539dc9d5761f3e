"""The precision UNet passes compute in: one autocast, named once, honoured on every path."""

from contextlib import nullcontext

import torch

from .errors import check

PRECISIONS = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
HALF = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def check_precision(name: str) -> str:
    check(name in PRECISIONS, f"mixed precision {name!r} is not one of {', '.join(map(repr, PRECISIONS))}")
    return name


def compute_precision(weights_dtype: torch.dtype, asked: str | None = None) -> str:
    """The autocast for weights of ``weights_dtype``: half-precision weights compute in their own dtype (anything
    else is refused); fp32 weights in what was ``asked`` ("no": fp32)."""
    own = HALF.get(weights_dtype)
    if own is None:
        return check_precision(asked or "no")
    check(asked in (None, "no", own), f"{own} weights compute in {own}, not {asked}: load fp32 weights to autocast "
                                      f"them to {asked}, or leave mixed precision at 'no'")
    return own


def autocast(device: torch.device | str, precision: str):
    """Autocast to ``precision`` on ``device``; "no" opens nothing (an autocast opened outside still applies: never
    ``enabled=False``, which would switch it off)."""
    dtype = PRECISIONS[check_precision(precision)]
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
