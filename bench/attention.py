"""Attention paths per shape on the CPU: torch's fused ``scaled_dot_product_attention`` against the plain
``softmax(q k^T / sqrt(d)) v`` in matmuls, forward and backward, one thread, the two alternated.

    python -m bench.attention       # SD1.5's shapes at 512x512 (latent sides 64 to 8), the small and tiny models'
    python -m bench.attention --forward-only

Shapes are (batch x heads, queries, keys, head dim) as the UNet calls them, laid out as its projections give them
(views of (batch, tokens, heads x dim)); batches are cut to a few thousand rows where the real ones are larger
(time is linear in the batch; the ratio is what counts). The engine's choice
(``tav_core.model.attention.plain_is_faster``) is printed beside each measured ratio.
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from tav_core.model.attention import plain_attention, plain_is_faster

SHAPES = [  # (kind, batch x heads, queries, keys, head dim)
    ("temporal, SD1.5 24f, side 64", 4096 * 8 // 16, 24, 24, 40),
    ("temporal, SD1.5 8f, side 64", 4096 * 8 // 16, 8, 8, 40),
    ("temporal, SD1.5 16f, side 64", 4096 * 8 // 16, 16, 16, 40),
    ("temporal, SD1.5 32f, side 64", 4096 * 8 // 16, 32, 32, 40),
    ("temporal, SD1.5 48f, side 64", 4096 * 8 // 16, 48, 48, 40),
    ("temporal, SD1.5 24f, side 32", 1024 * 8 // 4, 24, 24, 80),
    ("temporal, SD1.5 24f, side 8", 64 * 8, 24, 24, 160),
    ("temporal, tiny test model", 256 * 2, 8, 8, 8),
    ("temporal, small model 8f", 256 * 8, 8, 8, 16),
    ("temporal, tiny test model 24f", 256 * 2, 24, 24, 8),
    ("temporal, small model 24f", 256 * 8, 24, 24, 16),
    ("sparse-causal, SD1.5 side 64", 2, 4096, 8192, 40),
    ("sparse-causal, SD1.5 side 32", 8 * 2, 1024, 2048, 80),
    ("sparse-causal, SD1.5 side 16", 8 * 8, 256, 512, 160),
    ("cross, SD1.5 side 64", 8, 4096, 77, 40),
    ("cross, SD1.5 side 16", 8 * 8, 256, 77, 160),
    ("sparse-causal, tiny test model", 8 * 2, 256, 512, 8),
    ("sparse-causal, small model 128px", 8 * 8, 256, 512, 8),
    ("cross, small model 128px", 8 * 8, 256, 77, 8),
]


def _time(fn, q, k, v, backward: bool) -> float:
    start = time.perf_counter()
    out = fn(q, k, v)
    if backward:
        torch.autograd.grad(out.sum(), (q, k, v))
    return time.perf_counter() - start


def measure(shape, repeats: int, backward: bool) -> dict:
    kind, batch, queries, keys, dim = shape
    g = torch.Generator().manual_seed(0)
    heads = 2 if batch % 2 == 0 else 1  # laid out as the UNet's projections give them: (b, n, h d) -> (b, h, n, d)
    q, k, v = (torch.randn(batch // heads, n, heads * dim, generator=g).requires_grad_(backward)
               .unflatten(-1, (heads, dim)).transpose(1, 2) for n in (queries, keys, keys))
    times = {"fused": [], "plain": []}
    for _ in range(repeats + 1):  # the first round warms both up and is dropped
        for name, fn in (("fused", F.scaled_dot_product_attention), ("plain", plain_attention)):
            times[name].append(_time(fn, q, k, v, backward))
    fused, plain = (statistics.median(times[n][1:]) for n in ("fused", "plain"))
    return {"kind": kind, "batch": batch, "queries": queries, "keys": keys, "dim": dim, "fused_ms": fused * 1e3,
            "plain_ms": plain * 1e3, "plain_speedup": fused / plain,
            "engine_takes": "plain" if plain_is_faster(q, k) else "fused"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--forward-only", action="store_true", help="inference (inversion, sampling) instead of tuning")
    p.add_argument("--name", default="attention-cpu")
    args = p.parse_args(argv)
    from bench import save_results
    torch.set_num_threads(1)
    rows = []
    head = f"{'shape':40} {'b x h':>6} {'q':>5} {'k':>5} {'d':>4} {'fused ms':>9} {'plain ms':>9} {'plain x':>8} engine"
    print(head + "\n" + "-" * len(head))
    for backward in ([False] if args.forward_only else [True, False]):
        for shape in SHAPES:
            r = {**measure(shape, args.repeats, backward), "backward": backward}
            rows.append(r)
            print(f"{r['kind'][:40]:40} {r['batch']:>6} {r['queries']:>5} {r['keys']:>5} {r['dim']:>4} "
                  f"{r['fused_ms']:>9.2f} {r['plain_ms']:>9.2f} {r['plain_speedup']:>8.2f} {r['engine_takes']}"
                  f"{'' if backward else '  (forward only)'}", flush=True)
    save_results(args.name, {"command": " ".join(["python -m bench.attention", *(argv or sys.argv[1:])]),
                             "threads": 1, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
