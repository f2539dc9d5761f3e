"""The nodes' code on the host's own UNet, run by scripts that import ComfyUI and the pack in their own process (no
server): memory plans, gradient checkpointing, tuning reproduced across inflations and processes."""

import re

import pytest

from support import run_in_comfyui, within


def _node(free: int | str, mode: str, test_models, node: str = "tune") -> dict:
    return run_in_comfyui("node_memory.py", free, mode, node)


def test_one_shot_tune_fits_the_free_memory_comfyui_reports(test_models):
    ample = _node(2 ** 40, "auto", test_models)
    assert ample["ran"] == {"mixed_precision": "no", "frame_window": None, "gradient_checkpointing": False}
    assert "memory: tuning needs about" in ample["log"][0]
    tight = _node("tight", "auto", test_models)  # just enough for a window of 4 (the node's own plan)
    assert tight["ran"] == {"mixed_precision": "bf16", "frame_window": 4, "gradient_checkpointing": True}
    assert "tuning with gradient checkpointing, bf16 autocast and a frame window of 4" in tight["log"][0]
    refused = _node("tight", "check", test_models)
    assert refused["ran"] == {} and "are free" in refused["error"] and "turn that on" in refused["error"]
    assert _node(1, "off", test_models)["ran"]["frame_window"] is None


def test_one_shot_tune_says_how_long_before_the_first_step(test_models):
    """On a CPU, before any step: the time the plan's FLOPs take at the rate the device measured, the numbers it
    came from; a long run also names what half the frames and half the size would take (planned as well)."""
    forecast = _node(2 ** 40, "auto", test_models)["forecast"]
    shown, long = forecast[0], forecast[-1]
    assert re.fullmatch(r"One-Shot Tune: 1 steps of 8 frames at 128x128: about \d+ s on this CPU \(planned "
                        r"[\d.]+ TFLOP a step, measured \d+ GFLOP/s\)", shown), shown
    whole, halves = long.split("; shorter: ")
    assert whole.startswith("500 steps of 8 frames at 128x128: about ")
    seconds = lambda text: sum(float(n) * {"s": 1, "min": 60, "h": 3600, "days": 86400}[u]
                               for n, u in re.findall(r"([\d.]+) (s|min|h|days)\b", text))
    half_frames, half_size = halves.split(", ")
    assert half_frames.startswith("4 frames about ") and half_size.startswith("64x64 about ")
    assert seconds(half_frames) < seconds(whole) and seconds(half_size) < seconds(whole), long


@pytest.mark.parametrize("node, stage", [("invert", "DDIM inversion"), ("null_text", "null-text inversion"),
                                         ("sample", "CFG sampling")])
def test_inference_nodes_take_the_longest_frame_windows_that_fit(test_models, node, stage):
    """16 frames of the test checkpoint, with free memory just above what 4-frame windows need (the node's own plan
    of each candidate, reported by the child): the node runs the host's context windows of the longest length whose
    plan fits (Null-Text Invert with gradient checkpointing as well), and says so."""
    ran = _node("tight", "auto", test_models, node)
    fitting = [name for name, need in ran["needs"].items() if need <= ran["free"]]  # the node's candidates, in order
    assert "whole clip" not in fitting and fitting, ran
    assert f"{stage} with {fitting[0]}" in ran["log"][0] and "frame windows of" in fitting[0]
    if node == "null_text":  # checkpointing first: windows only as it alone does not fit
        assert fitting[0].startswith("gradient checkpointing and ") and "gradient checkpointing" not in fitting
    longest = int(fitting[0].split("frame windows of ")[1].split()[0])
    assert all(int(name.split("frame windows of ")[1].split()[0]) <= longest for name in fitting)
    if node == "null_text":
        assert ran["ran"] == {"windowed": True}
    else:
        assert ran["ran"]["windows"] == [longest, longest // 4]


def test_inference_nodes_refuse_in_check_mode_and_run_as_given_when_it_fits(test_models):
    refused = _node("tight", "check", test_models, "sample")
    assert "CFG sampling needs about" in refused["error"] and "with frame windows of" in refused["error"]
    assert refused["ran"] == {}
    ample = _node(2 ** 40, "auto", test_models, "invert")
    assert ample["ran"] == {"windows": None} and "DDIM inversion needs about" in ample["log"][0]


def test_checkpointing_on_the_host_keeps_less_and_gives_the_same_result(test_models):
    """On the host's UNet (which runs a level's layers one by one) every ResNet and transformer block is checkpointed,
    the temporal attention its video hook adds included: One-Shot Tune's plan keeps far less for backward (for a GPU
    under autocast more than for the CPU, the norms in float32 as CUDA runs them), and two tuning steps give the same
    tensors; Null-Text Invert's "auto" takes checkpointing when the free memory lies
    between the two plans, and gives what it gives without."""
    result = run_in_comfyui("checkpointing.py")
    print(result)
    assert result["saved"]["True"] < 0.5 * result["saved"]["False"]
    half = result["half"]  # planned for a GPU, whose autocast keeps the norms' results in float32: more, also when
    assert all(half["cuda"][ck] > half["cpu"][ck] for ck in ("False", "True")), half  # recomputed (checkpointing)
    # recomputed forwards: limit 10x how far plain tuning moves when the latents move by one ulp
    assert within(result["difference"], result["floor"], 10, "ComfyUI checkpointing")
    assert result["null_text_needs"]["True"] < 0.8 * result["null_text_needs"]["False"]
    assert result["null_text_checkpointing"] == [False, True, False]
    # limit 10x how far the null text moves without checkpointing when the latents move by one ulp
    assert within(result["null_text_difference"], result["null_text_floor"], 10, "Null-Text Invert checkpointing")


def test_one_shot_tune_in_comfyui_reproduces_across_inflations_and_processes(test_models):
    """Each inflation draws fresh temporal layers from the global random state; tuning starts them from its seed, so
    two inflated MODELs (Inflate Model, Load & Inflate Checkpoint) and two server processes tune the same weights."""
    hashes = [h for _ in range(2) for h in run_in_comfyui("tune_reproducible.py")]
    assert len(set(hashes)) == 1, hashes  # saved bytes of one computation, four times


def test_node_plans_are_kept_on_disk_for_the_next_run(test_models, tmp_path):
    """A second process plans nothing: every plan is read back from disk, equal; another clip length, context
    windows or load device is planned afresh (and kept) in the first. Plans in windows with and without replayed
    passes are equal."""
    first = run_in_comfyui("node_plan_cache.py", tmp_path)
    assert first["traced"] == ["tune False", "tune True", "invert", "null_text"] + ["sample"] * 5
    assert len(list((tmp_path / "plans").glob("*.json"))) == 9
    # on ComfyUI's UNet too, replayed passes plan what traced ones do (7 windows of 2: windows 3 to 5 are alike)
    for stage in ("invert", "null_text", "sample"):
        assert first["totals"][f"{stage} in windows, replay"] == first["totals"][f"{stage} in windows, traced"]
    assert [traced + replayed for traced, replayed in first["replays"]] == [7, 21, 7, 1]  # (the last: on CUDA)
    assert all(replayed >= 2 for _, replayed in first["replays"][:3]), first["replays"]
    again = run_in_comfyui("node_plan_cache.py", tmp_path)
    assert again["traced"] == [] and again["totals"] == first["totals"]


def test_inference_nodes_are_planned_as_they_allocate(test_models):
    """DDIM Invert's, Null-Text Invert's and Video KSampler's plans against the peak their runs allocate (8 frames of
    128x128 on the test checkpoint): within 10% (the null-text plan was 34% over while it planned weight gradients
    the run never takes); Null-Text Invert leaves no gradient on the MODEL's temporal layers."""
    out = run_in_comfyui("node_stage_memory.py")
    assert out.pop("gradients left on the temporal layers") is False
    ratios = {stage: round(planned / measured, 3) for stage, (planned, measured) in out.items()}
    print("planned/measured:", ratios)
    assert set(ratios) == {"invert", "null_text", "sample"} and all(abs(r - 1) < 0.1 for r in ratios.values()), ratios
