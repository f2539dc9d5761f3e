"""Small line charts as uint8 RGB images (PIL only): the per-frame scores of an edit, a tuning run's loss curve."""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
MARGIN = dict(left=5, right=1.4, top=2.4, bottom=2.4)  # in font sizes
LEGEND = 1.2  # font sizes: the line under the titles that names a panel's series (where one has several)
FONT_SIZE = 28  # px: large, as a node shows a chart shrunk to its width (tests measure it on screen, at least 9 px)


def _axis(low: float, high: float, count: int = 5) -> tuple[list[float], int]:
    """Round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high], and the decimals
    their labels need."""
    raw = (high - low) / (count - 1) or abs(high) * 0.1 or 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)
    first, last = math.floor(low / step), math.ceil(high / step)
    if first == last:  # a constant series: one step either side
        first, last = first - 1, last + 1
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / magnitude == 2.5 else 0))
    return [i * step for i in range(first, last + 1)], decimals


MARK = (255, 127, 14)  # the vertical lines of marked x values (window boundaries)


def _panel(draw, font, cell_left: float, box, title: str, series: dict[str, list[float]], x_label: str, marks=(),
           legend_line: bool = False) -> None:
    """One panel: its title (and the names of its series, on the line below) from ``cell_left``, its axes in
    ``box`` (left, top, right, bottom)."""
    left, top, right, bottom = box
    em = font.size
    title_y = top - (MARGIN["top"] + (LEGEND if legend_line else 0) - 0.55) * em
    draw.text((cell_left + 0.3 * em, title_y), title, fill=(20, 20, 20), font=font)
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    if not values:
        draw.text((left + 10, top + 10), "nothing to show", fill=(120, 120, 120), font=font)
        return
    ticks, decimals = _axis(min(values), max(values))
    low, high = ticks[0], ticks[-1]
    count = max(len(vs) for vs in series.values())
    draw.rectangle(box, outline=(90, 90, 90))
    for tick in ticks:
        y = bottom - (tick - low) / (high - low) * (bottom - top)
        draw.line((left, y, right, y), fill=(225, 225, 225))
        draw.text((left - 0.6 * em, y), f"{tick:.{decimals}f}", fill=(60, 60, 60), font=font, anchor="rm")
    steps = max(1, math.ceil(count / 6))
    for i in range(0, count, steps):
        x = left + (i / max(1, count - 1)) * (right - left)
        draw.text((x, bottom + 0.3 * em), str(i), fill=(60, 60, 60), font=font, anchor="mt")
    draw.text(((left + right) / 2, bottom + 1.3 * em), x_label, fill=(60, 60, 60), font=font, anchor="mt")
    for mark in marks:
        x = left + (mark / max(1, count - 1)) * (right - left)
        for y in range(int(top), int(bottom), 12):  # dashed
            draw.line((x, y, x, min(y + 6, bottom)), fill=MARK, width=max(2, em // 10))
    legend_x = cell_left + 0.3 * em
    for k, (name, vs) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        points = [(left + (i / max(1, count - 1)) * (right - left), bottom - (v - low) / (high - low) * (bottom - top))
                  for i, v in enumerate(vs) if math.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=color, width=max(2, em // 7))
        if len(vs) <= 64:
            r = max(3, em // 5)
            for x, y in points:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        if len(series) > 1:  # one series: the panel's title says what it is
            draw.text((legend_x, title_y + LEGEND * em), name, fill=color, font=font)
            legend_x += draw.textlength(name, font=font) + 1.7 * em


def line_chart(panels: list[tuple[str, dict[str, list[float]]]], x_label: str, width: int = 800,
               panel_height: int = 240, columns: int = 1, font_size: int = FONT_SIZE, marks=()) -> np.ndarray:
    """One panel per (title, {series name: values}), ``columns`` to a row; values that are not finite are left out.
    The text is ``font_size`` pixels tall: large, as a node shows the chart shrunk to its width. ``marks``: x values
    every panel marks with a dashed vertical line."""
    legend_line = any(len(series) > 1 for _, series in panels)
    m = {side: round((v + (LEGEND if side == "top" and legend_line else 0)) * font_size) for side, v in MARGIN.items()}
    rows = math.ceil(len(panels) / columns)
    cell_w, cell_h = width // columns, panel_height + m["top"] + m["bottom"]
    image = Image.new("RGB", (width, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for i, (title, series) in enumerate(panels):
        left, top = (i % columns) * cell_w, (i // columns) * cell_h + m["top"]
        box = (left + m["left"], top, left + cell_w - m["right"], top + panel_height)
        _panel(draw, font, left, box, title, series, x_label, marks, legend_line)
    return np.array(image)  # (writable: a host wraps it in a tensor without copying)


def loss_chart(losses: list[float]) -> np.ndarray:
    """Tuning loss per step and its moving average (one random timestep per step makes the raw loss noisy)."""
    window = max(1, len(losses) // 20)
    series = {"loss": list(losses)}
    if window > 1:  # (under 40 steps there is nothing to average)
        average = np.convolve(losses, np.ones(window) / window, mode="valid").tolist()
        series[f"mean of {window} steps"] = [math.nan] * (len(losses) - len(average)) + average
    return line_chart([("tuning loss (MSE)", series)], "step", width=640)
