"""The node API the pack is written against: ComfyUI's versioned ``comfy_api.v0_0_2`` (``io.ComfyNode``,
``io.Schema``, ``ComfyExtension``), the newest numbered version of the host the tests run (0.3.75). A numbered
version is what the host keeps answering as it moves on; ``comfy_api.latest`` moves with it (in 0.3.75 both are
the same classes)."""

import math

from comfy_api.v0_0_2 import ComfyExtension, io  # noqa: F401

from ..tav_core.errors import TavError


def hidden(node: type[io.ComfyNode], name: str):
    """A hidden input the host gave this run of ``node`` (unique_id, prompt, extra_pnginfo); None when the node is
    called directly, as benchmarks and tests do."""
    return getattr(node.hidden, name, None)


def finite_floats(node: type[io.ComfyNode], **values) -> bool | str:
    """``validate_inputs``' check of a node's FLOAT widgets, before the graph runs: each value given (None: linked,
    checked when it arrives) a finite number within the schema's range. The host lets NaN through (it only
    compares with the bounds), and does not range-check an input that ``validate_inputs`` takes, so both are here."""
    specs = {i.id: i for i in node.define_schema().inputs if isinstance(i, io.Float.Input)}
    for name, value in values.items():
        if value is None:
            continue
        spec = specs[name]
        low, high = spec.min, spec.max
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            return f"{name} is {value}; give a finite number from {low:g} to {high:g}"
    return True


def require_finite(node: type[io.ComfyNode], **values) -> None:
    """The same when the node runs, for values that came through links (unknown at validation)."""
    verdict = finite_floats(node, **values)
    if verdict is not True:
        raise TavError(verdict)
