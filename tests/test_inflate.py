"""Inflating the UNet: image behaviour kept where the paper says it must be, names kept, hooks correct."""

import copy

import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D

from conftest import randomize_temporal
from tav_core import TavError, inflate
from tav_core.inflation import clip_norms, transformer_blocks


def run(unet, x, t, cond, frames=None):
    with torch.no_grad():
        if frames is None:
            return unet(x, t, encoder_hidden_states=cond).sample
        with unet.tav_inflation.context.frames(frames):
            return unet(x, t, encoder_hidden_states=cond).sample


def test_one_frame_video_equals_image_unet(tiny, cond):
    image_unet = copy.deepcopy(tiny.unet)
    inflate(tiny.unet)
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([321])
    torch.testing.assert_close(run(tiny.unet, x, t, cond, frames=1), run(image_unet, x, t, cond), atol=1e-5, rtol=0)


def test_identical_frames_give_identical_frames_equal_to_image_output(tiny, cond):
    image_unet = copy.deepcopy(tiny.unet)
    inflate(tiny.unet)
    frames = 4
    x = torch.randn(1, 4, 8, 8).expand(frames, -1, -1, -1).contiguous()
    out = run(tiny.unet, x, torch.tensor([500] * frames), cond.expand(frames, -1, -1), frames)
    for i in range(1, frames):
        torch.testing.assert_close(out[i], out[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:1], run(image_unet, x[:1], torch.tensor([500]), cond), atol=1e-5, rtol=0)
    randomize_temporal(tiny.unet)  # with trained temporal layers, identical frames still stay identical
    out = run(tiny.unet, x, torch.tensor([500] * frames), cond.expand(frames, -1, -1), frames)
    for i in range(1, frames):
        torch.testing.assert_close(out[i], out[0], atol=1e-5, rtol=0)


def test_frames_interact_when_inflated(tiny, cond):
    inflate(tiny.unet)
    randomize_temporal(tiny.unet)
    x = torch.randn(3, 4, 8, 8)
    t, c = torch.tensor([500] * 3), cond.expand(3, -1, -1)
    changed = x.clone()
    changed[2] += 1  # the last frame is no one's key frame: frames 0 and 1 may only change through time attention
    a, b = run(tiny.unet, x, t, c, 3), run(tiny.unet, changed, t, c, 3)
    assert not torch.allclose(a[0], b[0])


def test_names_kept_and_new_layers_named_like_reference(tiny):
    before = set(tiny.unet.state_dict())
    inflate(tiny.unet)
    after = set(tiny.unet.state_dict())
    assert before <= after
    new = after - before
    assert new and all(".attn_temp." in k or ".norm_temp." in k for k in new)
    assert any(k.endswith("transformer_blocks.0.attn_temp.to_out.0.weight") for k in new)


def test_hooks_cover_resnet_norms_and_output_norm_but_not_transformer_norm(tiny):
    norms = clip_norms(tiny.unet)
    resnet_norms = [m for m in tiny.unet.modules() if isinstance(m, ResnetBlock2D) for m in (m.norm1, m.norm2)]
    assert set(map(id, norms)) == set(map(id, resnet_norms + [tiny.unet.conv_norm_out]))


def test_remove_restores_image_behaviour_and_inflate_is_idempotent(tiny, cond):
    image_unet = copy.deepcopy(tiny.unet)
    inflation = inflate(tiny.unet)
    assert inflate(tiny.unet) is inflation
    randomize_temporal(tiny.unet)
    inflation.remove()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad(), inflation.context.frames(2):
        got = tiny.unet(x, torch.tensor([10, 10]), encoder_hidden_states=cond.expand(2, -1, -1)).sample
    torch.testing.assert_close(got, run(image_unet, x, torch.tensor([10, 10]), cond.expand(2, -1, -1)), atol=1e-5, rtol=0)


def test_batch_not_a_multiple_of_frames_is_refused(tiny, cond):
    inflate(tiny.unet)
    with pytest.raises(TavError, match="not a whole number of 2-frame videos"):
        run(tiny.unet, torch.randn(3, 4, 8, 8), torch.tensor([1, 1, 1]), cond.expand(3, -1, -1), 2)
    with pytest.raises(TavError, match="frame count must be"):
        run(tiny.unet, torch.randn(3, 4, 8, 8), torch.tensor([1, 1, 1]), cond.expand(3, -1, -1), 0)


def test_not_a_unet_is_refused():
    with pytest.raises(TavError, match="no transformer blocks"):
        inflate(torch.nn.Linear(2, 2))


def test_transformer_blocks_in_module_order(tiny):
    names = [n for n, _ in transformer_blocks(tiny.unet)]
    assert names[0].startswith("down_blocks.0") and names[-1].startswith("up_blocks.1")
