"""Plans kept on disk: a stage is planned once for a model, its settings and this code; later runs read the plan.

A plan depends on the model's architecture (its configs), the stage, the settings (clip, precision, memory options),
the device type and the code that traces it (this engine's source, torch's, diffusers' and transformers' versions).
The key hashes all of them, so a change in any one plans afresh (a host's planning adds its own code to the key:
ComfyUI's nodes, ``nodes/memory_plan.py``). Plans are small JSON files in
``$TUNEAVIDEO_CACHE/plans`` (default ``$XDG_CACHE_HOME/tuneavideo``, else ``~/.cache/tuneavideo``);
``TUNEAVIDEO_CACHE=off`` turns it off. A cache that cannot be read or written costs only the planning time.
"""

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, fields
from functools import cache
from importlib.metadata import version
from pathlib import Path

from ..files import atomic_path
from .trace import Plan, Settings

ENGINE = Path(__file__).parents[1]  # tav_core: its source is part of every key


def cache_folder() -> Path | None:
    """Where plans are kept, or None when the cache is off."""
    chosen = os.environ.get("TUNEAVIDEO_CACHE")
    if chosen == "off":
        return None
    if chosen:
        return Path(chosen) / "plans"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tuneavideo" / "plans"


@cache
def code_version() -> str:
    """A hash of this engine's source and the versions of the libraries whose modules and ops a plan traces."""
    digest = hashlib.sha256()
    for path in sorted(ENGINE.rglob("*.py")):
        digest.update(path.relative_to(ENGINE).as_posix().encode() + b"\0" + path.read_bytes())
    for package in ("torch", "diffusers", "transformers", "peft"):
        digest.update(f"{package} {version(package)}".encode())
    return digest.hexdigest()


def files_version(paths) -> str:
    """A hash of these files' bytes (a host's own planning code)."""
    digest = hashlib.sha256()
    for path in sorted(map(Path, paths)):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def architecture(configs) -> dict:
    """A ``ModelConfigs``' architecture: its configs without the keys that start with ``_`` (the file's, not the
    model's)."""
    return {name: {k: v for k, v in part.items() if not k.startswith("_")} if isinstance(part, dict) else part
            for name, part in asdict(configs).items()}


def plan_key(model: dict, stage: str, settings: Settings, device_type: str, host_code: str = "") -> str:
    """The hash of everything the plan of ``stage`` depends on: ``model`` describes the architecture (and whatever
    else of the model shapes the plan), ``host_code`` the version of a host's planning code."""
    described = json.dumps([model, stage, repr(settings), device_type, code_version(), host_code], sort_keys=True,
                           default=str)
    return hashlib.sha256(described.encode()).hexdigest()


def cached_plan(model: dict, stage: str, settings: Settings, device_type: str, plan: Callable[[], Plan],
                host_code: str = "") -> Plan:
    """The plan on disk for this key (``plan_key``), else ``plan()``, then kept."""
    folder = cache_folder()
    if folder is None:
        return plan()
    path = folder / f"{plan_key(model, stage, settings, device_type, host_code)}.json"
    try:
        kept = json.loads(path.read_text())
        if set(kept) == {f.name for f in fields(Plan)}:
            return Plan(**kept)
    except (OSError, ValueError, TypeError):
        pass  # not planned yet, or unreadable: plan again
    made = plan()
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(asdict(made)))
    except OSError:
        pass  # a folder that cannot be written: the next run plans again
    return made
