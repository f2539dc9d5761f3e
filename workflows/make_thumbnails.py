"""Writes each workflow's template-browser card (``<name>.jpg``): the example clip the workflows open with, under a
band that names what the workflow does in large type, in a colour of its own, so the cards differ at a glance.

    python workflows/make_thumbnails.py

(The browser shows a card at about 200 px: a screenshot of a whole graph is unreadable there.)
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from build_workflows import CONTROLNET, LONG, MAIN, MEASURE, MOTION, P2P, REUSE, SAVE, SDXL, ZERO  # noqa: E402
from tav_core.example_clip import example_clip  # noqa: E402

SIZE = 640
# name -> (what it does, the steps it runs, band colour)
CARDS = {MAIN: ("Tune + edit", "tune 500 steps > invert > edit", (63, 120, 158)),
         CONTROLNET: ("ControlNet", "tune > invert > edit on Canny hints", (138, 107, 63)),
         P2P: ("Prompt-to-Prompt", "tune > null-text > attention control", (122, 63, 138)),
         LONG: ("Long clip", "64 frames in 16-frame windows", (63, 138, 122)),
         SAVE: ("Save weights", "tune once > models/tuneavideo", (94, 138, 63)),
         REUSE: ("Reuse weights", "saved weights > invert > edit", (158, 90, 63)),
         ZERO: ("Zero-shot", "no tuning > invert > edit", (110, 110, 110)),
         MEASURE: ("Measure", "CLIP consistency, text, PSNR, SSIM", (40, 40, 40)),
         SDXL: ("SDXL", "16 frames at 768 > LoRA tune > edit", (150, 60, 90)),
         MOTION: ("Motion module", "AnimateDiff prior > LoRA tune > edit", (30, 110, 80))}


def card(title: str, steps: str, colour: tuple, frames: np.ndarray) -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), colour)
    strip = [Image.fromarray(f).resize((SIZE // 3, SIZE // 3), Image.Resampling.LANCZOS) for f in frames]
    for i, frame in enumerate(strip):
        image.paste(frame, (i * SIZE // 3 + (SIZE - 3 * (SIZE // 3)) // 2, 40))
    draw = ImageDraw.Draw(image)
    big, small = ImageFont.load_default(size=76), ImageFont.load_default(size=34)
    draw.text((SIZE // 2, 40 + SIZE // 3 + 110), title, font=big, fill="white", anchor="mm")
    draw.text((SIZE // 2, 40 + SIZE // 3 + 210), steps, font=small, fill=(235, 235, 235), anchor="mm")
    return image


def main() -> None:
    clip = example_clip()
    frames = clip[[0, len(clip) // 2, len(clip) - 1]]
    for name, (title, steps, colour) in CARDS.items():
        path = HERE / f"{name}.jpg"
        card(title, steps, colour, frames).save(path, "JPEG", quality=88)
        print("wrote", path)


if __name__ == "__main__":
    main()
