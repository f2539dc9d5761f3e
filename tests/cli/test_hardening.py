"""A careful user's mistakes through the command line: refused before any work, in one line, nothing saved wrong."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from tav_core import TavError, TuneAVideo, TuneConfig, demo_video, tune, video_parameters
from tav_core.cli import main
from tav_core.cli.parser import build_parser
from tav_core.errors import TavWarning
from tav_core.loading.tiny import tiny_components
from tav_core.loading.tuned import read_metadata

TUNE = ["tune", "--frames", "2", "--tune-steps", "2"]


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


@pytest.mark.parametrize("method", [[], ["--lora-rank", "4"]], ids=["full", "lora"])
def test_resumed_run_equals_a_straight_run(tmp_path, capsys, method):
    tuned_state(tmp_path, capsys, *method)
    assert main([*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "w.safetensors"), "--resume", *method]) == 0
    assert main([*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "straight.safetensors"), *method]) == 0
    a = safetensors.torch.load_file(str(tmp_path / "w.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "straight.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)
    assert read_metadata(tmp_path / "w.safetensors").get("method") == ("lora" if method else None)


@pytest.mark.parametrize("change, differs", [
    (["--lora-rank", "8"], "LoRA rank (4, here 8)"), (["--lora-rank", "4", "--lora-alpha", "2"], "LoRA alpha (None, here 2.0)"),
    ([], "LoRA rank (4, here None)"),
])
def test_resuming_lora_with_another_rank_or_method_is_refused_naming_both(tmp_path, capsys, change, differs):
    state = tuned_state(tmp_path, capsys, "--lora-rank", "4")
    before = state.read_bytes()
    code, err = run_cli([*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "w.safetensors"), "--resume", *change],
                        capsys)
    assert code == 2 and "belongs to another run" in err and differs in err
    assert "base model" not in err  # the same checkpoint: both methods identify it by the same tensors
    assert state.read_bytes() == before and not (tmp_path / "w.safetensors").exists()


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
    (["run", "--eta", "2"], "--eta must be a number from 0 to 1"),
    (["run", "--video", "{tmp}/missing.mp4"], "does not exist"),
    (["run", "--video", "{tmp}/file.txt"], "could not read video"),
    (["edit", "--weights", "{tmp}/missing.safetensors"], "does not exist"),
    (["edit", "--weights", "{tmp}/file.txt"], "must end in .safetensors"),
    (["tune", "--lora-rank", "0"], "--lora-rank must be a whole number from 1 to 1024"),
    (["tune", "--lora-alpha", "4"], "--lora-alpha sets the scale of LoRA tuning"),
    (["tune", "--lora-rank", "4", "--lora-alpha", "nan"], "--lora-alpha must be a number"),
    (["run", "--strength", "0.5"], "tune, then 'tuneavideo edit --strength'"),
    (["edit", "--strength", "inf"], "--strength must be a number from -10 to 10"),
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
    assert code == 2 and "needs about 1.17 MB" in err and "only 1000 bytes are free" in err


def test_os_errors_end_in_one_line(tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "edit.mp4"))
    monkeypatch.setattr("tav_core.cli.commands.write_video", full)
    code, err = run_cli(["run", "--frames", "2", "--tune-steps", "1", "--steps", "2", "--weights",
                         str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "edit.mp4")], capsys)
    assert code == 1 and err.strip().splitlines()[-1] == (
        f"error: No space left on device; not even the temp folder {tempfile.gettempdir()} took it (No space left on "
        f"device) ({tmp_path / 'edit.mp4'}); free disk space or choose another place")
    assert read_metadata(tmp_path / "w.safetensors")["frames"] == 2  # the tuned weights came before: kept


def test_a_failed_state_save_warns_and_tuning_goes_on(tmp_path, capsys, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("tav_core.tuning.tune.save_state", full)
    code, err = run_cli([*TUNE, "--checkpoint-every", "1", "--weights", str(tmp_path / "w.safetensors")], capsys)
    assert code == 0 and (tmp_path / "w.safetensors").is_file()
    assert "warning: could not save the training state" in err and "tuning goes on" in err


def test_ctrl_c_prints_one_line_with_how_to_resume(tmp_path):
    """The installed command, interrupted by SIGINT during a long run with checkpoints on."""
    weights = tmp_path / "w.safetensors"
    state = weights.with_suffix(".state.safetensors")
    process = run_tune_process(["tune", "--frames", "2", "--tune-steps", "100000", "--checkpoint-every", "1",
                                "--weights", str(weights)])
    out, err = interrupt_when(process, state)  # SIGINT once the first state is saved; waits for events
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
    sd3 = tmp_path / "sd3.safetensors"
    safetensors.torch.save_file({"model.diffusion_model.joint_blocks.0.x": torch.zeros(1)}, str(sd3))
    code, err = run_cli(["run", "--model", str(sd3)], capsys)
    assert code == 2 and "is a SD3 checkpoint" in err and "SD 1.x/2.x or SDXL" in err
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


PEAK_MEMORY = """import resource, runpy, sys
sys.argv = ["tuneavideo", *sys.argv[1:]]
try:
    runpy.run_module("tav_core", run_name="__main__")
except SystemExit as e:
    print("rc", e.code)
print("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def refusal_peak(path, tmp_path) -> tuple[str, int]:
    """The CLI's refusal of a pickle checkpoint in a fresh process: (stderr, the process's peak memory)."""
    done = subprocess.run([sys.executable, "-c", PEAK_MEMORY, "edit", "--model", str(path), "--allow-pickle", "--out",
                           str(tmp_path / "e.gif"), "--weights", str(tmp_path / "w.safetensors")],
                          capture_output=True, text=True, timeout=900)
    assert "rc 2" in done.stdout, done.stderr
    return done.stderr, int(done.stdout.split("peak")[-1])


def test_a_large_pickle_without_sd_tensors_is_refused_from_its_header_without_reading_its_tensors(tmp_path):
    """The tensors of a zip-format .ckpt are memory-mapped, never read, to list its keys: refusing one with 512 MB
    of tensors takes no more memory than refusing one of a few bytes."""
    torch.save({"state_dict": {"first_stage_model.x": torch.zeros(4)}}, tmp_path / "small.ckpt")
    torch.save({"state_dict": {"first_stage_model.x": torch.ones(2 ** 27)}}, tmp_path / "large.ckpt")
    small_err, small_peak = refusal_peak(tmp_path / "small.ckpt", tmp_path)
    large_err, large_peak = refusal_peak(tmp_path / "large.ckpt", tmp_path)
    assert "holds no Stable Diffusion UNet (no model.diffusion_model.* keys)" in large_err, large_err
    assert large_peak < small_peak + 2 ** 28, (small_peak, large_peak)  # its 512 MB were never read


def test_every_option_has_help_and_help_needs_no_torch():
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            assert action.help, f"{sub.prog} {action.option_strings} has no help"
    assert "``" not in parser.description
    out = subprocess.run([sys.executable, "-c", "import sys; from tav_core.cli import main\ntry: main(['run', '--help'])\n"
                          "except SystemExit: pass\nprint('torch' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip().endswith("False")


def test_diffusers_folder_loads_without_warnings(tmp_path, caplog):
    from tav_core import load_components
    from tav_core.loading.tiny import save_folder
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
    with pytest.raises(TavError, match=r"its weight decay \(0.01, here 0.1\), gradient clip \(1.0, here 2.0\) differ"):
        fresh.tune(latents, "x", TuneConfig(**base | {"steps": 2, "resume": True, "weight_decay": 0.1,
                                                       "max_grad_norm": 2.0}), progress=False)


# 3. what a hostile or clumsy user still broke (issue 16) and what a second run could destroy (issue 17)

def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_that_is_one_of_the_inputs_is_refused(tmp_path, capsys, no_model):
    from tav_core.video import write_video
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"the user's checkpoint")
    (tmp_path / "link.safetensors").symlink_to(model)
    write_video(tmp_path / "clip.mp4", demo_video(2, 64, 64))
    write_video(tmp_path / "frames", demo_video(2, 64, 64))
    w = str(tmp_path / "w.safetensors")
    before = files_of(tmp_path)
    for args, message in [
            (["tune", "--model", str(model), "--weights", str(model)], "--weights"),
            (["tune", "--model", str(model), "--weights", str(tmp_path / "link.safetensors")], "--model"),
            (["run", "--video", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "clip.mp4"), "--weights", w],
             "would overwrite --video"),
            (["run", "--video", str(tmp_path / "frames"), "--out", str(tmp_path / "frames"), "--weights", w],
             "would overwrite --video"),
            (["run", "--video", str(tmp_path / "frames"), "--out", str(tmp_path / "frames" / "edit.gif"), "--weights",
              w], "would overwrite --video"),
            (["run", "--p2p", "--inversion", w, "--weights", w], "are the same file")]:
        code, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert files_of(tmp_path) == before  # nothing written, nothing touched


@pytest.mark.parametrize("args, message", [
    (["run", "--p2p", "--reweight", "square:nan"], "--reweight 'square' must be a number from -10 to 10"),
    (["run", "--p2p", "--reweight", "square:inf"], "--reweight 'square' must be a number from -10 to 10"),
    (["run", "--p2p", "--reweight", "square:-1000"], "--reweight 'square' must be a number from -10 to 10"),
    (["run", "--cfg", "inf"], "--cfg must be a number from 0 to 100"),
    (["run", "--cfg", "1e30"], "--cfg must be a number from 0 to 100"),
    (["tune", "--lr", "inf"], "--lr must be a number from"),
    (["tune", "--lr", "nan"], "--lr must be a number from"),
    (["run", "--seed", "18446744073709551616"], "--seed must be a whole number from 0 to 18446744073709551615"),
    (["run", "--seed", "-1"], "--seed must be a whole number"),
    (["run", "--device", "cuda:99"], "CUDA GPU"),
    (["run", "--device", "gpu-please"], "is not a device name"),
    (["run", "--frames", "10000000"], "of memory are free: use fewer frames"),
    (["run", "--width", "800000", "--height", "800000"], "of memory are free: use fewer frames"),
    (["run", "--reweight", "square:2"], "--reweight sets a Prompt-to-Prompt edit"),
    (["run", "--cross-steps", "0.5"], "--cross-steps sets a Prompt-to-Prompt edit"),
    (["run", "--blend", "square", "square"], "--blend sets a Prompt-to-Prompt edit"),
    (["run", "--out", ""], "--out is empty"),
    (["run", "--video", "{tmp}/no-images"], "has no images"),
    (["run", "--out", "{tmp}/" + "x" * 300 + "/edit.mp4"], "choose a shorter name"),
    (["run", "--fps", "0"], "--fps must be from 1 to 240"),
])
def test_numbers_devices_and_paths_are_refused_before_the_model_loads(tmp_path, capsys, no_model, args, message):
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "notes.txt").write_text("not a frame")
    code, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_plan_that_cannot_fit_is_refused_before_the_model_loads_or_the_clip_is_encoded(tmp_path, capsys, no_model,
                                                                                         monkeypatch):
    import tav_core.memory.fit
    monkeypatch.setattr(tav_core.memory.fit, "free_bytes", lambda device: 2 ** 20)
    code, err = run_cli(["tune", "--width", "4096", "--height", "4096", "--memory", "check", "--weights",
                         str(tmp_path / "w.safetensors")], capsys)
    assert code == 2 and "VAE encode needs about" in err and "are free" in err


def test_a_null_text_inversion_of_another_video_or_other_weights_is_refused(tmp_path, capsys):
    small = ["--frames", "2", "--steps", "2", "--inner-steps", "1", "--p2p", "--memory", "off"]
    inversion, weights, other = (str(tmp_path / n) for n in ("inv.safetensors", "w.safetensors", "w2.safetensors"))
    assert main(["run", *small, "--tune-steps", "1", "--weights", weights, "--inversion", inversion,
                 "--out", str(tmp_path / "e1.gif")]) == 0
    assert main(["edit", *small, "--weights", weights, "--inversion", inversion, "--out", str(tmp_path / "e2.gif")]) == 0
    capsys.readouterr()
    before = Path(inversion).read_bytes()
    code, err = run_cli(["edit", *small, "--weights", weights, "--inversion", inversion, "--start", "1",
                         "--out", str(tmp_path / "e3.gif")], capsys)  # the built-in clip from its second frame
    assert code == 2 and "was made for another edit: its video differ" in err
    assert main(["tune", "--frames", "2", "--tune-steps", "1", "--lr", "1e-3", "--weights", other]) == 0
    code, err = run_cli(["edit", *small, "--weights", other, "--inversion", inversion, "--out", str(tmp_path / "e4.gif")],
                        capsys)
    assert code == 2 and "its tuned weights differ" in err
    code, err = run_cli(["edit", *small, "--weights", weights, "--inversion", inversion, "--cfg", "5",
                         "--out", str(tmp_path / "e5.gif")], capsys)
    assert code == 2 and "its cfg (7.5, here 5.0) differ" in err
    assert Path(inversion).read_bytes() == before and not (tmp_path / "e3.gif").exists()


def test_a_failed_final_save_keeps_the_tuned_weights_elsewhere(tmp_path, capsys, monkeypatch):
    import errno
    import tempfile

    import safetensors.torch
    real = safetensors.torch.save_file
    spare = tmp_path / "spare"
    spare.mkdir()

    def full_disk(tensors, filename, metadata=None):
        if Path(filename).parent == tmp_path:
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, metadata=metadata)
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)  # what tav_core.files writes with
    monkeypatch.setattr(tempfile, "tempdir", str(spare))
    code, err = run_cli([*TUNE, "--weights", str(tmp_path / "w.safetensors")], capsys)
    kept = spare / "w.safetensors"
    last = err.strip().splitlines()[-1]  # after the progress bar, one line
    assert code == 1 and last.startswith("error: No space left on device") and f"saved in {kept} instead" in last
    assert read_metadata(kept)["tuning"]["steps"] == 2 and not (tmp_path / "w.safetensors").exists()


def damaged_metadata(path: Path, **changes) -> Path:
    """Rewrite a safetensors file's metadata: a value of None removes the entry."""
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta = {k: v for k, v in {**meta, **changes}.items() if v is not None}
    safetensors.torch.save_file(tensors, str(path), metadata=meta)
    return path


def test_damaged_metadata_of_every_file_is_one_line(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    assert main([*TUNE, "--weights", str(weights)]) == 0
    edit = ["edit", "--frames", "2", "--steps", "2", "--weights", str(weights), "--out", str(tmp_path / "e.gif")]
    good = weights.read_bytes()
    for change, message in [(dict(fingerprint="[0.1, "), "metadata entry 'fingerprint' is damaged (not JSON)"),
                            (dict(fingerprint=None), "does not say which base model"),
                            (dict(frames="eight"), "metadata entry 'frames' is damaged")]:
        weights.write_bytes(good)
        code, err = run_cli(edit, capsys)
        assert code == 0, err
        damaged_metadata(weights, **change)
        code, err = run_cli(edit, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    state = tuned_state(tmp_path / "s", capsys)
    resume = [*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "s" / "w.safetensors"), "--resume"]
    intact = state.read_bytes()
    for change in (dict(step=None), dict(step="7"), dict(losses="[1.0,"), dict(identity="{")):
        state.write_bytes(intact)
        damaged_metadata(state, **change)
        code, err = run_cli(resume, capsys)
        assert code == 2 and "is damaged" in err and "delete it to start afresh" in err, (change, err)
    state.write_bytes(intact)
    tensors = safetensors.torch.load_file(str(state))
    with safe_open(str(state), "pt") as f:
        meta = f.metadata()
    safetensors.torch.save_file({k: v for k, v in tensors.items() if k != "rng"}, str(state), metadata=meta)
    code, err = run_cli(resume, capsys)
    assert code == 2 and "is damaged" in err
    tensors[sorted(k for k in tensors if k.startswith("param/"))[0]][0] = float("nan")
    safetensors.torch.save_file(tensors, str(state), metadata=meta)
    code, err = run_cli(resume, capsys)
    assert code == 2 and "holds NaN or infinite values: it is damaged" in err and "learning rate" not in err


def test_a_damaged_null_text_inversion_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    from tav_core.editing.null_text import NullTextInversion
    weights = tmp_path / "w.safetensors"
    from tav_core.loading.tuned import write_tuned
    write_tuned(weights, {"blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}, [0.0], prompt="x", frames=2)
    inversion = tmp_path / "inv.safetensors"
    for change, message in [(dict(prompt=None), "does not say how it was made"),
                            (dict(steps='"x"'), "does not say how it was made"),
                            (dict(steps="[1,"), "metadata entry 'steps' is damaged"),
                            (dict(format=None), "is not a null-text inversion file")]:
        NullTextInversion(torch.zeros(2, 4, 8, 8), torch.zeros(2, 77, 32), 2, 7.5, "x").save(inversion)
        damaged_metadata(inversion, **change)
        code, err = run_cli(["edit", "--p2p", "--weights", str(weights), "--inversion", str(inversion)], capsys)
        assert code == 2 and message in err, (change, err)
    code, err = run_cli(["edit", "--p2p", "--weights", str(weights), "--inversion", str(weights)], capsys)
    assert code == 2 and "is not a null-text inversion file" in err


def test_a_clip_folder_with_damaged_weights_is_one_line(tmp_path, capsys):
    from transformers import CLIPConfig, CLIPModel

    from tav_core.video import write_video
    config = CLIPConfig(text_config=dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                                         vocab_size=49408, max_position_embeddings=77),
                        vision_config=dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8), projection_dim=8)
    CLIPModel(config).save_pretrained(tmp_path / "clip")
    weights = tmp_path / "clip" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    write_video(tmp_path / "v.gif", demo_video(2, 32, 32))
    code, err = run_cli(["score", "--clip", str(tmp_path / "clip"), "--video", str(tmp_path / "v.gif")], capsys)
    assert code == 2 and "could not load the CLIP model" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code, err = run_cli(["run", "--clip", str(tmp_path / "other")], capsys)
    assert code == 2 and "is not a CLIP model's (model_type 'bert')" in err


def run_tune_process(args: list[str], **kwargs) -> subprocess.Popen:
    """The installed command in a process of its own that Ctrl-C reaches: a suite started in the background by a
    shell without job control inherits SIGINT ignored, and so would the command, which then never stops."""
    return subprocess.Popen([str(Path(sys.executable).parent / "tuneavideo"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TQDM_DISABLE": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def interrupt_when(process: subprocess.Popen, ready: Path) -> tuple[str, str]:
    """SIGINT once ``ready`` exists (or the process ends by itself); waits for events, never a short fixed time."""
    while not ready.exists() and process.poll() is None:
        time.sleep(0.2)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    return process.communicate(timeout=1800)


@pytest.mark.parametrize("kind", ["single file", "folder"])
def test_a_real_model_tunes_reproducibly_across_processes_and_resumes(tmp_path, test_models, kind):
    """The temporal layers start from the run's seed, so the same command gives bit-identical weights in another
    process (saved bytes compared), and a run interrupted in one process resumes in another."""
    from tav_core.loading.tiny import save_folder
    model = ["--model", str(test_models / "tiny-sd15.safetensors"), "--config", str(test_models / "tiny-sd15-config")]
    if kind == "folder":
        model = ["--model", str(save_folder(tiny_components(3), tmp_path / "model"))]
    common = ["tune", *model, "--frames", "2", "--width", "64", "--height", "64", "--memory", "off"]
    for name in ("a", "b"):
        out, err = run_tune_process([*common, "--tune-steps", "2", "--weights", str(tmp_path / f"{name}.safetensors")]
                                    ).communicate(timeout=1800)
        assert "Traceback" not in err and (tmp_path / f"{name}.safetensors").is_file(), err[-2000:]
    a, b = (safetensors.torch.load_file(str(tmp_path / f"{n}.safetensors")) for n in "ab")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)  # saved bytes of one computation, twice
    weights = tmp_path / "r.safetensors"
    state = weights.with_suffix(".state.safetensors")
    process = run_tune_process([*common, "--tune-steps", "100000", "--checkpoint-every", "1", "--weights", str(weights)])
    out, err = interrupt_when(process, state)
    assert process.returncode == 130 and "--resume" in err, err[-2000:]
    with safe_open(str(state), "pt") as f:
        step = int(f.metadata()["step"])
    process = run_tune_process([*common, "--tune-steps", str(step + 1), "--checkpoint-every", "1", "--resume",
                                "--weights", str(weights)])
    out, err = process.communicate(timeout=1800)
    assert process.returncode == 0 and weights.is_file() and not state.exists(), err[-2000:]


def test_a_second_run_never_deletes_another_runs_state(tmp_path, capsys):
    state = tuned_state(tmp_path, capsys)
    before = state.read_bytes()
    code, err = run_cli([*TUNE, "--prompt", "another caption", "--weights", str(tmp_path / "w.safetensors")], capsys)
    assert code == 2 and "holds the training state of an interrupted run" in err and "--resume" in err
    assert state.read_bytes() == before and not (tmp_path / "w.safetensors").exists()


def test_a_frame_folder_output_is_written_whole_and_never_over_other_files(tmp_path, capsys):
    out = tmp_path / "frames"
    run = ["run", "--tune-steps", "1", "--steps", "2", "--memory", "off", "--weights", str(tmp_path / "w.safetensors"),
           "--out", str(out)]
    assert main([*run, "--frames", "8"]) == 0
    assert main([*run, "--frames", "4"]) == 0  # a shorter clip leaves no frames of the longer one behind
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(4)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".frames")]  # no temporary folder left
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    code, err = run_cli([*run, "--frames", "4"], capsys)
    assert code == 2 and "holds files that are not frames this tool wrote" in err and (out / "notes.txt").is_file()


def test_checks_about_the_model_and_the_files_come_before_the_model_loads(tmp_path, capsys, no_model, test_models):
    pipe = TuneAVideo(tiny_components(0))
    weights = tmp_path / "w.safetensors"
    pipe.save_tuned(weights, "x", 2, 64, 64, TuneConfig(steps=1))  # tuned on the tiny model, not the checkpoint
    (tmp_path / "m.ckpt").write_bytes(b"\x80\x02 not really")
    (tmp_path / "m.txt").write_text("x")
    (tmp_path / "folder" / "unet").mkdir(parents=True)
    (tmp_path / "folder" / "unet" / "config.json").write_text("{}")
    checkpoint = ["--model", str(test_models / "tiny-sd15.safetensors"), "--config", str(test_models / "tiny-sd15-config")]
    for args, message in [
            (["edit", *checkpoint, "--weights", str(weights)], "was tuned on a different base model than"),
            (["run", "--model", str(tmp_path / "m.ckpt")], "can run arbitrary code when loaded"),
            (["run", "--model", str(tmp_path / "m.ckpt"), "--allow-pickle"], "its bytes are not a pickle"),
            (["run", "--model", str(tmp_path / "m.txt")], "has suffix '.txt'"),
            (["run", "--model", str(tmp_path / "folder")], "lacks vae/config.json"),
            (["run", "--model", str(test_models / "tiny-sd15.safetensors")], "give its diffusers config folder")]:
        code, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)


def test_messages_say_what_happened(tmp_path, capsys, monkeypatch):
    from tav_core.cli import commands

    # Ctrl-C while editing, after the weights were saved: they are not lost, and the message says so
    monkeypatch.setattr(commands, "edit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    weights = tmp_path / "w.safetensors"
    code, err = run_cli(["run", "--p2p", "--frames", "2", "--tune-steps", "1", "--steps", "2", "--inner-steps", "1",
                         "--memory", "off", "--weights", str(weights), "--out", str(tmp_path / "e.gif")], capsys)
    assert code == 130 and f"the tuned weights are saved in {weights}" in err and "nothing was saved" not in err
    assert weights.is_file()
    long = tmp_path / ("w" * 240 + ".safetensors")  # its state's name would be too long, but no state is kept
    assert run_cli([*TUNE, "--weights", str(long)], capsys)[0] == 0


@pytest.mark.parametrize("change, named", [(["--start", "1"], "first frame (--start) (0, here 1)"),
                                           (["--width", "72"], "width (64, here 72)"),
                                           (["--frames", "3"], "frame count (--frames) (2, here 3)")])
def test_resume_names_the_setting_that_differs(tmp_path, capsys, change, named):
    tuned_state(tmp_path, capsys)
    code, err = run_cli([*TUNE, "--tune-steps", "4", "--weights", str(tmp_path / "w.safetensors"), "--resume", *change],
                        capsys)
    assert code == 2 and named in err


def test_a_mask_covering_every_pixel_or_none_is_explained(tmp_path):
    from tav_core.scoring.report import score
    frames = demo_video(2, 16, 16)
    embeds = torch.randn(2, 4)
    with pytest.raises(TavError, match="white over a whole frame: nothing is outside"):
        score(embeds, None, frames, frames, np.ones((16, 16), bool))
    with pytest.raises(TavError, match="black in at least one frame"):
        score(embeds, None, frames, frames, np.zeros((16, 16), bool))


def test_a_run_says_so_before_the_model_code_loads(tmp_path):
    """The first line comes once the arguments and paths are checked, before torch and diffusers (seconds) are
    imported; planning and loading say so before they start: never a silent wait."""
    marked = ("import sys\nfrom tav_core.cli import main\n"
              "class Marked:  # each line with whether torch was imported when it was printed\n"
              "    def write(self, s): return sys.__stdout__.write(f\"{'torch' in sys.modules}|{s}\" if s.strip() else s)\n"
              "    def flush(self): sys.__stdout__.flush()\n"
              "sys.stdout = Marked()\n"
              f"main(['run', '--frames', '2', '--width', '32', '--height', '32', '--tune-steps', '1', '--steps', '2', "
              f"'--weights', {str(tmp_path / 'w.safetensors')!r}, '--out', {str(tmp_path / 'e.gif')!r}])")
    out = subprocess.run([sys.executable, "-c", marked], capture_output=True, text=True, timeout=1800)
    lines = out.stdout.splitlines()
    assert lines[0] == "False|run: arguments and paths checked; loading the model code (torch, diffusers)", \
        out.stdout + out.stderr
    assert lines[1] == ("True|planning memory: VAE encode, tuning, DDIM inversion, CFG sampling, VAE decode"), lines
    assert lines[2].startswith("True|memory: ") and lines[-1].startswith("True|edited video: "), lines
