"""``python -m bench.gpu``'s dry run on the CPU with the tiny model, so the GPU check does not rot between the
sessions that are lent a GPU: every part runs and its results file holds what a GPU run's holds."""

import json

import bench
from bench import gpu


def test_the_gpu_check_runs_every_part_and_writes_its_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    assert gpu.main(["--device", "cpu", "--model", "small", "--frames", "2", "--size", "32", "--name", "dry"]) == 0
    report = json.loads((tmp_path / "dry.json").read_text())
    stages = {(r["precision"], r["stage"]) for r in report["precision"]}
    assert len(stages) == 20 and all(r["as_named"] for r in report["precision"]), report["precision"]
    for kinds in report["attention_kernels"].values():  # the SDPA op each kind of attention ran, found by name
        assert set(kinds) == {"sparse-causal self", "cross", "temporal"}
        assert all(any("scaled_dot_product" in op for op in ops) for ops in kinds.values()), kinds
    assert [r["stage"] for r in report["memory"]] == ["tune", "tune", "tune", "invert", "sample", "null_text", "p2p"]
    assert all(r["measured_mb"] > 0 and 0.8 < r["planned_over_measured"] < 1.25 for r in report["memory"])
    assert report["speed"]["step_s"] > 0 and report["speed"]["gradient_checkpointing"]
    assert "precision: 20 of 20 passes as named" in capsys.readouterr().out
