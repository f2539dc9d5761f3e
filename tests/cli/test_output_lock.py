"""A run owns its outputs while it runs: a second run writing the same --weights (or --out) is refused at once,
naming the first; the lock of a run that crashed or was killed never stays stuck. Real processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import ROOT
from tav_core.loading.tuned import read_metadata

TUNE = [sys.executable, "-m", "tav_core", "tune", "--frames", "2", "--width", "32", "--height", "32"]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([*TUNE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 900  # waits for the event; generous for a loaded machine
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared: {process.poll()} {process.stderr.read() if process.poll() else ''}"


def test_a_second_run_on_the_same_weights_is_refused_at_once_naming_the_first(tmp_path):
    weights = tmp_path / "w.safetensors"
    lock = tmp_path / "w.safetensors.lock"
    first = start("--tune-steps", "200", "--weights", str(weights), "--prompt", "the first run")
    wait_for(lock, first)
    second = subprocess.run([*TUNE, "--tune-steps", "1", "--weights", str(weights), "--prompt", "the second run"],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert first.poll() is None, "the first run ended before the second was refused: too few steps to test"
    assert second.returncode == 2
    assert f"is being written by another run (process {first.pid}:" in second.stderr
    assert "--prompt the first run" in second.stderr and "give another --weights" in second.stderr
    _, err = first.communicate(timeout=1800)
    assert first.returncode == 0, err
    assert read_metadata(weights)["prompt"] == "the first run"  # nobody overwrote it
    assert not lock.exists()  # released at the end


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    weights = tmp_path / "w.safetensors"
    lock = tmp_path / "w.safetensors.lock"
    killed = start("--tune-steps", "200", "--weights", str(weights), "--checkpoint-every", "1")
    wait_for(weights.with_suffix(".state.safetensors"), killed)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert json.loads(lock.read_text())["pid"] == killed.pid  # left behind
    done = subprocess.run([*TUNE, "--tune-steps", "3", "--checkpoint-every", "1", "--resume", "--weights",
                           str(weights)], capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert done.returncode == 0, done.stderr
    assert weights.is_file() and not lock.exists()


def test_a_lock_whose_process_number_was_reused_is_stale(tmp_path):
    """Same pid, another process start: a dead run's number given to a new process does not keep its lock."""
    weights = tmp_path / "w.safetensors"
    (tmp_path / "w.safetensors.lock").write_text(json.dumps({"pid": os.getpid(), "start": "0", "command": "old"}))
    done = subprocess.run([*TUNE, "--tune-steps", "1", "--weights", str(weights)], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr
