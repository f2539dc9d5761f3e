"""The whole job side by side: the reference's (showlab/Tune-A-Video: ``train_tuneavideo.py`` with its
``man-skiing.yaml``, then its README's inference) against this engine's (``tuneavideo run``: tune, invert, edit), on
the same random-weight model with SD1.5's head widths (``bench.models.WIDE``), on the CPU at one thread, each job in
its own process, the two alternated.

    python -m bench.job                  # 24 frames of 128x128, every count at 1/25 of the config's
    python -m bench.job --scale 1        # the config's counts: hours on this CPU

The reference's job, as its code runs it: every tuning step encodes the clip with the VAE (a posterior sample) and
the prompt with the text encoder, and runs the UNet with gradient checkpointing (its configs set it) in plain
attention (its attention without xformers, which a CPU lacks); only the tuned layers require grad. Every
``validation_steps`` it inverts that step's latents (DDIM, empty prompt, ``num_inv_steps``) and samples each of its
four validation prompts from them (DDIM, CFG 12.5), decoding each video. After tuning, its README's inference samples
the edit from the last inverted latents and decodes it.
This engine's job: the clip encoded once (tuning draws a posterior sample from it every step), tuning without
checkpointing (the memory plan needs none here), inversion, one edit, its decode.
Neither side counts loading the model or writing files (the reference's GIFs and saved pipeline).

The counts scale together (``--scale``: 500 tuning steps, validation every 100, 50 inversion and 50 sampling steps
at 1): the number of validations and of sampled videos stays the config's, so each video's decoding is counted as
often as at full counts. Each job at the config's counts is estimated from its stages: tuning, inversion and
sampling over the scale, encoding and decoding as measured.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

from bench import run_child, save_results

VALIDATION_PROMPTS = ["mickey mouse is skiing on the snow", "spider man is skiing on the beach, cartoon style",
                      "wonder woman, wearing a cowboy hat, is skiing", "a man, wearing pink clothes, is skiing at sunset"]
PROMPT, EDIT = "a man is skiing", "spider man is skiing on the beach, cartoon style"


@dataclass
class Job:
    recipe: str = "engine"   # "engine" or "reference"
    frames: int = 24
    size: int = 128
    scale: float = 0.04

    def count(self, full: int) -> int:
        return max(1, round(full * self.scale))

    @property
    def steps(self):
        return self.count(500)

    @property
    def validation_every(self):
        return self.count(100)

    @property
    def ddim_steps(self):
        return self.count(50)


class Clock:
    """Seconds and calls per stage, summed over repeats."""

    def __init__(self):
        self.seconds, self.calls = {}, {}

    def __call__(self, stage: str, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        self.calls[stage] = self.calls.get(stage, 0) + 1
        return out


def engine_job(pipe, video, job: Job, clock: Clock) -> None:
    from tav_core import TuneConfig
    latents, std = clock("encode", pipe.encode_posterior, video)
    clock("tune", pipe.tune, latents, PROMPT, TuneConfig(steps=job.steps), progress=False, latent_std=std)
    noise = clock("invert", pipe.invert, latents, job.ddim_steps)
    edited = clock("edit", pipe.sample, noise, EDIT, guidance_scale=12.5, steps=job.ddim_steps)
    clock("decode", pipe.decode, edited)


def reference_job(pipe, video, job: Job, clock: Clock) -> None:
    import torch

    from bench.baseline import BaselineTuner, reference_attention

    def sample(stage, noise, prompt):
        clock(f"{stage} decode" if stage == "validation" else "decode", pipe.decode,
              clock(stage, pipe.sample, noise, prompt, guidance_scale=12.5, steps=job.ddim_steps))

    pixels = torch.from_numpy(video).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    with reference_attention(pipe.c.unet):
        tuner = BaselineTuner(pipe, pixels, PROMPT, every_parameter=False)
        for step in range(1, job.steps + 1):
            clock("tune", tuner.step)
            if step % job.validation_every == 0:
                with torch.no_grad():
                    noise = clock("invert", pipe.invert, tuner.latents.detach(), job.ddim_steps)
                    for prompt in VALIDATION_PROMPTS:
                        sample("validation", noise, prompt)
        with torch.no_grad():
            sample("edit", noise, EDIT)


def measure(job: Job) -> dict:
    import torch

    from bench.models import bench_components
    from tav_core import TuneAVideo, demo_video
    torch.set_num_threads(1)
    reference = job.recipe == "reference"
    pipe = TuneAVideo(bench_components("wide"), "cpu", gradient_checkpointing=reference)
    video, clock = demo_video(job.frames, job.size, job.size), Clock()
    start = time.perf_counter()
    (reference_job if reference else engine_job)(pipe, video, job, clock)
    return {**asdict(job), "steps": job.steps, "validation_every": job.validation_every, "ddim_steps": job.ddim_steps,
            "seconds": clock.seconds, "calls": clock.calls, "total_s": time.perf_counter() - start}


STAGES = ["encode", "tune", "invert", "validation", "validation decode", "edit", "decode"]
SCALED = ("tune", "invert", "validation", "edit")  # their counts or steps scale; encoding and decoding do not


def summary(rows: list[dict], scale: float) -> dict:
    """Per recipe the median seconds of each stage and of the total over the rounds, the ratios reference/engine, and
    both jobs at the config's counts: the scaled stages' seconds over the scale, the rest as they are."""
    import statistics
    out = {}
    for recipe in ("reference", "engine"):
        runs = [r for r in rows if r["recipe"] == recipe]
        out[recipe] = {s: statistics.median(r["seconds"].get(s, 0.0) for r in runs) for s in STAGES}
        out[recipe]["total_s"] = statistics.median(r["total_s"] for r in runs)
        out[recipe]["full_counts_s"] = sum(v / scale if s in SCALED else v for s, v in out[recipe].items()
                                           if s in STAGES)
    out["speedup"] = {s: out["reference"][s] / out["engine"][s]
                      for s in ("tune", "invert", "edit", "decode", "total_s", "full_counts_s")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--scale", type=float, default=0.04,
                   help="the steps' share of the config's (1: 500 tuning steps; validations stay five)")
    p.add_argument("--rounds", type=int, default=2, help="jobs per recipe, alternated")
    p.add_argument("--name", default="job-cpu")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Job(**json.loads(args.child)))))
        return 0
    rows = []
    for i in range(args.rounds):
        for recipe in ("reference", "engine") if i % 2 == 0 else ("engine", "reference"):
            rows.append(run_child("bench.job", asdict(Job(recipe, args.frames, args.size, args.scale))))
            r = rows[-1]
            print(f"{recipe:9} total {r['total_s']:7.1f} s  " +
                  "  ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items()), flush=True)
    report = {"command": " ".join(["python -m bench.job", *(argv or sys.argv[1:])]), "threads": 1,
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rows": rows, "summary": summary(rows, args.scale)}
    s = report["summary"]
    print("\n" + "  ".join(f"{k} {v:.2f}x" for k, v in s["speedup"].items()))
    save_results(args.name, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
