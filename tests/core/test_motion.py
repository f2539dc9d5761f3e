"""AnimateDiff motion modules: every released version read from the original layout (and diffusers folders), other
files refused by name, and the image UNet with the module's hooks against diffusers' ``UNetMotionModel``."""

import pytest
import safetensors.torch
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from motion_layout import DEFAULT_CHANNELS, PE_LEN, adapter_config, original_state_dict

from support import nudge, relative, within
from tav_core import TavError
from tav_core.loading.motion import load_motion_module
from tav_core.model.frames import FrameContext
from tav_core.model.inflation import inflate
from tav_core.model.motion import MotionHooks

TINY = dict(heads=2, norm_groups=8)  # the tiny modules' (AnimateDiff's own: 8 heads, 32 groups)
FRAMES = 16


def tiny_unet(version: str) -> UNet2DConditionModel:
    """A tiny SD1.5-shaped UNet (four levels) or SDXL-shaped one (three, text-time embedding) for the module."""
    torch.manual_seed(1)
    channels = DEFAULT_CHANNELS[version]
    if version != "sdxl":
        return UNet2DConditionModel(sample_size=8, block_out_channels=channels, layers_per_block=2,
                                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                                    cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8).eval()
    return UNet2DConditionModel(sample_size=8, block_out_channels=channels, layers_per_block=2,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                                transformer_layers_per_block=(1, 2, 2), attention_head_dim=(2, 4, 4),
                                use_linear_projection=True, cross_attention_dim=32, norm_num_groups=8,
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=32 + 6 * 8).eval()


def write_module(tmp_path, version: str, suffix: str = ".safetensors", **extra):
    state = {**original_state_dict(version, seed=3), **extra}
    path = tmp_path / f"{version}{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return path, state


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "sdxl"])
def test_every_version_is_read_from_its_keys_with_every_tensor_in_place(tmp_path, version):
    path, state = write_module(tmp_path, version)
    module = load_motion_module(path, **TINY)
    assert (module.version, module.max_frames) == (version, PE_LEN[version])
    reference = MotionAdapter(**adapter_config(version))  # diffusers' own converter, given the right config
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
    reference.load_state_dict(convert_animatediff_checkpoint_to_diffusers(state), strict=False)
    ours, theirs = module.adapter.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)  # the file's bytes


def test_pickles_need_permission_and_folders_load(tmp_path):
    path, _ = write_module(tmp_path, "v2", ".ckpt")
    with pytest.raises(TavError, match="pickle, which can run code"):
        load_motion_module(path, **TINY)
    module = load_motion_module(path, allow_pickle=True, **TINY)
    module.adapter.save_pretrained(tmp_path / "folder")
    again = load_motion_module(tmp_path / "folder")
    assert (again.version, again.max_frames, again.fingerprint) == ("v2", 32, module.fingerprint)


@pytest.mark.parametrize("keys, named", [
    ({"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor."
      "to_q_lora.down.weight": (4, 32)}, "motion LoRA"),
    ({"down_blocks.0.temporal_attentions.0.transformer_blocks.0.attention_blocks.0.pos_encoder."
      "positional_encoding": (1, 24, 32)}, "HotShot-XL"),
    ({"controlnet_cond_embedding.weight": (32, 4, 3, 3), "controlnet_down_blocks.0.weight": (32, 32, 1, 1)},
     "SparseCtrl"),
    ({"img_encoder.conv_in.weight": (32, 3, 3, 3)}, "AnimateLCM-I2V"),
    ({"model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3)}, "Stable Diffusion checkpoint"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 32)}, "a LoRA"),
    ({"conv.weight": (4, 4)}, "not an AnimateDiff motion module"),
])
def test_other_files_are_refused_by_name(tmp_path, keys, named):
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({k: torch.zeros(s) for k, s in keys.items()}, str(path))
    with pytest.raises(TavError, match=named):
        load_motion_module(path, **TINY)


def test_a_missing_file_and_a_foreign_positional_encoding_are_refused(tmp_path):
    with pytest.raises(TavError, match="does not exist"):
        load_motion_module(tmp_path / "none.safetensors")
    state = original_state_dict("v3", seed=3)
    for k in [k for k in state if k.endswith("pos_encoder.pe")]:
        state[k] = torch.randn(state[k].shape)
    safetensors.torch.save_file(state, str(tmp_path / "odd.safetensors"))
    with pytest.raises(TavError, match="not AnimateDiff's sinusoid"):
        load_motion_module(tmp_path / "odd.safetensors", **TINY)


def diffusers_motion_unet(unet, adapter) -> UNetMotionModel:
    motion = UNetMotionModel.from_unet2d(unet, adapter).eval()
    if unet.config.addition_embed_type == "text_time":  # (from_unet2d leaves SDXL's added embedding unloaded)
        motion.add_embedding.load_state_dict(unet.add_embedding.state_dict())
    return motion


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "sdxl"])
def test_the_unet_inflated_with_a_motion_module_is_diffusers_unet_motion_model(tmp_path, version):
    """16 frames through the UNet inflated with the module (per-frame attention and GroupNorm, diffusers' choices),
    against diffusers' ``UNetMotionModel.from_unet2d`` on the same weights: within 10x how far diffusers' own result
    moves when the input moves by one ulp."""
    module = load_motion_module(write_module(tmp_path, version)[0], **TINY)
    unet = tiny_unet(version)
    motion = diffusers_motion_unet(unet, module.adapter)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, FRAMES, 8, 8, generator=g)
    text = torch.randn(FRAMES, 7, 32, generator=g)
    added = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])} \
        if version == "sdxl" else None
    t = torch.tensor([500])
    with torch.no_grad():
        theirs = motion(x, t, text, added_cond_kwargs=added).sample
        moved = motion(nudge(x), t, text, added_cond_kwargs=added).sample
        inflation = inflate(unet, motion=module, frame_attention="per_frame", group_norm="frame")
        frames = x[0].transpose(0, 1)  # (f, c, h, w): the clip in the batch
        per_frame = None if added is None else {k: v.expand(FRAMES, -1) for k, v in added.items()}
        with inflation.video(FRAMES):
            ours = unet(frames, t.expand(FRAMES), text, added_cond_kwargs=per_frame).sample
        assert not any(m._forward_hooks for m in module.adapter.modules()) and inflation.motion_hooks is None
    ours = ours.transpose(0, 1)[None]
    assert within(relative(ours, theirs), relative(moved, theirs), 10, f"motion UNet {version}")
    assert relative(theirs, unet(frames, t.expand(FRAMES), text, added_cond_kwargs=per_frame).sample.transpose(0, 1)[None]) > 1e-3


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_motion_module_takes_its_own_versions_defaults_and_every_choice_acts(tmp_path, version):
    """Defaults: AnimateDiff's per-frame attention, and the GroupNorm the version was trained with (v1: clip, v2:
    frame); the other choices change the result; no attn_temp is added beside the module."""
    module = load_motion_module(write_module(tmp_path, version)[0], **TINY)
    unet = tiny_unet(version)
    inflation = inflate(unet, motion=module)
    assert (inflation.frame_attention, inflation.group_norm) == ("per_frame", "clip" if version == "v1" else "frame")
    assert not any("attn_temp" in n for n, _ in unet.named_parameters())
    g = torch.Generator().manual_seed(0)
    x, text, t = torch.randn(8, 4, 8, 8, generator=g), torch.randn(8, 7, 32, generator=g), torch.tensor([500] * 8)
    results = {}
    with torch.no_grad():
        for attention in ("per_frame", "sparse_causal"):
            for norm in ("clip", "frame"):
                with inflation.video(8, frame_attention=attention, group_norm=norm):
                    results[attention, norm] = unet(x, t, text).sample
    keys = list(results)
    assert all(relative(results[a], results[b]) > 1e-4 for i, a in enumerate(keys) for b in keys[i + 1:])


def test_more_frames_than_the_module_encodes_are_refused(tmp_path):
    module = load_motion_module(write_module(tmp_path, "v1")[0], **TINY)  # 24 frames
    unet = tiny_unet("v1")
    context = FrameContext()
    MotionHooks(unet, module.adapter, context, module.max_frames)
    with torch.no_grad(), context.frames(25), pytest.raises(TavError, match="at most 24 frames and this pass has 25"):
        unet(torch.randn(25, 4, 8, 8), torch.tensor([500] * 25), torch.randn(25, 7, 32))
