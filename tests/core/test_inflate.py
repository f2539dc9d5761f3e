"""Inflating the UNet: image behaviour kept where the paper says it must be, names kept, hooks correct."""

import copy

import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D

from support import max_abs, nudge, randomize_temporal, within
from tav_core import TavError, inflate
from tav_core.model.inflation import clip_norms, transformer_blocks


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
    expected = run(image_unet, x, t, cond)
    floor = max_abs(run(image_unet, nudge(x), t, nudge(cond)), expected)
    # hooked (doubled keys, clip norms) vs plain UNet: 100x the plain UNet's change under a 1-ulp input nudge
    assert within(max_abs(run(tiny.unet, x, t, cond, frames=1), expected), floor, 100, "1-frame video vs image")


def test_identical_frames_give_identical_frames_equal_to_image_output(tiny, cond):
    image_unet = copy.deepcopy(tiny.unet)
    inflate(tiny.unet)
    frames = 4
    x = torch.randn(1, 4, 8, 8).expand(frames, -1, -1, -1).contiguous()
    t, c = torch.tensor([500] * frames), cond.expand(frames, -1, -1)
    image = run(image_unet, x[:1], t[:1], cond)
    floor = max_abs(run(image_unet, nudge(x[:1]), t[:1], nudge(cond)), image)
    # frames are rows of one video batch, the image a batch of one (other kernels may run): limit 100x the image
    # UNet's change under a 1-ulp input nudge
    out = run(tiny.unet, x, t, c, frames)
    assert within(max_abs(out, out[:1].expand_as(out)), floor, 100, "frames vs frame 0")
    assert within(max_abs(out[:1], image), floor, 100, "frame 0 vs image")
    randomize_temporal(tiny.unet)  # with trained temporal layers, identical frames still stay identical
    out = run(tiny.unet, x, t, c, frames)
    assert within(max_abs(out, out[:1].expand_as(out)), floor, 100, "trained temporal layers: frames vs frame 0")


def test_frames_interact_when_inflated(tiny, cond):
    inflate(tiny.unet)
    randomize_temporal(tiny.unet)
    x = torch.randn(3, 4, 8, 8)
    t, c = torch.tensor([500] * 3), cond.expand(3, -1, -1)
    changed = x.clone()
    changed[2] += 1  # the last frame is no one's key frame: frames 0 and 1 may only change through time attention
    a, b = run(tiny.unet, x, t, c, 3), run(tiny.unet, changed, t, c, 3)
    floor = max_abs(run(tiny.unet, nudge(x), t, c, 3)[0], a[0])
    assert max_abs(a[0], b[0]) > 1000 * floor  # a real change (0.3), far beyond a 1-ulp input nudge's (~7e-7)


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
    image = image_unet.state_dict()  # a deep copy: its weights are the same bits
    assert all(torch.equal(p, image[k]) for k, p in tiny.unet.state_dict().items() if k in image)
    t, c = torch.tensor([10, 10]), cond.expand(2, -1, -1)
    expected = run(image_unet, x, t, c)
    floor = max_abs(run(image_unet, nudge(x), t, nudge(c)), expected)
    # another instance (its own memory, maybe other kernels): 100x the copy's change under a 1-ulp input nudge
    assert within(max_abs(got, expected), floor, 100, "after remove vs image UNet")


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
