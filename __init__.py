"""ComfyUI entry point: ComfyUI imports this folder as a custom node pack.

Outside ComfyUI (pytest, tools) there is no ``folder_paths`` and nothing is registered; the headless engine
is the ``tav_core`` package.
"""

try:
    import folder_paths  # noqa: F401  (only inside ComfyUI)
except ImportError:
    pass
else:
    from .nodes import comfy_entrypoint  # noqa: F401  (ComfyUI calls it for the node list)

WEB_DIRECTORY = "./web"  # docs/<NodeId>/en.md: the pages the editor's node docs panel shows (its first URL)
