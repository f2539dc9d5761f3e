"""ComfyUI adapters over tav_core (the nodes are registered here)."""

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
