"""Reading and writing videos: formats, frame selection, resizing, refusals."""

import numpy as np
import pytest
from PIL import Image

from tav_core import TavError, demo_video, read_video, write_video


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_then_read_back(tmp_path, suffix):
    frames = demo_video(6, 64, 48)
    path = write_video(tmp_path / f"clip{suffix}", frames)
    back = read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - frames).mean() < 12  # lossy codecs: close, not equal


def test_png_folder_output_is_lossless(tmp_path):
    frames = demo_video(3, 40, 24)
    assert np.array_equal(read_video(write_video(tmp_path / "frames", frames)), frames)


def test_frame_selection_and_resize(tmp_path):
    frames = demo_video(10, 64, 64)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:03d}.png")
    picked = read_video(tmp_path, num_frames=3, stride=2, start=1, width=32, height=16)
    assert picked.shape == (3, 16, 32, 3)
    exact = read_video(tmp_path, num_frames=3, stride=2, start=1)
    assert np.array_equal(exact, frames[1:7:2])


def test_webp_animation(tmp_path):
    frames = demo_video(4, 32, 32)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "a.webp", save_all=True, append_images=images[1:], lossless=True)
    assert np.array_equal(read_video(tmp_path / "a.webp"), frames)


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(TavError, match="does not exist"):
        read_video(tmp_path / "nope.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    with pytest.raises(TavError, match="could not read video"):
        read_video(broken)
    write_video(tmp_path / "short.gif", demo_video(3, 32, 32))
    with pytest.raises(TavError, match="fewer than the 8 asked for"):
        read_video(tmp_path / "short.gif", num_frames=8)
    with pytest.raises(TavError, match="at least 1"):
        read_video(tmp_path / "short.gif", num_frames=0)
    with pytest.raises(TavError, match="multiple of 8"):
        read_video(tmp_path / "short.gif", width=30)
    with pytest.raises(TavError, match="name the output .mp4 or .gif, or a folder"):
        write_video(tmp_path / "x.avi", demo_video(2, 32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TavError, match="has no images"):
        read_video(tmp_path / "empty")
