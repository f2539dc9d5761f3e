"""A full disk, for real: a small tmpfs filled to the last byte. Every writer fails with an OSError (never a
library's own error that the fallbacks miss), leaves the previous file as it was and no temporary file; the CLI
keeps the work in the temp folder and says where in one line."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from support import ROOT, fill
from tav_core import read_video
from tav_core.cli.shared import write_png, write_text
from tav_core.editing.null_text import NullTextInversion
from tav_core.files import save_or_fallback, write_safetensors
from tav_core.loading.tuned import read_metadata, write_tuned
from tav_core.video import write_video


@pytest.fixture
def disk(tmp_path):
    """A real file system of 4 MB (tmpfs), unmounted afterwards. Needs root (CI and the dev machines run as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here ({done.stderr.strip()}): the full-disk tests need root"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def frames(count=8, size=64):
    return np.random.default_rng(0).integers(0, 255, (count, size, size, 3), dtype=np.uint8)


# each writer: (file name, write(path, big)) - "big" content is larger than the small one the disk still took
WRITERS = {
    "tuned weights": ("w.safetensors", lambda p, big: write_tuned(p, {"blocks.0.attn1.to_q.weight": torch.randn(
        512 if big else 4, 64)}, [0.5] * 8, prompt="a")),
    "training state / any safetensors": ("s.safetensors", lambda p, big: write_safetensors(
        p, {"x": torch.randn(100000 if big else 10)}, {"step": "1"})),
    "null-text inversion": ("inv.safetensors", lambda p, big: NullTextInversion(
        torch.randn(2, 4, 64 if big else 8, 64), torch.randn(50 if big else 1, 77, 768), 50, 7.5, "a").save(p)),
    "mp4 video": ("e.mp4", lambda p, big: write_video(p, frames(16 if big else 1, 128 if big else 16))),
    "gif video": ("e.gif", lambda p, big: write_video(p, frames(16 if big else 1, 128 if big else 16))),
    "frame folder": ("frames", lambda p, big: write_video(p, frames(16 if big else 1, 128 if big else 16))),
    "score report": ("r.score.json", lambda p, big: write_text(p, json.dumps({"x": "y" * (500000 if big else 10)}))),
    "chart png": ("r.score.png", lambda p, big: write_png(p, frames(1, 512 if big else 8)[0])),
}


def snapshot(path: Path) -> dict:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir())}
    return {"": path.read_bytes()}


@pytest.mark.parametrize("what", list(WRITERS))
def test_every_writer_fails_with_oserror_on_a_full_disk_and_keeps_the_previous_file(disk, what):
    name, write = WRITERS[what]
    path = disk / name
    write(path, False)  # the earlier result, while there is room
    before = snapshot(path)
    fill(disk)
    with pytest.raises(OSError) as raised:
        write(path, True)
    assert raised.type.__module__ in ("builtins", "av.error"), raised.type  # av's error is an OSError too
    assert snapshot(path) == before
    assert sorted(p.name for p in disk.iterdir()) == sorted([name, "filler"])  # no temporary file left


def test_save_or_fallback_keeps_the_work_in_the_temp_folder_under_a_free_name(disk, tmp_path, monkeypatch):
    elsewhere = tmp_path / "tmp"
    elsewhere.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(elsewhere))
    (elsewhere / "e.gif").write_bytes(b"someone else's")
    fill(disk)
    where, error = save_or_fallback(lambda p: write_video(p, frames()), disk / "e.gif")
    assert where == elsewhere / "e-1.gif" and error.errno == 28
    assert read_video(where).shape == (8, 64, 64, 3) and (elsewhere / "e.gif").read_bytes() == b"someone else's"


def test_tune_keeps_its_weights_when_the_disk_fills_during_the_run(disk, tmp_path):
    """A real run: the disk fills once tuning has started; the training states it then tries to save fail (a
    warning, tuning goes on), the final save goes to the temp folder, and the one error line says where; the
    weights a previous run left at --weights stay as they were."""
    weights = disk / "tuned.safetensors"
    write_tuned(weights, {"blocks.0.attn1.to_q.weight": torch.zeros(4, 4)}, [0.5] * 8, prompt="the previous run")
    before = weights.read_bytes()
    temp = tmp_path / "tmp"
    temp.mkdir()
    run = subprocess.Popen([sys.executable, "-m", "tav_core", "tune", "--frames", "2", "--width", "32", "--height",
                            "32", "--tune-steps", "300", "--checkpoint-every", "100", "--weights", str(weights)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                           env={**os.environ, "TMPDIR": str(temp), "PYTHONUNBUFFERED": "1"})
    err = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: os.read(run.stderr.fileno(), 4096), b"")))
    reader.start()
    deadline = time.time() + 900  # waits for the event; generous for a loaded machine
    while b"tuning:" not in b"".join(err) and run.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert not weights.with_suffix(".state.safetensors").exists()  # filled before its first state (step 100)
    fill(disk)
    run.wait(timeout=1800)
    reader.join()
    err = b"".join(err).decode()
    assert run.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0], err
    assert f"the tuned weights are saved in {temp / 'tuned.safetensors'} instead" in lines[0]
    assert err.count("could not save the training state") == 3 and "Traceback" not in err
    assert read_metadata(temp / "tuned.safetensors")["prompt"] == "a red square moving over a gradient"
    assert weights.read_bytes() == before
    assert not list(disk.glob(".*.tmp*"))
