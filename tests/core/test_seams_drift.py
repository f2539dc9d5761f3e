"""What long-clip users complain about, measured: seams at frame-window boundaries, colour drift from the source,
V2VBench's CLIP conventions; each against an independent restatement, and on injected faults."""

import json
import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab
from transformers import CLIPModel, CLIPVisionModel

from tav_core import write_video
from tav_core.cli import main
from tav_core.sampling.windows import ContextWindows
from tav_core.scoring import metrics
from tav_core.scoring.clip import ClipEmbedder, clip_pixels
from tav_core.scoring.drift import colour_drift, drift_summary, lab_to_srgb, srgb_to_lab
from tav_core.scoring.report import score, table
from tav_core.scoring.seams import embedding_changes, pixel_changes, seams, window_boundaries


def smooth_clip(frames: int = 24, size: int = 32) -> np.ndarray:
    """A gradient drifting slowly: every frame-to-frame change small and alike."""
    y, x = np.mgrid[0:size, 0:size]
    clip = [np.stack([(x * 4 + 2 * i) % 256, (y * 4 + i) % 256, np.full_like(x, 128)], -1) for i in range(frames)]
    return np.asarray(clip, dtype=np.uint8)


@pytest.mark.parametrize("frames, length, overlap", [(64, 16, 4), (24, 8, 2), (10, 16, 4), (20, 6, 0)])
def test_window_boundaries_are_where_a_window_starts_or_ends(frames, length, overlap):
    windows = ContextWindows(length, overlap).windows(frames)
    # restated: a window's first frame, and the frame after a window's last, inside the clip
    expected = sorted(({w[0] for w in windows} | {w[-1] + 1 for w in windows}) - {0, frames})
    assert window_boundaries(frames, windows) == expected


def test_changes_are_their_formulas():
    clip = smooth_clip(5)
    naive = [float(np.abs(clip[i].astype(float) - clip[i - 1].astype(float)).mean()) for i in range(1, 5)]
    assert np.allclose(pixel_changes(clip).numpy(), naive, rtol=1e-12)
    e = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    cosines = [float(e[i] @ e[i - 1] / (e[i].norm() * e[i - 1].norm())) for i in range(1, 5)]
    assert np.allclose(embedding_changes(e).numpy(), [100 * (1 - c) for c in cosines], rtol=1e-5)


def test_an_injected_discontinuity_is_found_at_its_frame_and_at_a_window_boundary_raises_the_seam_ratio():
    clip = smooth_clip(24).astype(int)
    clip[13:] = np.clip(clip[13:] + 40, 0, 255)  # a jump into frame 13
    clip = clip.astype(np.uint8)
    found = seams(clip, None, [13])
    assert found["largest_jump_frame"] == 13 and found["largest_jump_ratio"] > 5
    assert found["pixel_ratio"] > 5 and found["boundaries"][0]["frame"] == 13
    elsewhere = seams(clip, None, [6])  # a boundary where nothing jumps: the jump is inside a window, not a seam
    assert elsewhere["pixel_ratio"] < 1 and elsewhere["largest_jump_frame"] == 13
    assert math.isclose(seams(smooth_clip(24), None, [6, 13])["pixel_ratio"], 1.0, rel_tol=0.2)


def test_lab_is_scikit_images_and_round_trips():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    assert np.abs(srgb_to_lab(rgb).numpy() - rgb2lab(rgb)).max() < 1e-9  # float64 rounding of the same formulas
    assert float((lab_to_srgb(srgb_to_lab(rgb)) * 255 - torch.from_numpy(rgb).double()).abs().max()) < 1e-9


def test_drift_is_zero_for_an_unchanged_clip_and_linear_for_a_linear_colour_ramp():
    clip = (smooth_clip(12).astype(int) // 2 + 64).astype(np.uint8)  # mid-range colours: a ramp stays in gamut
    assert float(colour_drift(clip, clip).abs().max()) == 0.0
    # every pixel moved by i * (2.4, 1.5, -0.9) in Lab in frame i (2.97 delta E a frame), then back to 8-bit sRGB
    step = torch.tensor([2.4, 1.5, -0.9], dtype=torch.float64)
    lab = srgb_to_lab(clip)
    ramp = torch.stack([lab[i] + i * step for i in range(len(clip))])
    edited = (lab_to_srgb(ramp) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    assert 0 < edited.min() and edited.max() < 255
    drift = colour_drift(clip, edited)
    expected = torch.arange(len(clip), dtype=torch.float64) * step.norm()
    assert float((drift - expected).abs().max()) < 0.3  # 8-bit rounding: at most half a level per channel
    summary = drift_summary(drift)
    assert summary["colour_drift_slope"] == pytest.approx(float(step.norm()), rel=0.01)
    assert summary["colour_drift_first"] < 0.3
    assert summary["colour_drift_last"] == pytest.approx(11 * float(step.norm()), abs=0.3)


@torch.no_grad()
def v2vbench_restated(folder, frames: np.ndarray, prompt: str) -> tuple[float, float]:
    """V2VBench's clip_consistency.py and clip_text_alignment.py restated: a CLIPVisionModel's pooler_output per
    frame, normalised, max(0, cos) of each frame with the one before, averaged; the CLIPModel's projected features,
    normalised, logit_scale.exp() x cos per frame, averaged."""
    embedder = ClipEmbedder(folder)
    pixels = clip_pixels(frames, embedder.processor)
    vision = CLIPVisionModel.from_pretrained(folder).eval()
    features = [vision(pixel_values=p[None]).pooler_output for p in pixels]
    features = [f / torch.norm(f, dim=-1, keepdim=True) for f in features]
    similarity = [max(0, (features[i] @ features[i - 1].T).squeeze().item()) for i in range(1, len(features))]
    model = CLIPModel.from_pretrained(folder).eval()
    ids = embedder.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    text = model.get_text_features(input_ids=ids)
    text = text / text.norm(dim=-1, keepdim=True)
    scores = []
    for p in pixels:
        image = model.get_image_features(pixel_values=p[None])
        image = image / image.norm(dim=-1, keepdim=True)
        scores.append((model.logit_scale.exp() * (text @ image.T)).squeeze().item())
    return sum(similarity) / len(similarity), sum(scores) / len(scores)


def test_v2vbench_conventions_are_v2vbenchs_code(clip_folder):
    frames = smooth_clip(6)
    consistency, alignment = v2vbench_restated(clip_folder, frames, "a gradient")
    embedder = ClipEmbedder(clip_folder)
    projected, pooled = embedder.vision(frames)
    report = score(projected, embedder.text("a gradient"), pooled=pooled)
    # float32 CLIP passes in another batch shape (SIMD may differ): a few float32 ulps of the cosines
    assert report["v2vbench_frame_consistency"] == pytest.approx(consistency, abs=1e-5)
    assert report["v2vbench_text_alignment"] == pytest.approx(alignment, abs=1e-3)
    assert report["conventions"]["scores"] == "v2vbench" and "V2VBench CLIP consistency" in table(report)
    assert metrics.v2vbench_frame_consistency(-pooled[:2]) >= 0  # (clamped per pair)


def test_score_reads_the_edits_windows_and_run_record_or_takes_them_given(tmp_path, clip_folder, capsys):
    clip = smooth_clip(24).astype(int)
    clip[12:] = np.clip(clip[12:] + 40, 0, 255)
    video = tmp_path / "edit"
    write_video(video, clip.astype(np.uint8))
    record = {"windows": [8, 2, "pyramid"], "frames": 24, "tuning_seconds": 12.5, "tuning_peak_gb": 3.25,
              "edit_seconds": 4.0, "edit_peak_gb": 2.5}
    (tmp_path / "edit.run.json").write_text(json.dumps(record))
    assert main(["score", "--clip", str(clip_folder), "--video", str(video), "--source", str(video),
                 "--scores", "v2vbench"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "edit.score.json").read_text())
    assert report["boundaries"] == window_boundaries(24, ContextWindows(8, 2).windows(24))
    assert report["run"] == {k: v for k, v in record.items() if k not in ("windows", "frames")}
    assert "tuning time (s)" in printed and "largest jump into frame 12" in printed
    assert report["colour_drift"] == 0.0 and "v2vbench_frame_consistency" in report
    assert main(["score", "--clip", str(clip_folder), "--video", str(video), "--windows", "12", "0"]) == 0
    report = json.loads((tmp_path / "edit.score.json").read_text())
    assert report["boundaries"] == [12] and report["seam_pixel_ratio"] > 5  # the jump sits on the given boundary
    assert main(["score", "--clip", str(clip_folder), "--video", str(video), "--windows", "4", "4"]) == 2
    assert "--windows 4 4: the length must be at least 1 and the overlap" in capsys.readouterr().err


def test_tune_and_edit_record_their_windows_time_and_memory_beside_their_outputs(tmp_path):
    weights, out = tmp_path / "w.safetensors", tmp_path / "edit.gif"
    common = ["--frames", "6", "--steps", "2", "--weights", str(weights), "--context-length", "4",
              "--context-overlap", "1", "--out", str(out)]
    assert main(["run", *common, "--tune-steps", "1"]) == 0
    from tav_core.loading.tuned import read_metadata
    tuned = read_metadata(weights)["run"]
    assert tuned["tuning_seconds"] > 0 and tuned["tuning_peak_gb"] > 0
    record = json.loads((tmp_path / "edit.run.json").read_text())
    assert record["windows"] == [4, 1, "pyramid"] and record["frames"] == 6
    assert record["edit_seconds"] > 0 and record["tuning_seconds"] == tuned["tuning_seconds"]
    assert main(["edit", *common]) == 0  # an edit with saved weights carries their tuning's numbers
    assert json.loads((tmp_path / "edit.run.json").read_text())["tuning_seconds"] == tuned["tuning_seconds"]
