"""Test-only ComfyUI extension (linked into the test server's custom_nodes, never shipped): lets the host recognise
the toy SDXL checkpoint of make_models.py as what it is, an SDXL model.

ComfyUI detects a checkpoint's family by matching its UNet's shape against fixed full-size configs, which a toy
model cannot match. This registers, first in the host's list, ComfyUI's own SDXL model definition with the toy's
UNet shape and a CLIP of the toy's sizes: everything else (the SDXL model class and its ADM, the CLIP-L + bigG
text encoder and tokenizers, the key conversions) is the host's own SDXL code.
"""

import json
from pathlib import Path

import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import comfy.supported_models_base

COMFY = Path(comfy.sd1_clip.__file__).parent
# tav_core.loading.tiny.TINY_SDXL_TEXT: CLIP-L's shape at width 32, bigG's at its own width 1280, both with 3 layers
CLIP_L = json.loads((COMFY / "sd1_clip_config.json").read_text()) | dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, projection_dim=32)
CLIP_G = json.loads((COMFY / "clip_config_bigg.json").read_text()) | dict(
    intermediate_size=64, num_hidden_layers=3)


class TinySDXLClip(comfy.sdxl_clip.SDXLClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super(comfy.sdxl_clip.SDXLClipModel, self).__init__()
        self.clip_l = comfy.sd1_clip.SDClipModel(layer="hidden", layer_idx=-2, device=device, dtype=dtype,
                                                 layer_norm_hidden_state=False, textmodel_json_config=CLIP_L,
                                                 model_options=model_options)
        self.clip_g = comfy.sd1_clip.SDClipModel(
            device=device, layer="hidden", layer_idx=-2, textmodel_json_config=CLIP_G, dtype=dtype,
            special_tokens={"start": 49406, "end": 49407, "pad": 0}, layer_norm_hidden_state=False,
            return_projected_pooled=True, model_options={**model_options, "model_name": "clip_g"})
        self.dtypes = {dtype}


class TinySDXL(comfy.supported_models.SDXL):
    unet_config = {"model_channels": 32, "use_linear_in_transformer": True, "transformer_depth": [0, 2],
                   "context_dim": 1312, "adm_in_channels": 2816, "use_temporal_attention": False}

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClip)


comfy.supported_models.models.insert(0, TinySDXL)
NODE_CLASS_MAPPINGS = {}
