"""The precision a user names is the one the UNet computes in, on every path: recorded from the outputs of the
UNet's matmuls and convolutions (the ops autocast changes), headless and through the CLI."""

import pytest
import torch

from bench.gpu import DTYPES, EDIT as E, SOURCE as S, recorded_dtypes, stages  # (the GPU check's, on every device)
from tav_core import TavError, TuneAVideo, TuneConfig, demo_video
from tav_core.cli import main
from tav_core.loading.tiny import tiny_components
from tav_core.sampling.windows import ContextWindows, Passes


@pytest.mark.parametrize("precision", ["no", "bf16", "fp16"])
@pytest.mark.parametrize("windows", [None, ContextWindows(2, 1)])
def test_the_pipelines_precision_is_what_every_pass_computes_in(precision, windows):
    pipe = TuneAVideo(tiny_components(0), mixed_precision=precision)
    latents = pipe.encode_video(demo_video(3, 32, 32))
    for stage, run in stages(pipe, latents, Passes(windows=windows)):
        with recorded_dtypes(pipe.c.unet) as seen:
            run()
        assert seen == {DTYPES[precision]}, f"{stage} under {precision}: {seen}"


def test_a_stage_may_take_its_own_precision_and_tuning_its_configs():
    pipe = TuneAVideo(tiny_components(0))
    latents = pipe.encode_video(demo_video(3, 32, 32))
    with recorded_dtypes(pipe.c.unet) as seen:
        pipe.invert(latents, 2, passes=Passes(mixed_precision="bf16"))
    assert seen == {torch.bfloat16}
    with recorded_dtypes(pipe.c.unet) as seen:  # the fp32 pipeline's tuning under the config's autocast
        pipe.tune(latents, S, TuneConfig(steps=1, mixed_precision="bf16"), progress=False)
    assert seen == {torch.bfloat16}
    with recorded_dtypes(pipe.c.unet) as seen:
        pipe.sample(latents, E, steps=2)
    assert seen == {torch.float32}


def test_half_weights_compute_in_their_own_dtype_only():
    pipe = TuneAVideo(tiny_components(0), dtype=torch.bfloat16)
    assert pipe.mixed_precision == "bf16"
    with pytest.raises(TavError, match="bf16 weights compute in bf16, not fp16"):
        pipe.tuned_config(TuneConfig(mixed_precision="fp16"))
    with pytest.raises(TavError, match="bf16 weights compute in bf16, not fp16"):
        TuneAVideo(tiny_components(0), dtype=torch.bfloat16, mixed_precision="fp16")
    with pytest.raises(TavError, match="mixed precision 'fp8' is not one of"):
        TuneAVideo(tiny_components(0), mixed_precision="fp8")


def test_the_cli_computes_every_stage_in_the_precision_named(tmp_path, monkeypatch):
    seen: set[torch.dtype] = set()
    original = TuneAVideo.raw_unet_fn

    def spy(self, x, t, cond):
        with recorded_dtypes(self.c.unet) as outputs:
            out = original(self, x, t, cond)
        seen.update(outputs)
        return out
    monkeypatch.setattr(TuneAVideo, "raw_unet_fn", spy)
    args = ["run", "--frames", "3", "--width", "32", "--height", "32", "--tune-steps", "1", "--steps", "2",
            "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "e.gif"), "--memory", "off"]
    assert main([*args, "--mixed-precision", "bf16"]) == 0 and seen == {torch.bfloat16}
    seen.clear()
    assert main(args) == 0 and seen == {torch.float32}
    assert main([*args, "--fp16", "--mixed-precision", "bf16"]) == 2  # refused before anything loads
