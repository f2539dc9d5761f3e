"""What null-text inversion and attention control cost against a plain Tune-A-Video edit.

    python -m bench.editing --model small --frames 8 --size 128 --steps 10

Cases, each in its own process, each against its plain counterpart: null-text inversion (10 inner iterations)
against DDIM inversion; the source and edit branches sampled together (without control, with word-swap attention
control, with control and local blend, whose stored maps are reported) against the plain edit's CFG sampling.
Memory: the peak bytes of the tensors the case allocates (``bench.run.peak_bytes``: exact on the CPU, CUDA's
max-allocated on a GPU), in a second run after the timed one. Results go to bench/results/<name>.json and a table.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import save_results
from bench.run import peak_bytes

BASELINE = {"DDIM inversion": None, "null-text inversion": "DDIM inversion", "plain edit sampling": None,
            "two branches": "plain edit sampling", "attention control": "plain edit sampling",
            "control + local blend": "plain edit sampling"}
SOURCE, EDIT = "a red square moving over a gradient", "a yellow square moving over a gradient"


def measure(case: str, model: str, frames: int, size: int, steps: int, device: str) -> dict:
    import torch

    from bench.models import bench_components
    from tav_core import TuneAVideo, demo_video
    from tav_core.editing.attention_control import AttentionController, EditControl
    from tav_core.editing.edit import edit, null_text_invert

    torch.manual_seed(0)
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    pipe = TuneAVideo(bench_components(model), device)
    latents = pipe.encode_video(demo_video(frames, size, size))
    noise = pipe.invert(latents, steps)  # made before the clock for the sampling cases
    stored = {}

    def run():
        if case == "DDIM inversion":
            pipe.invert(latents, steps, SOURCE)
        elif case == "plain edit sampling":
            pipe.sample(noise, EDIT, guidance_scale=7.5, steps=steps)
        elif case == "null-text inversion":
            null_text_invert(pipe, latents, SOURCE, steps, 7.5, inner_steps=10)
        else:
            blend = (["square"], ["square"]) if case == "control + local blend" else None
            control = EditControl(SOURCE, EDIT, blend_words=blend)
            original = AttentionController.after_step

            def spy(self, i, x):
                stored["blend_maps_bytes"] = sum(m.numel() * m.element_size() for m in self.maps.values())
                return original(self, i, x)
            AttentionController.after_step = spy
            edit(pipe, noise, control, guidance_scale=7.5, steps=steps, attention_control=case != "two branches")
            AttentionController.after_step = original

    sync()
    start = time.perf_counter()
    run()
    sync()
    seconds = time.perf_counter() - start
    _, peak = peak_bytes(device, run)
    return {"case": case, "model": model, "frames": frames, "size": size, "steps": steps, "device": str(device),
            "seconds": seconds, "peak_mb": peak / 2 ** 20, **stored}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", choices=["small", "sd15"])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", help="results file name (default from the options)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    settings = dict(model=args.model, frames=args.frames, size=args.size, steps=args.steps, device=args.device)
    if args.child:
        print(json.dumps(measure(args.child, **settings)))
        return 0
    rows = {}
    for case, baseline in BASELINE.items():
        out = subprocess.run([sys.executable, "-m", "bench.editing", "--child", case, *sum(
            ([f"--{k}", str(v)] for k, v in settings.items()), [])], capture_output=True, text=True,
            cwd=Path(__file__).parents[1])
        if out.returncode != 0:
            raise RuntimeError(f"case {case} failed:\n{out.stderr[-3000:]}")
        row = rows[case] = json.loads(out.stdout.strip().splitlines()[-1])
        plain = rows[baseline] if baseline else row
        row["time_ratio"], row["memory_ratio"] = row["seconds"] / plain["seconds"], row["peak_mb"] / plain["peak_mb"]
        maps = f"  blend maps {row['blend_maps_bytes'] / 1024:.1f} KB" if "blend_maps_bytes" in row else ""
        print(f"{case:24} {row['seconds']:8.2f} s ({row['time_ratio']:.2f}x)  {row['peak_mb']:8.0f} MB "
              f"({row['memory_ratio']:.2f}x){maps}", flush=True)
    name = args.name or f"editing-{args.model}-{args.device}-f{args.frames}-s{args.size}"
    save_results(name, {"command": " ".join(["python -m bench.editing", *(argv or sys.argv[1:])]),
                        "rows": list(rows.values())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
