"""The first release's node IDs, kept so that saved workflows still load and run (hidden from search).

Their inputs had other names and order (and seeds that randomised after every run); each one here takes the old
inputs and runs the current node. The frontend maps saved widget values by position, so the old order, and the
old seed's "control after generate" widget, must stay exactly as they were.
"""

import copy

from .sampling import DDIMInvert, VideoKSampler
from .tuning import OneShotTune


def legacy(node, node_id: str, old_order: list[str], renames: dict[str, str]):
    """A deprecated node ``node_id`` with ``node``'s behaviour under the old input names (``renames``: old -> new),
    in the old order; the optional inputs added since follow them."""
    class Legacy(node):
        @classmethod
        def define_schema(cls):
            schema = node.define_schema()
            current = {i.id: i for i in schema.inputs}
            old = []
            for name in old_order:
                spec = copy.copy(current[renames.get(name, name)])
                spec.id = name
                if name == "seed":
                    spec.control_after_generate = True
                old.append(spec)
            schema.inputs = old + [i for i in schema.inputs if i.optional]
            schema.node_id, schema.display_name, schema.is_deprecated = node_id, f"{node.TITLE} (old)", True
            return schema

        @classmethod
        def execute(cls, **inputs):
            return super().execute(**{renames.get(k, k): v for k, v in inputs.items()})

    Legacy.__name__ = Legacy.__qualname__ = f"Legacy{node.__name__}"
    return Legacy


LEGACY_NODES = [
    legacy(OneShotTune, "TuneAVideoOneShotTune", ["model", "conditioning", "latent", "steps", "learning_rate", "seed",
                                                  "save_name"], {"conditioning": "positive", "latent": "latent_image"}),
    legacy(DDIMInvert, "TuneAVideoDDIMInvert", ["model", "latent", "conditioning", "steps"], {"latent": "latent_image"}),
    legacy(VideoKSampler, "TuneAVideoVideoKSampler", ["model", "positive", "negative", "latent", "cfg", "steps", "eta",
                                                      "seed"], {"latent": "latent_image"}),
]
