"""LoRA tuning: low-rank adapters (PEFT's) on the projections Tune-A-Video tunes, instead of the projections.

The adapted layers are exactly those the paper trains: ``attn1.to_q`` and ``attn2.to_q`` of every transformer block
(the image model's, standard LoRA targets any SD tool applies) and the temporal attention's ``to_q``, ``to_k``,
``to_v`` and ``to_out.0``. Each computes ``W x + (alpha / rank) B A x`` with B starting at zero, so step 0 computes
the untuned inflated model. The temporal attention has no pretrained base: its query, key and value weights are the
run's seeded draw (``inflation.draw_fresh_temporal``) and its output weight is zero; a LoRA file records that seed and a
fingerprint of the draw, and loading draws it again, so the file holds adapters only (megabytes, not hundreds).
"""

import math
from contextlib import contextmanager

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from ..errors import TavError, check

SPATIAL = ("attn1.to_q", "attn2.to_q")
TEMPORAL = ("attn_temp.to_q", "attn_temp.to_k", "attn_temp.to_v", "attn_temp.to_out.0")
# an AnimateDiff motion module's temporal attentions (both of each transformer block), MotionDirector's LoRA targets
MOTION = tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0"))
LORA_SEED_OFFSET = 0x4C6F5241  # the adapters' draws come from a stream of their own: the run's draws stay full tuning's


def check_rank(rank: int, alpha: float | None = None) -> None:
    check(isinstance(rank, int) and rank >= 1, f"LoRA rank must be a whole number >= 1, got {rank!r} (4-64 is usual)")
    check(alpha is None or (math.isfinite(alpha) and alpha > 0),
          f"LoRA alpha must be a positive number, got {alpha!r} (the usual choice is the rank)")


def motion_holders(adapter: nn.Module) -> dict[str, nn.Module]:
    """A motion module's transformer blocks (which hold ``MOTION``), keyed as its tuned tensors are: ``motion.<path>``."""
    return {f"motion.{name}": m for name, m in adapter.named_modules()
            if name.rpartition(".")[0].endswith("transformer_blocks")}


def add_adapters(holders: list[nn.Module] | dict[str, nn.Module], layers: tuple[str, ...], rank: int,
                 alpha: float | None) -> dict:
    """PEFT LoRA adapters on ``layers`` (dotted paths inside each holder: a transformer block, the holder of its
    temporal layers, a motion module's block); returns the trained tensors keyed ``<holder>.{layer}.lora_A.weight`` /
    ``lora_B``, a holder named by its key (given a dict) or ``blocks.{i}`` (a list)."""
    check_rank(rank, alpha)
    try:
        from peft import LoraConfig, inject_adapter_in_model  # imported only when LoRA is asked for: seconds
    except ImportError as e:
        raise TavError(f"LoRA tuning needs the peft package ({e}): pip install \"peft>=0.17\" (or the pack's "
                       "requirements.txt) in this environment") from None

    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, lora_dropout=0.0, bias="none",
                        target_modules=[layer for layer in layers])
    params = {}
    named = holders.items() if isinstance(holders, dict) else ((f"blocks.{i}", h) for i, h in enumerate(holders))
    for name, holder in named:
        with _fake_modules_stay():
            inject_adapter_in_model(config, holder)
        for layer in layers:
            module = holder.get_submodule(layer)
            # PEFT casts each layer's input to the adapters' fp32 for them: under autocast (where inputs are half)
            # that is a copy of the input per adapted layer, kept for backward; autocast casts what it computes anyway
            module.cast_input_dtype_enabled = False
            for part in ("lora_A", "lora_B"):
                weight = getattr(module, part)["default"].weight
                weight.data = weight.data.float()  # AdamW's tensors stay fp32 beside half-precision layers
                params[f"{name}.{layer}.{part}.weight"] = weight
    return params


def is_fake(module: nn.Module) -> bool:
    """Whether a module is a memory plan's (fake tensors: they cannot be copied or moved)."""
    tensors = list(module.parameters())
    return bool(tensors) and all(isinstance(t, FakeTensor) for t in tensors)


@contextmanager
def _fake_modules_stay():
    """While inside, ``.to()`` leaves a module of fake tensors (a memory plan's) where it is: fake tensors cannot be
    swapped, which moving them needs, and a plan's are all on the CPU in the dtype they were made in already."""
    move = nn.Module.to

    def to(module, *args, **kwargs):
        if is_fake(module):
            return module
        return move(module, *args, **kwargs)
    nn.Module.to = to
    try:
        yield
    finally:
        nn.Module.to = move


def draw_adapters(params: dict[str, nn.Parameter], seed: int) -> None:
    """A from the run's seed (uniform within 1/sqrt(fan_in), PEFT's default), B zero: the same seed starts from the
    same adapters in any process and either host, without touching the run's own draws (timesteps, noise)."""
    generator = torch.Generator().manual_seed(seed + LORA_SEED_OFFSET)
    with torch.no_grad():
        for key in sorted(params, key=_block_order):
            p = params[key]
            if key.endswith("lora_A.weight"):
                bound = 1 / math.sqrt(p.shape[1])
                p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))
            else:
                p.zero_()


def _block_order(key: str) -> tuple:
    if not key.startswith("blocks."):
        return 1, 0, key  # (a motion module's, after the UNet's blocks)
    block, rest = key.removeprefix("blocks.").split(".", 1)
    return 0, int(block), rest


def remove_adapters(holders, merge: bool = True) -> None:
    """Take PEFT's layers out again, each replaced by its base layer (with the adapter merged in if ``merge``): the
    model keeps its own structure and parameter names for everything after tuning."""
    from peft.tuners.tuners_utils import BaseTunerLayer  # (seconds to import: only where LoRA is used)

    for holder in holders.values() if isinstance(holders, dict) else holders:
        for name, module in list(holder.named_modules()):
            if isinstance(module, BaseTunerLayer):
                if merge:
                    module.merge()
                parent, _, child = name.rpartition(".")
                setattr(holder.get_submodule(parent) if parent else holder, child, module.get_base_layer())
        holder.__dict__.pop("peft_config", None)  # (PEFT's record of the adapters: a later LoRA run starts clean)


def delta(down: torch.Tensor, up: torch.Tensor, alpha: float, rank: int) -> torch.Tensor:
    """The weight difference an adapter makes: (alpha / rank) B A, in float32."""
    return (alpha / rank) * (up.float() @ down.float())
