"""Measuring an edit: each metric against a naive restatement of its formula, a tiny random CLIP, the report,
the chart and the command line."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

from support import EPS, max_abs, nudge, within
from tav_core import TavError, demo_video, read_video, write_video
from tav_core.charts import FONT_SIZE, LEGEND, MARGIN, loss_chart
from tav_core.cli import main
from tav_core.loading.configs import clip_tokenizer
from tav_core.scoring import metrics
from tav_core.scoring.clip import ClipEmbedder, clip_frames, clip_pixels, clip_processor
from tav_core.scoring.report import LABELS, RUN_LABELS, SUMMARY, chart, score, summary, table, to_json

EMBEDS = torch.randn(5, 16, generator=torch.Generator().manual_seed(0)) + 2.0  # similar-ish frames
TEXT = torch.randn(1, 16, generator=torch.Generator().manual_seed(1)) + 1.0


def cos(a, b) -> float:
    a, b = a.double().tolist(), b.double().tolist()
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# The metrics compute in float64, and so do the restatements here. FLOAT64: cosines of 16 dims and means of <= 10
# agree to ~sqrt(16) float64 eps relative: limit 100x that. ROUNDED: a float64 result returned as float32 is rounded
# once (<= eps/2 relative): limit 20x that. FLOAT32_MEAN: a float32 mean of 5 such results adds up to 5 eps/2 more
# (3 eps in all): limit 10x that.
FLOAT64 = 100 * 4 * torch.finfo(torch.float64).eps
ROUNDED, FLOAT32_MEAN = 10 * EPS, 30 * EPS


def test_consistency_and_alignment_equal_their_formulas():
    n = len(EMBEDS)
    pairs = [cos(EMBEDS[i], EMBEDS[j]) for i in range(n) for j in range(i + 1, n)]
    assert metrics.frame_consistency(EMBEDS) == pytest.approx(100 * sum(pairs) / len(pairs), rel=FLOAT64)
    steps = [cos(EMBEDS[i], EMBEDS[i + 1]) for i in range(n - 1)]
    assert metrics.consecutive_consistency(EMBEDS) == pytest.approx(100 * sum(steps) / len(steps), rel=FLOAT64)
    neighbours = [100 * np.mean([cos(EMBEDS[i], EMBEDS[j]) for j in (i - 1, i + 1) if 0 <= j < n]) for i in range(n)]
    np.testing.assert_allclose(metrics.neighbour_consistency(EMBEDS), neighbours, rtol=ROUNDED)  # float32 result
    scores = [max(100 * cos(e, TEXT[0]), 0) for e in EMBEDS]
    np.testing.assert_allclose(metrics.clip_scores(EMBEDS, TEXT), scores, rtol=ROUNDED)  # float32 result
    assert metrics.text_alignment(EMBEDS, TEXT) == pytest.approx(np.mean(scores), rel=FLOAT32_MEAN)  # their mean
    assert metrics.clip_scores(EMBEDS, -EMBEDS[0]).min() == 0  # negative cosines are clamped to exactly 0


def test_text_alignment_clamps_per_frame_or_the_mean_as_torchmetrics():
    """Mixed signs: per frame (the paper's CLIP score of each frame, averaged) the negative frames count 0; torchmetrics'
    CLIPScore over the frames as one batch clamps the mean (max(100 mean cos, 0)) instead."""
    mixed = torch.cat([EMBEDS[:3], -EMBEDS[3:]])
    cosines = [100 * cos(e, TEXT[0]) for e in mixed]
    assert min(cosines) < 0 < max(cosines)
    assert metrics.text_alignment(mixed, TEXT, "frame") == pytest.approx(np.mean([max(c, 0) for c in cosines]),
                                                                         rel=FLOAT32_MEAN)
    assert metrics.text_alignment(mixed, TEXT, "mean") == pytest.approx(max(np.mean(cosines), 0), rel=FLOAT64)
    assert metrics.text_alignment(-EMBEDS, TEXT, "mean") == 0.0  # all negative: both conventions give 0
    with pytest.raises(TavError, match="CLIP score clamp 'median' is not one of"):
        metrics.text_alignment(EMBEDS, TEXT, "median")


def test_metrics_refuse_what_they_cannot_measure():
    with pytest.raises(TavError, match="at least 2 frames"):
        metrics.frame_consistency(EMBEDS[:1])
    with pytest.raises(TavError, match="different CLIP models"):
        metrics.clip_scores(EMBEDS, torch.randn(1, 8))
    frames = demo_video(2, 16, 16)
    with pytest.raises(TavError, match="one shape"):
        metrics.psnr(frames, frames[:1])
    with pytest.raises(TavError, match="mask must be"):
        metrics.psnr(frames, frames, np.ones((3, 3), bool))
    with pytest.raises(TavError, match="mask region is empty"):
        metrics.psnr(frames, frames, np.zeros((16, 16), bool))


def frames_pair(seed=0, shape=(2, 12, 14, 3)):
    g = np.random.default_rng(seed)
    source = g.integers(0, 256, shape).astype(np.uint8)
    edit = np.clip(source.astype(int) + g.integers(-40, 40, shape), 0, 255).astype(np.uint8)
    mask = np.zeros(shape[1:3], bool)
    mask[3:9, 2:10] = True
    return source, edit, mask


def naive_psnr(a, b, m):
    out = []
    for f in range(len(a)):
        diff = (a[f].astype(float) - b[f].astype(float)) ** 2
        mse = diff[m].mean()
        out.append(math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse))
    return out


def naive_ssim(a, b, m):
    """Wang et al. 2004 pixel by pixel: 11x11 Gaussian window (sigma 1.5), reflect-padded borders."""
    g = np.exp(-(np.arange(11) - 5) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for f in range(len(a)):
        per_channel = []
        for c in range(3):
            x = np.pad(a[f, :, :, c].astype(float), 5, mode="reflect")
            y = np.pad(b[f, :, :, c].astype(float), 5, mode="reflect")
            s = np.zeros(a.shape[1:3])
            for i in range(a.shape[1]):
                for j in range(a.shape[2]):
                    px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
                    mx, my = (w * px).sum(), (w * py).sum()
                    vx, vy = (w * px * px).sum() - mx ** 2, (w * py * py).sum() - my ** 2
                    cxy = (w * px * py).sum() - mx * my
                    s[i, j] = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
            per_channel.append(s)
        out.append(np.mean(per_channel, axis=0)[m].mean())
    return out


def test_psnr_and_ssim_equal_their_formulas_inside_and_outside_a_mask():
    source, edit, mask = frames_pair()
    everywhere = np.ones(mask.shape, bool)
    # float64 throughout, against float64 loops, the result rounded once to float32: limit ROUNDED (20x eps/2)
    for region in (everywhere, mask, ~mask):
        np.testing.assert_allclose(metrics.psnr(source, edit, region), naive_psnr(source, edit, region), rtol=ROUNDED)
        np.testing.assert_allclose(metrics.ssim(source, edit, region), naive_ssim(source, edit, region), rtol=ROUNDED)
    np.testing.assert_allclose(metrics.psnr(source, edit), naive_psnr(source, edit, everywhere), rtol=ROUNDED)
    base = np.clip(source.astype(int), 0, 245).astype(np.uint8)
    np.testing.assert_allclose(metrics.psnr(base, base + 10), 20 * math.log10(255 / 10), rtol=ROUNDED)  # offset 10
    assert torch.isinf(metrics.psnr(source, source)).all()
    torch.testing.assert_close(metrics.ssim(source, source), torch.ones(2), rtol=ROUNDED, atol=0)
    assert (metrics.ssim(source, edit) < 1).all()


def test_psnr_and_ssim_equal_scikit_image():
    """scikit-image's functions themselves: PSNR, and SSIM with Wang et al.'s settings (Gaussian window sigma 1.5,
    no sample-covariance correction), which averages away from the 5-pixel border its window overhangs: the
    "skimage" convention; "whole_frame" (torchmetrics') averages every pixel and differs on small frames."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    source, edit, _ = frames_pair(shape=(2, 24, 30, 3))
    theirs = lambda f: structural_similarity(source[f], edit[f], gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, data_range=255, channel_axis=-1)
    # float64 both, reduced in another order, the result rounded once to float32: limit ROUNDED (20x eps/2)
    np.testing.assert_allclose(metrics.ssim(source, edit, convention="skimage"), [theirs(0), theirs(1)], rtol=ROUNDED)
    np.testing.assert_allclose(metrics.psnr(source, edit),
                               [peak_signal_noise_ratio(source[f], edit[f], data_range=255) for f in range(2)],
                               rtol=ROUNDED)
    whole = metrics.ssim(source, edit)
    print(f"SSIM on 30x24 frames: whole frame {whole.tolist()}, skimage's {[theirs(0), theirs(1)]}")
    assert (whole - torch.tensor([theirs(0), theirs(1)])).abs().max() > 1e-3  # the border counts here
    with pytest.raises(TavError, match="SSIM convention 'valid' is not one of"):
        metrics.ssim(source, edit, convention="valid")
    with pytest.raises(TavError, match="skimage convention has nothing to average"):
        metrics.ssim(source, edit, np.pad(np.ones((4, 4), bool), ((0, 20), (0, 26))), convention="skimage")


@torch.no_grad()
def embeddings(model: CLIPModel, pixels, ids, nudged=False):
    """Image and text embeddings; ``nudged``: with the pixels and the token embeddings moved by one ulp."""
    hook = model.text_model.embeddings.register_forward_hook(lambda module, args, out: nudge(out)) if nudged else None
    images, text = model.get_image_features(pixel_values=nudge(pixels) if nudged else pixels), \
        model.get_text_features(input_ids=ids)
    if hook is not None:
        hook.remove()
    return images, text


@pytest.mark.parametrize("height, width", [(37, 53), (53, 37), (41, 41), (224, 300)])
def test_clip_pixels_are_clipprocessors(clip_folder, tmp_path, height, width):
    """What papers feed CLIP: transformers' CLIPProcessor on PIL frames. Odd sizes, where rounding the resized side
    (instead of truncating) or resizing in float would differ; a folder's own processor settings win over the
    vision tower's size. The same code's numbers: limit 1e-6 (pixels are k/255 normalised, up to ~2.2)."""
    frames = np.random.default_rng(height).integers(0, 256, (2, height, width, 3)).astype(np.uint8)
    reference = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=clip_tokenizer())
    expected = reference(images=[Image.fromarray(f) for f in frames], return_tensors="pt").pixel_values
    assert max_abs(clip_pixels(frames, ClipEmbedder(clip_folder).processor), expected) <= 1e-6
    unnormalised = (expected * torch.tensor(reference.image_processor.image_std).view(1, 3, 1, 1)
                    + torch.tensor(reference.image_processor.image_mean).view(1, 3, 1, 1))
    assert max_abs(clip_frames(frames, 32).permute(0, 3, 1, 2), unnormalised) <= 1e-6  # ComfyUI normalises these
    own = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                             image_std=[0.25] * 3, resample=Image.Resampling.BILINEAR)
    folder = tmp_path / "clip"
    folder.mkdir()
    for item in clip_folder.iterdir():
        (folder / item.name).symlink_to(item)
    own.save_pretrained(folder)
    expected = CLIPImageProcessor.from_pretrained(folder)(images=[Image.fromarray(f) for f in frames],
                                                          return_tensors="pt").pixel_values  # CLIPProcessor's half
    assert max_abs(clip_pixels(frames, ClipEmbedder(folder).processor), expected) <= 1e-6


def test_clip_embeddings(clip_folder):
    embedder = ClipEmbedder(clip_folder)
    frames = demo_video(3, 32, 32)
    model = CLIPModel.from_pretrained(clip_folder)
    ours, theirs = embedder.model.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)  # the same file read
    ids = embedder.tokenizer("a cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    pixels = clip_pixels(frames, clip_processor(32))
    expected, moved = embeddings(model, pixels, ids), embeddings(model, pixels, ids, nudged=True)
    for what, got, want, nudged in zip(("images", "text"), (embedder.images(frames), embedder.text("a cat")),
                                       expected, moved):
        # two model instances: limit 100x how far the embeddings move when their inputs move by one ulp
        assert within(max_abs(got, want), max_abs(nudged, want), 100, what)
    with pytest.raises(TavError, match="no config.json"):
        ClipEmbedder(clip_folder / "missing")


def test_report_table_json_and_chart():
    source, edit, mask = frames_pair(shape=(5, 16, 16, 3))
    report = score(EMBEDS, TEXT, source, edit, mask)
    assert report["frame_consistency"] == metrics.frame_consistency(EMBEDS)  # the same computation: bit for bit
    # the report's float64 mean of the float32 scores against their float32 mean
    assert report["text_alignment"] == pytest.approx(metrics.text_alignment(EMBEDS, TEXT), rel=FLOAT32_MEAN)
    # the report's very computations, repeated: bit for bit
    assert report["psnr_inside"] == float(metrics.psnr(source, edit, mask).double().mean())
    assert report["ssim_outside"] == float(metrics.ssim(source, edit, ~mask).double().mean())
    assert len(report["per_frame"]["clip_score"]) == 5
    assert "text alignment (CLIP score; paper 27.58)" in table(report) and "largest jump into frame" in table(report)
    aligned, short = table(report).splitlines(), summary(report)
    values = [line for line in aligned if line[-1].isdigit() and "  " in line]
    assert len({len(line) for line in values}) == 1, aligned  # values right-aligned, for a fixed-width font
    for line in values:  # the node's few lines carry every number of the table
        assert f"{float(line.rsplit('  ', 1)[1]):.3f} " in short, (line, short)
    # frames; consistency; alignment; to the source, inside, outside the mask; drift; the largest change and where
    assert len(short.splitlines()) == 8 and short.startswith("5 frames") and "into frame 3" in short, short
    assert sorted(key for _, parts in SUMMARY for key, _ in parts) == sorted([*LABELS, *RUN_LABELS])  # all of them
    same = json.loads(to_json(score(EMBEDS, None, source, source)))
    assert same["psnr"] is None and same["per_frame"]["psnr"] == [None] * 5  # identical frames: infinite PSNR
    image = chart(report)
    top = round((MARGIN["top"] + LEGEND) * FONT_SIZE)  # the titles and, as PSNR and SSIM have two series, a legend
    row = top + 140 + round(MARGIN["bottom"] * FONT_SIZE)  # a panel and its margins
    # 6 panels, 3 a row: consistency, CLIP score, change from the previous frame, colour drift, PSNR, SSIM
    assert image.dtype == np.uint8 and image.shape == (2 * row, 1200, 3) and image.std() > 10
    for y in (0, row):  # titles and legends end inside their panel: the last 8 px before each panel's end are blank
        assert all((image[y:y + top, end - 8:end] == 255).all() for end in (400, 800, 1200))
    assert "frame_consistency" not in score(EMBEDS[:1])  # one frame: nothing to be consistent with


def test_loss_chart_is_a_writable_image_with_a_mean_only_where_there_is_one(monkeypatch):
    image = loss_chart(list(np.linspace(1.0, 0.2, 50)))
    # one default panel, with a legend line (two series)
    height = 240 + round((MARGIN["top"] + LEGEND) * FONT_SIZE) + round(MARGIN["bottom"] * FONT_SIZE)
    assert image.shape == (height, 640, 3) and image.std() > 10
    assert image.flags.writeable  # a host wraps it in a tensor as it is (torch warns about read-only arrays)
    from tav_core import charts
    drawn = []
    monkeypatch.setattr(charts, "line_chart", lambda panels, *a, **k: drawn.append(panels[0][1]) or image)
    charts.loss_chart([1.0, 0.9, 0.8])
    charts.loss_chart(list(np.linspace(1.0, 0.2, 50)))
    assert list(drawn[0]) == ["loss"] and list(drawn[1]) == ["loss", "mean of 2 steps"]


def test_score_command_writes_the_report_and_chart(tmp_path, clip_folder, capsys):
    source = demo_video(6, 64, 64)
    write_video(tmp_path / "source.gif", source)
    edit = source.copy()
    edit[:, 20:40, 20:40] = 255
    write_video(tmp_path / "edit", edit)  # PNG frames: lossless
    Image.fromarray((np.pad(np.ones((20, 20)), 20) * 255).astype(np.uint8)).convert("RGB").save(tmp_path / "mask.png")
    # a prompt whose cosines with these frames are positive under the random CLIP: its scores are not clamped to 0
    video = str(tmp_path / "edit")
    assert main(["score", "--clip", str(clip_folder), "--video", video, "--prompt", "a yellow square",
                 "--source", str(tmp_path / "source.gif"), "--mask", str(tmp_path / "mask.png")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "edit.score.json").read_text())
    assert "PSNR outside the mask" in printed and Image.open(tmp_path / "edit.score.png").size[0] == 1200
    embedder = ClipEmbedder(clip_folder)
    pixels = clip_pixels(read_video(tmp_path / "edit"), embedder.processor)
    ids = embedder.tokenizer("a yellow square", padding="max_length", max_length=77, return_tensors="pt").input_ids
    expected = score(*embeddings(embedder.model, pixels, ids))
    moved = score(*embeddings(embedder.model, pixels, ids, nudged=True))
    for name in ("frame_consistency", "text_alignment"):
        # the command's own CLIP instance: limit 100x how far the score moves when its inputs move by one ulp
        assert within(abs(report[name] - expected[name]), abs(moved[name] - expected[name]), 100, name)
    assert report["psnr_inside"] < report["psnr_outside"]  # the edit changed the square only
    assert report["conventions"] == {"scores": "paper", "clip_score_clamp": "frame", "ssim": "whole_frame"}
    assert main(["score", "--clip", str(clip_folder), "--video", video, "--prompt", "a yellow square",
                 "--source", str(tmp_path / "source.gif"), "--clip-clamp", "mean", "--ssim", "skimage"]) == 0
    other = json.loads((tmp_path / "edit.score.json").read_text())
    assert other["conventions"] == {"scores": "paper", "clip_score_clamp": "mean", "ssim": "skimage"}
    assert "SSIM without the 5-pixel border (skimage)" in capsys.readouterr().out
    assert other["ssim"] == pytest.approx(float(metrics.ssim(read_video(tmp_path / "source.gif"), read_video(video),
                                                             convention="skimage").double().mean()), rel=1e-12)


@pytest.mark.parametrize("args, message", [
    (["--clip", "{tmp}", "--video", "{tmp}/v.gif"], "not a CLIP model folder"),
    (["--clip", "{clip}", "--video", "{tmp}/missing.gif"], "--video {tmp}/missing.gif does not exist"),
    (["--clip", "{clip}", "--video", "{tmp}/v.gif", "--mask", "{tmp}/v.gif"],
     "--mask compares the edit with the source video, and this command gives no --source"),
    (["--clip", "{clip}", "--video", "{tmp}/v.gif", "--out", "{tmp}/r.txt"], "must end in .json"),
])
def test_score_command_refuses_bad_input(tmp_path, clip_folder, capsys, args, message):
    write_video(tmp_path / "v.gif", demo_video(2, 32, 32))
    fill = {"{tmp}": str(tmp_path), "{clip}": str(clip_folder)}
    args = [a.replace("{tmp}", fill["{tmp}"]).replace("{clip}", fill["{clip}"]) for a in args]
    assert main(["score", *args]) == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def test_run_with_clip_scores_the_edit_and_tune_writes_the_loss_curve(tmp_path, clip_folder):
    out = tmp_path / "edit.mp4"
    assert main(["run", "--frames", "3", "--tune-steps", "2", "--steps", "2", "--weights", str(tmp_path / "w.safetensors"),
                 "--out", str(out), "--clip", str(clip_folder)]) == 0
    report = json.loads((tmp_path / "edit.score.json").read_text())
    assert report["frames"] == 3 and {"frame_consistency", "text_alignment", "psnr", "ssim"} <= set(report)
    assert (tmp_path / "edit.score.png").is_file() and Image.open(tmp_path / "w.loss.png").size[0] == 640
