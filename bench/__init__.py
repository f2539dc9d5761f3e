"""Benchmarks: each script writes its numbers to bench/results/<name>.json (see docs/benchmarks.md)."""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def save_results(name: str, report: dict) -> Path:
    """Write ``report`` to bench/results/<name>.json whole (temp file, then rename) and say where."""
    from tav_core.files import atomic_path
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    print(f"written {path}")
    return path
