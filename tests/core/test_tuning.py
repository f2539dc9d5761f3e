"""One-shot tuning: which tensors learn, that the loss falls, determinism, resuming, options."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from support import max_abs, nudge, within
from tav_core import TavError, TuneAVideo, TuneConfig, demo_video, tune, video_parameters
from tav_core.loading.tiny import tiny_components
from tav_core.model.inflation import draw_fresh_temporal


@pytest.fixture
def pipe(tiny):
    return TuneAVideo(tiny)


@pytest.fixture
def latents(pipe):
    return pipe.encode_video(demo_video(4, 64, 64))


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_exactly_the_specified_parameters_change(pipe, latents):
    before = snapshot(pipe.c.unet)
    pipe.tune(latents, "a square", TuneConfig(steps=3, learning_rate=1e-3), progress=False)
    after = pipe.c.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}  # untouched tensors keep their bits
    trainable = {k for k in before if ".attn1.to_q." in k or ".attn2.to_q." in k or ".attn_temp." in k}
    assert changed == trainable
    assert any(".attn_temp.to_out.0.weight" in k for k in changed)
    assert not any(p.requires_grad for p in pipe.c.unet.parameters())  # flags restored


def fixed_loss(pipe, latents, cond, seed=123, n=6):
    """Noise-prediction loss on fixed (timestep, noise) draws: comparable before and after tuning."""
    scheduler = DDPMScheduler.from_config(pipe.c.scheduler_config)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad(), pipe.inflation.video(len(latents)):
        for _ in range(n):
            t = torch.randint(0, 1000, (1,), generator=g).expand(len(latents))
            noise = torch.randn(latents.shape, generator=g)
            pred = pipe.unet_fn(scheduler.add_noise(latents, noise, t), t, cond.expand(len(latents), -1, -1))
            total += F.mse_loss(pred, noise).item() / n
    return total


def test_tuning_lowers_the_loss(pipe, latents):
    cond = pipe.encode_prompt("a square")
    before = fixed_loss(pipe, latents, cond)
    losses = pipe.tune(latents, "a square", TuneConfig(steps=40, learning_rate=1e-3), progress=False)
    after = fixed_loss(pipe, latents, cond)
    print(f"fixed-draw loss {before:.4f} -> {after:.4f}; training loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert after < before * 0.9


def tuned_result(seed, steps=3, posterior="sample", nudged=False):
    """The tuned tensors of a fresh tiny model; ``nudged``: with the latents' mean and std moved by one ulp."""
    pipe = TuneAVideo(tiny_components(seed=0))
    mean, std = pipe.encode_posterior(demo_video(3, 64, 64))
    if nudged:
        mean, std = nudge(mean), nudge(std)
    pipe.tune(mean, "a square", TuneConfig(steps=steps, learning_rate=1e-3, seed=seed, posterior=posterior),
              progress=False, latent_std=std)
    return {k: v.detach().clone() for k, v in video_parameters(pipe.c.unet).items()}


def largest_difference(a: dict, b: dict) -> float:
    return max(max_abs(a[k], b[k]) for k in a)


def test_same_seed_same_result_different_seed_different_result():
    a, b, c = tuned_result(1), tuned_result(1), tuned_result(2)
    floor = largest_difference(tuned_result(1, nudged=True), a)
    # two model instances (their own memory, maybe other kernels): limit 10x how far the tuned tensors move when the
    # latents move by one ulp (Adam amplifies it: ~8e-6; other conv kernels move them 1.3x that); another seed
    # moves them by 6e-3, 75x the limit
    assert within(largest_difference(a, b), floor, 10, "same seed")
    assert largest_difference(a, c) > 10 * floor


def test_sampling_same_seed_same_result_with_eta(pipe, latents):
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)) * 14
    run = lambda seed: pipe.sample(noise, "a cat", guidance_scale=3.0, steps=4, eta=1.0, seed=seed)
    assert torch.equal(run(7), run(7))  # the same sampling on the same model, repeated: bit for bit
    assert max_abs(run(7), run(8)) > 0.1  # another seed's eta noise moves the sample by 7.9, not by rounding


def test_resume_continues_exactly(tmp_path):
    """With posterior sampling on: the generator state saved with the step makes the draws continue exactly."""
    straight = tuned_result(3, steps=6)
    floor = largest_difference(tuned_result(3, steps=6, nudged=True), straight)
    state = tmp_path / "state.safetensors"
    pipe = TuneAVideo(tiny_components(seed=0))
    mean, std = pipe.encode_posterior(demo_video(3, 64, 64))
    config = TuneConfig(steps=3, learning_rate=1e-3, seed=3, checkpoint_every=3, checkpoint_path=str(state))
    pipe.tune(mean, "a square", config, progress=False, latent_std=std)
    assert state.is_file()
    fresh = TuneAVideo(tiny_components(seed=0))  # a new process would start like this
    config.steps, config.resume = 6, True
    losses = fresh.tune(mean, "a square", config, progress=False, latent_std=std)
    assert len(losses) == 6
    resumed = video_parameters(fresh.c.unet)
    # another model instance ran the last 3 steps: limit 10x how far 6 straight steps move when the latents move by
    # one ulp (~9e-6); a resume without the generator or the optimiser state is 4.5e-3 off, 50x the limit
    assert within(largest_difference(resumed, straight), floor, 10, "resumed vs straight")


def test_callback_can_stop_tuning(pipe, latents):
    def stop(step, loss):
        if step == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        pipe.tune(latents, "x", TuneConfig(steps=10), callback=stop, progress=False)
    assert not any(p.requires_grad for p in pipe.c.unet.parameters())


def test_gradient_checkpointing_gives_the_same_update(latents):
    results = []
    for checkpointing, x in ((False, latents), (True, latents), (False, nudge(latents))):
        pipe = TuneAVideo(tiny_components(seed=0), gradient_checkpointing=checkpointing)
        pipe.tune(x, "a square", TuneConfig(steps=2, learning_rate=1e-3), progress=False)
        results.append(video_parameters(pipe.c.unet))
    plain, checkpointed, nudged = results
    # recomputed forwards on another instance: limit 10x how far plain tuning moves when the latents move by one ulp
    # (~7e-6); one Adam step moves the tensors by ~lr (1e-3)
    assert within(largest_difference(checkpointed, plain), largest_difference(nudged, plain), 10, "checkpointing")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_bf16_and_v_prediction_train(prediction_type):
    pipe = TuneAVideo(tiny_components(seed=0, prediction_type=prediction_type))
    latents = pipe.encode_video(demo_video(2, 64, 64))
    before = {k: v.clone() for k, v in video_parameters(pipe.c.unet, trainable_only=True).items()}
    losses = pipe.tune(latents, "x", TuneConfig(steps=2, learning_rate=1e-3, mixed_precision="bf16"), progress=False)
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    after = video_parameters(pipe.c.unet, trainable_only=True)
    assert all(after[k].dtype == torch.float32 for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # tuned: Adam moves them by ~lr (1e-3)


def test_bad_inputs_are_refused(pipe, latents):
    bad = latents.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(TavError, match="NaN"):
        pipe.tune(bad, "x", TuneConfig(steps=1), progress=False)
    with pytest.raises(TavError, match=r"latents must be \(frames"):
        pipe.tune(latents[0], "x", TuneConfig(steps=1), progress=False)
    with pytest.raises(TavError, match="mixed precision"):
        pipe.tune(latents, "x", TuneConfig(steps=1, mixed_precision="fp8"), progress=False)
    with pytest.raises(TavError, match="latents hold 4 frames but 5 were asked for"):
        pipe.sample(latents, "x", steps=2, num_frames=5)


def test_frame_window_tunes_on_runs_of_consecutive_frames(pipe, latents):
    batches = []

    def spy(x, t, cond):
        batches.append(x.shape[0])
        return pipe.unet_fn(x, t, cond)
    params = video_parameters(pipe.c.unet, trainable_only=True)
    before = {k: p.clone() for k, p in params.items()}
    tune(spy, params, pipe.inflation.video, latents, pipe.encode_prompt("x"), pipe.c.scheduler_config,
         TuneConfig(steps=3, learning_rate=1e-3, frame_window=2, posterior="mean"), progress=False)
    assert batches == [2, 2, 2]
    assert any(not torch.equal(before[k], params[k]) for k in params)  # tuned: Adam moves them by ~lr (1e-3)
    with pytest.raises(TavError, match="frame window"):
        pipe.tune(latents, "x", TuneConfig(steps=1, frame_window=0), progress=False)


def test_half_precision_weights_tune_fp32_tensors():
    pipe = TuneAVideo(tiny_components(seed=0), dtype=torch.bfloat16)
    assert pipe.c.unet.conv_in.weight.dtype == torch.bfloat16
    params = video_parameters(pipe.c.unet, trainable_only=True)
    assert all(p.dtype == torch.float32 for p in params.values())
    before = {k: p.clone() for k, p in params.items()}
    latents = pipe.encode_video(demo_video(2, 64, 64))
    pipe.tune(latents, "x", TuneConfig(steps=2, learning_rate=1e-3), progress=False)
    assert any(not torch.equal(before[k], params[k]) for k in params)  # tuned: Adam moves them by ~lr (1e-3)
    out = pipe.sample(pipe.invert(latents, 2), "y", steps=2)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_posterior_is_the_vaes(pipe):
    video = demo_video(2, 64, 64)
    mean, std = pipe.encode_posterior(video)
    pixels = torch.from_numpy(video).permute(0, 3, 1, 2).float() / 127.5 - 1

    @torch.no_grad()
    def posterior(pixels):  # both frames in one batch, the engine one by one
        mu, logvar = pipe.c.vae.quant_conv(pipe.c.vae.encoder(pixels)).chunk(2, dim=1)
        scale = pipe.c.vae.config.scaling_factor
        return mu * scale, (0.5 * logvar.clamp(-30, 20)).exp() * scale
    expected, nudged = posterior(pixels), posterior(nudge(pixels))
    for what, ours, want, moved in zip(("mean", "std"), (mean, std), expected, nudged):
        # other batch sizes: limit 100x how far the restatement moves when the pixels move by one ulp
        assert within(max_abs(ours, want), max_abs(moved, want), 100, what)
    assert torch.equal(pipe.encode_video(video), mean)  # the same encoding on the same VAE, repeated: bit for bit


@pytest.mark.parametrize("window", [None, 2])
def test_each_step_tunes_on_a_fresh_posterior_sample(pipe, monkeypatch, window):
    """Restated: the fresh temporal layers' initialisation, then per step t, the window's first frame, a posterior
    draw, then the noise, all from one generator seeded by the config."""
    mean, std = pipe.encode_posterior(demo_video(3, 64, 64))
    std = std + 0.3  # large enough to see
    seen = []
    original = DDPMScheduler.add_noise
    monkeypatch.setattr(DDPMScheduler, "add_noise", lambda self, x, n, t: (seen.append(x.clone()), original(self, x, n, t))[1])
    fresh = video_parameters(TuneAVideo(tiny_components(0)).c.unet, trainable_only=True)  # as the pipe's were
    pipe.tune(mean, "x", TuneConfig(steps=3, seed=11, frame_window=window), progress=False, latent_std=std)
    g = torch.Generator().manual_seed(11)
    draw_fresh_temporal(fresh, g)  # the initialisation's draws come first
    for x in seen:
        torch.randint(0, 1000, (1,), generator=g)
        first = int(torch.randint(0, 2, (1,), generator=g)) if window else 0
        frames = slice(first, first + (window or 3))
        draw = torch.randn(mean[frames].shape, generator=g)
        expected = mean[frames] + std[frames] * draw
        floor = max_abs(nudge(mean[frames]) + nudge(std[frames]) * draw, expected)
        # one multiply-add, perhaps fused or in another order: limit 10x its change under a 1-ulp input nudge
        assert within(max_abs(x, expected), floor, 10, "posterior sample")
        torch.randn(mean[frames].shape, generator=g)
    assert len(seen) == 3 and max_abs(seen[0], seen[1]) > 0.1  # fresh draws of std >= 0.3, not rounding


def test_posterior_mean_option_and_missing_std():
    a, b = tuned_result(4, posterior="mean"), tuned_result(4)
    floor = largest_difference(tuned_result(4, posterior="mean", nudged=True), a)
    # "mean" is deterministic: another model instance gives the same tensors, to 10x how far they move when the
    # latents move by one ulp (~1e-5); sampling changes what is learnt by 6e-3, 50x the limit
    assert within(largest_difference(tuned_result(4, posterior="mean"), a), floor, 10, "posterior mean, again")
    assert largest_difference(a, b) > 10 * floor
    pipe = TuneAVideo(tiny_components(seed=0))
    latents = pipe.encode_video(demo_video(2, 64, 64))
    params = video_parameters(pipe.c.unet, trainable_only=True)
    with pytest.raises(TavError, match="needs the VAE posterior std"):
        tune(pipe.unet_fn, params, pipe.inflation.video, latents, pipe.encode_prompt("x"), pipe.c.scheduler_config,
             TuneConfig(steps=1), progress=False)
    with pytest.raises(TavError, match="posterior must be"):
        pipe.tune(latents, "x", TuneConfig(steps=1, posterior="mode"), progress=False)
    assert pipe.tuned_config(TuneConfig()).posterior == "mean"  # no std given: what ran is recorded
