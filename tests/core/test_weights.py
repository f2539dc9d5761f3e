"""Tuned-weight files: round trip, base-model guard, atomic saves, the reference repo's layout."""

import json

import pytest
import safetensors.torch
import torch

from support import randomize_temporal
from tav_core import TavError, inflate, load_reference_unet, load_tuned, save_tuned, video_parameters
from tav_core.loading.tiny import tiny_components
from tav_core.loading.tuned import read_metadata


def tuned_unet(seed=0):
    unet = tiny_components(seed=seed).unet
    inflate(unet)
    randomize_temporal(unet, seed=seed + 10)
    with torch.no_grad():
        for k, p in video_parameters(unet, trainable_only=True).items():
            p.add_(0.01)
    return unet


def test_round_trip_restores_exactly_the_tuned_tensors(tmp_path):
    unet = tuned_unet()
    path = tmp_path / "tuned.safetensors"
    save_tuned(path, unet, prompt="a man skiing", frames=8, width=512, height=512, steps=500)
    stored = safetensors.torch.load_file(str(path))
    assert set(stored) == set(video_parameters(unet))
    assert all(k.startswith("blocks.") for k in stored)
    fresh = tiny_components(seed=0).unet
    inflate(fresh)
    meta = load_tuned(path, fresh)
    assert meta["prompt"] == "a man skiing" and meta["frames"] == 8 and meta["steps"] == 500
    for k, p in video_parameters(fresh).items():
        assert torch.equal(p, video_parameters(unet)[k])  # saved and loaded back: bit for bit


def test_weights_from_another_base_model_are_refused(tmp_path):
    path = tmp_path / "tuned.safetensors"
    save_tuned(path, tuned_unet(seed=0), prompt="a man skiing")
    other = tiny_components(seed=1).unet
    inflate(other)
    with pytest.raises(TavError, match="different base model"):
        load_tuned(path, other)


def test_fingerprint_survives_half_precision(tmp_path):
    path = tmp_path / "tuned.safetensors"
    save_tuned(path, tuned_unet(), prompt="p")
    half = tiny_components(seed=0).unet.to(torch.bfloat16)
    inflate(half)
    load_tuned(path, half)


def test_missing_corrupt_and_foreign_files_are_refused(tmp_path):
    unet = tiny_components().unet
    inflate(unet)
    with pytest.raises(TavError, match="does not exist"):
        load_tuned(tmp_path / "nope.safetensors", unet)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(TavError, match="cannot be read .* not a safetensors file or it is truncated"):
        load_tuned(corrupt, unet)
    foreign = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(TavError, match="not a Tune-A-Video") as refused:
        load_tuned(foreign, unet)
    assert "load_reference_unet" not in str(refused.value)  # no Python advice in a message ComfyUI users see too


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "tuned.safetensors"
    save_tuned(path, tuned_unet(), prompt="first")
    good = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr("safetensors.torch.save_file", crash)  # what tav_core.files writes with
    with pytest.raises(KeyboardInterrupt):
        save_tuned(path, tuned_unet(), prompt="second")
    assert path.read_bytes() == good
    assert read_metadata(path)["prompt"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["tuned.safetensors"]  # no temp file left behind


def test_reference_repo_unet_folder_loads(tmp_path):
    """The reference saves a whole UNet3DConditionModel: diffusers names plus attn_temp/norm_temp."""
    unet = tuned_unet()
    config = dict(unet.config)
    config["_class_name"] = "UNet3DConditionModel"
    config["down_block_types"] = [b.replace("2D", "3D") for b in config["down_block_types"]]
    config["up_block_types"] = [b.replace("2D", "3D") for b in config["up_block_types"]]
    config["mid_block_type"] = "UNetMidBlock3DCrossAttn"
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(unet.state_dict(), folder / "diffusion_pytorch_model.bin")
    loaded = load_reference_unet(folder)
    expected = unet.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # saved and loaded back: bit for bit


def test_reference_folder_without_config_is_refused(tmp_path):
    with pytest.raises(TavError, match="no config.json"):
        load_reference_unet(tmp_path)
