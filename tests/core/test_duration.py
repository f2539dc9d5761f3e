"""The forecast's pieces: the probe's rate is measured once per shape, and a duration reads as a person says it."""

import pytest
import torch

from tav_core.memory import duration


def test_a_duration_reads_in_the_unit_a_person_would_use():
    said = {0.2: "1 s", 40: "40 s", 89: "89 s", 600: "10 min", 5340: "89 min", 7200: "2 h", 12000: "3 h 20 min",
            47 * 3600: "47 h", 7 * 86400: "7 days", 6.8 * 86400: "6.8 days", 30.4 * 86400: "30 days"}
    assert {s: duration.duration_text(s) for s in said} == said


def test_the_probe_is_measured_once_per_shape_and_predictions_scale_with_the_work(monkeypatch):
    calls = []
    probe = duration._probe
    monkeypatch.setattr(duration, "_probe", lambda *a: (calls.append(a), probe(*a))[1])
    monkeypatch.setattr(duration, "_RATES", {})
    rate = duration.measured_rate("cpu", torch.float32, 64)
    assert rate > 0 and duration.measured_rate("cpu", torch.float32, 64) == rate and len(calls) == 1
    one = duration.predicted_seconds(1e12, 1, "cpu", torch.float32, 64)
    assert one == 1e12 / (rate * duration.STEP_SHARE) and len(calls) == 1
    assert duration.predicted_seconds(1e12, 500, "cpu", torch.float32, 64) == pytest.approx(500 * one, rel=1e-15)
    duration.measured_rate("cpu", torch.float32, 256)  # another size: measured again
    assert len(calls) == 2
