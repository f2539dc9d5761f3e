"""One exception type for bad input, so callers (CLI, ComfyUI nodes) can show its message as is."""

import math


class TavError(ValueError):
    """Bad input: the message names the problem and how to fix it."""


class TavWarning(UserWarning):
    """Something the user should know that does not stop the work (shown as one line by the CLI)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise TavError(message)


def in_range(name: str, value: float | None, low: float, high: float, hint: str = "") -> None:
    """A finite number within [low, high] (NaN and infinity never are)."""
    if value is None:
        return
    check(math.isfinite(value) and low <= value <= high,
          f"{name} must be a number from {low:g} to {high:g}{hint}, got {value}")


def summary(error: Exception, lines: int = 3) -> str:
    """An exception's first lines, so a message stays short (a state-dict mismatch can list hundreds)."""
    text = [line.strip() for line in str(error).splitlines() if line.strip()]
    more = f" ... and {len(text) - lines} more lines" if len(text) > lines else ""
    return f"{type(error).__name__}: {' '.join(text[:lines])}{more}"


def plural(count: int, noun: str) -> str:
    """'1 frame', '4 frames'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
