"""What the pack's nodes say to a MODEL of each family (ComfyUI imported as its server imports it, no weights): the
model objects are the host's own classes, made without building their networks. Prints JSON: family -> the error,
or null where the MODEL is taken."""

import json
import types

from in_process import import_pack

import_pack()
import comfy.model_base as mb  # noqa: E402
import comfy.supported_models as sm  # noqa: E402
from tav_pack.nodes.video_model import require_supported  # noqa: E402
from tav_pack.tav_core.errors import TavError  # noqa: E402


def stand_in(model_class, config_class, model_type=mb.ModelType.EPS):
    """An instance of the host's model class with only what the check reads (no network is built)."""
    base = object.__new__(model_class)
    for name, value in (("model_config", object.__new__(config_class)), ("model_type", model_type),
                        ("diffusion_model", types.SimpleNamespace(in_channels=4))):
        object.__setattr__(base, name, value)
    return types.SimpleNamespace(model=base)


cases = {"SD1.5": (mb.BaseModel, sm.SD15), "SDXL": (mb.SDXL, sm.SDXL), "SSD-1B": (mb.SDXL, sm.SSD1B),
         "SDXL refiner": (mb.SDXLRefiner, sm.SDXLRefiner), "SD3": (mb.SD3, sm.SD3), "Flux": (mb.Flux, sm.Flux),
         "Stable Cascade": (mb.StableCascade_C, sm.Stable_Cascade_C),
         "Playground 2.5 (EDM)": (mb.SDXL, sm.SDXL, mb.ModelType.EDM)}
said = {}
for family, (model_class, config_class, *kind) in cases.items():
    try:
        require_supported(stand_in(model_class, config_class, *kind), "Inflate Model")
        said[family] = None
    except TavError as e:
        said[family] = str(e)
print(json.dumps(said))
