"""The command line end to end on the built-in defaults, and its refusals."""

import numpy as np
import pytest

from tav_core import TuneAVideo, demo_video, read_video
from tav_core.cli import main
from tav_core.loading.tiny import tiny_components
from tav_core.loading.tuned import read_metadata


def test_run_tune_edit_end_to_end(tmp_path, capsys):
    args = ["--frames", "4", "--steps", "4", "--weights", str(tmp_path / "w.safetensors")]
    assert main(["run", *args, "--tune-steps", "3", "--out", str(tmp_path / "run.gif")]) == 0
    video = read_video(tmp_path / "run.gif")
    assert video.shape == (4, 64, 64, 3)
    meta = read_metadata(tmp_path / "w.safetensors")
    assert meta["frames"] == 4 and meta["tuning"]["steps"] == 3
    assert main(["edit", *args, "--out", str(tmp_path / "edit.mp4")]) == 0
    assert read_video(tmp_path / "edit.mp4").shape == (4, 64, 64, 3)


def test_edit_matches_the_library(tmp_path):
    """The CLI is a thin shell: its edit equals the pipeline's, frame for frame."""
    weights = tmp_path / "w.safetensors"
    assert main(["tune", "--frames", "3", "--tune-steps", "2", "--weights", str(weights)]) == 0
    assert main(["edit", "--frames", "3", "--steps", "3", "--weights", str(weights), "--out", str(tmp_path / "e")]) == 0
    pipe = TuneAVideo(tiny_components(0))
    pipe.load_tuned(weights)
    latents = pipe.encode_video(demo_video(3, 64, 64))
    frames = pipe.decode(pipe.sample(pipe.invert(latents, 3), "a yellow square moving over a gradient", steps=3))
    assert np.array_equal(read_video(tmp_path / "e"), frames)


@pytest.mark.parametrize("args, message", [
    (["run", "--video", "missing.mp4"], "does not exist"),
    (["run", "--frames", "0"], "at least 1"),
    (["run", "--width", "60"], "not a positive multiple of 8"),
    (["run", "--model", "missing.safetensors"], "does not exist"),
])
def test_bad_input_gives_a_clear_error(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "x.mp4")]) == 2
    assert message in capsys.readouterr().err


def test_readme_demo_command_writes_a_video(tmp_path):
    """The README's demo, as a user types it (the installed console script, built-in clip, tiny model)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    script = shutil.which("tuneavideo", path=str(Path(sys.executable).parent))
    assert script, "the tuneavideo console script is not installed (pip install -e .)"
    out = subprocess.run([script, "run", "--out", str(tmp_path / "demo.mp4"), "--weights", str(tmp_path / "w.safetensors")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_video(tmp_path / "demo.mp4").shape == (8, 64, 64, 3)
    assert "edited video:" in out.stdout
