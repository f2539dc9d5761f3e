"""Read and write short videos as uint8 arrays (frames, height, width, 3)."""

import os
import re
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageSequence

from .errors import TavError, check, plural
from .files import atomic_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
ANIMATED_SUFFIXES = {".gif", ".webp"}


def _frames(path: Path):
    """The frames of a file or an image folder as PIL images, one at a time (a long video is never all in memory)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        check(bool(files), f"folder {path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           "give a folder of frames or a video file")
        for file in files:
            with Image.open(file) as image:
                yield image.convert("RGB")
    elif path.suffix.lower() in ANIMATED_SUFFIXES:
        with Image.open(path) as image:
            for frame in ImageSequence.Iterator(image):
                yield frame.convert("RGB")
    else:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_image()


def resize_center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale so the frame covers width x height, then cut the middle."""
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def read_video(path: str | Path, num_frames: int | None = None, stride: int = 1, start: int = 0,
               width: int | None = None, height: int | None = None) -> np.ndarray:
    """Frames ``start, start+stride, ...`` (``num_frames`` of them, or all), resized and centre-cropped."""
    path = Path(path)
    check(path.exists(), f"video {path} does not exist; give an mp4/gif/webp file or a folder of images")
    check(num_frames is None or num_frames >= 1, f"frame count must be at least 1, got {num_frames}")
    check(stride >= 1 and start >= 0, f"stride must be >= 1 and start >= 0, got stride {stride}, start {start}")
    for name, v in (("width", width), ("height", height)):
        check(v is None or (v > 0 and v % 8 == 0),
              f"{name} {v} is not a positive multiple of 8; the VAE works on 8x8 pixel cells: use e.g. {max(8, (v or 0) // 8 * 8)}")
    picked, total = [], 0
    try:
        for total, frame in enumerate(_frames(path), 1):
            index = total - 1
            if index >= start and (index - start) % stride == 0:
                w = width or frame.width // 8 * 8
                h = height or frame.height // 8 * 8
                picked.append(np.asarray(resize_center_crop(frame, w, h)))
                if num_frames is not None and len(picked) == num_frames:
                    break
    except TavError:
        raise
    except Exception as e:
        raise TavError(f"could not read video {path} ({type(e).__name__}: {e}); give an mp4/gif/webp file "
                       "or a folder of images") from e
    check(total > 0, f"video {path} has no frames")
    check(num_frames is None or len(picked) >= num_frames,
          f"video {path} has {plural(total, 'frame')}; from frame {start} with stride {stride} that gives "
          f"{len(picked)}, fewer than the {num_frames} asked for: lower the frame count or the stride")
    check(len(picked) >= 1, f"video {path} has {plural(total, 'frame')}, none at or after start {start}")
    return np.stack(picked)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write ``.mp4`` (H.264), ``.gif``, or lossless PNG frames into a folder (a path with no suffix), atomically."""
    path = Path(path)
    frames = np.asarray(frames)
    check(frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8,
          f"frames must be uint8 (frames, height, width, 3), got {frames.dtype} {frames.shape}")
    suffix = path.suffix.lower()
    check(suffix in (".mp4", ".gif", ""),
          f"cannot write {suffix!r} videos; name the output .mp4 or .gif, or a folder (no suffix) for PNG frames")
    if not suffix:
        _write_frame_folder(path, frames)
        return path
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
        else:
            with av.open(str(tmp), mode="w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height = frames.shape[2] // 2 * 2, frames.shape[1] // 2 * 2
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18"}
                for f in frames:
                    frame = av.VideoFrame.from_ndarray(f[: stream.height, : stream.width], format="rgb24")
                    container.mux(stream.encode(frame))
                container.mux(stream.encode())
    return path


FRAME_FILE = re.compile(r"\d{5}\.png")  # the files of a PNG-folder output: 00000.png, 00001.png, ...


def check_frame_folder(path: str | Path) -> None:
    """A PNG-folder output may replace a folder of frames this tool wrote, never a folder of other files."""
    path = Path(path)
    if path.is_dir():
        strangers = sorted(p.name for p in path.iterdir() if not FRAME_FILE.fullmatch(p.name))
        check(not strangers, f"{path} holds files that are not frames this tool wrote (e.g. {strangers[:1]}); give "
                             "a new or empty folder, or a .mp4/.gif file")


def _write_frame_folder(path: Path, frames: np.ndarray) -> None:
    """Write the frames into a new folder beside ``path``, then put it in ``path``'s place: never a half-written
    folder, never frames of an earlier, longer clip left over. An existing folder is replaced only if it holds
    nothing but such frames."""
    check_frame_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{path.name[:40]}.", dir=path.parent))
    old = new.with_name(new.name + ".old")
    try:
        for i, f in enumerate(frames):
            Image.fromarray(f).save(new / f"{i:05d}.png", format="PNG")
        if path.is_dir():
            os.replace(path, old)
        os.replace(new, path)
    finally:
        for leftover in (new, old):
            shutil.rmtree(leftover, ignore_errors=True)


def demo_video(num_frames: int = 8, width: int = 64, height: int = 64) -> np.ndarray:
    """A built-in clip: a red square crossing a blue-green gradient (used when no video is given)."""
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 0 + 40, 255 * x / width, 255 * y / height], -1)
    frames = np.repeat(background[None], num_frames, 0)
    side = max(4, width // 4)
    for i in range(num_frames):
        left = int((width - side) * i / max(1, num_frames - 1))
        top = (height - side) // 2
        frames[i, top:top + side, left:left + side] = (230, 30, 30)
    return frames.astype(np.uint8)
