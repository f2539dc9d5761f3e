"""``--motion-module`` on the command line: tune and edit with an AnimateDiff module, and the refusals that come
before any model loads."""

import numpy as np

from motion_layout import tiny_module
from tav_core import TuneAVideo, demo_video, read_video
from tav_core.cli import commands, main
from tav_core.loading.motion import load_motion_module
from tav_core.loading.tiny import tiny_components
from tav_core.loading.tuned import read_metadata


def test_tune_and_edit_with_a_motion_module_folder_match_the_library(tmp_path, capsys):
    module = tmp_path / "mm"
    tiny_module().adapter.save_pretrained(module)
    weights, out = tmp_path / "w.safetensors", tmp_path / "edit"
    common = ["--frames", "4", "--weights", str(weights), "--motion-module", str(module)]
    assert main(["tune", *common, "--tune-steps", "2"]) == 0
    meta = read_metadata(weights)
    assert (meta["motion_version"], meta["frame_attention"], meta["group_norm"]) == ("v2", "per_frame", "frame")
    assert main(["edit", *common, "--steps", "3", "--out", str(out)]) == 0
    pipe = TuneAVideo(tiny_components(0), motion_module=load_motion_module(module))
    pipe.load_tuned(weights)
    latents = pipe.encode_video(demo_video(4, 64, 64))
    frames = pipe.decode(pipe.sample(pipe.invert(latents, 3), "a yellow square moving over a gradient", steps=3))
    # (two model instances: equal up to a rounding that may flip one 8-bit level)
    assert np.abs(read_video(out).astype(int) - frames.astype(int)).max() <= 1

    capsys.readouterr()
    assert main(["edit", "--frames", "4", "--weights", str(weights), "--out", str(out)]) == 2
    assert "tuned with an AnimateDiff motion module (v2): give it with --motion-module" in capsys.readouterr().err


def test_motion_module_refusals_come_before_any_model_loads(tmp_path, capsys, monkeypatch):
    plain, tuned = tmp_path / "plain.safetensors", tmp_path / "tuned.safetensors"
    assert main(["tune", "--frames", "2", "--tune-steps", "1", "--weights", str(plain)]) == 0
    module, other, short = tmp_path / "mm", tmp_path / "other", tmp_path / "short"
    tiny_module().adapter.save_pretrained(module)
    tiny_module(seed=5).adapter.save_pretrained(other)
    tiny_module(max_frames=4).adapter.save_pretrained(short)
    assert main(["tune", "--frames", "2", "--tune-steps", "1", "--weights", str(tuned), "--motion-module", str(module)]) == 0
    def load(*args):
        raise AssertionError("the model was loaded before the bad input was refused")
    monkeypatch.setattr(commands, "_load", load)
    cases = [
        (["edit", "--weights", str(plain), "--motion-module", str(module)], "tuned without a motion module: drop "
                                                                            "--motion-module"),
        (["tune", "--motion-module", str(tmp_path / "missing.safetensors")], "does not exist"),
        (["tune", "--motion-module", str(module), "--allow-pickle"], "--allow-pickle permits a pickle"),
        (["edit", "--weights", str(plain), "--group-norm", "frame"], "tuned with clip group norm"),
        (["edit", "--weights", str(tuned), "--motion-module", str(other)], "tuned with another motion module (v2) "
                                                                            "than --motion-module"),
        (["tune", "--frames", "6", "--motion-module", str(short)], "encodes at most 4 frames and tuning would pass 6: "
                                                                   "tune on runs of at most 4 frames (--frame-window 4)"),
        (["edit", "--frames", "6", "--weights", str(tuned), "--motion-module", str(short)],
         "encodes at most 4 frames and the edit would pass 6"),
    ]
    for args, message in cases:
        capsys.readouterr()
        output = ["--out", str(tmp_path / "x.mp4")] if args[0] == "edit" else ["--weights", str(tmp_path / "t.safetensors")]
        frames = [] if "--frames" in args else ["--frames", "2"]
        assert main([*args, *frames, *output]) == 2, args
        assert message in capsys.readouterr().err, args
