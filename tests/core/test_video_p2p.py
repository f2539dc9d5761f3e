"""Video-P2P's recipe where it differs from Tune-A-Video's (frame-0 attention, self-attention control on the
temporal layers, --fast), and the places where the pack departs from Video-P2P's code on purpose, each against a
restatement of that code's maths (dvlab-research/Video-P2P: tuneavideo/models/attention.py, run_videop2p.py,
seq_aligner.py)."""

import pytest
import torch

from support import max_abs, nudge, randomize_temporal, within
from tav_core import TavError, TuneAVideo, demo_video
from tav_core.cli import main
from tav_core.editing.attention_control import AttentionController, EditControl, probabilities
from tav_core.editing.edit import edit
from tav_core.editing.prompt_alignment import equalizer, replacement_mapper
from tav_core.loading.configs import clip_tokenizer
from tav_core.loading.tiny import tiny_components
from tav_core.loading.tuned import read_metadata, write_tuned
from tav_core.model.inflation import inflate, transformer_blocks
from tav_core.tuning.tune import TuneConfig

TOKENIZER = clip_tokenizer()
FRAMES, HEADS, DIM = 3, 2, 16


def test_frame_attention_is_checked_and_travels_with_the_tuned_weights(tmp_path, tiny):
    """(Video-P2P's FrameAttention itself is checked against a loop in tests/core/test_attention.py.)"""
    with pytest.raises(TavError, match="frame attention 'previous' is not one of"):
        inflate(tiny.unet, frame_attention="previous")
    pipe = TuneAVideo(tiny_components(0), frame_attention="first_frame")
    latents = pipe.encode_video(demo_video(FRAMES, 64, 64))
    pipe.tune(latents, "a red square", TuneConfig(steps=1), progress=False)
    pipe.save_tuned(tmp_path / "p2p.safetensors", "a red square", FRAMES, 64, 64, TuneConfig(steps=1))
    assert read_metadata(tmp_path / "p2p.safetensors")["frame_attention"] == "first_frame"
    other = TuneAVideo(tiny_components(0))
    assert other.inflation.frame_attention == "sparse_causal"
    other.load_tuned(tmp_path / "p2p.safetensors")
    assert other.inflation.frame_attention == "first_frame"
    # a file from before the choice existed has no entry: Tune-A-Video's attention
    meta = read_metadata(tmp_path / "p2p.safetensors")
    from safetensors.torch import load_file
    write_tuned(tmp_path / "old.safetensors", load_file(tmp_path / "p2p.safetensors"), meta["fingerprint"])
    other.load_tuned(tmp_path / "old.safetensors")
    assert other.inflation.frame_attention == "sparse_causal"


def qkv(rows: int, queries: int, keys: int, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, queries, HEADS * DIM, generator=g), torch.randn(rows, keys, HEADS * DIM, generator=g),
            torch.randn(rows, keys, HEADS * DIM, generator=g))


def video_p2p_self_control(q, k, v, step, self_stop):
    """Video-P2P's AttentionControlEdit on a self-attention layer, restated: maps of the conditional half (the
    batch's second half) reshaped to (prompts, rest...), the edit's (index 1) replaced by the source's (index 0) for
    steps before int(self_steps * steps); then maps @ values."""
    b = q.shape[0]
    maps = probabilities(q, k, HEADS)  # (rows, heads, queries, keys)
    cond = maps[b // 2:].reshape(2, -1, *maps.shape[2:])  # (prompts, pixels x heads, queries, keys)
    if step < self_stop:
        cond = torch.stack([cond[0], cond[0]])
    maps = torch.cat([maps[:b // 2], cond.reshape(b // 2, *maps.shape[1:])])
    out = maps @ v.reshape(b, -1, HEADS, DIM).transpose(1, 2)
    return out.transpose(1, 2).reshape(b, -1, HEADS * DIM)


def test_temporal_self_control_is_video_p2ps():
    """self_control="temporal": the temporal attention (rows: uncond/cond x source/edit x pixels, attending over
    frames) follows Video-P2P's controller; the frames' own self-attention is then left alone."""
    control = EditControl("a rabbit is jumping", "a tiger is jumping", self_steps=0.5, self_control="temporal")
    ctrl = AttentionController(control, TOKENIZER, steps=10, frames=FRAMES, latent_size=(4, 4))
    pixels = 16
    q, k, v = qkv(2 * 2 * pixels, FRAMES, FRAMES)
    for step in (0, 4, 5, 9):
        ctrl.step = step
        expected = video_p2p_self_control(q, k, v, step, self_stop=5)
        floor = max_abs(video_p2p_self_control(nudge(q), nudge(k), nudge(v), step, 5), expected)
        got = ctrl(q, k, v, HEADS, False, [1, 0], temporal=True)
        # SDPA on the source's q, k with the edit's v vs explicit maps: limit 100x the restatement's 1-ulp change
        # (~1e-6); the edit's own maps instead of the source's move it by 2.6
        assert within(max_abs(got, expected), floor, 100, f"temporal control, step {step}")
    q, k, v = qkv(2 * 2 * FRAMES, pixels, 2 * pixels, seed=1)
    ctrl.step = 0
    own = video_p2p_self_control(q, k, v, step=0, self_stop=0)  # nothing replaced
    assert within(max_abs(ctrl(q, k, v, HEADS, False, [1, 0]), own),
                  max_abs(video_p2p_self_control(nudge(q), nudge(k), nudge(v), 0, 0), own), 100,
                  "spatial self-attention left alone")
    with pytest.raises(TavError, match="self_control 'both' is not one of"):
        AttentionController(EditControl("a b", "a c", self_control="both"), TOKENIZER, 10, FRAMES, (4, 4))


def test_an_edit_with_temporal_control_controls_every_temporal_layer():
    pipe = TuneAVideo(tiny_components(0), frame_attention="first_frame")
    randomize_temporal(pipe.c.unet)
    noise = pipe.invert(pipe.encode_video(demo_video(FRAMES, 64, 64)), 2)
    calls = []
    original = AttentionController.__call__

    def spy(self, q, k, v, heads, is_cross, chunks, temporal=False):
        calls.append((is_cross, temporal, q.shape[0] // (2 * len(chunks)), q.shape[1]))
        return original(self, q, k, v, heads, is_cross, chunks, temporal)
    AttentionController.__call__ = spy
    try:
        control = EditControl("a red square", "a red square", cross_steps=1.0, self_steps=1.0, self_control="temporal")
        source, edited = edit(pipe, noise, control, guidance_scale=7.5, steps=2)
    finally:
        AttentionController.__call__ = original
    blocks = len(transformer_blocks(pipe.c.unet))
    temporal = [c for c in calls if c[1]]
    assert len(temporal) == 2 * blocks and all(c[3] == FRAMES for c in temporal)  # 2 steps, every block, over frames
    floor = max_abs(edit(pipe, nudge(noise), control, guidance_scale=7.5, steps=2)[0], source)
    # an identity edit with every control on reproduces its source branch: limit 100x the source's 1-ulp change
    assert within(max_abs(edited, source), floor, 100, "identity edit, temporal control")


def test_local_blend_sums_the_edits_maps_after_control_as_video_p2p_does():
    """Video-P2P's store keeps the attention tensor its controller then overwrites in place, so within the cross
    window local blend sums the edit's controlled maps (P_src M, reweighted); after it, the edit's own."""
    source, edit_prompt = "a rabbit is jumping", "a tiger is jumping"
    control = EditControl(source, edit_prompt, cross_steps=0.3, reweight={"tiger": 2.5},
                          blend_words=(["rabbit"], ["tiger"]))
    ctrl = AttentionController(control, TOKENIZER, steps=10, frames=FRAMES, latent_size=(4, 4))
    q, k, v = qkv(2 * 2 * FRAMES, 16, 77, seed=2)
    src, ed = slice(2 * FRAMES, 3 * FRAMES), slice(3 * FRAMES, 4 * FRAMES)
    p_src, p_edit = probabilities(q[src], k[src], HEADS), probabilities(q[ed], k[ed], HEADS)
    controlled = (p_src @ replacement_mapper(TOKENIZER, source, edit_prompt)) * equalizer(TOKENIZER, edit_prompt,
                                                                                           {"tiger": 2.5})
    expected_total = 0
    for step, edit_maps in ((0, controlled), (2, controlled), (3, p_edit)):  # cross_stop = int(0.3 * 11) = 3
        ctrl.step = step
        ctrl(q, k, v, HEADS, True, [1, 0])
        expected_total = expected_total + torch.stack([p_src[..., 2].mean(1), edit_maps[..., 2].mean(1)])
        # the same maps, one reduction order or another: float32 sums of 3 steps, limit 1e-6 (maps are <= 2.5)
        assert max_abs(ctrl.maps[16], expected_total.float()) < 1e-6, f"step {step}"
    assert max_abs(controlled[..., 2], p_edit[..., 2]) > 1e-2  # the two conventions differ here


def video_p2p_replacement_mapper(source: str, edit: str) -> torch.Tensor:
    """seq_aligner.get_replacement_mapper_, restated: aligned up to the last swapped word, then position j -> j."""
    def word_tokens(prompt, index):
        words, start = prompt.split(" "), 1
        for i, word in enumerate(words):
            count = len(TOKENIZER(word, add_special_tokens=False).input_ids)
            if i == index:
                return list(range(start, start + count))
            start += count
    words_x, words_y = source.split(" "), edit.split(" ")
    swapped = [i for i in range(len(words_y)) if words_y[i] != words_x[i]]
    src_inds, edit_inds = [word_tokens(source, i) for i in swapped], [word_tokens(edit, i) for i in swapped]
    mapper = torch.zeros(77, 77)
    i = j = current = 0
    while i < 77 and j < 77:
        if current < len(src_inds) and src_inds[current][0] == i:
            a, b = src_inds[current], edit_inds[current]
            if len(a) == len(b):
                mapper[a, b] = 1  # token by token (numpy's paired fancy indexing)
            else:
                for t in b:
                    mapper[a, t] = 1 / len(b)
            current, i, j = current + 1, i + len(a), j + len(b)
        elif current < len(src_inds):
            mapper[i, j] = 1
            i, j = i + 1, j + 1
        else:
            mapper[j, j] = 1
            i, j = i + 1, j + 1
    return mapper


def test_word_swap_keeps_later_words_aligned_when_the_token_count_changes():
    """"man" -> "spider-man" (Video-P2P's own example) adds two tokens. The reference maps every token after the
    last swapped word by raw position, so the edit's "is" takes the source's end-of-text map; the pack keeps each
    later word on its own word. With equal token counts both are the same matrix."""
    for source, edit_prompt in (("a rabbit is jumping", "a tiger is jumping"),
                                ("a motorcyclist is skiing", "a snowboarder is skiing")):  # 1 and 2 tokens
        assert torch.equal(replacement_mapper(TOKENIZER, source, edit_prompt),
                           video_p2p_replacement_mapper(source, edit_prompt))
    source, edit_prompt = "a man is skiing", "a spider-man is skiing"
    assert len(TOKENIZER("spider-man", add_special_tokens=False).input_ids) == 3
    ours, theirs = replacement_mapper(TOKENIZER, source, edit_prompt), video_p2p_replacement_mapper(source, edit_prompt)
    assert torch.equal(ours[2, 2:5], torch.full((3,), 1 / 3)) and torch.equal(theirs[2, 2:5], ours[2, 2:5])
    assert ours[3, 5] == 1 and ours[4, 6] == 1  # "is" -> "is", "skiing" -> "skiing"
    assert theirs[3, 5] == 0 and theirs[5, 5] == 1  # "is" takes the map of the source's token 5 (end of text)


def test_fast_mode_samples_the_source_branch_without_guidance():
    """Video-P2P's --fast: DDIM inversion with the source prompt; in the edit the source rows take the conditional
    prediction alone (noise_pred[0] = noise_pred_text[0]), so the source branch is plain sampling at guidance 1."""
    pipe = TuneAVideo(tiny_components(0))
    randomize_temporal(pipe.c.unet)
    prompt = "a red square"
    noise = pipe.invert(pipe.encode_video(demo_video(FRAMES, 64, 64)), 4, prompt)
    control = EditControl(prompt, "a yellow square", source_cfg=False)
    source, edited = edit(pipe, noise, control, guidance_scale=7.5, steps=4)
    unguided = pipe.sample(noise, prompt, guidance_scale=1.0, steps=4)
    floor = max_abs(pipe.sample(nudge(noise), prompt, guidance_scale=1.0, steps=4), unguided)
    # a two-branch batch vs a one-branch batch, and u + 1 (c - u) vs c: limit 100x the sampling's 1-ulp change
    assert within(max_abs(source, unguided), floor, 100, "fast source branch vs unguided sampling")
    guided_source = edit(pipe, noise, EditControl(prompt, "a yellow square"), guidance_scale=7.5, steps=4)[0]
    assert max_abs(guided_source, unguided) > 1e-2  # with CFG it is another branch


def test_cli_runs_video_p2ps_recipe_and_refuses_what_does_not_fit_it(tmp_path, capsys):
    weights, out = tmp_path / "tuned.safetensors", tmp_path / "edit.gif"
    common = ["--frames", "3", "--width", "64", "--height", "64", "--weights", str(weights)]
    assert main(["tune", *common, "--tune-steps", "1", "--frame-attention", "first_frame"]) == 0
    assert read_metadata(weights)["frame_attention"] == "first_frame"
    edit_args = ["edit", *common, "--steps", "2", "--out", str(out), "--p2p", "--fast", "--self-control", "temporal"]
    assert main(edit_args) == 0 and out.is_file()
    for extra, message in ((["--frame-attention", "sparse_causal"], "was tuned with first_frame frame attention"),
                           (["--inversion", str(tmp_path / "inv.safetensors")], "--fast makes no null-text inversion")):
        capsys.readouterr()
        assert main(edit_args + extra) == 2
        assert message in capsys.readouterr().err
    assert main(["edit", *common, "--out", str(out), "--fast"]) == 2
    assert "add --p2p" in capsys.readouterr().err
