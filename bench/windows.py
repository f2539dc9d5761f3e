"""How much overlapping frame windows change an edit against the whole clip at once (tiny model, CPU).

    python -m bench.windows                       # 32 frames, windows of 8 overlapping by 4, 10 DDIM steps

The tiny random model has non-zero temporal layers (as after tuning). For DDIM inversion and CFG sampling (from
the same inverted noise): the max and mean difference of the windowed result to the whole-clip one, relative to
the whole clip's max and mean magnitude; beside them the same measure for windows that are clips of their own
(each window's frame 0 its anchor, as context windows without Tune-A-Video's anchor would run) and the floor:
the whole-clip computation with its input moved by one float32 ulp (what rounding alone does through the chain).
Results: bench/results/windows.json.
"""

import argparse
import sys
from contextlib import contextmanager

import torch

from bench import save_results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    from tav_core import TuneAVideo, demo_video
    from tav_core.loading.tiny import tiny_components
    from tav_core.sampling.windows import ContextWindows, Passes, Windowed

    pipe = TuneAVideo(tiny_components(0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, q in pipe.c.unet.named_parameters():
            if "attn_temp" in name or "norm_temp" in name:
                q.copy_(torch.randn(q.shape, generator=g) * 0.2 + (1.0 if name.endswith("norm_temp.weight") else 0))
    latents = pipe.encode_video(demo_video(args.frames, 64, 64))
    windows = ContextWindows(args.length, args.overlap)

    class Unanchored(Windowed):
        """Each window a clip of its own: no keys kept across windows."""
        def parts(self, clips, device):
            for indices, weights in self.plan:
                @contextmanager
                def run(indices=indices):
                    with pipe.inflation.video(len(indices)):
                        yield
                yield self.rows(clips, indices, device), weights.to(device).repeat(clips), run

    def run_all(passes, model=None, shift=0.0):
        original = pipe.model
        if model is not None:
            pipe.model = lambda frames, p=Passes(), on_window=None: model(original(frames), frames, windows,
                                                                          pipe.inflation.video)
        try:
            ulp = lambda x: x + shift * x.abs().clamp(min=1e-30) * torch.finfo(torch.float32).eps
            noise = pipe.invert(ulp(latents), args.steps, passes=passes)
            return noise, pipe.sample(ulp(whole_noise), "a yellow square", steps=args.steps, passes=passes)
        finally:
            pipe.model = original

    whole_noise = pipe.invert(latents, args.steps)
    whole = (whole_noise, pipe.sample(whole_noise, "a yellow square", steps=args.steps))
    cases = {"anchored windows": run_all(Passes(windows=windows)),
             "unanchored windows": run_all(Passes(windows=windows), Unanchored),
             "whole clip, input moved 1 ulp": run_all(Passes(), shift=1.0)}
    rows = {}
    for case, results in cases.items():
        for stage, ours, reference in zip(("inversion", "sampling"), results, whole):
            rows[f"{stage}: {case}"] = {
                "max_relative": ((ours - reference).abs().max() / reference.abs().max()).item(),
                "mean_relative": ((ours - reference).abs().mean() / reference.abs().mean()).item()}
            print(f"{stage:9} {case:32} max {rows[f'{stage}: {case}']['max_relative']:.2e}  "
                  f"mean {rows[f'{stage}: {case}']['mean_relative']:.2e}")
    save_results("windows", {"command": " ".join(["python -m bench.windows", *(argv or sys.argv[1:])]), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
