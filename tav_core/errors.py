"""One exception type for bad input, so callers (CLI, ComfyUI nodes) can show its message as is; and the words
messages share (sizes, counts, an OS error and its fix)."""

import errno
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


def os_message(e: OSError) -> str:
    """An OS error as one line: what happened, where, and what to do."""
    fixes = {errno.ENOSPC: "free disk space or choose another place", errno.EACCES: "choose a writable place",
             errno.EROFS: "choose a writable place", errno.ENOTDIR: "a part of the path is a file: choose another path",
             errno.ENAMETOOLONG: "choose a shorter name", errno.ENOENT: "check the path"}
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or e}{where}; {fixes.get(e.errno, 'check the path and the disk')}"


def size_text(n: float) -> str:
    """Bytes with enough digits to tell two sizes apart: 812 KB, 1.37 MB, 24.3 GB."""
    for unit, scale in (("GB", 2 ** 30), ("MB", 2 ** 20), ("KB", 2 ** 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} bytes"
