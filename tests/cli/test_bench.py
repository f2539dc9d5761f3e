"""The benchmark command runs and reports every number it promises (timings themselves are not tested)."""

import json
import subprocess
import sys

import pytest

from support import ROOT


def bench_report(module: str, *args: str, timeout: int) -> dict:
    """Run ``python -m module *args`` with a result name of its own and return its JSON report (the file removed)."""
    name = "pytest-" + module.split(".")[-1]
    out = subprocess.run([sys.executable, "-m", module, *args, "--name", name], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    path = ROOT / "bench" / "results" / f"{name}.json"
    try:
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)


def test_bench_compare_writes_json_with_all_measurements(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.run", "--frames", "2", "--size", "64", "--steps", "1",
                          "--ddim-steps", "2", "--compare", "--name", "pytest-smoke"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    path = ROOT / "bench" / "results" / "pytest-smoke.json"
    report = json.loads(path.read_text())
    path.unlink()
    assert [r["variant"] for r in report["rows"]] == ["baseline", "engine"]
    for row in report["rows"]:
        assert row["step_s"] > 0 and row["tune_peak_mb"] > 0 and row["inversion_s"] > 0 and row["sampling_s"] > 0
    assert set(report["ratios"]) == {"step_speedup", "memory_ratio", "inversion_speedup", "sampling_speedup"}
    assert "step s" in out.stdout and "step_speedup" in out.stdout


def test_bench_editing_reports_every_feature_against_its_plain_counterpart(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench.editing", "--frames", "2", "--size", "64", "--steps", "2",
                          "--name", "pytest-editing"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    path = ROOT / "bench" / "results" / "pytest-editing.json"
    rows = {r["case"]: r for r in json.loads(path.read_text())["rows"]}
    path.unlink()
    assert set(rows) == {"DDIM inversion", "null-text inversion", "plain edit sampling", "two branches",
                         "attention control", "control + local blend"}
    assert all(r["seconds"] > 0 and r["time_ratio"] > 0 for r in rows.values())
    assert rows["control + local blend"]["blend_maps_bytes"] > 0 and rows["attention control"].get("blend_maps_bytes", 0) == 0


def test_bench_job_runs_each_recipe_as_its_code_does(tmp_path):
    """The reference's job tunes step by step, and every validation_steps inverts and samples its four prompts;
    then one edit. This engine's: encode once, tune, invert, edit, decode."""
    out = subprocess.run([sys.executable, "-m", "bench.job", "--frames", "2", "--size", "32", "--scale", "0.02",
                          "--rounds", "1", "--name", "pytest-job"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    path = ROOT / "bench" / "results" / "pytest-job.json"
    try:
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(path.read_text())
    finally:
        path.unlink(missing_ok=True)
    rows = {r["recipe"]: r for r in report["rows"]}
    reference, engine = rows["reference"], rows["engine"]
    assert (reference["steps"], reference["validation_every"], reference["ddim_steps"]) == (10, 2, 1)
    assert reference["calls"] == {"tune": 10, "invert": 5, "validation": 20, "validation decode": 20, "edit": 1,
                                  "decode": 1}
    assert engine["calls"] == {"encode": 1, "tune": 1, "invert": 1, "edit": 1, "decode": 1}
    assert set(report["summary"]["speedup"]) == {"tune", "invert", "edit", "decode", "total_s", "full_counts_s"}
    reference_total = report["summary"]["reference"]
    assert reference_total["full_counts_s"] == pytest.approx(
        sum(v * (50 if s in ("tune", "invert", "validation", "edit") else 1) for s, v in reference_total.items()
            if s not in ("total_s", "full_counts_s")))
    assert all(v > 0 for r in rows.values() for v in r["seconds"].values())


def test_bench_attention_times_both_paths_and_names_the_engines_choice():
    from bench.attention import measure
    for keys, backward, path in ((24, False, "plain"), (24, True, "fused"), (8, False, "fused")):
        row = measure(("temporal", 4, keys, keys, 8), 1, backward)
        assert row["fused_ms"] > 0 and row["plain_ms"] > 0 and row["engine_takes"] == path


def test_bench_startup_reports_each_command_and_its_imports():
    """Each command's lines and end, and its imports as ``-X importtime`` gives them: torch in every command, diffusers
    in run's and not in score's (tests/cli/test_startup.py checks the module sets themselves)."""
    rows = {r["command"]: r for r in bench_report("bench.startup", "--rounds", "1", timeout=1800)["rows"]}
    assert list(rows) == ["import torch", "run", "tune", "edit", "score"]
    for name, row in rows.items():
        assert row["imports_s"] > 0 and row["packages_s"]["torch"] > 0 and row["top_imports"], row
        if name != "import torch":
            assert row["second_line_s"] is not None and row["end_s"] >= row["second_line_s"]
    assert rows["score"]["packages_s"]["diffusers"] == 0 and rows["run"]["packages_s"]["diffusers"] > 0


def test_bench_plan_time_times_each_first_plan_and_checks_replay_against_tracing():
    """A windowed stage is timed with and without replayed passes, and the bench compares the two plans (it exits
    with an error where they differ); a stage without windows is timed once."""
    report = bench_report("bench.plan_time", "--frames", "40", "--size", "64", "--model", "tiny", "--stages", "null_text",
                          timeout=1200)
    rows = {r["small_gpu"]: r for r in report["rows"]}
    assert rows[True]["seconds"] > 0 and rows[True]["seconds_without_replay"] > 0
    assert rows[False]["seconds"] > 0 and "seconds_without_replay" not in rows[False]
