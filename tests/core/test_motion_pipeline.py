"""The pipeline with an AnimateDiff motion module as its temporal layers: generation from noise against diffusers'
AnimateDiffPipeline, clips longer than the module encodes, tuning (full and LoRA), tuned files that name the module."""

import pytest
import torch
from safetensors import safe_open
from diffusers import AnimateDiffPipeline, DDIMScheduler

from motion_layout import tiny_module
from support import nudge, reference_inversion, reference_sampling, relative, within
from tav_core import TavError
from tav_core.editing.pipeline import TuneAVideo
from tav_core.loading.motion import MotionModule
from tav_core.loading.tiny import tiny_components, tiny_sdxl_components
from tav_core.loading.tuned import read_metadata, video_parameters
from tav_core.sampling.ddim import vp_scale
from tav_core.sampling.windows import ContextWindows, Passes
from tav_core.tuning.tune import TuneConfig

FRAMES = 8


def pipeline(module: MotionModule | None = None, **kw) -> TuneAVideo:
    return TuneAVideo(tiny_components(seed=0), motion_module=module or tiny_module(), **kw)


def generates_as(pipe: TuneAVideo, theirs_pipe, what: str) -> None:
    """DDIM with CFG from the same latents, 8 frames: the engine against a diffusers AnimateDiff pipeline on the same
    weights, within 100x how far diffusers' own result moves when the latents move by one ulp (10 steps amplify by
    CFG 7.5)."""
    theirs_pipe.set_progress_bar_config(disable=True)
    z = torch.randn(1, 4, FRAMES, 8, 8, generator=torch.Generator().manual_seed(3))
    run = dict(prompt="a red square", negative_prompt="", num_frames=FRAMES, height=64, width=64,
               num_inference_steps=10, guidance_scale=7.5, output_type="latent")
    with torch.no_grad():
        theirs = theirs_pipe(latents=z, **run).frames[0].transpose(0, 1)
        moved = theirs_pipe(latents=nudge(z), **run).frames[0].transpose(0, 1)
    top = pipe.ddim_sigmas(10)[0]
    ours = pipe.sample(z[0].transpose(0, 1) / vp_scale(top), "a red square", "", guidance_scale=7.5, steps=10)
    assert within(relative(ours, theirs), relative(moved, theirs), 100, what)
    assert relative(ours, z[0].transpose(0, 1)) > 0.1  # (it denoised)


def test_generation_from_noise_is_diffusers_animatediff_pipeline():
    pipe = pipeline()
    c = pipe.c
    generates_as(pipe, AnimateDiffPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet,
                                           motion_adapter=pipe.inflation.motion.adapter,
                                           scheduler=DDIMScheduler.from_config(c.scheduler_config)),
                 "AnimateDiff generation")


def test_sdxl_generation_from_noise_is_diffusers_animatediff_sdxl_pipeline():
    """The same with an SDXL-shaped model and module, against ``AnimateDiffSDXLPipeline`` (both text encoders, the
    pooled embedding, the size conditioning of the clip's own size)."""
    from diffusers import AnimateDiffSDXLPipeline
    module = tiny_module(channels=(32, 128), version="sdxl")
    pipe = TuneAVideo(tiny_sdxl_components(0), motion_module=module)
    c = pipe.c
    theirs_pipe = AnimateDiffSDXLPipeline(vae=c.vae, text_encoder=c.text_encoder, text_encoder_2=c.text_encoder_2,
                                          tokenizer=c.tokenizer, tokenizer_2=c.tokenizer_2, unet=c.unet,
                                          motion_adapter=module.adapter,
                                          scheduler=DDIMScheduler.from_config(c.scheduler_config))
    theirs_pipe.unet.add_embedding.load_state_dict(c.unet.add_embedding.state_dict())  # (from_unet2d leaves it out)
    generates_as(pipe, theirs_pipe, "AnimateDiff SDXL generation")


def test_a_module_for_another_family_is_refused_when_the_pipeline_is_made():
    """An SD-shaped module on the SDXL-shaped model: its layer counts happen to fit, its widths do not."""
    with pytest.raises(TavError, match="64 channels wide where the UNet's are 128: give a module made for this model"):
        TuneAVideo(tiny_sdxl_components(0), motion_module=tiny_module())


def test_the_pipeline_tunes_its_own_copy_of_the_module_in_fp32():
    module = tiny_module()
    module.adapter.half()
    before = {k: p.clone() for k, p in module.adapter.state_dict().items()}
    pipe = pipeline(module)
    assert all(p.dtype == torch.float32 for p in pipe.inflation.motion.adapter.parameters())
    pipe.tune(torch.randn(4, 4, 8, 8), "a red square", TuneConfig(steps=1, learning_rate=1e-2), progress=False)
    assert all(torch.equal(before[k], p) for k, p in module.adapter.state_dict().items())  # the given one as loaded


def test_longer_clips_than_the_module_encodes_run_in_frame_windows_or_are_refused():
    pipe = pipeline(tiny_module(max_frames=8))
    noise = torch.randn(12, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 14
    with pytest.raises(TavError, match="at most 8 frames and this pass has 12.*--context-length"):
        pipe.sample(noise, "a red square", steps=2)
    out = pipe.sample(noise, "a red square", steps=2, passes=Passes(windows=ContextWindows(8, 4)))
    assert out.shape == noise.shape and bool(torch.isfinite(out).all())


def test_full_tuning_trains_the_queries_and_the_whole_motion_module_and_its_file_names_the_module(tmp_path):
    pipe = pipeline()
    trained = video_parameters(pipe.c.unet, trainable_only=True)
    motion = {k for k in trained if k.startswith("motion.")}
    assert motion == {f"motion.{n}" for n, _ in pipe.inflation.motion.adapter.named_parameters()}
    assert {k.split(".", 2)[2] for k in set(trained) - motion} == {"attn1.to_q.weight", "attn2.to_q.weight"}
    assert not any("attn_temp" in k for k in video_parameters(pipe.c.unet))
    before = {k: p.detach().clone() for k, p in trained.items()}
    frozen = {n: p.detach().clone() for n, p in pipe.c.unet.named_parameters() if "to_q" not in n}
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pipe.tune(latents, "a red square", TuneConfig(steps=2, learning_rate=1e-3), progress=False)
    assert all(not torch.equal(before[k], p) for k, p in trained.items() if not k.endswith(".bias"))
    assert all(torch.equal(frozen[n], p) for n, p in pipe.c.unet.named_parameters() if n in frozen)

    path = tmp_path / "tuned.safetensors"
    pipe.save_tuned(path, "a red square", 4, 64, 64, TuneConfig(steps=2))
    meta = read_metadata(path)
    assert (meta["motion_version"], meta["frame_attention"], meta["group_norm"]) == ("v2", "per_frame", "frame")
    fresh = pipeline()  # the same module, loaded again
    fresh.load_tuned(path)
    ours = video_parameters(fresh.c.unet)
    assert all(torch.equal(ours[k], p.float()) for k, p in video_parameters(pipe.c.unet).items())
    with pytest.raises(TavError, match="tuned with another motion module"):
        pipeline(tiny_module(seed=5)).load_tuned(path)
    with pytest.raises(TavError, match="tuned with an AnimateDiff motion module .v2.; give that module"):
        TuneAVideo(tiny_components(seed=0)).load_tuned(path)


def test_lora_adapts_the_queries_and_the_motion_modules_attentions_and_loads_back(tmp_path):
    """Step 0 of LoRA tuning computes the untuned model; its file holds adapters only (the module is its base), and
    loading it into the same model with the same module gives the tuned weights back."""
    pipe = pipeline()
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x, t = torch.randn(4, 4, 8, 8), torch.tensor([500] * 4)
    cond = pipe.encode_prompt("a red square").expand(4, -1, -1)
    with torch.no_grad(), pipe.inflation.video(4):
        untuned = pipe.unet_fn(x, t, cond)
    config = TuneConfig(steps=3, learning_rate=1e-2, lora_rank=2)
    pipe.tune(latents, "a red square", config, progress=False)
    path = tmp_path / "lora.safetensors"
    pipe.save_tuned(path, "a red square", 4, 64, 64, config)
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())
    layer = lambda k: k.removesuffix(".weight").removesuffix(".lora_down").removesuffix(".lora_up").removesuffix(".alpha")  # noqa: E731
    motion_layers = {layer(k).split("transformer_blocks.0.")[1] for k in keys if k.startswith("motion.")}
    assert motion_layers == {f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")}
    assert not any("attn_temp" in k for k in keys) and "temporal_seed" not in read_metadata(path)

    fresh = pipeline()
    untouched = {k: p.detach().clone() for k, p in video_parameters(fresh.c.unet).items()}
    fresh.load_tuned(path)
    tuned = video_parameters(pipe.c.unet)
    for k, p in video_parameters(fresh.c.unet).items():  # W0 + (alpha/r) B A, merged in either order of rounding
        assert torch.allclose(p.float(), tuned[k].float(), rtol=1e-5, atol=1e-6), k
    changed = [k for k, p in tuned.items() if not torch.allclose(p.float(), untouched[k].float())]
    assert any(k.startswith("motion.") for k in changed) and any(k.startswith("blocks.") for k in changed)
    with torch.no_grad(), fresh.inflation.video(4):
        assert relative(fresh.unet_fn(x, t, cond), untuned) > 1e-4  # (the loaded adapters act)


def test_inversion_and_edit_with_a_motion_module_are_the_reference_loops():
    """Tune-A-Video's inversion and CFG-12.5 edit, run with the motion module: the engine against the reference's loops
    (``support``) through the same video model, within 100x their own one-ulp movement."""
    pipe = pipeline()
    latents = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    empty = pipe.encode_prompt("").expand(FRAMES, -1, -1)
    edit = pipe.encode_prompt("a blue square").expand(FRAMES, -1, -1)

    def reference(z):
        scheduler = DDIMScheduler.from_config(pipe.c.scheduler_config)
        with torch.no_grad(), pipe.inflation.video(FRAMES):
            noise = reference_inversion(pipe.unet_fn, scheduler, z, empty, 5, "epsilon")
            return noise, reference_sampling(pipe.unet_fn, scheduler, noise, edit, empty, 12.5, 5)
    (noise, theirs), (moved_noise, moved) = reference(latents), reference(nudge(latents))
    ours_noise = pipe.invert(latents, steps=5)
    ours = pipe.sample(ours_noise, "a blue square", steps=5)
    top = vp_scale(pipe.ddim_sigmas(5)[0])
    assert within(relative(ours_noise * top, noise), relative(moved_noise, noise), 100, "inversion")
    assert within(relative(ours, theirs), relative(moved, theirs), 100, "edit")


def test_prompt_to_prompt_with_a_motion_module_controls_the_frames_attention_and_refuses_temporal_control():
    """Video-P2P's edit runs with a module (its self-control on the frames' attention, Prompt-to-Prompt's); the
    temporal self-control, made for Tune-A-Video's temporal attention, is refused by name rather than doing nothing."""
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit
    pipe = pipeline()
    noise = pipe.invert(torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1)), steps=2)
    source, edited = edit(pipe, noise, EditControl("a cat walks", "a dog walks"), steps=2)
    assert edited.shape == noise.shape and bool(torch.isfinite(edited).all()) and relative(edited, source) > 1e-3
    with pytest.raises(TavError, match="temporal self-control acts on Tune-A-Video's temporal attention"):
        edit(pipe, noise, EditControl("a cat walks", "a dog walks", self_control="temporal"), steps=2)
