"""Plans kept on disk: the same plan is read back without tracing, and a change in anything a plan depends on plans
afresh; a cache that cannot be read or written only costs the planning time."""

import json
from dataclasses import replace

import pytest
import torch

from tav_core.loading.configs import ModelConfigs
from tav_core.memory import cache, stages
from tav_core.memory.trace import Settings

SETTINGS = Settings(2, 64, 64)


@pytest.fixture
def traces(tmp_path, monkeypatch):
    """The cache in a folder of its own; counts the plans actually traced."""
    monkeypatch.setenv("TUNEAVIDEO_CACHE", str(tmp_path))
    traced = []
    trace = stages._traced
    monkeypatch.setattr(stages, "_traced", lambda *a: (traced.append(a[1:3]), trace(*a))[1])
    return traced


@pytest.fixture(scope="module")
def configs():
    from tav_core.loading.tiny import tiny_components
    return ModelConfigs.of(tiny_components(0))


def test_a_plan_is_traced_once_then_read_from_disk(traces, configs, tmp_path):
    first = stages.plan_stage(configs, "sample", SETTINGS, "cpu")
    again = stages.plan_stage(configs, "sample", SETTINGS, "cpu")
    assert again == first and traces == [("sample", SETTINGS)]  # read back whole: equal field by field
    assert len(list((tmp_path / "plans").glob("*.json"))) == 1
    tuned = stages.plan_stage(configs, "tune", SETTINGS, "cpu")
    assert stages.plan_stage(configs, "tune", SETTINGS, "cpu") == tuned and len(traces) == 2


@pytest.mark.parametrize("change", ["stage", "settings", "window", "dtype", "device", "architecture", "code"])
def test_anything_a_plan_depends_on_plans_afresh(traces, configs, monkeypatch, change):
    from tav_core.sampling.windows import ContextWindows
    stages.plan_stage(configs, "sample", SETTINGS, "cpu")
    other = dict(stage=("invert", SETTINGS, "cpu"), settings=("sample", replace(SETTINGS, frames=3), "cpu"),
                 window=("sample", replace(SETTINGS, windows=ContextWindows(1, 0)), "cpu"),
                 dtype=("sample", replace(SETTINGS, weights_dtype=torch.bfloat16), "cpu"),
                 device=("sample", SETTINGS, "cuda"), architecture=("sample", SETTINGS, "cpu"),
                 code=("sample", SETTINGS, "cpu"))[change]
    changed = configs
    if change == "architecture":
        changed = replace(configs, unet={**configs.unet, "norm_num_groups": 16})
    if change == "code":
        monkeypatch.setattr(cache, "code_version", lambda: "another version of the engine")
    stages.plan_stage(changed, *other)
    assert len(traces) == 2, traces
    ours = replace(configs, unet={**configs.unet, "_name_or_path": "elsewhere/unet"})  # the file's, not the model's
    if change != "code":
        stages.plan_stage(ours, "sample", SETTINGS, "cpu")
        assert len(traces) == 2


def test_an_unreadable_or_unwritable_cache_only_costs_the_planning(traces, configs, tmp_path, monkeypatch):
    plan = stages.plan_stage(configs, "sample", SETTINGS, "cpu")
    kept = next((tmp_path / "plans").glob("*.json"))
    kept.write_text(json.dumps(json.loads(kept.read_text()))[:20])  # cut off, as by a crash of an older version
    assert stages.plan_stage(configs, "sample", SETTINGS, "cpu") == plan and len(traces) == 2
    assert json.loads(kept.read_text())  # written whole again
    monkeypatch.setenv("TUNEAVIDEO_CACHE", str(kept))  # a file where the folder should be: nothing can be kept
    assert stages.plan_stage(configs, "sample", SETTINGS, "cpu") == plan and len(traces) == 3
    monkeypatch.setenv("TUNEAVIDEO_CACHE", "off")
    stages.plan_stage(configs, "sample", SETTINGS, "cpu")
    assert len(traces) == 4 and cache.cache_folder() is None
