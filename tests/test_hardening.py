"""A careful user's mistakes through the command line: refused before any work, in one line, nothing saved wrong."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from tav_core import TavError, TuneAVideo, TuneConfig, demo_video, tune, video_parameters
from tav_core.errors import TavWarning
from tav_core import cli
from tav_core.cli import main
from tav_core.tiny import tiny_components
from tav_core.weights import read_metadata

TUNE = ["tune", "--frames", "2", "--tune-steps", "2"]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model: the error had to come before."""
    def load(*args):
        raise AssertionError("the model was loaded before the bad input was refused")
    monkeypatch.setattr(cli, "_load", load)


def run_cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def tuned_state(tmp_path, capsys, *extra) -> Path:
    """Interrupt a tuning run after its first saved state (a callback raises, as Ctrl-C would)."""
    weights = tmp_path / "w.safetensors"
    original = TuneAVideo.tune

    def stop_after_step_one(self, *args, **kwargs):
        kwargs["callback"] = lambda step, loss: (_ for _ in ()).throw(KeyboardInterrupt) if step == 1 else None
        return original(self, *args, **kwargs)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(TuneAVideo, "tune", stop_after_step_one)
        code, err = run_cli([*TUNE, "--tune-steps", "4", "--checkpoint-every", "1", "--weights", str(weights), *extra],
                            capsys)
    assert code == 130 and "--resume" in err
    state = weights.with_suffix(".state.safetensors")
    assert state.is_file() and not weights.exists()
    return state


# 1. resume identity

@pytest.mark.parametrize("change, differs", [
    (["--prompt", "another caption"], "prompt"), (["--lr", "1e-4"], "learning rate"), (["--seed", "3"], "seed"),
    (["--start", "1"], "video"), (["--posterior", "mean"], "posterior"),
])
def test_resume_refuses_a_state_of_another_run(tmp_path, capsys, change, differs):
    state = tuned_state(tmp_path, capsys)
    before = state.read_bytes()
    code, err = run_cli([*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "w.safetensors"), "--resume",
                         "--frames", "2", *change], capsys)
    assert code == 2 and "belongs to another run" in err and differs in err
    assert state.read_bytes() == before and not (tmp_path / "w.safetensors").exists()


def test_resume_refuses_another_base_model(tmp_path, capsys):
    """Same architecture, other weights: a hybrid file carrying the wrong fingerprint must never be written."""
    pipe = TuneAVideo(tiny_components(seed=0))
    mean, std = pipe.encode_posterior(demo_video(2, 64, 64))
    state = tmp_path / "state.safetensors"
    config = TuneConfig(steps=2, checkpoint_every=1, checkpoint_path=str(state))
    pipe.tune(mean, "x", config, progress=False, latent_std=std)
    other = TuneAVideo(tiny_components(seed=1))
    config.resume, config.steps = True, 4
    with pytest.raises(TavError, match="belongs to another run: its base model"):
        other.tune(mean, "x", config, progress=False, latent_std=std)


def test_resume_refuses_another_architecture_and_unreadable_states(tmp_path, capsys):
    state = tuned_state(tmp_path, capsys)
    tensors = safetensors.torch.load_file(str(state))
    with safe_open(str(state), "pt") as f:
        meta = f.metadata()
    key = next(k for k in tensors if k.startswith("param/") and k.endswith("to_q.weight"))
    tensors[key] = torch.zeros(3, 3)
    safetensors.torch.save_file(tensors, str(state), metadata=meta)
    resume = [*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "w.safetensors"), "--resume"]
    code, err = run_cli(resume, capsys)
    assert code == 2 and "another architecture" in err
    state.write_bytes(state.read_bytes()[:1000])  # truncated
    code, err = run_cli(resume, capsys)
    assert code == 2 and "cannot be read" in err and "delete it" in err
    safetensors.torch.save_file({"param/x": torch.zeros(1)}, str(state), metadata={"step": "1", "losses": "[0]"})
    code, err = run_cli(resume, capsys)
    assert code == 2 and "older version" in err


def test_resume_below_the_saved_step_is_refused_and_a_finished_run_removes_its_state(tmp_path, capsys):
    state = tuned_state(tmp_path, capsys)
    weights = tmp_path / "w.safetensors"
    code, err = run_cli([*TUNE, "--tune-steps", "1", "--weights", str(weights), "--resume"], capsys)
    assert code == 2 and "at step 2, past the 1 steps asked for" in err and not weights.exists()
    code, err = run_cli([*TUNE, "--tune-steps", "4", "--weights", str(weights), "--resume"], capsys)
    assert code == 0
    meta = read_metadata(weights)
    assert meta["tuning"]["steps"] == 4 and not state.exists()
    assert "checkpoint_path" not in meta["tuning"] and str(tmp_path) not in json.dumps(meta)  # nothing machine-specific


def test_resumed_run_equals_a_straight_run(tmp_path, capsys):
    tuned_state(tmp_path, capsys)
    assert main([*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "w.safetensors"), "--resume"]) == 0
    assert main([*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "straight.safetensors")]) == 0
    a = safetensors.torch.load_file(str(tmp_path / "w.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "straight.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)


# 2. no tracebacks, fail before the work

@pytest.mark.parametrize("args, message", [
    (["run", "--out", "{tmp}/file.txt/edit.mp4"], "is a file, not a folder"),
    (["tune", "--weights", "{tmp}/file.txt/w.safetensors"], "is a file, not a folder"),
    (["tune", "--weights", "{tmp}"], "must end in .safetensors"),
    (["tune", "--weights", "{tmp}/dir.safetensors"], "is a folder"),
    (["run", "--out", "{tmp}/edit.avi"], "cannot write '.avi' videos"),
    (["run", "--out", "{tmp}/file.txt"], "cannot write '.txt' videos"),
    (["run", "--width", "-64"], "not a positive multiple of 8"),
    (["run", "--width", "0"], "not a positive multiple of 8"),
    (["run", "--height", "60"], "not a positive multiple of 8"),
    (["run", "--frames", "0"], "at least 1"),
    (["run", "--steps", "0"], "--steps must be from 1 to 999"),
    (["run", "--eta", "2"], "--eta must be from 0 to 1"),
    (["run", "--video", "{tmp}/missing.mp4"], "does not exist"),
    (["run", "--video", "{tmp}/file.txt"], "could not read video"),
    (["edit", "--weights", "{tmp}/missing.safetensors"], "does not exist"),
    (["edit", "--weights", "{tmp}/file.txt"], "must end in .safetensors"),
])
def test_bad_input_is_refused_before_the_model_loads(tmp_path, capsys, no_model, args, message):
    (tmp_path / "file.txt").write_text("not a video")
    (tmp_path / "dir.safetensors").mkdir()
    code, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1


def test_full_disk_is_refused_before_tuning(tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(TuneAVideo, "tune", lambda *a, **k: pytest.fail("tuning started"))
    code, err = run_cli([*TUNE, "--weights", str(tmp_path / "w.safetensors")], capsys)
    assert code == 2 and "only 0 MB are free" in err


def test_os_errors_end_in_one_line(tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "edit.mp4"))
    monkeypatch.setattr("tav_core.video.write_video", full)
    code, err = run_cli(["run", "--frames", "2", "--tune-steps", "1", "--steps", "2", "--weights",
                         str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "edit.mp4")], capsys)
    assert code == 1 and err.strip().splitlines()[-1] == f"error: No space left on device ({tmp_path / 'edit.mp4'}); free disk space or choose another place"
    assert read_metadata(tmp_path / "w.safetensors")["frames"] == 2  # the tuned weights came before: kept


def test_a_failed_state_save_warns_and_tuning_goes_on(tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("tav_core.tuning.save_state", full)
    code, err = run_cli([*TUNE, "--checkpoint-every", "1", "--weights", str(tmp_path / "w.safetensors")], capsys)
    assert code == 0 and (tmp_path / "w.safetensors").is_file()
    assert "warning: could not save the training state" in err and "tuning goes on" in err


def test_ctrl_c_prints_one_line_with_how_to_resume(tmp_path):
    """The installed command, interrupted by SIGINT during a long run with checkpoints on."""
    script = Path(sys.executable).parent / "tuneavideo"
    weights = tmp_path / "w.safetensors"
    state = weights.with_suffix(".state.safetensors")
    process = subprocess.Popen([str(script), "tune", "--frames", "2", "--tune-steps", "100000", "--checkpoint-every",
                                "1", "--weights", str(weights)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"interrupted; the training state is saved in {state}: run the same "
                                            "command with --resume to continue")


# 4. long prompts; 5. damaged weights; 7. width 0 (above); 8. messages; 9. CLI polish; 11. housekeeping

def test_a_long_prompt_is_warned_about_and_what_was_used_is_stored(tmp_path, capsys):
    prompt = " ".join(["a red square moving over a gradient"] * 12)
    code, err = run_cli([*TUNE, "--prompt", prompt, "--weights", str(tmp_path / "w.safetensors")], capsys)
    assert code == 0 and "warning: the prompt is longer than CLIP's 77 tokens" in err
    stored = read_metadata(tmp_path / "w.safetensors")["prompt"]
    pipe = TuneAVideo(tiny_components(0))
    assert len(pipe.c.tokenizer(stored).input_ids) <= 77 and prompt.startswith(stored)
    with pytest.warns(TavWarning, match="longer than CLIP's 77 tokens"):
        whole = pipe.encode_prompt(prompt)
    assert torch.equal(pipe.encode_prompt(stored), whole)


def test_damaged_weights_are_refused_on_load(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    assert main([*TUNE, "--weights", str(weights)]) == 0
    tensors = safetensors.torch.load_file(str(weights))
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
    key = sorted(tensors)[0]
    tensors[key][0] = float("nan")
    safetensors.torch.save_file(tensors, str(weights), metadata=meta)
    code, err = run_cli(["edit", "--frames", "2", "--weights", str(weights), "--out", str(tmp_path / "e.mp4")], capsys)
    assert code == 2 and "NaN or infinite values in 1 tensor(s)" in err and key in err
    assert not (tmp_path / "e.mp4").exists()


def test_unsupported_checkpoints_get_short_clear_messages(tmp_path, capsys, test_models):
    sdxl = tmp_path / "sdxl.safetensors"
    safetensors.torch.save_file({"conditioner.embedders.0.x": torch.zeros(1),
                                 "model.diffusion_model.x": torch.zeros(1)}, str(sdxl))
    code, err = run_cli(["run", "--model", str(sdxl)], capsys)
    assert code == 2 and "is a SDXL checkpoint" in err and "SD 1.x/2.x" in err
    inpaint = tmp_path / "inpaint.safetensors"
    safetensors.torch.save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 9, 3, 3)}, str(inpaint))
    code, err = run_cli(["run", "--model", str(inpaint)], capsys)
    assert code == 2 and "9 input channels" in err
    code, err = run_cli(["tune", "--model", str(test_models / "tiny-sd15.safetensors"), "--weights",
                         str(tmp_path / "w.safetensors")], capsys)  # shipped SD1 config: a UNet of another shape
    assert code == 2 and "give its diffusers config folder (--config)" in err and len(err) < 1000
    code, err = run_cli(["tune", "--model", str(test_models / "tiny-sd15.safetensors"), "--config",
                         str(test_models / "tiny-sd15-config"), "--frames", "2", "--tune-steps", "1", "--width", "64",
                         "--height", "64", "--weights", str(tmp_path / "w.safetensors")], capsys)
    assert code == 0 and read_metadata(tmp_path / "w.safetensors")["frames"] == 2


class PickledObject:
    """Not a tensor: torch's safe loader refuses it."""


def test_pickle_refusal_does_not_quote_torch_advice(tmp_path, capsys):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "extra": PickledObject()}, path)
    code, err = run_cli(["run", "--model", str(path), "--allow-pickle"], capsys)
    assert code == 2 and "cannot be loaded safely" in err and "weights_only" not in err


def test_every_option_has_help_and_help_needs_no_torch():
    parser = cli._parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            assert action.help, f"{sub.prog} {action.option_strings} has no help"
    assert "``" not in parser.description
    out = subprocess.run([sys.executable, "-c", "import sys; from tav_core.cli import main\ntry: main(['run', '--help'])\n"
                          "except SystemExit: pass\nprint('torch' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip().endswith("False")


def test_diffusers_folder_loads_without_warnings(tmp_path, caplog):
    from tav_core import load_components
    from tav_core.tiny import save_folder
    save_folder(tiny_components(0), tmp_path / "model")
    load_components(tmp_path / "model")
    assert not [r for r in caplog.records if r.levelname == "WARNING" and "accelerate" in r.getMessage()]


def test_messages_count_nouns():
    pipe = TuneAVideo(tiny_components(0))
    latents = pipe.encode_video(demo_video(1, 64, 64))
    with pytest.raises(TavError, match="latents hold 1 frame but 2 were asked for"):
        pipe.sample(latents, "x", steps=2, num_frames=2)


def test_core_tune_refuses_resume_state_of_other_settings(tmp_path):
    """The identity check lives in tav_core.tune itself, for library users too."""
    pipe = TuneAVideo(tiny_components(0))
    latents = pipe.encode_video(demo_video(2, 64, 64))
    state = tmp_path / "s.safetensors"
    params = video_parameters(pipe.c.unet, trainable_only=True)
    base = dict(steps=1, posterior="mean", checkpoint_every=1, checkpoint_path=str(state))
    tune(pipe.unet_fn, params, pipe.inflation.video, latents, pipe.encode_prompt("x"), pipe.c.scheduler_config,
         TuneConfig(**base), progress=False)
    fresh = TuneAVideo(tiny_components(0))
    with pytest.raises(TavError, match="its weight decay, gradient clip differ"):
        fresh.tune(latents, "x", TuneConfig(**base | {"steps": 2, "resume": True, "weight_decay": 0.1,
                                                       "max_grad_norm": 2.0}), progress=False)
