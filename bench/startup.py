"""Start-up of the command line: seconds to each command's first line (arguments and paths checked, before any model
code is imported), to its second (the model code imported: planning or loading begins) and to its end, against a
bare ``import torch``; and where the import time goes (``python -X importtime``, the top-level modules).

    python -m bench.startup                   # 5 rounds, the commands alternated: the built-in tiny model, 4 frames

Each command runs in a fresh process on the built-in tiny model (``score`` on a tiny random CLIP), with the plan
cache in a folder of its own, warmed by a first round that is not counted, so what is left is start-up itself.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ("run", "tune", "edit", "score")


def command_line(command: str, folder: Path) -> list[str]:
    small = ["--frames", "4", "--width", "64", "--height", "64"]
    return {"run": ["run", *small, "--tune-steps", "3", "--steps", "4", "--weights", str(folder / "r.safetensors"),
                    "--out", str(folder / "run.mp4")],
            "tune": ["tune", *small, "--tune-steps", "3", "--weights", str(folder / "w.safetensors")],
            "edit": ["edit", *small, "--steps", "4", "--weights", str(folder / "w.safetensors"),
                     "--out", str(folder / "edit.mp4")],
            "score": ["score", "--video", str(folder / "edit.mp4"), "--clip", str(folder / "clip"), "--prompt",
                      "a cat", "--out", str(folder / "score.json")]}[command]


def timed(argv: list[str], env: dict) -> dict:
    """Seconds from start to each line the process prints, and to its end."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).parents[1])
    lines = [time.perf_counter() - start for _ in process.stdout]
    error = process.stderr.read()
    if process.wait() != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{error[-2000:]}")
    return {"lines": lines, "end": time.perf_counter() - start}


PACKAGES = ("torch", "diffusers", "transformers", "scipy", "torchvision")  # the heavy ones a command may import


def import_costs(argv: list[str], env: dict, count: int = 6) -> dict:
    """From ``-X importtime``: the seconds of all top-level imports, the ``count`` costliest of them, and each heavy
    package's cost where it was first imported (its outermost entry's cumulative time, what it brought in included)."""
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).parents[1])
    entries = [(len(m.group(2)) - len(m.group(2).lstrip()), m.group(2).strip(), int(m.group(1)) / 1e6)
               for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| (.*)$", out.stderr, re.M)]
    top = sorted([(name, s) for depth, name, s in entries if depth == 0], key=lambda item: -item[1])
    packages = {p: max((s for _, name, s in entries if name.split(".")[0] == p), default=0.0) for p in PACKAGES}
    return {"imports_s": sum(s for _, s in top), "top_imports": top[:count], "packages_s": packages}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--name", default="startup-cpu")
    args = p.parse_args(argv)
    from bench import save_results
    from bench.models import save_tiny_clip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_tiny_clip(folder / "clip")
        env = {**os.environ, "TUNEAVIDEO_CACHE": str(folder / "cache"), "TQDM_DISABLE": "1"}
        tav = [sys.executable, "-m", "tav_core"]
        for command in COMMANDS:  # the weights, edit and plans the counted rounds use
            timed([*tav, *command_line(command, folder)], env)
        times = {name: [] for name in ("import torch", *COMMANDS)}
        for _ in range(args.rounds):
            times["import torch"].append(timed([sys.executable, "-c", "import torch"], env))
            for command in COMMANDS:
                times[command].append(timed([*tav, *command_line(command, folder)], env))
        imports = {name: import_costs(["-c", "import torch"] if name == "import torch" else
                                      ["-m", "tav_core", *command_line(name, folder)], env) for name in times}
    rows = []
    median = lambda values: statistics.median(values) if values else None
    for name, runs in times.items():
        row = {"command": name, "first_line_s": median([r["lines"][0] for r in runs if r["lines"]]),
               "second_line_s": median([r["lines"][1] for r in runs if len(r["lines"]) > 1]),
               "end_s": median([r["end"] for r in runs]), **imports[name]}
        rows.append(row)
        first = "-" if row["first_line_s"] is None else f"{row['first_line_s']:.2f}"
        second = "-" if row["second_line_s"] is None else f"{row['second_line_s']:.2f}"
        print(f"{name:13} first line {first:>5} s  second {second:>5} s  end {row['end_s']:5.2f} s  imports "
              f"{row['imports_s']:5.2f} s: " + ", ".join(f"{m} {s:.2f}" for m, s in row["packages_s"].items() if s))
    save_results(args.name, {"command": " ".join(["python -m bench.startup", *(argv or sys.argv[1:])]),
                             "rounds": args.rounds, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
