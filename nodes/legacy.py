"""The first release's node IDs, kept so that saved workflows still load and run (hidden from search).

Their inputs had other names and order (and seeds that randomised after every run); each one here takes the old
inputs and runs the current node. The frontend maps saved widget values by position, so the old order, and the
old seed's "control after generate" widget, must stay exactly as they were.
"""

from .sampling import DDIMInvert, VideoKSampler
from .tuning import OneShotTune


def legacy(node, old_order: list[str], renames: dict[str, str]):
    """A deprecated node with ``node``'s behaviour under the old input names (``renames``: old -> new)."""
    def input_types(cls):
        spec = node.INPUT_TYPES()
        required = spec["required"]
        old = {}
        for name in old_order:
            kind, options = required[renames.get(name, name)]
            if name == "seed":
                options = {**options, "control_after_generate": True}
            old[name] = (kind, options)
        return {**spec, "required": old}

    def run(self, **inputs):
        return getattr(node, node.FUNCTION)(self, **{renames.get(k, k): v for k, v in inputs.items()})

    return type(f"Legacy{node.__name__}", (node,), {"DEPRECATED": True, "TITLE": f"{node.TITLE} (old)",
                                                    "INPUT_TYPES": classmethod(input_types), "FUNCTION": "run_legacy",
                                                    "run_legacy": run})


LEGACY_NODES = {
    "TuneAVideoOneShotTune": legacy(OneShotTune, ["model", "conditioning", "latent", "steps", "learning_rate", "seed",
                                                  "save_name"], {"conditioning": "positive", "latent": "latent_image"}),
    "TuneAVideoDDIMInvert": legacy(DDIMInvert, ["model", "latent", "conditioning", "steps"], {"latent": "latent_image"}),
    "TuneAVideoVideoKSampler": legacy(VideoKSampler, ["model", "positive", "negative", "latent", "cfg", "steps", "eta",
                                                      "seed"], {"latent": "latent_image"}),
}
