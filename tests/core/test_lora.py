"""LoRA tuning: the adapters' formula and gradients, step 0, the first loss, files, strength, resume, refusals."""

import json

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from support import EPS, max_abs, nudge, randomize_temporal, within
from tav_core import TavError, TuneAVideo, TuneConfig, demo_video, video_parameters
from tav_core.loading.tiny import tiny_components
from tav_core.loading.tuned import read_metadata
from tav_core.model.inflation import transformer_blocks
from tav_core.model.lora import SPATIAL, TEMPORAL, add_adapters, draw_adapters, remove_adapters

LORA = dict(lora_rank=4, lora_alpha=8.0)


@pytest.fixture
def pipe(tiny):
    return TuneAVideo(tiny)


@pytest.fixture
def latents(pipe):
    return pipe.encode_video(demo_video(3, 64, 64))


def blocks(pipe):
    return [block for _, block in transformer_blocks(pipe.c.unet)]


def weights(pipe) -> dict:
    return {k: v.detach().clone() for k, v in pipe.c.unet.state_dict().items()}


def largest_difference(a: dict, b: dict) -> float:
    return max(max_abs(a[k].float(), b[k].float()) for k in a)


def lora_tuned(seed=1, steps=3, nudged=False, **options):
    """The weights of a fresh tiny model LoRA-tuned (adapters merged), and the pipeline."""
    pipe = TuneAVideo(tiny_components(seed=0))
    latents = pipe.encode_video(demo_video(3, 64, 64))
    config = TuneConfig(steps=steps, learning_rate=1e-2, seed=seed, **{**LORA, **options})
    pipe.tune(nudge(latents) if nudged else latents, "a square", config, progress=False)
    return weights(pipe), pipe


def test_a_lora_layer_computes_w_plus_scaled_b_a(pipe):
    """PEFT's layer against the formula W x + b + (alpha / r) B A x, computed in float64 from the same tensors."""
    block = blocks(pipe)[0]
    params = add_adapters([block], SPATIAL + TEMPORAL, 4, 8.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    for layer in SPATIAL + TEMPORAL:
        module = block.get_submodule(layer)
        base = module.get_base_layer()
        x = torch.randn(2, 5, base.in_features, generator=g)
        down, up = module.lora_A["default"].weight, module.lora_B["default"].weight
        weight = base.weight.double() + 8.0 / 4 * up.double() @ down.double()
        expected = x.double() @ weight.T + (base.bias.double() if base.bias is not None else 0)
        with torch.no_grad():
            ours = module(x)
        # float32 against float64: a dot product of n terms rounds within ~n eps of its terms' magnitude
        bound = base.in_features * EPS * (x.double().abs() @ weight.abs().T).max().item()
        assert max_abs(ours.double(), expected) <= bound, layer


def test_at_step_0_the_lora_unet_is_the_untuned_inflated_unet_bit_for_bit(pipe, latents):
    cond = pipe.encode_prompt("a square").expand(len(latents), -1, -1)
    randomize_temporal(pipe.c.unet)  # the temporal branch acts: what the adapters add at B = 0 would show
    t = torch.tensor([500] * len(latents))
    with torch.no_grad(), pipe.inflation.video(len(latents)):
        before = pipe.unet_fn(latents, t, cond)
        params = add_adapters(blocks(pipe), SPATIAL + TEMPORAL, 4, None)
        draw_adapters(params, seed=0)
        after = pipe.unet_fn(latents, t, cond)
    assert all(bool(p.any()) for k, p in params.items() if "lora_A" in k)  # A drawn, B zero
    assert torch.equal(before, after)  # each layer adds B (A x) = 0 exactly


def test_the_first_steps_loss_equals_full_tunings():
    """LoRA draws its adapters from a stream of its own: the run's timestep and noise are full tuning's."""
    full = TuneAVideo(tiny_components(seed=0))
    latents = full.encode_video(demo_video(3, 64, 64))
    first = full.tune(latents, "a square", TuneConfig(steps=1, seed=4), progress=False)[0]
    lora = TuneAVideo(tiny_components(seed=0)).tune(latents, "a square", TuneConfig(steps=1, seed=4, **LORA),
                                                    progress=False)[0]
    moved = TuneAVideo(tiny_components(seed=0)).tune(nudge(latents), "a square", TuneConfig(steps=1, seed=4),
                                                     progress=False)[0]
    # the same forward on another instance (and B x = 0 added): limit 10x how far the loss moves when the latents move
    # by one ulp (or the loss's own ulp, where that does not move it)
    assert within(abs(lora - first), max(abs(moved - first), EPS * first), 10, "first loss, LoRA vs full")


def test_adapter_gradients_are_the_chain_rule_through_the_full_weight(pipe, latents):
    """dL/dB = s dL/dW A^T and dL/dA = s B^T dL/dW, W = W0 + s B A the merged weight, on every adapted layer."""
    cond = pipe.encode_prompt("a square").expand(len(latents), -1, -1)
    randomize_temporal(pipe.c.unet)
    params = add_adapters(blocks(pipe), SPATIAL + TEMPORAL, 4, 8.0)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    t, target = torch.tensor([300] * len(latents)), torch.randn(latents.shape, generator=g)

    def loss():
        with pipe.inflation.video(len(latents)):
            return F.mse_loss(pipe.unet_fn(latents, t, cond), target)
    for p in params.values():
        p.requires_grad_(True)
    loss().backward()
    adapter_grads = {k: p.grad.clone() for k, p in params.items()}
    adapters = {k: p.detach().clone() for k, p in params.items()}
    remove_adapters(blocks(pipe))  # W = W0 + s B A
    full = {k: p for k, p in video_parameters(pipe.c.unet).items()
            if k.split(".", 2)[2].removesuffix(".weight") in SPATIAL + TEMPORAL}
    for p in full.values():
        p.requires_grad_(True)
    loss().backward()
    s = 8.0 / 4
    for key, weight in full.items():
        layer = key.removesuffix(".weight")
        down, up = adapters[f"{layer}.lora_A.weight"].double(), adapters[f"{layer}.lora_B.weight"].double()
        grad = weight.grad.double()
        for ours, chain in ((adapter_grads[f"{layer}.lora_B.weight"], s * grad @ down.T),
                            (adapter_grads[f"{layer}.lora_A.weight"], s * up.T @ grad)):
            # two float32 backward passes whose sums run in other orders: within 1e-4 of the gradient's scale (measured:
            # at most 9e-6; a wrong factor or transpose is off by O(1))
            assert max_abs(ours.double(), chain) <= 1e-4 * chain.abs().max().item(), layer


def test_lora_file_is_a_standard_lora_and_loads_back_as_tuned(tmp_path):
    tuned, pipe = lora_tuned()
    path = tmp_path / "lora.safetensors"
    pipe.save_tuned(path, "a square", 3, 64, 64, TuneConfig(steps=3, **LORA))
    stored = safetensors.torch.load_file(str(path))
    names = [name for name, _ in transformer_blocks(pipe.c.unet)]
    spatial = {f"lora_unet_{name}.{layer}".replace(".", "_") for name in names for layer in SPATIAL}
    temporal = {f"blocks.{i}.{layer}" for i in range(len(names)) for layer in TEMPORAL}
    expected = {f"{m}.{part}" for m in spatial | temporal for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert set(stored) == expected
    assert all(stored[k].item() == 8.0 for k in stored if k.endswith(".alpha"))
    assert stored[f"lora_unet_{names[0].replace('.', '_')}_attn1_to_q.lora_down.weight"].shape[0] == 4  # (rank, in)
    meta = read_metadata(path)
    assert (meta["method"], meta["lora_rank"], meta["lora_alpha"], meta["temporal_seed"]) == ("lora", 4, 8.0, 1)
    fresh = TuneAVideo(tiny_components(seed=0))
    fresh.load_tuned(path)
    # the adapters merged in once more (float32, on another instance): within a few ulps of the weights' magnitude
    difference = largest_difference(weights(fresh), tuned)
    assert difference <= 16 * EPS * max(v.abs().max().item() for v in tuned.values()), difference


def test_strength_blends_lora_and_full_files(tmp_path):
    """0: the base model (weights bit for bit; the temporal branch's output zero); 1: as tuned; 0.5 between."""
    untuned = weights(TuneAVideo(tiny_components(seed=0)))
    for options in (LORA, {}):
        pipe = TuneAVideo(tiny_components(seed=0))
        latents = pipe.encode_video(demo_video(3, 64, 64))
        config = TuneConfig(steps=2, learning_rate=1e-2, **options)
        pipe.tune(latents, "a square", config, progress=False)
        tuned = weights(pipe)
        path = tmp_path / f"{bool(options)}.safetensors"
        pipe.save_tuned(path, "a square", 3, 64, 64, config)
        at = {}
        for strength in (0.0, 0.5, 1.0):
            fresh = TuneAVideo(tiny_components(seed=0))
            fresh.load_tuned(path, strength)
            at[strength] = weights(fresh)
        for k in untuned:
            if ".attn_temp." in k and ".to_out." in k:
                assert not at[0.0][k].any() and torch.allclose(at[0.5][k], 0.5 * tuned[k], atol=1e-7), k
            elif ".attn_temp." not in k:
                assert torch.equal(at[0.0][k], untuned[k]), k  # the base's own bits
                assert torch.allclose(at[0.5][k], (untuned[k] + tuned[k]) / 2, atol=1e-6), k
            assert torch.allclose(at[1.0][k], tuned[k], atol=1e-6), k
        base = TuneAVideo(tiny_components(seed=0))
        before = base.invert(latents, 3)
        base.load_tuned(path, 0.0)
        assert torch.equal(base.invert(latents, 3), before)  # strength 0 computes the base model, bit for bit


def test_same_seed_same_adapters_other_seed_other_adapters():
    a, b, c = lora_tuned(1)[0], lora_tuned(1)[0], lora_tuned(2)[0]
    floor = largest_difference(lora_tuned(1, nudged=True)[0], a)
    # two model instances: limit 10x how far the tuned weights move when the latents move by one ulp
    assert within(largest_difference(a, b), floor, 10, "same seed")
    assert largest_difference(a, c) > 10 * floor


def test_lora_resume_continues_exactly_and_refuses_another_rank(tmp_path):
    straight = lora_tuned(3, steps=6)[0]
    floor = largest_difference(lora_tuned(3, steps=6, nudged=True)[0], straight)
    state = tmp_path / "state.safetensors"
    pipe = TuneAVideo(tiny_components(seed=0))
    latents = pipe.encode_video(demo_video(3, 64, 64))
    config = TuneConfig(steps=3, learning_rate=1e-2, seed=3, checkpoint_every=3, checkpoint_path=str(state), **LORA)
    pipe.tune(latents, "a square", config, progress=False)
    assert state.is_file()
    for other, named in ((dict(lora_rank=8), "LoRA rank (4, here 8)"), (dict(lora_alpha=2.0), "LoRA alpha (8.0, here 2.0)"),
                         (dict(lora_rank=None, lora_alpha=None), "LoRA rank (4, here None)")):
        config_other = TuneConfig(**{**config.__dict__, "steps": 6, "resume": True, **other})
        with pytest.raises(TavError, match=named.replace("(", r"\(").replace(")", r"\)")):
            TuneAVideo(tiny_components(seed=0)).tune(latents, "a square", config_other, progress=False)
    fresh = TuneAVideo(tiny_components(seed=0))
    resumed = TuneConfig(**{**config.__dict__, "steps": 6, "resume": True})
    assert len(fresh.tune(latents, "a square", resumed, progress=False)) == 6
    # another instance ran the last 3 steps: limit 10x how far 6 straight steps move when the latents move by one ulp
    assert within(largest_difference(weights(fresh), straight), floor, 10, "resumed vs straight")


def test_lora_weights_refuse_another_base_model_and_a_bad_rank(tmp_path):
    _, pipe = lora_tuned(steps=1)
    path = tmp_path / "lora.safetensors"
    pipe.save_tuned(path, "a square", 3, 64, 64, TuneConfig(steps=1, **LORA))
    with pytest.raises(TavError, match="different base model"):
        TuneAVideo(tiny_components(seed=1)).load_tuned(path)
    latents = pipe.encode_video(demo_video(3, 64, 64))
    for rank, alpha in ((0, None), (4, 0.0), (4, float("nan"))):
        with pytest.raises(TavError, match="LoRA"):
            pipe.tune(latents, "x", TuneConfig(steps=1, lora_rank=rank, lora_alpha=alpha), progress=False)


def test_a_redrawn_temporal_base_that_differs_is_refused(tmp_path):
    _, pipe = lora_tuned(steps=1)
    path = tmp_path / "lora.safetensors"
    pipe.save_tuned(path, "a square", 3, 64, 64, TuneConfig(steps=1, **LORA))
    meta, tensors = safetensors.safe_open(str(path), "pt").metadata(), safetensors.torch.load_file(str(path))
    meta["temporal_seed"] = json.dumps(2)  # another seed draws another base: as another torch's generator would
    safetensors.torch.save_file(tensors, str(path), meta)
    with pytest.raises(TavError, match="cannot be drawn again"):
        TuneAVideo(tiny_components(seed=0)).load_tuned(path)


@pytest.mark.parametrize("weights, mixed", [(torch.float32, "bf16"), (torch.bfloat16, "no")],
                         ids=["bf16 autocast", "bf16 weights"])
def test_lora_tunes_under_half_precision(weights, mixed):
    """The adapters stay fp32 for AdamW; the layers' half inputs reach them uncopied (autocast casts what it computes)."""
    pipe = TuneAVideo(tiny_components(seed=0), dtype=weights)
    block = blocks(TuneAVideo(tiny_components(seed=0), dtype=weights))[0]
    adapted = {layer: block.get_submodule(layer).weight.to(weights) for layer in SPATIAL + TEMPORAL}
    for layer, weight in adapted.items():
        block.get_submodule(layer).weight.data = weight
    assert all(p.dtype == torch.float32 for p in add_adapters([block], SPATIAL + TEMPORAL, 4, None).values())
    latents = pipe.encode_video(demo_video(2, 64, 64))
    before = {k: v.clone() for k, v in video_parameters(pipe.c.unet, trainable_only=True).items()}
    losses = pipe.tune(latents, "x", TuneConfig(steps=2, learning_rate=1e-2, mixed_precision=mixed, **LORA),
                       progress=False)
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    after = video_parameters(pipe.c.unet, trainable_only=True)
    moved = [k for k in before if k.endswith((".attn1.to_q.weight", ".to_out.0.weight"))]  # (not the redrawn base)
    assert all(not torch.equal(before[k], after[k]) for k in moved)  # the merged adapters moved the layers
    out = pipe.sample(pipe.invert(latents, 2), "y", steps=2)
    assert torch.isfinite(out).all()


def test_sdxl_lora_tunes_saves_with_sdxls_block_names_and_loads_back(tmp_path):
    """SDXL's transformer blocks (ten deep in its last level) named as diffusers names them; the file loads back as
    tuned; strength 0 is the base model."""
    from tav_core.loading.tiny import tiny_sdxl_components
    pipe = TuneAVideo(tiny_sdxl_components(seed=0))
    untuned = weights(pipe)
    latents = pipe.encode_video(demo_video(2, 64, 64))
    config = TuneConfig(steps=2, learning_rate=1e-2, **LORA)
    pipe.tune(latents, "a red square", config, progress=False)
    tuned = weights(pipe)
    path = tmp_path / "sdxl-lora.safetensors"
    pipe.save_tuned(path, "a red square", 2, 64, 64, config)
    names = [name for name, _ in transformer_blocks(pipe.c.unet)]
    stored = safetensors.torch.load_file(str(path))
    assert {f"lora_unet_{n}.{layer}".replace(".", "_") for n in names for layer in SPATIAL} == \
        {k.rsplit(".", 2)[0] for k in stored if k.startswith("lora_unet_")}
    fresh = TuneAVideo(tiny_sdxl_components(seed=0))
    fresh.load_tuned(path)
    assert largest_difference(weights(fresh), tuned) <= 16 * EPS * max(v.abs().max().item() for v in tuned.values())
    base = TuneAVideo(tiny_sdxl_components(seed=0))
    base.load_tuned(path, 0.0)
    assert all(torch.equal(v, untuned[k]) for k, v in weights(base).items() if ".attn_temp." not in k)


def test_a_tuned_unet_refuses_lora_tuning_lora_files_and_strengths(tmp_path):
    """A LoRA (or a strength) applies to the base model: a UNet holding tuned weights would stack them."""
    _, pipe = lora_tuned(steps=1)
    path = tmp_path / "lora.safetensors"
    pipe.save_tuned(path, "a square", 3, 64, 64, TuneConfig(steps=1, **LORA))
    latents = pipe.encode_video(demo_video(3, 64, 64))
    with pytest.raises(TavError, match="holds tuned weights already: LoRA tuning starts from the untuned"):
        pipe.tune(latents, "a square", TuneConfig(steps=1, **LORA), progress=False)
    with pytest.raises(TavError, match="a LoRA file adds to the base model's weights; load it into a fresh pipeline"):
        pipe.load_tuned(path)
    loaded = TuneAVideo(tiny_components(seed=0))
    loaded.load_tuned(path)
    with pytest.raises(TavError, match="a LoRA file adds to"):
        loaded.load_tuned(path)  # twice would add the adapters twice


def test_an_interrupted_lora_run_leaves_the_layers_as_they_were(pipe, latents):
    before = weights(pipe)

    def stop(step, loss):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        pipe.tune(latents, "a square", TuneConfig(steps=5, learning_rate=1e-2, **LORA), callback=stop, progress=False)
    after = weights(pipe)
    assert set(after) == set(before)  # PEFT's layers gone
    assert all(torch.equal(after[k], before[k]) for k in before if ".attn_temp.to_q." not in k and
               ".attn_temp.to_k." not in k and ".attn_temp.to_v." not in k)  # (the temporal base: drawn from the seed)
    assert not any(hasattr(block, "peft_config") for block in blocks(pipe))
