"""SDXL in the headless engine: conditioning, inflation, tuning, DDIM, null-text and P2P on a toy SDXL-architecture
model, against diffusers' own SDXL pipeline pieces and the restatements the SD tests use; loading; refusals."""

import copy

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionXLPipeline

from support import EPS, max_abs, nudge, randomize_temporal, reference_inversion, reference_sampling, relative, within
from tav_core import TavError, TuneAVideo, TuneConfig, demo_video, load_components
from tav_core.editing.attention_control import EditControl
from tav_core.editing.edit import edit, null_text_invert
from tav_core.editing.null_text import null_text_inversion
from tav_core.loading.checkpoints import inspect_checkpoint
from tav_core.loading.configs import ModelConfigs
from tav_core.loading.tiny import save_folder, tiny_sdxl_components
from tav_core.memory.stages import STAGES, plan_stage
from tav_core.memory.trace import Settings
from tav_core.model.conditioning import context_tokens, pack, unpack
from tav_core.sampling.ddim import vp_scale

FRAMES = 3


def diffusers_pipeline(c) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline(c.vae, c.text_encoder, c.text_encoder_2, c.tokenizer, c.tokenizer_2, c.unet,
                                     DDIMScheduler.from_config(c.scheduler_config))


def diffusers_conditioning(c, prompt: str, size: int = 64):
    """What diffusers' SDXL pipeline feeds its UNet for ``prompt`` at ``size`` pixels: token embeddings, pooled
    embedding, time ids (original = target = size, no crop)."""
    sdxl = diffusers_pipeline(c)
    hidden, _, pooled, _ = sdxl.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    ids = sdxl._get_add_time_ids((size, size), (0, 0), (size, size), hidden.dtype,
                                 c.text_encoder_2.config.projection_dim)
    return hidden, pooled, ids


def diffusers_unet(unet, prompts: list):
    """``unet_fn(x, t, which)`` as diffusers' SDXL pipeline calls the UNet: row r is conditioned on
    ``prompts[which[r]]`` (diffusers' conditioning of a prompt), so the restated loops can concatenate ``which``."""
    def fn(x, t, which):
        hidden, pooled, ids = (torch.cat([prompts[i][part] for i in which.tolist()]) for part in range(3))
        return unet(x, t, encoder_hidden_states=hidden.to(x.dtype), added_cond_kwargs={
            "text_embeds": pooled.to(x.dtype), "time_ids": ids.to(x.dtype)}).sample
    return fn


def rows(prompt: int, n: int = FRAMES) -> torch.Tensor:
    return torch.full((n,), prompt)


@pytest.fixture
def sdxl():
    return tiny_sdxl_components(seed=0)


def test_prompts_are_encoded_as_diffusers_sdxl_pipeline_encodes_them(sdxl):
    """Both text encoders' penultimate states (each tokenizer padding its way) and bigG's pooled projection: equal to
    diffusers' StableDiffusionXLPipeline.encode_prompt, also for the empty prompt (given, not zeroed)."""
    pipe = TuneAVideo(sdxl)
    for prompt in ("a cat walks on the grass", ""):
        hidden, pooled, _ = diffusers_conditioning(sdxl, prompt)
        ours_hidden, ours_pooled = unpack(pipe.encode_prompt(prompt), pipe.pooled_width)
        assert ours_hidden.shape == (1, 77, 1312) and ours_pooled.shape == (1, 1280)
        # the same modules on the same tokens: a short computation, bound 1e-6 relative
        assert relative(ours_hidden, hidden) < 1e-6 and relative(ours_pooled, pooled) < 1e-6
    # word indices (Prompt-to-Prompt) come from the first tokenizer: bigG's gives the same tokens before its padding
    a, b = (t("a spider-man is skiing").input_ids for t in (sdxl.tokenizer, sdxl.tokenizer_2))
    assert a == b


def test_pack_and_unpack_are_inverse():
    hidden, pooled = torch.randn(2, 77, 80), torch.randn(2, 1280)
    packed = pack(hidden, pooled)
    assert packed.shape == (2, 77 + 16, 80)  # a narrower context: 1280 / 80 = 16 rows
    h, p = unpack(packed, 1280)
    assert torch.equal(h, hidden) and torch.equal(p, pooled)  # saved values: bit for bit
    wide = pack(torch.randn(1, 77, 2048), pooled[:1])  # SDXL's own width: one row, zero-padded
    assert wide.shape == (1, 78, 2048) and torch.equal(unpack(wide, 1280)[1], pooled[:1])
    assert context_tokens(ModelConfigs.shipped("sdxl").unet) == 78


def test_inflated_sdxl_unet_equals_the_image_unet_before_tuning(sdxl):
    """A clip of one repeated frame through the inflated UNet (zero temporal output, clip-wide GroupNorm, sparse-causal
    attention) gives, frame by frame, what diffusers' SDXL UNet gives for the image."""
    image_unet = copy.deepcopy(sdxl.unet)
    pipe = TuneAVideo(sdxl)
    cond = pipe.encode_prompt("a cat")
    unet = diffusers_unet(image_unet, [diffusers_conditioning(sdxl, "a cat")])
    frame = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500])
    with torch.no_grad():
        theirs, moved = unet(frame, t, rows(0, 1)), unet(nudge(frame), t, rows(0, 1))
        with pipe.inflation.video(FRAMES):
            ours = pipe.unet_fn(frame.expand(FRAMES, -1, -1, -1), t.expand(FRAMES), cond.expand(FRAMES, -1, -1))
    # another batch size and other kernels: limit 100x the image UNet's change under a 1-ulp nudge of its input
    assert within(relative(ours, theirs.expand(FRAMES, -1, -1, -1)), relative(moved, theirs), 100, "inflated SDXL")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_sdxl_inversion_and_cfg_sampling_equal_the_reference(prediction_type):
    """The engine's DDIM inversion (empty prompt) and CFG-12.5 edit on an inflated SDXL UNet with non-zero temporal
    layers, against the reference's loops restated (tests/core/test_ddim.py) on the UNet called as diffusers' SDXL pipeline
    calls it (its encode_prompt and time ids), in float64 and float32."""
    steps = 6
    for dtype in (torch.float64, torch.float32):
        c = tiny_sdxl_components(seed=0, prediction_type=prediction_type)
        pipe = TuneAVideo(c)
        c.unet.to(dtype)
        randomize_temporal(c.unet)
        latents = pipe.encode_video(demo_video(FRAMES, 64, 64)).to(dtype)
        unet = diffusers_unet(c.unet, [diffusers_conditioning(c, p) for p in ("", "a yellow square")])

        def reference(z):
            scheduler = DDIMScheduler.from_config(c.scheduler_config)
            scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(dtype)
            scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.to(dtype)
            with torch.no_grad(), pipe.inflation.video(FRAMES):
                noise = reference_inversion(unet, scheduler, z, rows(0), steps, prediction_type)
                return noise, reference_sampling(unet, scheduler, noise, rows(1), rows(0), 12.5, steps)
        theirs, moved = reference(latents), reference(nudge(latents))
        noise = pipe.invert(latents, steps)
        ours = noise * vp_scale(pipe.ddim_sigmas(steps, dtype)[0]), \
            pipe.sample(noise, "a yellow square", "", guidance_scale=12.5, steps=steps)
        for what, o, t, n in zip(("inversion", "CFG-12.5 edit"), ours, theirs, moved):
            # the same maths in another order: limit 100x the reference's change under a 1-ulp nudge of the latents
            assert within(relative(o, t), relative(n, t), 100, f"SDXL {prediction_type} {dtype} {what}")


def test_sdxl_tuning_step_equals_a_plain_restatement(sdxl):
    """tune()'s first step on SDXL: its loss equals one written out from the reference's recipe (one timestep, per-frame
    noise, MSE on eps) on the UNet called as diffusers calls it; and the gradients of the tuned tensors equal those
    of that loss taken through diffusers' UNet."""
    pipe = TuneAVideo(sdxl)
    randomize_temporal(sdxl.unet)  # non-zero output projections: tuning draws no fresh temporal weights
    latents = pipe.encode_video(demo_video(FRAMES, 64, 64))
    unet = diffusers_unet(sdxl.unet, [diffusers_conditioning(sdxl, "a red square")])
    scheduler = DDPMScheduler.from_config(sdxl.scheduler_config)

    def restated_loss(z, params=None):
        g = torch.Generator().manual_seed(0)  # TuneConfig's seed: the timestep, then the noise
        t = torch.randint(0, 1000, (1,), generator=g).expand(FRAMES)
        noise = torch.randn(z.shape, generator=g)
        with pipe.inflation.video(FRAMES):
            return F.mse_loss(unet(scheduler.add_noise(z, noise, t), t, rows(0)), noise)
    trained = {k: p for k, p in sdxl.unet.named_parameters() if ".attn_temp." in k or ".to_q." in k}
    for p in trained.values():
        p.requires_grad_(True)
    loss = restated_loss(latents)
    grads = torch.autograd.grad(loss, list(trained.values()))
    moved_grads = torch.autograd.grad(restated_loss(nudge(latents)), list(trained.values()))
    for p in trained.values():
        p.requires_grad_(False)
    with torch.no_grad():
        moved_loss = restated_loss(nudge(latents))
    losses = pipe.tune(latents, "a red square", TuneConfig(steps=1, posterior="mean", learning_rate=0.0,
                                                           weight_decay=0.0), progress=False)
    # limit 100x the restatement's change under a 1-ulp nudge of the latents, or the loss's own ulp where that nudge
    # does not move a mean over every element (measured: it does not)
    floor = max(abs(moved_loss.item() - loss.item()), EPS * abs(loss.item()))
    assert within(abs(losses[0] - loss.item()), floor, 100, "SDXL tuning loss")
    # ours: the same loss through the engine's UNet call (packed conditioning), gradients of the same tensors
    cond = pipe.encode_prompt("a red square").expand(FRAMES, -1, -1)
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (1,), generator=g).expand(FRAMES)
    noise = torch.randn(latents.shape, generator=g)
    for p in trained.values():
        p.requires_grad_(True)
    with pipe.inflation.video(FRAMES):
        ours = torch.autograd.grad(F.mse_loss(pipe.unet_fn(scheduler.add_noise(latents, noise, t), t, cond), noise),
                                   list(trained.values()))
    error = max(max_abs(a, b) / b.abs().max().item() for a, b in zip(ours, grads) if b.abs().max() > 0)
    floor = max(max_abs(a, b) / b.abs().max().item() for a, b in zip(moved_grads, grads) if b.abs().max() > 0)
    assert within(error, floor, 100, "SDXL tuning gradients")


def test_null_text_and_p2p_edit_run_on_sdxl_and_keep_the_pooled_rows(sdxl):
    """Null-text inversion optimises the token rows of the unconditional conditioning only (SDXL's pooled rows stay
    the empty prompt's), reconstructs the clip closer than plain inversion; an identity P2P edit reproduces its
    source branch."""
    pipe = TuneAVideo(sdxl)
    randomize_temporal(sdxl.unet)
    latents = pipe.encode_video(demo_video(FRAMES, 64, 64))
    inversion = null_text_invert(pipe, latents, "a red square", steps=4, inner_steps=10)
    assert inversion.embeddings.shape == (4, 77, 1312)  # the null text: the token rows
    empty = pipe.encode_prompt("")
    sigmas = pipe.ddim_sigmas(2)
    with pipe.inflation.video(FRAMES):  # the optimisation itself leaves the pooled rows as they were, bit for bit
        _, packed = null_text_inversion(pipe.model(FRAMES), latents, sigmas, pipe.encode_prompt("a red square"), empty,
                                        7.5, inner_steps=3, tokens=77)
    assert torch.equal(packed[:, 77:], empty[:, 77:].expand(2, -1, -1))
    assert (packed[:, :77] - empty[:, :77]).abs().max() > 1e-3  # while the token rows were optimised
    plain = pipe.sample(pipe.invert(latents, 4, "a red square"), "a red square", guidance_scale=7.5, steps=4)
    retraced = pipe.sample(inversion, "a red square", guidance_scale=7.5)
    # mean squared reconstruction error, measured 0.54 against plain inversion's 1.18 (10 inner steps; 30: 0.36)
    assert F.mse_loss(retraced, latents) < 0.6 * F.mse_loss(plain, latents)
    source, edited = edit(pipe, inversion, EditControl("a red square", "a red square"), decoupled=False)
    assert max_abs(source, edited) <= 1e-5 * source.abs().max().item()


def test_fp16_keeps_sdxl_vae_in_fp32_unless_it_is_fixed(sdxl):
    pipe = TuneAVideo(sdxl, dtype=torch.float16)
    assert next(sdxl.vae.parameters()).dtype == torch.float32 and next(sdxl.unet.parameters()).dtype == torch.float16
    frames = demo_video(2, 64, 64)
    assert torch.isfinite(pipe.encode_video(frames)).all()
    fixed = tiny_sdxl_components(seed=0)
    fixed.vae.register_to_config(force_upcast=False)  # e.g. madebyollin's sdxl-vae-fp16-fix
    TuneAVideo(fixed, dtype=torch.float16)
    assert next(fixed.vae.parameters()).dtype == torch.float16


def test_sdxl_folder_and_single_file_load_offline(sdxl, tmp_path, test_models):
    folder = save_folder(sdxl, tmp_path / "sdxl")
    loaded = load_components(folder)
    assert loaded.is_sdxl and loaded.tokenizer_2.pad_token == "!" and loaded.tokenizer.pad_token == "<|endoftext|>"
    assert torch.equal(TuneAVideo(loaded).encode_prompt("a cat"), TuneAVideo(sdxl).encode_prompt("a cat"))
    single = load_components(test_models / "tiny-sdxl.safetensors", config=test_models / "tiny-sdxl-config")
    source = tiny_sdxl_components(seed=0)
    for a, b, dtype in ((single.unet, source.unet, torch.float32), (single.text_encoder, source.text_encoder, torch.float16),
                        (single.text_encoder_2, source.text_encoder_2, torch.float16)):  # (text encoders stored in fp16)
        sa = a.state_dict()
        assert all(torch.equal(sa[k].to(dtype), v.to(dtype)) for k, v in b.state_dict().items())  # copies: bit for bit
    assert single.vae.config.scaling_factor == 0.13025 and single.scheduler_config["steps_offset"] == 1
    assert not single.scheduler_config["set_alpha_to_one"]
    configs = inspect_checkpoint(test_models / "tiny-sdxl.safetensors", config=test_models / "tiny-sdxl-config")
    assert configs.text_encoder_2["hidden_size"] == 1280 and configs.unet["cross_attention_dim"] == 1312
    with pytest.raises(TavError, match="another shape than SD's \\(sdxl\\) config"):
        inspect_checkpoint(test_models / "tiny-sdxl.safetensors")  # the shipped full-size SDXL config does not fit


def test_other_families_are_refused_by_name(tmp_path):
    cases = {"SDXL refiner": {"conditioner.embedders.0.model.text_projection": torch.zeros(1),
                              "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1)},
             "SD3": {"model.diffusion_model.joint_blocks.0.x": torch.zeros(1)},
             "Flux": {"double_blocks.0.x": torch.zeros(1)},
             "Playground 2.5": {"edm_mean": torch.zeros(1), "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1)},
             "not both of SDXL's text encoders": {"model.diffusion_model.label_emb.0.0.weight": torch.zeros(1),
                                                  "conditioner.embedders.0.transformer.x": torch.zeros(1)}}
    for name, tensors in cases.items():
        path = tmp_path / "m.safetensors"
        safetensors.torch.save_file(tensors, str(path))
        with pytest.raises(TavError, match=name):
            inspect_checkpoint(path)


def test_every_stage_is_planned_for_sdxl(sdxl):
    """The planner runs each stage's own code on fake SDXL modules: two text encoders and the pooled rows included."""
    configs = ModelConfigs.of(sdxl)
    assert configs.text_encoder_2["projection_dim"] == 1280
    for stage in STAGES:
        plan = plan_stage(configs, stage, Settings(FRAMES, 64, 64), "cpu")
        assert plan.total > 0


def test_cli_tunes_and_edits_an_sdxl_checkpoint(tmp_path, test_models, capsys):
    """``tuneavideo run --model sdxl.safetensors`` as for SD1.5: tunes, saves, edits (P2P with null text too)."""
    from tav_core.cli import main
    from tav_core.loading.tuned import read_metadata
    model = ["--model", str(test_models / "tiny-sdxl.safetensors"), "--config", str(test_models / "tiny-sdxl-config"),
             "--frames", "2", "--width", "64", "--height", "64", "--steps", "2"]
    weights, out = tmp_path / "w.safetensors", tmp_path / "e.gif"
    assert main(["run", *model, "--tune-steps", "1", "--weights", str(weights), "--out", str(out)]) == 0
    assert out.is_file() and read_metadata(weights)["frames"] == 2
    assert main(["edit", *model, "--weights", str(weights), "--out", str(tmp_path / "p2p.gif"), "--p2p",
                 "--prompt", "a red square", "--edit-prompt", "a blue square", "--inner-steps", "1"]) == 0
    assert "Traceback" not in capsys.readouterr().err
