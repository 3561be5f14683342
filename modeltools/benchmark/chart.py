"""The report's bar chart, drawn with Pillow only."""

from __future__ import annotations

import math
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from modeltools.benchmark.formatting import byte_size, number
from modeltools.benchmark.report import BenchmarkReport

_BACKGROUND = (255, 255, 255)
_INK = (33, 37, 41)
_MUTED = (108, 117, 125)
_GRID = (222, 226, 230)
_BAR = (29, 185, 84)  # Spotify green
_BAR_EDGE = (20, 130, 60)


def render_chart(report: BenchmarkReport, *, width: int = 800, height: int = 450) -> Image.Image:
    """A bar chart of images/s per workload, with each bar's p50/p95 latency over it and the
    model, device and setup in the title. Pillow only."""
    if width < 200 or height < 150:
        raise ValueError(f"The chart needs at least 200x150 px, got {width}x{height}.")
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font = _font(max(12, height // 22))
    text_font = _font(max(10, height // 34))
    line = _line_height(draw, text_font)

    # 1. Title and the setup beneath it.
    title = f"Generation benchmark: {report.model} on {report.device}"
    draw.text((16, 12), _fit(draw, title, title_font, width - 32), font=title_font, fill=_INK)
    setup = (
        f"{report.width}x{report.height} px · {report.steps} steps · "
        f"guidance {report.guidance:g} · peak memory {byte_size(report.peak_memory_bytes)} "
        f"({report.memory_kind}) · {report.started_at}"
    )
    top = 12 + _line_height(draw, title_font) + 6
    draw.text((16, top), _fit(draw, setup, text_font, width - 32), font=text_font, fill=_MUTED)

    # 2. The plot area; the y scale leaves room above the tallest bar for its three labels.
    left, right = 16 + int(draw.textlength("0000.0", font=text_font)) + 8, width - 16
    plot_top, plot_bottom = top + 2 * line + 8, height - 2 * line - 16
    plot_height = plot_bottom - plot_top
    labels_height = 3 * line + 6
    highest = max((r.images_per_s for r in report.results), default=0.0)
    scale_top = _nice_ceiling(highest * plot_height / max(plot_height - labels_height, 1))
    draw.text((16, plot_top - line - 4), "images / s", font=text_font, fill=_MUTED)

    def y_of(value: float) -> float:
        return plot_bottom - value / scale_top * plot_height

    step = _nice_ceiling(scale_top / 5)
    for tick in range(int(scale_top / step + 1e-9) + 1):
        value = tick * step
        y = y_of(value)
        draw.line([(left, y), (right, y)], fill=_GRID, width=1)
        draw.text((left - 6, y), f"{value:g}", font=text_font, fill=_MUTED, anchor="rm")

    # 3. One bar per workload: images/s on top, then p50 and p95; the name below.
    slot = (right - left) / max(len(report.results), 1)
    for index, result in enumerate(report.results):
        center = left + slot * (index + 0.5)
        half = slot * 0.3
        bar_top = y_of(result.images_per_s)
        draw.rectangle(
            [(center - half, bar_top), (center + half, plot_bottom)], fill=_BAR, outline=_BAR_EDGE
        )
        labels = [
            (f"p95 {number(result.latency_p95_s)} s", _MUTED),
            (f"p50 {number(result.latency_p50_s)} s", _MUTED),
            (f"{number(result.images_per_s)} img/s", _INK),
        ]
        for row, (text, colour) in enumerate(labels):
            y = bar_top - 4 - (len(labels) - row) * line
            text = _fit(draw, text, text_font, slot - 4)
            draw.text((center, y), text, font=text_font, fill=colour, anchor="ma")
        name = _fit(draw, result.workload.name, text_font, slot - 4)
        draw.text((center, plot_bottom + 6), name, font=text_font, fill=_INK, anchor="ma")
        count = _fit(draw, f"{result.images} images", text_font, slot - 4)
        draw.text((center, plot_bottom + 6 + line), count, font=text_font, fill=_MUTED, anchor="ma")
    draw.line([(left, plot_bottom), (right, plot_bottom)], fill=_INK, width=1)
    return image


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``value`` (1 for nothing to show)."""
    if not value > 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= value * (1 - 1e-9):
            return factor * power
    return 10 * power


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (its small bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError):
        return ImageFont.load_default()


def _line_height(draw: ImageDraw.ImageDraw, font: Any) -> int:
    _, top, _, bottom = draw.textbbox((0, 0), "Hg p95 0.1", font=font)
    return bottom - top + 4


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: float) -> str:
    """``text``, cut short with "…" until it is at most ``max_width`` px wide."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text + "…" if text else ""
