"""The playlist title set in real type over a cover, because diffusion models can't spell.

:func:`plan_title` picks the calmest band of the image, a size, the text colour and, where the
image alone does not give enough contrast, a translucent plate behind the text;
:func:`render_title` draws a plan and :func:`overlay_title` does both. The plan is pure
arithmetic on the image, so the contrast promise (WCAG 2.x, :func:`contrast_ratio`) is checked
numerically. Fonts and colours come from models/postprocess.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from models.postprocess import (
    NEAR_BLACK,
    RGB,
    WHITE,
    load_font,
    system_font_path,
    to_rgb,
)

__all__ = [
    "MAX_TITLE_CHARS",
    "TitlePlacement",
    "contrast_ratio",
    "overlay_title",
    "plan_title",
    "relative_luminance",
    "render_title",
    "title_mask",
]

BLACK = (0, 0, 0)
Box = tuple[int, int, int, int]  # (left, top, right, bottom); right and bottom exclusive


# -- WCAG contrast ---------------------------------------------------------------------------------


def _srgb_to_linear(channel: np.ndarray) -> np.ndarray:
    """sRGB transfer function inverted (IEC 61966-2-1), on values in [0, 1]. WCAG 2.0 printed the
    threshold as 0.03928; no 8-bit value falls between that and 0.04045, so they agree here."""
    return np.where(channel <= 0.04045, channel / 12.92, ((channel + 0.055) / 1.055) ** 2.4)


# Relative luminance of each 8-bit channel value, so whole images convert by table look-up.
_LINEAR = _srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0)
_LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])


def relative_luminance(rgb: Sequence[int]) -> float:
    """WCAG 2.x relative luminance of an 8-bit sRGB colour, 0.0 (black) to 1.0 (white):
    ``L = 0.2126 R + 0.7152 G + 0.0722 B`` on linearised channels."""
    r, g, b = _check_rgb(rgb)
    return float(_LUMA_WEIGHTS @ _LINEAR[[r, g, b]])


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    """WCAG 2.x contrast ratio ``(L_lighter + 0.05) / (L_darker + 0.05)`` of two 8-bit sRGB
    colours: 1.0 (same luminance) to 21.0 (black on white). Normal text needs 4.5 (level AA)."""
    la, lb = relative_luminance(a), relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def _check_rgb(rgb: Sequence[int]) -> RGB:
    values = tuple(rgb)
    if len(values) != 3 or not all(
        isinstance(v, int | np.integer) and 0 <= v <= 255 for v in values
    ):
        raise ValueError(f"rgb must be three integers from 0 to 255, got {rgb!r}.")
    return (int(values[0]), int(values[1]), int(values[2]))


def _luminance_map(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 → (...) relative luminance."""
    return _LINEAR[pixels] @ _LUMA_WEIGHTS


def _worst_contrast(text: RGB, pixels: np.ndarray) -> float:
    """The lowest contrast between ``text`` and any of ``pixels`` ((..., 3) uint8)."""
    lum = _luminance_map(pixels)
    text_lum = relative_luminance(text)
    lighter = np.maximum(lum, text_lum)
    darker = np.minimum(lum, text_lum)
    return float(((lighter + 0.05) / (darker + 0.05)).min())


def _blend(pixels: np.ndarray, colour: RGB, alpha: int) -> np.ndarray:
    """Lay ``colour`` at opacity ``alpha``/255 over ``pixels`` ((..., 3) uint8), rounding to 8 bits.

    Planning and rendering both use this one function, so the contrast the plan measured is
    exactly the contrast in the output."""
    if alpha == 0:
        return pixels.copy()
    mixed = (
        pixels.astype(np.float64) * (255 - alpha) / 255
        + np.asarray(colour, np.float64) * alpha / 255
    )
    return np.rint(mixed).astype(np.uint8)


# -- the title -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TitlePlacement:
    """Where and how :func:`render_title` sets a title: the result of :func:`plan_title`.

    ``box`` is the plate's rectangle, which holds all the text's ink with padding around it; the
    plan promises ``worst_contrast >= min_contrast`` between ``text_color`` and every pixel in
    ``box`` after the plate (``plate_color`` at ``plate_alpha``/255; 0 = no plate) is laid down.
    """

    box: Box
    text_color: RGB
    plate_alpha: int  # 0..255
    lines: tuple[str, ...]
    font_size: int
    plate_color: RGB
    origins: tuple[tuple[int, int], ...]  # each line's left/ascender point (Pillow anchor "la")
    font_path: str | None  # None = Pillow's bundled font
    region: str  # which candidate band won: "top", "upper", "centre", "lower" or "bottom"
    worst_contrast: float


# Spotify caps playlist names at 100 characters; twice that leaves room for other callers'
# titles and still bounds the layout's work for any input.
MAX_TITLE_CHARS = 200

# Candidate bands, top to bottom as a fraction of the free height, with a handicap on their
# detail score. A cover reads best with its title near an edge, so an inner band must be
# clearly calmer to win; equal scores go to the band listed first.
_BANDS: tuple[tuple[str, float, float], ...] = (
    ("bottom", 1.0, 1.0),
    ("top", 0.0, 1.0),
    ("lower", 0.75, 1.05),
    ("upper", 0.25, 1.05),
    ("centre", 0.5, 1.1),
)


def plan_title(
    image: Image.Image,
    title: str,
    *,
    min_contrast: float = 4.5,
    font_path: str | None = None,
    max_lines: int = 3,
    width_fraction: float = 0.85,
) -> TitlePlacement:
    """Decide where the title goes, how big, in which colour and behind how dense a plate.

    1. Wrap the title into at most ``max_lines`` lines no wider than ``width_fraction`` of the
       image, shrinking the font from 1/9 of the shorter side until it fits.
    2. Score each candidate band (top, upper, centre, lower, bottom) by its detail – spread of
       luma plus mean gradient magnitude – and take the calmest.
    3. For white and for near-black text, find the lightest plate (black behind white text,
       white behind dark text) that lifts the worst-case WCAG contrast against every pixel in
       the box to ``min_contrast``; keep the colour that needs less plate.
    """
    # 1. Check the inputs and lay the text out. Only the first MAX_TITLE_CHARS characters are
    #    looked at: at most three lines fit anyway, and the wrap and the cut measure the text
    #    again and again, so a 10 MB title would otherwise take hours
    #    (tests/models/test_postprocess.py times one).
    if isinstance(title, str) and len(title) > MAX_TITLE_CHARS:
        title = title[:MAX_TITLE_CHARS].rstrip() + "…"
    text = " ".join(title.split()) if isinstance(title, str) else ""
    if not text:
        raise ValueError(f"title must contain visible text, got {title!r}.")
    if not 1.0 <= min_contrast <= 21.0:
        raise ValueError(
            f"min_contrast must be between 1 and 21 (the WCAG range), got {min_contrast!r}."
        )
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines!r}.")
    if not 0.1 <= width_fraction <= 1.0:
        raise ValueError(f"width_fraction must be between 0.1 and 1, got {width_fraction!r}.")
    rgb = to_rgb(image)
    width, height = rgb.size
    path = font_path if font_path is not None else system_font_path()
    layout = _layout(text, path, width, height, max_lines=max_lines, width_fraction=width_fraction)

    # 2. Pick the calmest band. Boxes are clamped to the image: only a title set at the
    #    smallest size on a tiny image can be larger than it.
    box_w, box_h = layout.box_size
    margin = round(0.05 * height) if box_h + 2 * round(0.05 * height) <= height else 0
    left = (width - box_w) // 2
    luma = np.asarray(rgb.convert("L"), dtype=np.float64) / 255.0  # (H, W)
    best: tuple[float, str, tuple[int, int], Box] | None = None
    for name, where, handicap in _BANDS:
        top = margin + round(where * (height - 2 * margin - box_h))
        box = _clamp((left, top, left + box_w, top + box_h), width, height)
        score = _detail(luma, box) * handicap
        if best is None or score < best[0]:
            best = (score, name, (left, top), box)
    assert best is not None
    _, region, corner, box = best

    # 3. Choose the colour and the plate.
    pixels = np.asarray(rgb)[box[1] : box[3], box[0] : box[2]].reshape(-1, 3)  # (N, 3)
    options = []
    for text_color, plate_color in ((WHITE, BLACK), (NEAR_BLACK, WHITE)):
        alpha = _plate_alpha(pixels, text_color, plate_color, min_contrast)
        worst = _worst_contrast(text_color, _blend(pixels, plate_color, alpha))
        options.append((alpha, -worst, text_color, plate_color))
    alpha, neg_worst, text_color, plate_color = min(options)

    dx, dy = corner[0] - layout.box_offset[0], corner[1] - layout.box_offset[1]
    return TitlePlacement(
        box=box,
        text_color=text_color,
        plate_alpha=alpha,
        lines=layout.lines,
        font_size=layout.font_size,
        plate_color=plate_color,
        origins=tuple((x + dx, y + dy) for x, y in layout.origins),
        font_path=path,
        region=region,
        worst_contrast=-neg_worst,
    )


def title_mask(placement: TitlePlacement, size: tuple[int, int]) -> Image.Image:
    """The text's coverage as an ``L`` image of ``size``: 255 where glyphs are solid, 0 where the
    background shows. :func:`render_title` paints the text through exactly this mask."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    font = load_font(placement.font_path, placement.font_size)
    for line, origin in zip(placement.lines, placement.origins, strict=True):
        draw.text(origin, line, font=font, fill=255, anchor="la")
    return mask


def render_title(
    image: Image.Image, placement: TitlePlacement, *, shadow: bool = True
) -> Image.Image:
    """Draw a planned title on a copy of ``image``: plate, then optional soft shadow, then text.

    The shadow is drawn in the plate's colour, so it only pushes pixels further from the text
    colour: the plan's contrast promise still holds."""
    out = to_rgb(image)
    left, top, right, bottom = placement.box

    # 1. The plate, blended with the same arithmetic the plan measured.
    if placement.plate_alpha > 0:
        pixels = np.asarray(out).copy()  # (H, W, 3)
        pixels[top:bottom, left:right] = _blend(
            pixels[top:bottom, left:right], placement.plate_color, placement.plate_alpha
        )
        out = Image.fromarray(pixels, "RGB")

    mask = title_mask(placement, out.size)

    # 2. A soft shadow, kept inside the box so nothing outside it changes.
    if shadow:
        offset = max(1, placement.font_size // 24)
        blurred = mask.filter(ImageFilter.GaussianBlur(max(1.0, placement.font_size / 16)))
        shade = Image.new("L", out.size, 0)
        shade.paste(blurred.point(lambda v: v * 6 // 10), (offset, offset))
        clip = Image.new("L", out.size, 0)
        clip.paste(255, placement.box)
        shade = Image.fromarray(np.minimum(np.asarray(shade), np.asarray(clip)), "L")
        out = Image.composite(Image.new("RGB", out.size, placement.plate_color), out, shade)

    # 3. The text itself.
    out.paste(placement.text_color, (0, 0, *out.size), mask)
    return out


def overlay_title(
    image: Image.Image,
    title: str,
    *,
    min_contrast: float = 4.5,
    font_path: str | None = None,
    shadow: bool = True,
) -> Image.Image:
    """Return a copy of ``image`` with ``title`` set legibly on its calmest band.

    See :func:`plan_title` for the placement and the contrast guarantee; the input is untouched.
    """
    placement = plan_title(image, title, min_contrast=min_contrast, font_path=font_path)
    return render_title(image, placement, shadow=shadow)


@dataclass(frozen=True)
class _Layout:
    lines: tuple[str, ...]
    font_size: int
    origins: tuple[tuple[int, int], ...]  # relative to an arbitrary frame …
    box_offset: tuple[int, int]  # … in which the padded box's top-left sits here
    box_size: tuple[int, int]


def _layout(
    text: str,
    font_path: str | None,
    width: int,
    height: int,
    *,
    max_lines: int,
    width_fraction: float,
) -> _Layout:
    """Find the largest font size at which ``text`` wraps into ``max_lines`` lines within the
    target width and a block no taller than 40% of the image. At the smallest size, over-long
    words are cut and surplus lines dropped with an ellipsis rather than overflow the image."""
    target = max(1, int(width * width_fraction))
    largest = max(8, round(min(width, height) / 9))
    smallest = max(8, round(min(width, height) / 40))
    size = largest
    while True:
        font = load_font(font_path, size)
        lines = _wrap(text, font, target)
        fits = len(lines) <= max_lines and all(font.getlength(line) <= target for line in lines)
        if fits:
            layout = _measure(lines, font, size)
            if layout.box_size[1] <= 0.4 * height or size == smallest:
                return layout
        elif size == smallest:
            return _measure(_force_fit(lines, font, target, max_lines), font, size)
        size = max(smallest, min(size - 1, round(size * 0.92)))


def _wrap(text: str, font: ImageFont.FreeTypeFont, target: float) -> list[str]:
    """Greedy word wrap by rendered width; a word wider than ``target`` gets a line of its own."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= target:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _force_fit(
    lines: list[str], font: ImageFont.FreeTypeFont, target: float, max_lines: int
) -> list[str]:
    """Cut over-long lines by characters, then keep ``max_lines`` lines, ending in an ellipsis."""
    cut: list[str] = []
    for line in lines:
        while font.getlength(line) > target and len(line) > 1:
            end = len(line) - 1
            while end > 1 and font.getlength(line[:end]) > target:
                end -= 1
            cut.append(line[:end])
            line = line[end:]
        cut.append(line)
    if len(cut) <= max_lines:
        return cut
    kept = cut[:max_lines]
    last = kept[-1]
    while last and font.getlength(last + "…") > target:
        last = last[:-1]
    kept[-1] = last.rstrip() + "…"
    return kept


def _measure(lines: Sequence[str], font: ImageFont.FreeTypeFont, size: int) -> _Layout:
    """Centre the lines under each other and box their ink with padding."""
    ascent, descent = font.getmetrics()
    advance = round((ascent + descent) * 1.1)
    widest = max(font.getlength(line) for line in lines)
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    origins: list[tuple[int, int]] = []
    ink = [math.inf, math.inf, -math.inf, -math.inf]
    for i, line in enumerate(lines):
        origin = (round((widest - font.getlength(line)) / 2), i * advance)
        origins.append(origin)
        left, top, right, bottom = draw.textbbox(origin, line, font=font, anchor="la")
        ink = [min(ink[0], left), min(ink[1], top), max(ink[2], right), max(ink[3], bottom)]
    # Pad by a fraction of the size so the plate (if any) frames the text and the shadow fits.
    pad = max(4, round(size * 0.35))
    left, top = int(ink[0]) - pad, int(ink[1]) - pad
    right, bottom = int(ink[2]) + pad, int(ink[3]) + pad
    return _Layout(
        lines=tuple(lines),
        font_size=size,
        origins=tuple(origins),
        box_offset=(left, top),
        box_size=(max(1, right - left), max(1, bottom - top)),
    )


def _clamp(box: Box, width: int, height: int) -> Box:
    left, top, right, bottom = box
    left, top = min(max(0, left), width - 1), min(max(0, top), height - 1)
    return left, top, max(left + 1, min(right, width)), max(top + 1, min(bottom, height))


def _detail(luma: np.ndarray, box: Box) -> float:
    """How busy ``box`` is: the spread of luma (a hard split or a gradient under the text) plus
    the mean gradient magnitude (texture that breaks up letter shapes). Both in luma units."""
    left, top, right, bottom = box
    patch = luma[top:bottom, left:right]  # (h, w)
    spread = float(patch.std())
    gx = np.abs(np.diff(patch, axis=1)).mean() if patch.shape[1] > 1 else 0.0
    gy = np.abs(np.diff(patch, axis=0)).mean() if patch.shape[0] > 1 else 0.0
    return spread + float(gx + gy)


def _plate_alpha(pixels: np.ndarray, text: RGB, plate: RGB, min_contrast: float) -> int:
    """The smallest plate opacity (0..255) at which every pixel contrasts with ``text`` by at
    least ``min_contrast``. Blending towards the plate moves each pixel away from the text colour,
    so the check is monotone and a binary search finds the edge; a final upward scan covers the
    corner cases (pixels darker than near-black text) where it is not."""

    def ok(alpha: int) -> bool:
        return _worst_contrast(text, _blend(pixels, plate, alpha)) >= min_contrast

    low, high = 0, 255
    while low < high:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid + 1
    while low < 255 and not ok(low):
        low += 1
    return low
