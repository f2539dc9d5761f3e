"""Build small random-weight SD1.5-format models for the tests: a single-file checkpoint and a ControlNet.

Run with ComfyUI importable (``python make_models.py OUT_DIR COMFYUI_DIR``). The UNet is SD1.5's first level
only (320 channels, context 768: ComfyUI detects it as SD1.5); VAE and CLIP-L have the real architecture.
Weights are made with diffusers and renamed to the original (LDM) layout with ComfyUI's own key map, and the
diffusers UNet is saved beside them, so loaders can be checked against it. A UNet-only instruct-pix2pix variant
(8 input channels) is there to be refused. For Score Video: CLIP ViT-L/14's vision tower (ComfyUI 0.3.75 loads
CLIP Vision only in its real sizes; random weights stored in fp8 to halve the file) and the same CLIP-L text
encoder with a random text projection (what clip_l.safetensors holds). A tiny SDXL-architecture checkpoint
(``tav_core.loading.tiny.TINY_SDXL_UNET``, SD's real VAE, two toy text encoders in SDXL's single-file layout: CLIP-L's under
conditioner.embedders.0, bigG's in OpenCLIP's layout under conditioner.embedders.1), its config folder and its
diffusers UNet. ``STAMP`` is written last: a complete, current set.
"""

import json
import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

ROOT = Path(__file__).resolve().parents[2]
SD1 = ROOT / "tav_core" / "configs" / "sd1"
SDXL = ROOT / "tav_core" / "configs" / "sdxl"
UNET = dict(sample_size=8, block_out_channels=[320], layers_per_block=1, down_block_types=["CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D"], cross_attention_dim=768, attention_head_dim=8)
LDM = dict(num_res_blocks=[1], channel_mult=[1], transformer_depth=[1], transformer_depth_output=[1, 1],
           transformer_depth_middle=1)
VIT_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=768)
SDXL_LDM = dict(num_res_blocks=[1, 1], channel_mult=[1, 4], transformer_depth=[0, 2], transformer_depth_output=[0, 0, 2, 2],
                transformer_depth_middle=2)
STAMP = "complete-v7"


def ldm_controlnet_map(key_map: dict, state: dict) -> dict:
    """diffusers ControlNet names -> original ones (as ComfyUI's own diffusers-ControlNet loader renames them)."""
    m = dict(key_map)
    m.update({"controlnet_mid_block.weight": "middle_block_out.0.weight",
              "controlnet_mid_block.bias": "middle_block_out.0.bias"})
    for k in state:
        if k.startswith("controlnet_down_blocks."):
            i, s = k.split(".")[1], k.rsplit(".", 1)[1]
            m[k] = f"zero_convs.{i}.0.{s}"
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    for s in ("weight", "bias"):
        m[f"controlnet_cond_embedding.conv_in.{s}"] = f"input_hint_block.0.{s}"
        for b in blocks:
            m[f"controlnet_cond_embedding.blocks.{b}.{s}"] = f"input_hint_block.{2 * (b + 1)}.{s}"
        m[f"controlnet_cond_embedding.conv_out.{s}"] = f"input_hint_block.{2 * (len(blocks) + 1)}.{s}"
    return m


def rename(state: dict, key_map: dict, prefix: str) -> dict:
    missing = [k for k in state if k not in key_map]
    assert not missing, f"no original name for {missing[:5]}"
    return {prefix + key_map[k]: v.contiguous() for k, v in state.items()}


def main(out: Path) -> None:
    import comfy.diffusers_convert
    import comfy.utils

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL.from_config(json.loads((SD1 / "vae" / "config.json").read_text()))
    clip = CLIPTextModel(CLIPTextConfig(**json.loads((SD1 / "text_encoder" / "config.json").read_text())))
    key_map = comfy.utils.unet_to_diffusers(LDM)
    state = rename(unet.state_dict(), key_map, "model.diffusion_model.")
    vae_state = comfy.diffusers_convert.convert_vae_state_dict(vae.state_dict())
    state.update({"first_stage_model." + k: v.half().contiguous() for k, v in vae_state.items()})
    state.update({"cond_stage_model.transformer." + k: v.half().contiguous() for k, v in clip.state_dict().items()
                  if "position_ids" not in k})
    save_file(state, str(out / "tiny-sd15.safetensors"))
    unet.save_pretrained(out / "tiny-sd15-unet-diffusers")

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    with torch.no_grad():  # zero convolutions start at zero: give them weights so hints change the output
        for name, p in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.normal_(0, 0.05)
    cn_state = controlnet.state_dict()
    save_file(rename(cn_state, ldm_controlnet_map(key_map, cn_state), ""), str(out / "tiny-sd15-controlnet.safetensors"))

    unet_config = json.loads((SD1 / "unet" / "config.json").read_text()) | UNET  # a config folder for the loader
    config = out / "tiny-sd15-config"
    for sub in ("model_index.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"):
        (config / sub).parent.mkdir(parents=True, exist_ok=True)
        (config / sub).write_text((SD1 / sub).read_text())
    (config / "unet").mkdir(exist_ok=True)
    (config / "unet" / "config.json").write_text(json.dumps(unet_config))

    ip2p = UNet2DConditionModel(**UNET, in_channels=8)  # instruct-pix2pix: not a plain SD UNet (for refusals)
    save_file({k: v.half() for k, v in rename(ip2p.state_dict(), key_map, "").items()},
              str(out / "tiny-ip2p-unet.safetensors"))

    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L))
    save_file({k: v.to(torch.float8_e4m3fn).contiguous() for k, v in vision.state_dict().items()
               if "position_ids" not in k}, str(out / "test-clip-vit-l.safetensors"))
    text = {k: v.half().contiguous() for k, v in clip.state_dict().items() if "position_ids" not in k}
    text["text_projection.weight"] = (torch.randn(768, 768) / 768 ** 0.5).half()
    save_file(text, str(out / "test-clip-l.safetensors"))
    tiny_sdxl(out, vae)
    (out / STAMP).write_text("")


def tiny_sdxl(out: Path, vae: AutoencoderKL) -> None:
    import comfy.diffusers_convert
    import comfy.utils

    from tav_core.loading.tiny import tiny_sdxl_components

    c = tiny_sdxl_components(seed=0, vae=vae)
    state = rename(c.unet.state_dict(), comfy.utils.unet_to_diffusers(SDXL_LDM), "model.diffusion_model.")
    vae_state = comfy.diffusers_convert.convert_vae_state_dict(c.vae.state_dict())
    state.update({"first_stage_model." + k: v.half().contiguous() for k, v in vae_state.items()})
    # text encoders in fp16, as the host keeps them on the CPU: both sides then compute with the same values
    state.update({"conditioner.embedders.0.transformer." + k: v.half().contiguous()
                  for k, v in c.text_encoder.state_dict().items() if "position_ids" not in k})
    bigg = {"transformer." + k: v.half() for k, v in c.text_encoder_2.state_dict().items() if "position_ids" not in k}
    state.update({"conditioner.embedders.1.model." + k: v.contiguous()
                  for k, v in comfy.diffusers_convert.convert_text_enc_state_dict_v20(bigg).items()})
    save_file(state, str(out / "tiny-sdxl.safetensors"))
    c.unet.save_pretrained(out / "tiny-sdxl-unet-diffusers")
    config = out / "tiny-sdxl-config"
    for sub in ("model_index.json", "vae/config.json", "scheduler/scheduler_config.json"):
        (config / sub).parent.mkdir(parents=True, exist_ok=True)
        (config / sub).write_text((SDXL / sub).read_text())
    for part, module in (("unet", c.unet), ("text_encoder", c.text_encoder), ("text_encoder_2", c.text_encoder_2)):
        (config / part).mkdir(exist_ok=True)
        (config / part / "config.json").write_text(module.config.to_json_string() if part != "unet"
                                                   else json.dumps(dict(module.config)))


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[2])
    main(Path(sys.argv[1]))
