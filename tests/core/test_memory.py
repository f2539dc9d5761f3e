"""The memory plan against measured allocations, FLOPs against the textbook formulas, and tuning that fits the
free memory or is refused before any step (headless, CLI, One-Shot Tune)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import tav_core.memory.fit
from tav_core import TuneAVideo, TuneConfig, demo_video
from tav_core.cli import main
from tav_core.errors import TavError
from tav_core.loading.tiny import tiny_components
from tav_core.loading.tuned import read_metadata
from tav_core.memory.fit import OVERHEAD, fit, fit_pipeline
from tav_core.memory.trace import AllocationPeak, Plan, Settings, inference_flops, plan_pipeline, planning
from tav_core.sampling.windows import ContextWindows, Passes


def test_allocation_peak_counts_new_storages_until_they_are_freed():
    with AllocationPeak() as tracker:
        a = torch.empty(1000)                       # 4000 bytes
        view = a.view(10, 100)
        a.add_(1)                                   # a view and an in-place result allocate nothing
        b = torch.empty(500, dtype=torch.float64)   # + 4000: the peak
        del a, view
        c = torch.empty(10)                         # a is gone: 4000 + 40
    assert (tracker.peak, tracker.in_use) == (8000, 4040)
    assert b.numel() + c.numel() == 510


def test_flops_are_the_textbook_counts():
    linear = torch.nn.Linear(16, 32, bias=False)
    flops, _ = inference_flops(lambda x, t, c: linear(x), (3, 2, 5, 16), (1, 77, 8), 3, lambda f: _nothing())
    assert flops == 2 * (3 * 2 * 5) * 16 * 32
    with planning():
        q = torch.randn(2, 4, 64, 8)
        flops, _ = inference_flops(lambda x, t, c: F.scaled_dot_product_attention(q, q, q), (1, 1, 1, 1), (1, 1, 1), 1,
                                   lambda f: _nothing())
    assert flops == 2 * (2 * 4 * 64 * 64 * 8) * 2  # scores and the weighted sum, 2 FLOPs a multiply-add


def _nothing():
    from contextlib import nullcontext
    return nullcontext()


@pytest.mark.parametrize("frames, size, checkpointing, window, rank", [
    (2, 64, False, None, None), (4, 64, False, None, None), (4, 128, False, None, None), (4, 128, True, None, None),
    (6, 64, False, 3, None), (4, 64, False, None, 4), (4, 128, False, None, 4), (4, 128, True, None, 16)])
def test_planned_tuning_memory_matches_the_measured_allocations(frames, size, checkpointing, window, rank):
    """Within 20% (full tuning, as always) and 10% (LoRA; measured within 2.2%)."""
    pipe = TuneAVideo(tiny_components(0), gradient_checkpointing=checkpointing)
    latents = pipe.encode_video(demo_video(frames, size, size))
    config = TuneConfig(steps=2, posterior="mean", frame_window=window, lora_rank=rank)
    with AllocationPeak() as measured:
        pipe.tune(latents, "a red square", config, progress=False)
    settings = Settings(frames, size, size, gradient_checkpointing=checkpointing, frame_window=window)
    plan = plan_pipeline(dict(pipe.c.unet.config), replace(settings, lora_rank=rank))
    planned = plan.optimizer + plan.step_peak  # what two steps allocate over the loaded model (LoRA: its adapters)
    assert abs(planned / measured.peak - 1) < (0.2 if rank is None else 0.1), (planned, measured.peak)
    assert 0 < plan.saved < plan.step_peak and plan.gradients == plan.trained > 0 and plan.flops > 0
    if rank is not None:
        assert plan.trained < plan_pipeline(dict(pipe.c.unet.config), settings).trained


def test_checkpointing_and_windows_plan_less_memory_and_checkpointing_more_flops():
    config = dict(tiny_components(0).unet.config)
    plain, ckpt, window = (plan_pipeline(config, s) for s in (
        Settings(8, 64, 64), Settings(8, 64, 64, gradient_checkpointing=True), Settings(8, 64, 64, frame_window=2)))
    assert ckpt.saved < plain.saved and ckpt.flops > plain.flops
    assert window.saved < plain.saved / 2 and window.flops < plain.flops / 2


MB = 2 ** 20


def _planner(asked, ckpt, half, per_frame):
    """Plans whose totals (MB) depend on the settings only, for the choice logic."""
    def plan_for(s: Settings) -> Plan:
        total = per_frame * s.step_frames if s.frame_window else \
            half if s.mixed_precision != "no" else ckpt if s.gradient_checkpointing else asked
        return Plan({}, 0, 0, 0, 0, total * MB, 0)
    return plan_for


def test_fit_keeps_what_fits_and_otherwise_takes_the_cheapest_change_that_fits():
    plan_for, asked = _planner(asked=1000, ckpt=600, half=400, per_frame=40), Settings(8)
    assert OVERHEAD["cuda"] == 1.1
    assert fit(plan_for, asked, 0, lambda n: 2000 * MB, "cuda")[0] == asked
    chosen, report = fit(plan_for, asked, 0, lambda n: 700 * MB, "cuda")
    assert chosen == replace(asked, gradient_checkpointing=True) and "with gradient checkpointing (660 MB)" in report
    chosen, _ = fit(plan_for, asked, 0, lambda n: 200 * MB, "cuda")  # a window of 4 (176 MB) fits, 8 (352) does not
    assert chosen.frame_window == 4 and chosen.gradient_checkpointing and chosen.mixed_precision in ("bf16", "fp16")
    assert fit(plan_for, asked, 500 * MB, lambda n: 600 * MB, "cuda")[0] == asked  # 500 MB of it already there
    with pytest.raises(TavError, match="needs about 1.07 GB more but 700 MB are free; with gradient checkpointing it "
                                       "needs 660 MB: turn that on"):
        fit(plan_for, asked, 0, lambda n: 700 * MB, "cuda", "check")
    with pytest.raises(TavError, match="would not fit even with"):
        fit(plan_for, asked, 0, lambda n: 10 * MB, "cuda")
    with pytest.raises(TavError, match="memory mode 'sometimes'"):
        fit(plan_for, asked, 0, lambda n: 10 * MB, "cuda", "sometimes")


def test_fit_never_takes_lora_and_names_it_where_only_lora_fits():
    """LoRA learns otherwise than the paper's recipe: the plan names it, only the user turns it on."""
    full = _planner(asked=1000, ckpt=600, half=400, per_frame=100)
    plan_for = lambda s: Plan({}, 0, 0, 0, 0, 100 * MB, 0) if s.lora_rank and s.gradient_checkpointing else full(s)
    for mode in ("auto", "check"):
        with pytest.raises(TavError, match=r"would not fit even with .*; LoRA tuning of rank 16 with gradient "
                                           r"checkpointing would fit \(110 MB\): turn it on \(--lora-rank 16"):
            fit(plan_for, Settings(8), 0, lambda n: 120 * MB, "cuda", mode)
    with pytest.raises(TavError, match="would not fit even with") as refused:  # nor LoRA: not named
        fit(plan_for, Settings(8), 0, lambda n: 10 * MB, "cuda")
    assert "LoRA" not in str(refused.value)


def test_fit_pipeline_turns_on_what_fits_or_refuses_before_tuning():
    pipe = TuneAVideo(tiny_components(0))
    latents = pipe.encode_video(demo_video(8, 64, 64))
    config = TuneConfig(steps=2)
    unet_bytes = sum(p.numel() * p.element_size() for p in pipe.c.unet.parameters())
    plan = lambda **s: plan_pipeline(dict(pipe.c.unet.config), Settings(8, 64, 64, **s), count_flops=False)
    need = lambda p: (p.total - unet_bytes) * OVERHEAD["cpu"]
    between = int((need(plan()) + need(plan(gradient_checkpointing=True))) / 2)
    with pytest.raises(TavError, match="with gradient checkpointing it needs"):
        fit_pipeline(pipe, latents, config, "check", free=lambda n: between)
    assert not pipe.c.unet.is_gradient_checkpointing
    fitted, report = fit_pipeline(pipe, latents, config, "auto", free=lambda n: between)
    assert pipe.c.unet.is_gradient_checkpointing and fitted == config and "tuning with gradient checkpointing" in report
    assert fit_pipeline(pipe, latents, config, "off", free=lambda n: 0) == (config, "")


def test_cli_refuses_before_any_step_or_tunes_with_what_fits(tmp_path, capsys, monkeypatch):
    from tav_core.memory.stages import ModelConfigs, plan_stage
    weights = tmp_path / "w.safetensors"
    args = ["tune", "--frames", "8", "--tune-steps", "2", "--weights", str(weights)]
    window4 = Settings(8, 64, 64, mixed_precision="bf16", gradient_checkpointing=True, frame_window=4)
    need = plan_stage(ModelConfigs.of(tiny_components(0)), "tune", window4, "cpu").total * OVERHEAD["cpu"]  # weights:
    free = int(need) + MB // 2  # planned before the model loads. A window of 4 fits, one of 8 does not
    monkeypatch.setattr(tav_core.memory.fit, "free_bytes", lambda device: free)
    assert main([*args, "--memory", "check"]) == 2
    err = capsys.readouterr().err
    assert "are free" in err and "turn that on" in err and not weights.exists()
    assert main(args) == 0  # auto
    assert "tuning with gradient checkpointing, bf16 autocast and a frame window of 4" in capsys.readouterr().out
    tuning = read_metadata(weights)["tuning"]
    assert tuning["frame_window"] == 4 and tuning["mixed_precision"] == "bf16" and tuning["steps"] == 2
    monkeypatch.setattr(tav_core.memory.fit, "free_bytes", lambda device: 1)
    assert main([*args, "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "would not fit even with" in capsys.readouterr().err and not (tmp_path / "none.safetensors").exists()
    assert main([*args, "--memory", "off", "--weights", str(tmp_path / "off.safetensors")]) == 0
    assert read_metadata(tmp_path / "off.safetensors")["tuning"]["frame_window"] is None


def test_tuning_frees_its_gradients_and_optimiser_state():
    """After tuning, what it allocated is gone: only the tuned tensors (updated in place) stay."""
    pipe = TuneAVideo(tiny_components(0))
    latents = pipe.encode_video(demo_video(4, 64, 64))
    with AllocationPeak() as tracker:
        pipe.tune(latents, "a red square", TuneConfig(steps=2, posterior="mean"), progress=False)
    assert all(p.grad is None and not p.requires_grad for p in pipe.c.unet.parameters())
    trained = sum(p.numel() * 4 for n, p in pipe.c.unet.named_parameters() if "to_q" in n or "attn_temp" in n)
    print(f"tuning peak {tracker.peak / MB:.1f} MB, left allocated {tracker.in_use / MB:.3f} MB")
    assert tracker.in_use < 0.01 * trained  # the AdamW state and gradients alone would be 3x the tuned tensors


def _fake_cgroup(tmp_path, v2: bool, limit: str, used: int, parent_limit: str | None = None):
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal: 33554432 kB\nMemAvailable: 16777216 kB\n")  # 16 GB available
    if v2:
        (proc / "self" / "cgroup").write_text("0::/box/job\n")
        job, files = root / "box" / "job", ("memory.max", "memory.current")
        (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text("cpu memory\n")
    else:
        (proc / "self" / "cgroup").write_text("5:cpu,cpuacct:/\n4:memory:/box/job\n")
        job, files = root / "memory" / "box" / "job", ("memory.limit_in_bytes", "memory.usage_in_bytes")
    job.mkdir(parents=True)
    (job / files[0]).write_text(limit + "\n")
    (job / files[1]).write_text(f"{used}\n")
    if parent_limit is not None:
        (job.parent / files[0]).write_text(parent_limit + "\n")
        (job.parent / files[1]).write_text(f"{used}\n")
    return root, proc


@pytest.mark.parametrize("v2", [True, False])
def test_free_memory_on_the_cpu_is_bounded_by_the_cgroup(tmp_path, v2):
    from tav_core.memory.host import cpu_free_bytes
    gb = 2 ** 30
    root, proc = _fake_cgroup(tmp_path / "a", v2, str(4 * gb), 3 * gb)
    assert cpu_free_bytes(root, proc) == gb  # 4 GB limit, 3 GB used: 1 GB left of the 16 GB available
    unlimited = "max" if v2 else str(2 ** 63 - 4096)
    root, proc = _fake_cgroup(tmp_path / "b", v2, unlimited, 3 * gb)
    assert cpu_free_bytes(root, proc) == 16 * gb
    root, proc = _fake_cgroup(tmp_path / "c", v2, unlimited, 3 * gb, parent_limit=str(5 * gb))  # a limit above
    assert cpu_free_bytes(root, proc) == 2 * gb


def inference_runs(pipe, latents, passes, steps) -> dict:
    """Each inference stage run as the pipeline runs it, by stage name (what its plan is measured against)."""
    from tav_core.editing.attention_control import EditControl
    from tav_core.editing.edit import edit, null_text_invert
    control = EditControl("a cat walks", "a dog walks", blend_words=(["cat"], ["dog"]))
    return {"invert": lambda: pipe.invert(latents, steps, passes=passes),
            "sample": lambda: pipe.sample(latents, "a cat", steps=steps, passes=passes),
            "null_text": lambda: null_text_invert(pipe, latents, "a cat", steps, inner_steps=2, passes=passes),
            "p2p": lambda: edit(pipe, latents, control, steps=steps, passes=passes)}


STAGE_CASES = [(None, 12), (ContextWindows(4, 1), 16)]


@pytest.mark.parametrize("windows, frames", STAGE_CASES, ids=["whole clip", "windows of 4 over 16 frames"])
def test_every_stage_is_planned_as_it_runs(windows, frames):
    """Each stage's plan (``tav_core.memory.stages``, fake tensors) against the exact peak of the tensors the stage
    allocates when it runs on the tiny model; 16 frames in windows of 4 are planned from 3 and 4 windows."""
    from tav_core.memory.stages import ModelConfigs, plan_stage
    pipe = TuneAVideo(tiny_components(0))
    video = demo_video(frames, 64, 64)
    latents = pipe.encode_video(video)
    passes, steps = Passes(windows=windows), 2
    runs = {"encode": lambda: pipe.encode_posterior(video), "decode": lambda: pipe.decode(latents),
            **inference_runs(pipe, latents, passes, steps)}
    ratios = {}
    for stage, run in runs.items():
        plan = plan_stage(ModelConfigs.of(pipe.c), stage, Settings(frames, 64, 64, windows=windows, steps=steps),
                          "cpu")
        with AllocationPeak() as measured:
            run()
        ratios[stage] = round((plan.step_peak + plan.held) / measured.peak, 3)
    print(f"planned/measured, {frames} frames, windows {windows}: {ratios}")
    assert all(abs(r - 1) < 0.2 for r in ratios.values()), ratios


def test_a_run_that_a_later_stage_cannot_fit_is_refused_before_tuning(tmp_path, capsys, monkeypatch):
    import tav_core.memory.stages
    original = tav_core.memory.stages.plan_stage

    def huge_edit(configs, stage, settings, device_type="cuda"):
        plan = original(configs, stage, settings, device_type)
        return replace(plan, held=2 ** 50) if stage == "p2p" else plan  # no setting makes the edit fit
    monkeypatch.setattr(tav_core.memory.fit, "plan_stage", huge_edit)
    weights = tmp_path / "w.safetensors"
    assert main(["run", "--p2p", "--frames", "4", "--tune-steps", "2", "--steps", "2", "--weights", str(weights),
                 "--out", str(tmp_path / "e.gif")]) == 2
    err = capsys.readouterr().err
    assert "Prompt-to-Prompt edit needs about" in err and "would not fit even with" in err
    assert not weights.exists() and not (tmp_path / "e.gif").exists()


def test_the_plan_picks_windows_for_an_editing_stage_that_does_not_fit(tmp_path, capsys, monkeypatch):
    from tav_core.memory.fit import fit_pipeline_stage as fit_stage, pipeline_settings
    pipe = TuneAVideo(tiny_components(0))
    asked = pipeline_settings(pipe, "sample", 24, 64, 64)
    whole, _ = fit_stage(pipe, "sample", asked, "auto", free=lambda n: 2 ** 40)
    assert whole == asked
    need = lambda s: (tav_core.memory.stages.plan_stage(tav_core.memory.stages.ModelConfigs.of(pipe.c), "sample", s,
                                                       "cpu").total - tav_core.memory.fit.loaded_bytes(pipe)) * \
        OVERHEAD["cpu"]
    windows8 = replace(asked, batch_cfg=False, mixed_precision="bf16", windows=ContextWindows(8, 2))
    chosen, report = fit_stage(pipe, "sample", asked, "auto", free=lambda n: int(need(windows8)) + 1)
    assert chosen.windows is not None and chosen.windows.length >= 8 and "frame windows of" in report
    with pytest.raises(TavError, match="CFG sampling needs about .* turn that on"):
        fit_stage(pipe, "sample", asked, "check", free=lambda n: int(need(windows8)) + 1)


@pytest.mark.parametrize("windows, frames", STAGE_CASES, ids=["whole clip", "windows of 4 over 16 frames"])
def test_every_stage_with_a_motion_module_is_planned_within_ten_percent(windows, frames):
    """With an AnimateDiff motion module as the temporal layers (tuned whole, or through LoRA): each stage's plan
    against the exact peak the stage allocates on the tiny model."""
    from motion_layout import tiny_module

    from tav_core.memory.stages import ModelConfigs, plan_stage
    pipe = TuneAVideo(tiny_components(0), motion_module=tiny_module())
    configs = ModelConfigs.of(pipe.c, pipe.inflation.motion)
    video = demo_video(frames, 64, 64)
    latents = pipe.encode_video(video)
    passes, steps = Passes(windows=windows), 2
    runs = inference_runs(pipe, latents, passes, steps)
    ratios = {}
    for stage, run in runs.items():
        plan = plan_stage(configs, stage, Settings(frames, 64, 64, windows=windows, steps=steps), "cpu")
        with AllocationPeak() as measured:
            run()
        ratios[stage] = round((plan.step_peak + plan.held) / measured.peak, 3)
    if windows is None:  # (tuning takes no frame windows: the whole clip, as fully and through LoRA)
        for rank in (None, 4):
            tuned = TuneAVideo(tiny_components(0), motion_module=tiny_module())
            plan = plan_stage(configs, "tune", Settings(frames, 64, 64, lora_rank=rank), "cpu")
            with AllocationPeak() as measured:
                tuned.tune(latents, "a cat", TuneConfig(steps=2, posterior="mean", lora_rank=rank), progress=False)
            ratios[f"tune, LoRA {rank}"] = round((plan.optimizer + plan.step_peak) / measured.peak, 3)
    print(f"planned/measured with a motion module, {frames} frames, windows {windows}: {ratios}")
    assert all(abs(r - 1) < 0.1 for r in ratios.values()), ratios
