"""ComfyUI and this pack imported in this process, as ComfyUI imports them (CPU, no server): for the scripts beside
this one that call the nodes' code directly, and for the benchmarks."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMFYUI = ROOT / ".cache" / "ComfyUI"
CHECKPOINT = ROOT / ".cache" / "test-models" / "tiny-sd15.safetensors"


def import_pack():
    """ComfyUI's modules and this pack, imported as ComfyUI imports them (CPU, no server)."""
    sys.path.insert(0, str(COMFYUI))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.cli_args
    import utils.extra_config  # noqa: F401  (ComfyUI's utils package first, as its main.py does)
    comfy.cli_args.args.cpu = True
    spec = importlib.util.spec_from_file_location("tav_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["tav_pack"] = pack
    spec.loader.exec_module(pack)
    return pack
