"""Loading models offline: diffusers folders, single-file checkpoints, and clear refusals."""

import pytest
import safetensors.torch
import torch
from diffusers import UNet2DConditionModel

from support import max_abs, nudge, within
from tav_core import TavError, TuneAVideo, demo_video, load_components
from tav_core.loading.tiny import save_folder


def unet_output(components, nudged=False):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    cond = torch.randn(1, 77, components.unet.config.cross_attention_dim)
    if nudged:
        x, cond = nudge(x), nudge(cond)
    with torch.no_grad():
        return components.unet(x, torch.tensor([10]), encoder_hidden_states=cond).sample


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_same_unet(loaded, source):
    """The weights bit for bit (the same values stored and read back); the outputs of the two instances (their own
    memory, maybe other kernels) to 100x how far the source's output moves when its inputs move by one ulp."""
    assert same_weights(loaded.unet, source.unet)
    expected = unet_output(source)
    floor = max_abs(unet_output(source, nudged=True), expected)
    assert within(max_abs(unet_output(loaded), expected), floor, 100, "loaded vs source UNet")


def test_diffusers_folder_round_trip(tiny, tmp_path):
    tiny.scheduler_config["prediction_type"] = "v_prediction"
    loaded = load_components(save_folder(tiny, tmp_path / "model"))
    assert loaded.prediction_type == "v_prediction"
    assert same_weights(loaded.text_encoder, tiny.text_encoder) and same_weights(loaded.vae, tiny.vae)  # saved bytes
    assert_same_unet(loaded, tiny)  # tolerance: assert_same_unet
    assert loaded.tokenizer("a cat").input_ids == tiny.tokenizer("a cat").input_ids
    assert load_components(tmp_path / "model", prediction_type="epsilon").prediction_type == "epsilon"


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(TavError, match="does not exist"):
        load_components(tmp_path / "missing.safetensors")


def test_corrupt_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(TavError, match="truncated or corrupt"):
        load_components(path)


def test_checkpoint_without_unet_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"first_stage_model.x": torch.zeros(1)}, str(path))
    with pytest.raises(TavError, match="no model.diffusion_model"):
        load_components(path)


def test_pickle_checkpoint_needs_opt_in(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, path)
    with pytest.raises(TavError, match="allow_pickle"):
        load_components(path)
    with pytest.raises(TavError, match="no model.diffusion_model"):  # with opt-in it is read (safely)
        load_components(path, allow_pickle=True)


def test_folder_that_is_not_a_model_is_refused(tmp_path):
    with pytest.raises(TavError, match="not a diffusers model folder"):
        load_components(tmp_path)


def test_single_file_checkpoint_loads_offline_and_equals_its_source(test_models):
    """An original-layout .safetensors (made from a diffusers UNet) loads back to the very same UNet."""
    loaded = load_components(test_models / "tiny-sd15.safetensors", config=test_models / "tiny-sd15-config")
    source = UNet2DConditionModel.from_pretrained(test_models / "tiny-sd15-unet-diffusers")
    assert_same_unet(loaded, type("C", (), {"unet": source}))  # tolerance: assert_same_unet
    assert loaded.prediction_type == "epsilon" and loaded.text_encoder.config.hidden_size == 768
    pipe = TuneAVideo(loaded)
    latents = pipe.encode_video(demo_video(2, 64, 64))
    assert latents.shape == (2, 4, 8, 8) and pipe.decode(latents).shape == (2, 64, 64, 3)


def test_single_file_with_wrong_config_is_refused(test_models):
    with pytest.raises(TavError, match="UNet is of another shape than SD's \\(sd1\\) config .* give its diffusers config"):
        load_components(test_models / "tiny-sd15.safetensors")  # the shipped full-size SD1 config does not fit
