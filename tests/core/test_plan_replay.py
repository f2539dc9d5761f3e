"""Replayed UNet passes (``tav_core.memory.replay``) leave every plan as tracing each pass gives it, byte for byte:
windowed inference stages of SD and SDXL, with and without gradients, CFG batched or not, a motion module."""

import pytest
import torch

import tav_core.memory.replay
from tav_core.loading.configs import ModelConfigs
from tav_core.loading.tiny import tiny_components, tiny_sdxl_components
from tav_core.memory.stages import _traced
from tav_core.memory.trace import Settings
from tav_core.sampling.windows import ContextWindows

WINDOWS = ContextWindows(4, 1)
CASES = {  # (frames, settings): five windows (planned from three and four), two windows, one window per pass
    "five windows": (16, {}),
    "five windows, fp16, checkpointing, CFG apart": (16, dict(weights_dtype=torch.float16, mixed_precision="fp16",
                                                              gradient_checkpointing=True, batch_cfg=False)),
    "two windows, bf16": (7, dict(mixed_precision="bf16")),
}


@pytest.fixture
def counted(monkeypatch):
    """(traced, replayed) passes of each plan traced while the test runs."""
    counts = []
    exit_ = tav_core.memory.replay.ReplayedPasses.__exit__

    def counting_exit(self, *exc):
        counts.append((self.traced, self.replayed))
        return exit_(self, *exc)
    monkeypatch.setattr(tav_core.memory.replay.ReplayedPasses, "__exit__", counting_exit)
    return counts


def plans(configs, stage, settings):
    return _traced(configs, stage, settings, "cuda", replay=True), _traced(configs, stage, settings, "cuda", replay=False)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stage", ["invert", "sample", "null_text", "p2p"])
def test_replayed_passes_plan_what_traced_passes_plan(stage, case, counted):
    frames, options = CASES[case]
    configs = ModelConfigs.of(tiny_components(0))
    replayed, traced = plans(configs, stage, Settings(frames, 64, 64, windows=WINDOWS, steps=3, **options))
    assert replayed == traced
    (passes, replays), = counted
    print(stage, case, "traced", passes, "replayed", replays)
    # the four-window clip is all replays but P2P's first window (it makes the clip's blend maps); with two windows
    # null-text repeats its passes without gradients
    assert replays >= (passes - 1 if frames == 16 else 2 if stage == "null_text" else 0)


def test_sdxl_and_motion_module_plans_are_kept_exact(counted):
    from motion_layout import tiny_module

    from tav_core import TuneAVideo
    motion = TuneAVideo(tiny_components(0), motion_module=tiny_module())
    cases = [(ModelConfigs.of(tiny_sdxl_components(0)), "null_text"),  # SDXL's added conditioning, with gradients
             (ModelConfigs.of(motion.c, motion.inflation.motion), "p2p")]  # a motion module under attention control
    for configs, stage in cases:
        replayed, traced = plans(configs, stage, Settings(16, 64, 64, windows=WINDOWS, steps=3))
        assert replayed == traced, stage
    assert len(counted) == 2 and all(replays > 0 for _, replays in counted)
