"""How many operations One-Shot Tune's memory plan traces at each size given (pixels, 4 frames), on the test
checkpoint with the host's CPU attention: prints {size: operations} as JSON. (The plan's cost, not its result.)"""

import json
import sys
import warnings

warnings.filterwarnings("ignore")
sizes = [int(a) for a in sys.argv[1:]]
from in_process import CHECKPOINT, import_pack  # noqa: E402

import_pack()
import comfy.sd  # noqa: E402
import torch  # noqa: E402
from tav_pack.nodes.memory_plan import plan_comfy_tuning  # noqa: E402
from tav_pack.nodes.video_model import inflate_model  # noqa: E402
from tav_pack.tav_core.memory.trace import AllocationPeak, Settings  # noqa: E402

counted = [0]
dispatch = AllocationPeak.__torch_dispatch__


def counting(self, func, types, args=(), kwargs=None):
    counted[0] += 1
    return dispatch(self, func, types, args, kwargs)


AllocationPeak.__torch_dispatch__ = counting
model = inflate_model(comfy.sd.load_checkpoint_guess_config(str(CHECKPOINT))[0], "sparse_causal", "plan cost")
operations = {}
for size in sizes:
    counted[0] = 0
    plan_comfy_tuning(model, Settings(4, size, size, torch.float32), count_flops=False)
    operations[size] = counted[0]
print(json.dumps(operations))
