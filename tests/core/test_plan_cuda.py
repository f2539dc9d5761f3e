"""A plan for CUDA runs GroupNorm and LayerNorm in float32 under autocast, as CUDA's autocast does (on an H200 this
made the planned saved bytes of SD1.5's tuning step equal the measured ones: docs/benchmarks.md#on-a-gpu). Here: the
norms compute exactly that, and the plan equals what a run computing so keeps for backward, with and without
gradient checkpointing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tav_core import TuneAVideo, TuneConfig, demo_video
from tav_core.loading.tiny import tiny_components
from tav_core.memory.trace import Settings, as_on_cuda, plan_pipeline


def test_norms_compute_in_float32_under_autocast_and_as_before_without():
    torch.manual_seed(0)
    group, layer = nn.GroupNorm(4, 8), nn.LayerNorm(8)
    x = torch.randn(2, 8, 4, 4)
    plain = group(x), layer(x.transpose(1, -1))
    as_on_cuda([nn.Sequential(group, layer)])
    with torch.autocast("cpu", torch.bfloat16):
        half = x.bfloat16()
        grouped, layered = group(half), layer(half.transpose(1, -1))
    assert grouped.dtype == layered.dtype == torch.float32  # CUDA's autocast: float32 in, float32 out
    assert torch.equal(grouped, F.group_norm(half.float(), 4, group.weight, group.bias, group.eps))
    assert torch.equal(layered, F.layer_norm(half.transpose(1, -1).float(), (8,), layer.weight, layer.bias, layer.eps))
    assert all(torch.equal(a, b) for a, b in zip((group(x), layer(x.transpose(1, -1))), plain))  # no autocast


def saved_bytes(pipe, latents, config) -> int:
    """Bytes of the tensors a real tuning step keeps for backward (the weights' own storage excluded)."""
    weights = {p.untyped_storage().data_ptr() for m in (pipe.c.unet, pipe.c.vae, pipe.c.text_encoder)
               for p in m.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr(), storage.nbytes()] = storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pipe.tune(latents, "a red square", config, progress=False)
    return sum(seen.values())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_cuda_plan_keeps_what_a_run_with_float32_norms_keeps(checkpointing):
    settings = Settings(4, 64, 64, mixed_precision="bf16", gradient_checkpointing=checkpointing)
    pipe = TuneAVideo(tiny_components(0), gradient_checkpointing=checkpointing)
    latents = pipe.encode_video(demo_video(4, 64, 64))
    config = TuneConfig(steps=1, posterior="mean", mixed_precision="bf16")
    on_cpu = saved_bytes(pipe, latents, config)
    as_on_cuda([pipe.c.unet])  # the real model, computing its norms as on CUDA
    as_cuda = saved_bytes(pipe, latents, config)
    plan = lambda device_type: plan_pipeline(dict(pipe.c.unet.config), settings, count_flops=False,
                                             device_type=device_type).saved
    planned_cpu, planned_cuda = plan("cpu"), plan("cuda")
    assert planned_cuda == as_cuda > on_cpu, (planned_cuda, as_cuda, on_cpu)  # byte for byte, and more than on a CPU
    assert abs(planned_cpu / on_cpu - 1) < 5e-3, (planned_cpu, on_cpu)  # (CPU autocast: within 0.3% measured)
