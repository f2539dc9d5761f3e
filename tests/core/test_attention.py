"""The attention pieces against naive loop implementations of the paper's formulas."""

import pytest
import torch

from support import max_abs, nudge, within
from tav_core.memory.trace import as_on_device
from tav_core.model import attention as attention_module
from tav_core.model.attention import (TemporalAttention, attend, clip_group_norm_in, clip_group_norm_out,
                                      plain_attention, plain_is_faster, temporal_residual)
from tav_core.model.inflation import inflate, transformer_blocks


def naive_attention(q, k, v, heads):
    """softmax(q k^T / sqrt(d)) v, head by head, for (tokens, channels) inputs."""
    out = []
    for qh, kh, vh in zip(q.chunk(heads, -1), k.chunk(heads, -1), v.chunk(heads, -1)):
        w = torch.softmax(qh @ kh.T / qh.shape[-1] ** 0.5, dim=-1)
        out.append(w @ vh)
    return torch.cat(out, -1)


CONTEXT = {"sparse_causal": lambda x, first, i, frames: torch.cat([x[first], x[first + max(i - 1, 0)]]),  # [0 ‖ i-1]
           "first_frame": lambda x, first, i, frames: x[first]}  # Video-P2P's FrameAttention: frame 0 alone


@pytest.mark.parametrize("kind", list(CONTEXT))
def test_frame_attention_matches_loop(tiny, kind):
    inflation = inflate(tiny.unet, frame_attention=kind)
    attn = transformer_blocks(tiny.unet)[0][1].attn1
    frames, tokens, dim = 5, 6, attn.to_q.in_features
    x = torch.randn(2 * frames, tokens, dim)
    with torch.no_grad(), inflation.context.frames(frames):
        got = attn(x)

    def loop(x):
        out = torch.empty_like(got)
        for b in range(2):
            for i in range(frames):
                context = CONTEXT[kind](x, b * frames, i, frames)
                with torch.no_grad():
                    o = naive_attention(attn.to_q(x[b * frames + i]), attn.to_k(context), attn.to_v(context), attn.heads)
                    out[b * frames + i] = attn.to_out[0](o)
        return out
    expected = loop(x)
    # batched vs looped attention: different kernels. Limit 100x the loop's change under a 1-ulp input nudge
    # (~1e-7); attending to frame i instead of i-1, or to [0 ‖ i-1] instead of 0, moves the output by > 1e-2
    assert within(max_abs(got, expected), max_abs(loop(nudge(x)), expected), 100, f"{kind} vs loop")
    other = next(k for k in CONTEXT if k != kind)
    with torch.no_grad(), inflation.video(frames, frame_attention=other):
        assert max_abs(attn(x), expected) > 1e-2


def test_temporal_attention_matches_per_pixel_loop():
    torch.manual_seed(0)
    frames, tokens, dim, heads = 4, 3, 16, 2
    norm, attn = torch.nn.LayerNorm(dim), TemporalAttention(dim, heads, dim // heads)
    torch.nn.init.normal_(attn.to_out[0].weight)  # zero at init: give it weights to test
    x = torch.randn(2 * frames, tokens, dim)

    @torch.no_grad()
    def loop(x):
        out = x.clone()
        for b in range(2):
            for n in range(tokens):
                seq = x[b * frames:(b + 1) * frames, n]  # one pixel through time
                h = norm(seq)
                o = naive_attention(attn.to_q(h), attn.to_k(h), attn.to_v(h), heads)
                out[b * frames:(b + 1) * frames, n] = seq + attn.to_out[0](o)
        return out
    with torch.no_grad():
        got = temporal_residual(x, norm, attn, frames)
    expected = loop(x)
    # batched vs per-pixel loop: different kernels. Limit 100x the loop's change under a 1-ulp input nudge
    assert within(max_abs(got, expected), max_abs(loop(nudge(x)), expected), 100, "temporal attention vs loop")


def test_temporal_attention_output_starts_at_zero():
    attn = TemporalAttention(8, 2, 4)
    assert torch.count_nonzero(attn.to_out[0].weight) == 0 and torch.count_nonzero(attn.to_out[0].bias) == 0
    assert torch.count_nonzero(attn.to_q.weight) > 0


def test_group_norm_takes_statistics_over_whole_clip():
    torch.manual_seed(0)
    frames, groups = 3, 4
    norm = torch.nn.GroupNorm(groups, 8)
    x = torch.randn(2 * frames, 8, 5, 6) * torch.arange(1, 2 * frames + 1).view(-1, 1, 1, 1)
    with torch.no_grad():
        got = clip_group_norm_out(norm(clip_group_norm_in(x, frames)), frames)

    def formula(x):
        clips = x.view(2, frames, groups, 2, 5, 6)
        mean = clips.mean(dim=(1, 3, 4, 5), keepdim=True)
        var = clips.var(dim=(1, 3, 4, 5), keepdim=True, unbiased=False)
        return ((clips - mean) / (var + norm.eps).sqrt()).reshape_as(x)
    expected = formula(x)
    floor = max_abs(formula(nudge(x)), expected)
    # GroupNorm's kernel vs the formula: limit 100x the formula's change under a 1-ulp input nudge
    assert within(max_abs(got, expected), floor, 100, "clip group norm vs formula")
    with torch.no_grad():
        per_frame = norm(x)
    assert max_abs(got, per_frame) > 1e4 * floor  # frames scaled 1x to 6x: per-frame statistics move it by 1.9


@pytest.mark.parametrize("frames, grad, path", [(8, False, "fused"), (24, False, "plain"), (48, False, "fused"),
                                               (24, True, "fused")])
def test_attention_path_per_shape_computes_the_same(frames, grad, path):
    """``attend`` takes the plain path for 16-24 keys in heads up to 40 wide, float32 on the CPU, without gradients
    (faster there: bench.attention), the fused kernel elsewhere; either way it is softmax(q k^T / sqrt(d)) v,
    gradients too, to float32 rounding."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(32, 2, frames, 40, generator=g).requires_grad_(grad) for _ in range(3))
    assert plain_is_faster(q, k) == (path == "plain")
    assert not plain_is_faster(q.bfloat16(), k.bfloat16())  # half precision keeps the fused kernel's accumulation
    assert not plain_is_faster(torch.zeros(2, 24, 80), torch.zeros(2, 24, 80))  # wider heads: fused
    weights = torch.randn(32, 2, frames, 40, generator=g)

    def run(fn, *inputs):
        with torch.enable_grad():  # the gradients of either path, taken apart from the choice made above
            inputs = [t.detach().requires_grad_() for t in inputs]
            out = fn(*inputs)
            return (out, *torch.autograd.grad((out * weights.to(out.dtype)).sum(), inputs))
    choice = attend(q.detach(), k.detach(), v.detach()) if not grad else attend(q, k, v)
    got = run(plain_attention if path == "plain" else torch.nn.functional.scaled_dot_product_attention, q, k, v)
    assert torch.equal(choice.detach(), got[0].detach())  # (the path taken is the one checked)
    exact = run(plain_attention, *(t.detach().double() for t in (q, k, v)))
    nudged = run(torch.nn.functional.scaled_dot_product_attention, nudge(q.detach()), k, v)
    for name, a, b, c in zip(("out", "dq", "dk", "dv"), got, exact, nudged):
        assert within(max_abs(a.double(), b), max_abs(c.double(), b), 20, f"{path} {name} vs float64")


def test_temporal_attention_takes_the_path_per_shape(monkeypatch):
    calls = []
    monkeypatch.setattr(attention_module, "plain_attention", lambda *a: calls.append(a) or plain_attention(*a))
    attn = TemporalAttention(16, 2, 8)
    with torch.no_grad():  # inference: 16-24 frames
        for frames in (8, 16, 24, 32):
            attn(torch.randn(5, frames, 16))
    attn(torch.randn(5, 24, 16))  # tuning (its query projection takes gradients): fused
    assert [q.shape[-2] for q, _, _ in calls] == [16, 24]
    for device_type in ("cuda", "mps"):  # a plan for a GPU runs its fused kernel
        gpu = TemporalAttention(16, 2, 8)
        as_on_device([gpu], device_type)
        with torch.no_grad():
            gpu(torch.randn(5, 24, 16))
    assert len(calls) == 2
