"""DDIM sampling and inversion: against closed forms, against diffusers' DDIMScheduler, and round trips."""

import json

import pytest
import torch
from diffusers import DDIMScheduler

from tav_core import TavError, TuneAVideo, demo_video
from tav_core.ddim import invert_ddim, sample_ddim
from tav_core.denoiser import DiscreteDenoiser
from tav_core.models import CONFIGS
from tav_core.schedule import alphas_cumprod, ddim_timesteps, inversion_sigmas, sampling_sigmas

CONFIG = json.loads((CONFIGS / "sd1" / "scheduler" / "scheduler_config.json").read_text())
ALPHAS = alphas_cumprod(CONFIG)


def gaussian_denoiser(mu, s):
    """The exact denoiser of data ~ N(mu, s^2): its probability-flow ODE has a closed-form solution."""
    return lambda x, sigma: mu + s ** 2 / (s ** 2 + sigma.view(-1, 1) ** 2) * (x - mu)


@pytest.mark.parametrize("steps", [50, 400])
def test_inversion_follows_the_exact_ode_and_round_trip_converges(steps):
    mu, s = 0.3, 0.5
    x0 = mu + s * torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    model = gaussian_denoiser(mu, s)
    ts = ddim_timesteps(CONFIG, steps)
    up = inversion_sigmas(ALPHAS, ts)
    noise = invert_ddim(model, x0, up)
    exact = mu + (x0 - mu) * ((s ** 2 + up[-1] ** 2) / s ** 2).sqrt()  # x(sigma) along the ODE
    back = sample_ddim(model, noise, sampling_sigmas(ALPHAS, ts))
    inv_err, rec_err = (noise - exact).abs().max().item(), (back - x0).abs().max().item()
    print(f"steps={steps}: inversion error {inv_err:.4f}, round-trip error {rec_err:.4f}")
    bound = 0.2 * 50 / steps  # first-order method: the error shrinks in proportion to the step size
    assert rec_err < bound and inv_err < 0.5 * up[-1].item() * 50 / steps


def test_round_trip_is_exact_for_a_constant_noise_field():
    """With eps independent of x and sigma every inversion step is undone exactly by a sampling step."""
    eps = torch.randn(3, 8)
    model = lambda x, sigma: x - sigma.view(-1, 1) * eps
    ts = ddim_timesteps(CONFIG, 25)
    x0 = torch.randn(3, 8)
    noise = invert_ddim(model, x0, inversion_sigmas(ALPHAS, ts))
    torch.testing.assert_close(noise, x0 + sampling_sigmas(ALPHAS, ts)[0] * eps, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(sample_ddim(model, noise, sampling_sigmas(ALPHAS, ts)), x0, atol=1e-4, rtol=1e-5)


def eps_net(x, t, cond):
    """A smooth stand-in UNet: depends on its input, the timestep and the conditioning."""
    return torch.tanh(x * 0.7 + t.view(-1, 1, 1, 1) / 1000 + cond.view(-1, 1, 1, 1))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_sampling_matches_diffusers_ddim_scheduler(prediction_type, eta):
    config = dict(CONFIG, prediction_type=prediction_type)
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(20)
    cond = torch.tensor([0.3, -0.2])
    x_vp = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    g = torch.Generator().manual_seed(5)
    x = x_vp.clone()
    for t in scheduler.timesteps:
        out = scheduler.step(eps_net(x, t.expand(2).float(), cond), t, x, eta=eta, generator=g)
        x = out.prev_sample
    final_x0 = out.pred_original_sample  # diffusers' last step goes to alpha_bar[0]; ours returns this x0

    denoiser = DiscreteDenoiser(eps_net, ALPHAS, prediction_type)
    sigmas = sampling_sigmas(ALPHAS, ddim_timesteps(config, 20))
    start = x_vp * (1 + sigmas[0] ** 2).sqrt()  # VP sample at the top timestep, in k-diffusion's scale
    # both draw the step noise after the model call, in the same order, so one seed gives one path
    ours = sample_ddim(lambda x, s: denoiser(x, s, cond), start, sigmas, eta, torch.Generator().manual_seed(5))
    torch.testing.assert_close(ours, final_x0, atol=1e-4, rtol=1e-4)


def test_denoiser_recovers_x0_from_exact_predictions():
    x0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([10, 500, 990])
    a = ALPHAS[t].view(-1, 1, 1, 1)
    for kind, target in (("epsilon", noise), ("v_prediction", a.sqrt() * noise - (1 - a).sqrt() * x0)):
        def unet(x_in, t_in, cond):
            assert torch.allclose(t_in, t.float(), atol=1e-3)  # the exact training timestep is recovered
            torch.testing.assert_close(x_in, a.sqrt() * x0 + (1 - a).sqrt() * noise)  # the VP input
            return target
        sigma = ((1 - a) / a).sqrt().flatten()
        got = DiscreteDenoiser(unet, ALPHAS, kind)(x0 + sigma.view(-1, 1, 1, 1) * noise, sigma, None)
        torch.testing.assert_close(got, x0, atol=1e-4, rtol=1e-4)


def test_pipeline_round_trip_on_tiny_unet(tiny):
    pipe = TuneAVideo(tiny)
    latents = pipe.encode_video(demo_video(4, 64, 64))
    errors = {}
    for steps in (10, 100):
        back = pipe.sample(pipe.invert(latents, steps), "", guidance_scale=1.0, steps=steps)
        errors[steps] = (back - latents).abs().mean().item()
    print(f"tiny UNet round-trip mean abs error: {errors} (latent mean abs {latents.abs().mean():.4f})")
    assert errors[100] < errors[10]


def test_bad_step_counts_are_refused():
    for steps in (0, 1000, 2.5):
        with pytest.raises(TavError, match="steps must be"):
            ddim_timesteps(CONFIG, steps)
    with pytest.raises(TavError, match="prediction type"):
        DiscreteDenoiser(eps_net, ALPHAS, "sample")
