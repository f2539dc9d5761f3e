"""DDIM sampling and inversion: against the reference's formulas, diffusers' DDIMScheduler, closed forms."""

import pytest
import torch
from diffusers import DDIMScheduler

from support import max_abs, nudge, randomize_temporal, reference_inversion, reference_sampling, relative, within
from tav_core import TavError, TuneAVideo, demo_video
from tav_core.loading.configs import sd_scheduler_config
from tav_core.loading.tiny import tiny_components
from tav_core.sampling.ddim import invert_ddim, sample_ddim, vp_scale
from tav_core.sampling.denoiser import DiscreteDenoiser
from tav_core.sampling.schedule import alphas_cumprod, ddim_sigmas, ddim_timesteps, final_sigma, sigma_table

CONFIG = sd_scheduler_config()
ALPHAS = alphas_cumprod(CONFIG)
TABLE = sigma_table(ALPHAS)


def sigmas(steps, config=CONFIG):
    return ddim_sigmas(TABLE, ddim_timesteps(config, steps), final_sigma(config, TABLE))


def test_schedule_is_the_references():
    """50 steps: timesteps 981 ... 21, 1, then alpha_bar[0] (set_alpha_to_one false): sigma ~0.029, not 0."""
    ts = ddim_timesteps(CONFIG, 50)
    assert ts[0] == 981 and ts[-2] == 21 and ts[-1] == 1 and len(ts) == 50
    s = sigmas(50)
    assert s[-1] == TABLE[0] and 0.028 < s[-1] < 0.03  # a value copied from the table: bit for bit
    assert final_sigma({**CONFIG, "set_alpha_to_one": True}, TABLE) == 0.0


def gaussian_denoiser(mu, s):
    """The exact denoiser of data ~ N(mu, s^2): its probability-flow ODE has a closed-form solution."""
    return lambda x, sigma: mu + s ** 2 / (s ** 2 + sigma.view(-1, 1) ** 2) * (x - mu)


@pytest.mark.parametrize("steps", [50, 400])
def test_inversion_follows_the_exact_ode_and_round_trip_converges(steps):
    mu, s = 0.3, 0.5
    z0 = mu + s * torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    model = gaussian_denoiser(mu, s)
    down = sigmas(steps)
    noise = invert_ddim(model, z0, down.flip(0))
    start = z0 / vp_scale(down[-1])  # the clean latents, taken at the lowest level
    exact = mu + (start - mu) * ((s ** 2 + down[0] ** 2) / (s ** 2 + down[-1] ** 2)).sqrt()  # x(sigma) on the ODE
    back = sample_ddim(model, noise, down)
    inv_err, rec_err = (noise - exact).abs().max().item(), (back - z0).abs().max().item()
    print(f"steps={steps}: inversion error {inv_err:.4f}, round-trip error {rec_err:.4f}")
    # truncation error, not rounding (~1e-6): a first-order method's error shrinks in proportion to the step size
    # (measured at 50 / 400 steps: round trip 0.053 / 0.005 against 0.2 / 0.025, inversion 0.70 / 0.04 against
    # 7.3 / 0.9)
    bound = 0.2 * 50 / steps
    assert rec_err < bound and inv_err < 0.5 * down[0].item() * 50 / steps


def test_round_trip_is_exact_for_a_constant_noise_field():
    """With eps independent of x and sigma every inversion step is undone exactly by a sampling step."""
    eps = torch.randn(3, 8)
    down = sigmas(25)
    z0 = torch.randn(3, 8)
    model = lambda eps: lambda x, sigma: x - sigma.view(-1, 1) * eps
    noise = invert_ddim(model(eps), z0, down.flip(0))
    back = sample_ddim(model(eps), noise, down)
    exact = z0 / vp_scale(down[-1]) + (down[0] - down[-1]) * eps
    # exact but for rounding, which the 25 steps carry at the noise's scale (~15): limit 100x how far each chain
    # moves when its inputs move by one ulp
    floor = max_abs(invert_ddim(model(nudge(eps)), nudge(z0), down.flip(0)), noise)
    assert within(max_abs(noise, exact), floor, 100, "inversion vs closed form")
    floor = max_abs(sample_ddim(model(nudge(eps)), nudge(noise), down), back)
    assert within(max_abs(back, z0), floor, 100, "round trip vs start")


def eps_net(x, t, cond):
    """A smooth stand-in UNet: depends on its input, the timestep and the conditioning."""
    return torch.tanh(x * 0.7 + t.view(-1, 1, 1, 1) / 1000 + cond.view(-1, 1, 1, 1))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_sampling_equals_diffusers_ddim_scheduler_steps(prediction_type, eta):
    config = dict(CONFIG, prediction_type=prediction_type)
    scheduler = DDIMScheduler.from_config(config)
    scheduler.set_timesteps(20)
    cond = torch.tensor([0.3, -0.2])
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(5)
    theirs = z.clone()
    for t in scheduler.timesteps:
        theirs = scheduler.step(eps_net(theirs, t.expand(2).float(), cond), t, theirs, eta=eta, generator=g).prev_sample

    down = sigmas(20, config)
    denoiser = DiscreteDenoiser(eps_net, ALPHAS, prediction_type)
    # both draw the step noise after the model call, in the same order, so one seed gives one path
    ours = sample_ddim(lambda x, s: denoiser(x, s, cond), z / vp_scale(down[0]), down, eta, torch.Generator().manual_seed(5))
    nudged, g = nudge(z), torch.Generator().manual_seed(5)
    for t in scheduler.timesteps:
        nudged = scheduler.step(eps_net(nudged, t.expand(2).float(), cond), t, nudged, eta=eta, generator=g).prev_sample
    # the same maths in another order: limit 100x how far diffusers' 20 steps move when z moves by one ulp
    assert within(relative(ours, theirs), relative(nudged, theirs), 100, f"{prediction_type}, eta {eta}")


def reference_edit(pipe, latents, steps, prediction_type):
    """The reference's inversion and CFG-12.5 edit of ``latents`` with ``pipe``'s UNet."""
    frames = len(latents)
    scheduler = DDIMScheduler.from_config(pipe.c.scheduler_config)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(latents.dtype)  # its arithmetic in the latents' dtype
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.to(latents.dtype)
    empty = pipe.encode_prompt("").expand(frames, -1, -1)
    edit = pipe.encode_prompt("a yellow square").expand(frames, -1, -1)
    with torch.no_grad(), pipe.inflation.video(frames):
        noise = reference_inversion(pipe.unet_fn, scheduler, latents, empty, steps, prediction_type)
        return noise, reference_sampling(pipe.unet_fn, scheduler, noise, edit, empty, 12.5, steps)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inversion_and_cfg_sampling_equal_the_reference_on_an_inflated_model(prediction_type):
    """The engine against the reference's formulas on one tiny inflated UNet with non-zero temporal layers.

    The maths is the same, the order of operations not: in float64 and float32 alike the engine's inversion and
    CFG-12.5 edit are held to the reference's own change when its latents move by one ulp of that dtype (CFG
    12.5 and the 10-step chains amplify it)."""
    frames, steps = 4, 10
    for dtype in (torch.float64, torch.float32):
        pipe = TuneAVideo(tiny_components(seed=0, prediction_type=prediction_type))
        pipe.c.unet.to(dtype)  # the text encoder stays float32: prompts are cast to the latents' dtype
        randomize_temporal(pipe.c.unet)
        latents = pipe.encode_video(demo_video(frames, 64, 64)).to(dtype)
        theirs = reference_edit(pipe, latents, steps, prediction_type)
        nudged = reference_edit(pipe, nudge(latents), steps, prediction_type)
        noise = pipe.invert(latents, steps)
        ours = noise * vp_scale(pipe.ddim_sigmas(steps, dtype)[0]), \
            pipe.sample(noise, "a yellow square", "", guidance_scale=12.5, steps=steps)
        for what, o, t, n in zip(("inversion", "CFG-12.5 edit"), ours, theirs, nudged):
            # max relative difference; limit 100x the reference's change under the 1-ulp nudge (float32 edit:
            # ~1.6e-3, while CFG 12.4 instead of 12.5 moves it by 8e-3)
            assert within(relative(o, t), relative(n, t), 100, f"{prediction_type} {dtype} {what}")


def test_denoiser_recovers_x0_from_exact_predictions():
    x0, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([10, 500, 990])
    a = ALPHAS[t].view(-1, 1, 1, 1)
    sigma = ((1 - a) / a).sqrt().flatten()
    x = x0 + sigma.view(-1, 1, 1, 1) * noise
    for kind, target in (("epsilon", noise), ("v_prediction", a.sqrt() * noise - (1 - a).sqrt() * x0)):
        def denoise(x, sigma):
            """(x0, the UNet's timestep, the UNet's input) from the exact prediction ``target``."""
            seen = []
            unet = lambda x_in, t_in, cond: seen.extend([t_in, x_in]) or target
            return DiscreteDenoiser(unet, ALPHAS, kind)(x, sigma, None), *seen
        got, moved = denoise(x, sigma), denoise(nudge(x), nudge(sigma))
        exact = x0, t.float(), a.sqrt() * x0 + (1 - a).sqrt() * noise  # x0, the training timestep, the VP input
        for what, ours, want, nudged in zip(("x0", "timestep", "VP input"), got, exact, moved):
            # exact but for rounding: limit 100x how far each moves when x and sigma move by one ulp
            assert within(max_abs(ours, want), max_abs(nudged, ours), 100, f"{kind}: {what}")


def test_pipeline_round_trip_on_tiny_unet(tiny):
    pipe = TuneAVideo(tiny)
    latents = pipe.encode_video(demo_video(4, 64, 64))
    errors = {}
    for steps in (10, 100):
        back = pipe.sample(pipe.invert(latents, steps), "", guidance_scale=1.0, steps=steps)
        errors[steps] = (back - latents).abs().mean().item()
    print(f"tiny UNet round-trip mean abs error: {errors} (latent mean abs {latents.abs().mean():.4f})")
    assert errors[100] < errors[10]  # truncation errors (0.44 -> 0.23), far above rounding: a plain comparison


def test_bad_step_counts_are_refused():
    for steps in (0, 1000, 2.5, True):
        with pytest.raises(TavError, match="steps must be"):
            ddim_timesteps(CONFIG, steps)
    with pytest.raises(TavError, match="prediction type"):
        DiscreteDenoiser(eps_net, ALPHAS, "sample")
