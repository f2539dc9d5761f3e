"""The node API the pack is written against: ComfyUI's versioned ``comfy_api.v0_0_2`` (``io.ComfyNode``,
``io.Schema``, ``ComfyExtension``), the newest numbered version of the host the tests run (0.3.75). A numbered
version is what the host keeps answering as it moves on; ``comfy_api.latest`` moves with it (in 0.3.75 both are
the same classes)."""

from comfy_api.v0_0_2 import ComfyExtension, io  # noqa: F401


def hidden(node: type[io.ComfyNode], name: str):
    """A hidden input the host gave this run of ``node`` (unique_id, prompt, extra_pnginfo); None when the node is
    called directly, as benchmarks and tests do."""
    return getattr(node.hidden, name, None)
