"""Long clips in overlapping frame windows: the schedule and fuse weights as ComfyUI's context windows define them,
sparse-causal attention anchored on the clip across windows, and every editing stage run window by window."""

from unittest.mock import patch

import pytest
import torch

from support import randomize_temporal
from tav_core import TavError, TuneAVideo, demo_video
from tav_core.editing.attention_control import AttentionController, EditControl
from tav_core.editing.edit import edit, null_text_invert
from tav_core.loading.tiny import tiny_components
from tav_core.model.attention import first_frame, sparse_causal, sparse_causal_window
from tav_core.sampling.windows import AnchorCache, ContextWindows, Passes, Window, fuse_weights

S, E = "a red square moving over a gradient", "a yellow square moving over a gradient"


def comfy_static(frames: int, length: int, overlap: int) -> list[list[int]]:
    """ComfyUI's "standard_static" schedule, restated loop for loop."""
    if frames <= length:
        return [list(range(frames))]
    out = []
    for start in range(0, frames, length - overlap):
        if start + length >= frames:
            out.append(list(range(frames - length, frames)))
            break
        out.append(list(range(start, start + length)))
    return out


@pytest.mark.parametrize("frames, length, overlap", [(10, 4, 1), (32, 8, 4), (8, 8, 2), (5, 8, 2), (17, 6, 0)])
def test_windows_are_comfyuis_static_schedule_and_their_weights_sum_to_one(frames, length, overlap):
    windows = ContextWindows(length, overlap)
    assert windows.windows(frames) == comfy_static(frames, length, overlap)
    total = torch.zeros(frames)
    for indices, weights in windows.plan(frames):
        total[indices] += weights
    torch.testing.assert_close(total, torch.ones(frames))  # every frame covered, fused as a weighted mean


def test_fuse_weights_are_comfyuis():
    as_list = lambda *args: fuse_weights(*args).tolist()
    assert as_list("pyramid", list(range(6)), 20, 2) == [1, 2, 3, 3, 2, 1]
    assert as_list("pyramid", list(range(5)), 20, 2) == [1, 2, 3, 2, 1]
    assert as_list("flat", list(range(4)), 20, 2) == [1, 1, 1, 1]
    # overlap-linear ramps over the overlap on sides that have a neighbour: up from ~0, down to ~0
    middle = as_list("overlap-linear", list(range(4, 10)), 20, 3)
    assert middle[:3] == pytest.approx([0, 0.5, 1]) and middle[3:] == pytest.approx([1, 0.5, 0])
    assert as_list("overlap-linear", list(range(0, 6)), 20, 3)[:3] == [1, 1, 1]  # the clip's first window
    with pytest.raises(TavError, match="fuse method 'mean' is not one of"):
        ContextWindows(8, 2, "mean")
    with pytest.raises(TavError, match="overlap must be from 0 to length - 1"):
        ContextWindows(4, 4)


@pytest.mark.parametrize("frames, first_only", [(11, False), (41, False), (11, True)])
def test_each_window_sees_the_keys_of_the_clips_anchor_and_previous_frame(frames, first_only):
    """At an attention layer, window by window in clip order, each frame gets [frame 0 || frame i-1] of the clip
    (Video-P2P's frame attention: frame 0 alone): exactly the rows the whole clip gives it (rows are copied, never
    computed: equal bit for bit)."""
    clips = 2
    keys = torch.randn(clips * frames, 5, 3)
    whole = (first_frame if first_only else sparse_causal)(keys, frames).view(clips, frames, -1, 3)
    plan = ContextWindows(4, 1).windows(frames)
    anchors, most_kept = AnchorCache(plan), 0
    for indices in plan:
        rows = torch.tensor([c * frames + i for c in range(clips) for i in indices])
        out = sparse_causal_window(keys[rows], Window(indices, anchors), layer="attn1.to_k", first_only=first_only)
        assert torch.equal(out.view(clips, len(indices), -1, 3), whole[:, indices])
        most_kept = max(most_kept, len({k[2] for k in anchors.rows}))
        anchors.done(indices)
    assert anchors.missing == 0 and not anchors.rows  # nothing was missing, nothing is left
    # frame 0, this window's previous frame and the ones later windows take from it (the last window, moved back to
    # end at the clip's end, takes an earlier one): a few frames whatever the clip's length
    assert most_kept <= 4


def test_windows_out_of_clip_order_fall_back_to_a_clip_starting_at_the_window():
    frames = 8
    keys = torch.randn(frames, 2, 3)
    plan = ContextWindows(4, 1).windows(frames)
    anchors = AnchorCache(plan)
    last = plan[-1]  # run first: frame 0 and frame last[0] - 1 were not computed yet
    out = sparse_causal_window(keys[last], Window(last, anchors), layer=0).view(len(last), 4, 3)
    alone = sparse_causal(keys[last], len(last)).view(len(last), 4, 3)
    assert torch.equal(out, alone) and anchors.missing > 0


@pytest.fixture(scope="module")
def pipe():
    pipe = TuneAVideo(tiny_components(0))
    randomize_temporal(pipe.c.unet)
    return pipe


@pytest.fixture(scope="module")
def latents(pipe):
    return pipe.encode_video(demo_video(10, 64, 64))


def test_a_window_covering_the_clip_is_the_plain_computation(pipe, latents):
    """Bit for bit: the same computation, repeated in one process."""
    cover = Passes(windows=ContextWindows(16, 4))
    noise = pipe.invert(latents, 3)
    assert torch.equal(pipe.invert(latents, 3, passes=cover), noise)
    assert torch.equal(pipe.sample(noise, E, steps=3, passes=cover), pipe.sample(noise, E, steps=3))
    inversion = null_text_invert(pipe, latents, S, 2, inner_steps=2)
    windowed = null_text_invert(pipe, latents, S, 2, inner_steps=2, passes=cover)
    assert torch.equal(windowed.embeddings, inversion.embeddings) and torch.equal(windowed.noise, inversion.noise)
    control = EditControl(S, E, blend_words=(["square"], ["square"]), blend_start=0.0)
    assert all(torch.equal(a, b) for a, b in zip(edit(pipe, inversion, control, passes=cover),
                                                   edit(pipe, inversion, control)))


def test_every_editing_stage_runs_in_windows(pipe, latents):
    """Windows of 4 over 10 frames change the computation (temporal attention and clip-wide GroupNorm see a window)
    but every stage runs, the null text still lets CFG sampling retrace the inversion, and the edit's local blend
    still keeps the source outside its mask."""
    windows = Passes(windows=ContextWindows(4, 1))
    noise = pipe.invert(latents, 3, passes=windows)
    assert torch.isfinite(noise).all() and (noise - pipe.invert(latents, 3)).abs().max() > 1e-3
    inversion = null_text_invert(pipe, latents, S, 3, inner_steps=3, passes=windows)
    seen = {}
    original = AttentionController.after_step

    def spy(self, i, x):
        out = original(self, i, x)
        seen.update(mask=self.last_mask, maps=self.maps)
        return out
    with patch.object(AttentionController, "after_step", spy):
        source, edited = edit(pipe, inversion, EditControl(S, E, blend_words=(["square"], ["square"]),
                                                           blend_start=0.0, blend_threshold=0.9), passes=windows)
    retraced = pipe.sample(inversion, S, guidance_scale=inversion.guidance_scale, passes=windows)
    print(f"source branch vs null-text sampling in windows: {(source - retraced).abs().max():.2e}")
    torch.testing.assert_close(source, retraced, atol=1e-4, rtol=0)  # the same sampling, batched with the edit
    assert all(m.shape[:2] == (2, len(latents)) for m in seen["maps"].values())  # every frame's maps, fused
    outside = (seen["mask"] == 0).expand_as(edited)
    print(f"local blend over windows: {outside.float().mean():.0%} of the latents outside the mask")
    assert torch.isfinite(edited).all() and outside.any() and not outside.all()
    assert torch.equal(edited[outside], source[outside])  # local blend: outside its mask the edit is the source


def test_gradient_checkpointing_recomputes_a_window_without_keeping_its_rows_again(pipe, latents):
    """With gradient checkpointing, null-text's backward re-runs each window's forward: the rows later windows take
    are kept by the forward alone (the recompute finds them kept), and the null text is the one without
    checkpointing (the same computation; the tolerance is float32's)."""
    windows = Passes(windows=ContextWindows(4, 1))
    plain = null_text_invert(pipe, latents, S, 2, inner_steps=2, passes=windows)
    in_backward = []
    store = AnchorCache.store

    def spy(self, *args):
        in_backward.append(torch._C._current_graph_task_id() != -1)
        return store(self, *args)
    pipe.c.unet.enable_gradient_checkpointing()
    try:
        with patch.object(AnchorCache, "store", spy):
            checkpointed = null_text_invert(pipe, latents, S, 2, inner_steps=2, passes=windows)
    finally:
        pipe.c.unet.disable_gradient_checkpointing()
    assert in_backward and not any(in_backward)
    print(f"null text with and without checkpointing: {(checkpointed.embeddings - plain.embeddings).abs().max():.1e}")
    torch.testing.assert_close(checkpointed.embeddings, plain.embeddings)
    torch.testing.assert_close(checkpointed.noise, plain.noise)
