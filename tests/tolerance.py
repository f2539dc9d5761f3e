"""The project's tolerance rule for numerical assertions.

Bit-equality only for one computation repeated in one process (same code path, shapes and model instance) or for
saved and copied values. Anything else is held to a tolerance a stated factor above a measured rounding floor: how
far the reference computation's output moves when its inputs move by one ulp (``nudge``); or, for short
computations, above a stated bound. CFG, DDIM chains and optimisers amplify rounding: measure, don't guess.
"""

import torch

EPS = torch.finfo(torch.float32).eps  # float32 ulp at 1.0 (2^-23)


def nudge(x: torch.Tensor) -> torch.Tensor:
    """``x + |x| eps``: every element moved by about one ulp of its dtype."""
    return x + x.abs() * torch.finfo(x.dtype).eps


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Max abs difference over the largest magnitude of ``theirs``."""
    return max_abs(ours, theirs) / theirs.abs().max().item()


def within(error: float, floor: float, factor: float, what: str) -> bool:
    """``error <= factor * floor`` (a floor of 0 would demand bit-equality: refused); prints the numbers."""
    ratio = error / floor if floor else float("inf")
    print(f"{what}: difference {error:.2e}, rounding floor {floor:.2e} ({ratio:.2g}x), limit {factor:g}x")
    return 0 < floor and error <= factor * floor
