"""Does One-Shot Tune's forecast hold? Its predicted step time against real tuning steps in ComfyUI, on this device.

    OMP_WAIT_POLICY=PASSIVE python -m bench.duration                 # the test checkpoint on the CPU, 1 thread
    python -m bench.duration --device cuda --threads 0               # on a GPU

For each case (frames, size, precision): the node's plan's FLOPs per step, the probe's rate
(``tav_core.memory.duration.measured_rate``), and the mean time of real tuning steps after the first (which warms
up) through the node's own ``tune_model``; ``step_share`` is the rate the steps reached over the probe's, the
number ``duration.STEP_SHARE`` stands for. Results: bench/results/duration-<device>.json.
"""

import argparse
import statistics
import time
import warnings

import torch

from bench import save_results
from tests.comfy.in_process import CHECKPOINT, import_pack

CASES = [(4, 128, "no"), (8, 128, "no"), (4, 256, "no"), (2, 512, "no"), (8, 128, "bf16")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--steps", type=int, default=4, help="tuning steps per case (the first is not timed)")
    p.add_argument("--cases", type=int, nargs="*", help="which of CASES (indices; default all)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import_pack()
    import comfy.ldm.modules.attention
    import comfy.sd
    from tav_pack.nodes.memory_plan import plan_comfy_tuning, tuning_settings
    from tav_pack.nodes.tuning import tune_model
    from tav_pack.nodes.video_model import inflate_model, temporal_layers
    from tav_pack.tav_core.memory.duration import STEP_SHARE, measured_rate
    from tav_pack.tav_core.precision import PRECISIONS
    from tav_pack.tav_core.tuning.tune import TuneConfig

    rows = []
    with torch.inference_mode():  # as ComfyUI runs nodes
        model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT), output_vae=False,
                                                                    output_clip=False)[0])
        for frames, size, precision in [CASES[i] for i in args.cases] if args.cases else CASES:
            samples, cond = torch.randn(frames, 4, size // 8, size // 8), torch.randn(1, 77, 768)
            config = TuneConfig(steps=args.steps, posterior="mean", mixed_precision=precision)
            dtype = PRECISIONS[precision] or torch.float32
            flops = plan_comfy_tuning(model, tuning_settings(model, samples, config, False)).flops
            rate = measured_rate(args.device, dtype, (size // 8) ** 2, comfy.ldm.modules.attention.optimized_attention)
            times = []
            last = [time.perf_counter()]

            def step_done(step, loss):
                now = time.perf_counter()
                times.append(now - last[0])
                last[0] = now
            tune_model(model, temporal_layers(model), cond, samples, config, callback=step_done)
            measured = statistics.mean(times[1:])
            predicted = flops / (rate * STEP_SHARE)
            rows.append({"frames": frames, "size": size, "autocast": precision, "tflop_per_step": flops / 1e12,
                         "probe_gflops": rate / 1e9, "measured_step_s": measured, "predicted_step_s": predicted,
                         "predicted_over_measured": predicted / measured, "step_share": flops / measured / rate})
            print(f"{frames:2} frames {size}px {precision:4}: predicted {predicted:6.2f} s, measured {measured:6.2f} s "
                  f"(x{predicted / measured:.2f}); step share {flops / measured / rate:.2f}", flush=True)
    shares = [r["step_share"] for r in rows]
    save_results(f"duration-{args.device}", {
        "command": f"python -m bench.duration --device {args.device} --threads {args.threads} --steps {args.steps}",
        "checkpoint": CHECKPOINT.name, "threads": torch.get_num_threads(), "step_share_used": STEP_SHARE,
        "step_share_median": statistics.median(shares), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
