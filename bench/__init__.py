"""Benchmarks: each script writes its numbers to bench/results/<name>.json (see docs/benchmarks.md)."""

import json
import subprocess
import sys
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


def run_child(module: str, payload) -> dict:
    """Run ``python -m <module> --child <payload as JSON>`` in a fresh process (so its peak memory is its own) and
    return the JSON of its last line; a failure raises with the end of its stderr."""
    out = subprocess.run([sys.executable, "-m", module, "--child", json.dumps(payload)], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"{module} {payload} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
