"""Null-text inversion and Prompt-to-Prompt attention control on tiny random models: the mechanics, each rule
against a naive restatement with explicit attention maps."""

from dataclasses import replace

import pytest
import torch

from support import max_abs, nudge, randomize_temporal, within
from tav_core import TavError, TuneAVideo, demo_video
from tav_core.editing.attention_control import AttentionController, EditControl, probabilities
from tav_core.editing.edit import edit, null_text_invert
from tav_core.editing.null_text import NullTextInversion
from tav_core.editing.prompt_alignment import equalizer, refinement_mapper, replacement_mapper, word_token_indices
from tav_core.loading.configs import clip_tokenizer
from tav_core.loading.tiny import tiny_components

TOKENIZER = clip_tokenizer()
SOURCE, EDIT = "a rabbit is jumping on the grass", "a tiger is jumping on the grass"
FRAMES, HEADS, DIM = 3, 2, 16


def test_prompt_alignment():
    assert list(word_token_indices(TOKENIZER, SOURCE, "rabbit")) == [2]
    with pytest.raises(TavError, match="'cat' is not a word of the prompt 'a rabbit is jumping on the grass'"):
        word_token_indices(TOKENIZER, SOURCE, "cat")
    # the mappers and the equalizer are assigned 0, 1, indices and the given weights, no arithmetic: exact
    assert torch.equal(replacement_mapper(TOKENIZER, SOURCE, SOURCE), torch.eye(77))
    mapper, alphas = refinement_mapper(TOKENIZER, SOURCE, SOURCE)
    assert torch.equal(mapper, torch.arange(77)) and torch.equal(alphas, torch.ones(77))
    mapper, alphas = refinement_mapper(TOKENIZER, SOURCE, "a origami rabbit is jumping on the grass")
    assert alphas[2] == 0 and mapper[3] == 2 and alphas[3] == 1  # the new word keeps its map; "rabbit" moves
    with pytest.raises(TavError, match="same number of words.*use mode 'refine'"):
        replacement_mapper(TOKENIZER, SOURCE, "a big tiger is jumping on the grass")
    assert equalizer(TOKENIZER, EDIT, {"tiger": 2.0})[2] == 2.0
    with pytest.raises(TavError, match="'origami' is not a word"):
        equalizer(TOKENIZER, EDIT, {"origami": 2.0})


def qkv(keys: int, seed=0):
    """A batch of [uncond (src, edit), cond (src, edit)] x frames, as the engine and ComfyUI lay it out."""
    g = torch.Generator().manual_seed(seed)
    rows = 2 * 2 * FRAMES
    return (torch.randn(rows, 16, HEADS * DIM, generator=g), torch.randn(rows, keys, HEADS * DIM, generator=g),
            torch.randn(rows, keys, HEADS * DIM, generator=g))


def naive(p, v):
    """P @ V with explicit maps (frames, heads, queries, keys), back to (frames, tokens, heads * dim)."""
    b = v.shape[0]
    out = p @ v.reshape(b, -1, HEADS, DIM).transpose(1, 2)
    return out.transpose(1, 2).reshape(b, -1, HEADS * DIM)


UNCOND, COND_SRC, COND_EDIT = slice(0, 2 * FRAMES), slice(2 * FRAMES, 3 * FRAMES), slice(3 * FRAMES, 4 * FRAMES)


def assert_attention(got, explicit, q, k, v, what):
    """``got`` (the controller's scaled-dot-product attention) against ``explicit(q, k, v)`` (explicit maps): other
    kernels, so held to 100x how far the explicit result moves when q, k and v move by one ulp (limit ~5e-5; a
    wrong map moves the output by 1.2, a missing reweighting by 0.3)."""
    expected = explicit(q, k, v)
    floor = max_abs(explicit(nudge(q), nudge(k), nudge(v)), expected)
    assert within(max_abs(got, expected), floor, 100, what)


def controller(**settings):
    control = EditControl(SOURCE, settings.pop("edit", EDIT), **settings)
    return AttentionController(control, TOKENIZER, steps=10, frames=FRAMES, latent_size=(4, 4))


def test_self_attention_maps_are_the_sources_before_tau_self_and_not_after():
    ctrl = controller(self_steps=0.5)
    q, k, v = qkv(32)
    for step in range(10):
        ctrl.step = step

        def explicit(q, k, v):  # the unconditional rows are never controlled
            maps = lambda rows: probabilities(q[rows], k[rows], HEADS)
            edit_maps = maps(COND_SRC) if step < 5 else maps(COND_EDIT)
            return torch.cat([naive(maps(UNCOND), v[UNCOND]), naive(maps(COND_SRC), v[COND_SRC]),
                              naive(edit_maps, v[COND_EDIT])])
        out = ctrl(q, k, v, HEADS, False, [1, 0])
        assert_attention(out, explicit, q, k, v, f"step {step}")  # tolerance: assert_attention


@pytest.mark.parametrize("mode, edit_prompt", [("replace", EDIT), ("refine", "a big rabbit is jumping on the grass")])
def test_cross_attention_follows_the_source_before_tau_cross_with_reweighting(mode, edit_prompt):
    weight = {"tiger": 2.5} if mode == "replace" else {"big": 0.5}
    ctrl = controller(mode=mode, edit=edit_prompt, cross_steps=0.3, reweight=weight)
    q, k, v = qkv(77, seed=1)
    scale = equalizer(TOKENIZER, edit_prompt, weight)
    stop = int(0.3 * 11)  # Prompt-to-Prompt's boundary: int(tau * (steps + 1))
    for step in (0, stop - 1, stop, 9):
        ctrl.step = step

        def explicit(q, k, v):
            p_src = probabilities(q[COND_SRC], k[COND_SRC], HEADS)
            p_edit = probabilities(q[COND_EDIT], k[COND_EDIT], HEADS)
            if step >= stop:
                return naive(p_edit, v[COND_EDIT])
            if mode == "replace":
                return naive((p_src @ replacement_mapper(TOKENIZER, SOURCE, edit_prompt)) * scale, v[COND_EDIT])
            mapper, alphas = refinement_mapper(TOKENIZER, SOURCE, edit_prompt)
            return naive((p_src[..., mapper] * alphas + p_edit * (1 - alphas)) * scale, v[COND_EDIT])
        out = ctrl(q, k, v, HEADS, True, [1, 0])
        assert_attention(out[COND_EDIT], explicit, q, k, v, f"{mode}, step {step}")  # tolerance: assert_attention


def test_self_replacement_only_at_small_layers():
    ctrl = controller(self_max_pixels=8)
    q, k, v = qkv(32)
    explicit = lambda q, k, v: naive(probabilities(q[COND_EDIT], k[COND_EDIT], HEADS), v[COND_EDIT])
    out = ctrl(q, k, v, HEADS, False, [1, 0])
    # 16 query pixels > 8: left alone (tolerance: assert_attention)
    assert_attention(out[COND_EDIT], explicit, q, k, v, "self-attention of a large layer")


def test_words_not_in_the_prompts_are_named():
    with pytest.raises(TavError, match="'cat' is not a word of the prompt 'a rabbit is jumping on the grass'"):
        controller(blend_words=(["cat"], ["tiger"]))
    with pytest.raises(TavError, match="'origami' is not a word of the prompt 'a tiger is jumping on the grass'"):
        controller(reweight={"origami": 2.0})
    with pytest.raises(TavError, match="mode 'swap' is not one of"):
        controller(mode="swap")
    with pytest.raises(TavError, match="cross_steps must be from 0 to 1"):
        controller(cross_steps=1.5)


@pytest.fixture(scope="module")
def pipe():
    pipe = TuneAVideo(tiny_components(seed=0))
    randomize_temporal(pipe.c.unet)
    return pipe


@pytest.fixture(scope="module")
def latents(pipe):
    return pipe.encode_video(demo_video(FRAMES, 64, 64))


def test_null_text_inversion_reconstructs_far_better_than_plain_inversion(pipe, latents, tmp_path):
    """CFG 12.5 with the source prompt. The tiny random UNet reacts weakly to the unconditional embedding, so this
    runs 30 inner iterations where real models need Mokady's 10."""
    prompt, steps, scale = "a red square moving over a gradient", 10, 12.5
    inversion = null_text_invert(pipe, latents, prompt, steps, scale, inner_steps=30)
    null = pipe.sample(inversion, prompt, guidance_scale=scale)
    plain = pipe.sample(pipe.invert(latents, steps, prompt), prompt, guidance_scale=scale, steps=steps)
    errors = ((null - latents) ** 2).mean().item(), ((plain - latents) ** 2).mean().item()
    print(f"reconstruction MSE at CFG {scale}: null-text {errors[0]:.3e}, plain DDIM inversion {errors[1]:.3e} "
          f"({errors[1] / errors[0]:.1f}x)")
    assert errors[1] >= 10 * errors[0]
    inversion.save(tmp_path / "inv.safetensors", frames=FRAMES)
    loaded = NullTextInversion.load(tmp_path / "inv.safetensors")
    assert torch.equal(loaded.embeddings, inversion.embeddings.cpu()) and loaded.steps == steps  # saved bytes
    # reusable for many edits: the same sampling of the same bits on the same model, repeated: bit for bit
    assert torch.equal(pipe.sample(loaded, prompt, guidance_scale=scale), null)


def test_identity_edit_with_control_reproduces_the_source_branch(pipe, latents):
    noise = pipe.invert(latents, 6)
    control = EditControl("a red square", "a red square", cross_steps=1.0, self_steps=1.0,
                          blend_words=(["square"], ["square"]))
    source, edited = edit(pipe, noise, control, guidance_scale=7.5, steps=6)
    floor = max_abs(edit(pipe, nudge(noise), control, guidance_scale=7.5, steps=6)[0], source)
    # the edit rows run other attention calls (source maps on a sub-batch) than the source rows: limit 100x how far
    # the source moves when the noise moves by one ulp (CFG 7.5 and 6 steps amplify it)
    assert within(max_abs(edited, source), floor, 100, "identity edit vs source")


def test_outside_the_blend_mask_the_edit_equals_the_source(pipe):
    """Random weights attend almost uniformly (maps normalised to 0.7-1), hence the high threshold here."""
    noise = pipe.invert(pipe.encode_video(demo_video(FRAMES, 128, 128)), 6)
    control = EditControl("a red square", "a yellow square", blend_words=(["square"], ["square"]),
                          blend_threshold=0.95, blend_start=0.0)
    captured = {}
    original = AttentionController.after_step

    def spy(self, i, x):
        out = original(self, i, x)
        captured["mask"] = self.last_mask
        return out
    AttentionController.after_step = spy
    try:
        source, edited = edit(pipe, noise, control, guidance_scale=7.5, steps=6)
    finally:
        AttentionController.after_step = original
    mask = captured["mask"]
    outside = (mask == 0).expand_as(edited)
    print(f"blend mask covers {mask.mean().item():.0%} of the latents")
    assert 0 < mask.mean() < 1
    assert torch.equal(edited[outside], source[outside])  # copied there (x_src + 0 * (x_edit - x_src)): bit for bit
    print(f"inside the mask the edit differs from the source by {max_abs(edited[~outside], source[~outside]):.2f}")
    # inside, the edit is the edit (5.0 here): far above the ~5e-5 rounding floor of a 6-step CFG-7.5 sampling
    assert max_abs(edited[~outside], source[~outside]) > 0.1


def test_null_text_edit_uses_decoupled_guidance(pipe, latents):
    """The source branch samples with the optimised null text and retraces the clip; the edit branch does not."""
    prompt = "a red square moving over a gradient"
    inversion = null_text_invert(pipe, latents, prompt, 6, 7.5, inner_steps=2)
    reconstruction = pipe.sample(inversion, prompt, guidance_scale=7.5)
    source, _ = edit(pipe, inversion, EditControl(prompt, "a yellow square moving over a gradient"))
    nudged = replace(inversion, noise=nudge(inversion.noise), embeddings=nudge(inversion.embeddings))
    floor = max_abs(pipe.sample(nudged, prompt, guidance_scale=7.5), reconstruction)
    # a two-branch batch with attention control vs a one-branch batch: limit 100x how far the reconstruction
    # moves when the inversion moves by one ulp (CFG 7.5 amplifies it; limit ~5e-3), while a source branch on the
    # plain null text would be 11 away
    assert within(max_abs(source, reconstruction), floor, 100, "source branch vs reconstruction")
    with pytest.raises(TavError, match="made with 6 steps"):
        edit(pipe, inversion, EditControl(prompt, prompt), steps=8)


def test_cli_p2p_edit_saves_and_reuses_the_null_text_inversion(tmp_path, capsys, monkeypatch):
    from tav_core import read_video
    from tav_core.cli import commands, main
    args = ["edit", "--frames", "3", "--steps", "3", "--weights", str(tmp_path / "w.safetensors"), "--p2p",
            "--inner-steps", "1", "--inversion", str(tmp_path / "inv.safetensors"), "--reweight", "yellow:2",
            "--blend", "square", "square", "--out", str(tmp_path / "p2p.mp4")]
    assert main(["tune", "--frames", "3", "--tune-steps", "1", "--weights", str(tmp_path / "w.safetensors")]) == 0
    assert main(args) == 0
    assert read_video(tmp_path / "p2p.mp4").shape == (3, 64, 64, 3)
    assert "null-text inversion saved" in capsys.readouterr().out
    monkeypatch.setattr(commands, "null_text_invert", lambda *a, **k: pytest.fail("inverted again"))
    assert main(args) == 0 and "null-text inversion: " in capsys.readouterr().out
    assert main([*args, "--cfg", "5"]) == 2
    assert "was made for another edit: its cfg (7.5, here 5.0) differ" in capsys.readouterr().err
    assert main([*args[:-5], "--blend", "circle", "square", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "'circle' is not a word of the prompt 'a red square moving over a gradient'" in capsys.readouterr().err
