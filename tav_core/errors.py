"""One exception type for bad input, so callers (CLI, ComfyUI nodes) can show its message as is."""


class TavError(ValueError):
    """Bad input: the message names the problem and how to fix it."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise TavError(message)
