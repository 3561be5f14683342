"""Image post-processing: from a raw candidate to something fit to post and upload.

Pillow and NumPy only (no torch), so the bot, the CLI and eval can all use it cheaply:

- :func:`is_black` spots the safety checker's all-black replacement image;
- :func:`upscale` brings a candidate to a square cover size;
- :func:`contact_sheet` lays candidates out in a numbered grid for the vote (reactions 1️⃣..4️⃣);
- :func:`encode_jpeg_under` makes a baseline JPEG that fits Spotify's upload limit;
- :func:`plan_title` / :func:`render_title` / :func:`overlay_title` set the playlist title in real
  type, because diffusion models can't spell. The plan is pure arithmetic on the image, so the
  contrast promise (WCAG 2.x, :func:`contrast_ratio`) can be checked numerically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "BLACK_LEVEL",
    "MAX_TITLE_CHARS",
    "SPOTIFY_JPEG_LIMIT",
    "SPOTIFY_JPEG_MAX_BYTES",
    "TitlePlacement",
    "cell_origin",
    "contact_sheet",
    "contrast_ratio",
    "encode_jpeg_under",
    "is_black",
    "latent_previews",
    "overlay_title",
    "plan_title",
    "preview_strip",
    "relative_luminance",
    "render_title",
    "title_mask",
    "upscale",
]

# Spotify's `PUT /v1/playlists/{id}/images` takes the JPEG as a base64 body of "at most 256 KB",
# but a 191 KB JPEG (≥ 254,668 bytes of base64) was refused with a 413 while a 188 KB one
# (≥ 250,668 bytes) went through (spotipy issue #633). So we stay under the smallest size seen
# accepted: 250,000 bytes of base64 (docs/facts.md, "Limits we rely on").
SPOTIFY_JPEG_LIMIT = 250_000
# Base64 turns every 3 bytes into 4 characters, so this many JPEG bytes is the most that fits.
SPOTIFY_JPEG_MAX_BYTES = SPOTIFY_JPEG_LIMIT // 4 * 3

# Pillow advises against JPEG qualities above 95: the files grow with no visible gain.
_MAX_JPEG_QUALITY = 95
# When even `min_quality` is too big, shrink by this factor per try, down to this side.
_JPEG_DOWNSCALE_STEP = 0.85
_JPEG_MIN_SIDE = 16

# Tried before Pillow's bundled font: bolder, and it covers far more of Unicode.
_SYSTEM_FONT = "DejaVuSans-Bold.ttf"

WHITE = (255, 255, 255)
NEAR_BLACK = (16, 16, 16)  # softer than pure black, still 18.9:1 against white
BLACK = (0, 0, 0)

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # (left, top, right, bottom); right and bottom exclusive


# -- safety-checker output ------------------------------------------------------------------------


# The brightest 8-bit sRGB value under CIE L* 10 (27 is L* 9.8, 28 is L* 10.3): the darkest step
# of the Munsell value scale above black, a level at which nothing reads as a picture. The
# safety checker's replacement is 0; the -random presets' random tiny decoder made murk of
# mean 3.5-4/255 that a lower level (8, what a JPEG round trip leaves) let pass as a cover; the
# darkest synthetic covers (training/synthetic.py: a moon on near-black) keep 6% of their
# pixels above it, sixty times the slack.
BLACK_LEVEL = 27


def is_black(image: Image.Image, *, threshold: int = BLACK_LEVEL, fraction: float = 0.999) -> bool:
    """True when the image is black or near-black: the safety checker's replacement, or murk.

    An image counts as black when at least ``fraction`` of its pixels have every channel at or
    below ``threshold`` (default :data:`BLACK_LEVEL`, L* 10); the slack forgives a few stray
    pixels, and the level the faint noise a JPEG round trip, a VAE or random weights leave.
    """
    if not 0 <= threshold <= 255:
        raise ValueError(f"threshold must be between 0 and 255, got {threshold!r}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}.")
    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3)
    dark = pixels.max(axis=2) <= threshold  # (H, W)
    return bool(dark.mean() >= fraction)


# -- resizing and the contact sheet ---------------------------------------------------------------


def upscale(image: Image.Image, size: int = 512) -> Image.Image:
    """Return an RGB ``size`` x ``size`` copy: centre-cropped to a square, then LANCZOS-resized.

    Despite the name it shrinks as well; it is "upscale" because models render below cover size.
    LANCZOS was chosen by measurement (``python -m eval.upscale_check``, docs/embedded.md):
    against the synthetic rules' own 512 px drawing it leaves the least grid of the sharp
    filters (bicubic and unsharp masks put 14–30% more gradient on the source pixels' borders)
    at a little more ringing; the grid lines seen on the embedded model's covers are its
    decoder's, already in the native image, and a finer native size helps far more than any
    filter (64 → 128 px halves the error to the 512 px drawing).
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}.")
    rgb = _to_rgb(image)
    side = min(rgb.size)
    left = (rgb.width - side) // 2
    top = (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    if side == size:
        return square
    return square.resize((size, size), Image.Resampling.LANCZOS)


def contact_sheet(
    images: Sequence[Image.Image],
    *,
    tile: int = 512,
    gap: int = 8,
    columns: int = 2,
    labels: bool = True,
    background: RGB = (18, 18, 18),
) -> Image.Image:
    """Lay candidates out in a grid, numbered 1, 2, … to match the vote reactions.

    Four images make a 2x2 grid; fewer use at most ``columns`` columns and as many rows as they
    need (3 images: 2x2 with the last cell left as ``background``). ``gap`` separates the tiles
    and also frames the sheet, so the size is ``columns * tile + (columns + 1) * gap`` wide.
    Each tile is :func:`upscale`-d to ``tile`` px; a round badge in its top-left corner carries
    its number in white on near-black with a white ring, legible on any picture.
    """
    if not images:
        raise ValueError("images must hold at least one image, got an empty sequence.")
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}.")
    if gap < 0:
        raise ValueError(f"gap must not be negative, got {gap!r}.")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns!r}.")

    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    sheet = Image.new(
        "RGB", (cols * tile + (cols + 1) * gap, rows * tile + (rows + 1) * gap), background
    )
    for index, image in enumerate(images):
        left, top = cell_origin(index, tile=tile, gap=gap, columns=cols)
        sheet.paste(upscale(image, tile), (left, top))
        if labels:
            badge = _number_badge(str(index + 1), diameter=max(18, tile // 8))
            margin = max(2, tile // 32)
            sheet.paste(badge, (left + margin, top + margin), badge)
    return sheet


def cell_origin(index: int, *, tile: int, gap: int, columns: int) -> tuple[int, int]:
    """Top-left corner of tile ``index`` (0-based, row by row) in a :func:`contact_sheet`."""
    row, col = divmod(index, columns)
    return gap + col * (tile + gap), gap + row * (tile + gap)


def _number_badge(text: str, *, diameter: int) -> Image.Image:
    """An RGBA disc with ``text`` centred on it. Drawn 4x larger and shrunk, because Pillow's
    ellipses are not anti-aliased."""
    scale = 4
    big = diameter * scale
    badge = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(badge)
    ring = max(scale, big // 14)
    draw.ellipse((0, 0, big - 1, big - 1), fill=(*WHITE, 255))
    draw.ellipse((ring, ring, big - 1 - ring, big - 1 - ring), fill=(*NEAR_BLACK, 255))
    font = _font(_system_font_path(), int(big * 0.58))
    draw.text((big / 2, big / 2), text, font=font, fill=(*WHITE, 255), anchor="mm")
    return badge.resize((diameter, diameter), Image.Resampling.LANCZOS)


# -- JPEG for Spotify -----------------------------------------------------------------------------


def encode_jpeg_under(
    image: Image.Image, max_bytes: int = SPOTIFY_JPEG_MAX_BYTES, *, min_quality: int = 40
) -> tuple[bytes, int]:
    """Encode the best baseline JPEG that takes at most ``max_bytes``; return ``(data, quality)``.

    The default fits Spotify's cover upload once base64-encoded (:data:`SPOTIFY_JPEG_LIMIT`).
    The JPEG is RGB, 4:2:0, Huffman-optimised, with no EXIF, ICC profile or comment. The quality
    is binary-searched between ``min_quality`` and 95; if even ``min_quality`` is too big, the
    image is shrunk step by step and searched again. Raises :class:`ValueError` when nothing fits.
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}.")
    if not 1 <= min_quality <= _MAX_JPEG_QUALITY:
        raise ValueError(
            f"min_quality must be between 1 and {_MAX_JPEG_QUALITY}, got {min_quality!r}."
        )

    current = _to_rgb(image)
    while True:
        found = _best_quality_under(current, max_bytes, min_quality)
        if found is not None:
            return found
        side = round(min(current.size) * _JPEG_DOWNSCALE_STEP)
        if side < _JPEG_MIN_SIDE:
            break
        width = max(1, round(current.width * _JPEG_DOWNSCALE_STEP))
        height = max(1, round(current.height * _JPEG_DOWNSCALE_STEP))
        current = current.resize((width, height), Image.Resampling.LANCZOS)
    smallest = len(_encode_jpeg(current, min_quality))
    raise ValueError(
        f"max_bytes={max_bytes} is too small: even a {current.width}x{current.height} JPEG at "
        f"quality {min_quality} takes {smallest} bytes."
    )


def _best_quality_under(
    image: Image.Image, max_bytes: int, min_quality: int
) -> tuple[bytes, int] | None:
    """Binary search for the highest quality that fits. JPEG size grows with quality for all
    practical purposes; the search only ever returns a size it has measured, so a rare
    non-monotone step costs a little quality, never the limit."""
    low, high = min_quality, _MAX_JPEG_QUALITY
    best: tuple[bytes, int] | None = None
    while low <= high:
        quality = (low + high) // 2
        data = _encode_jpeg(image, quality)
        if len(data) <= max_bytes:
            best = (data, quality)
            low = quality + 1
        else:
            high = quality - 1
    return best


def _encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    # Baseline (not progressive) and 4:2:0 for the widest decoder support; `image` carries an
    # empty `info`, so no comment or profile rides along.
    image.save(
        buffer, "JPEG", quality=quality, optimize=True, progressive=False, subsampling="4:2:0"
    )
    return buffer.getvalue()


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
    rgb = _to_rgb(image)
    width, height = rgb.size
    path = font_path if font_path is not None else _system_font_path()
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
    font = _font(placement.font_path, placement.font_size)
    for line, origin in zip(placement.lines, placement.origins, strict=True):
        draw.text(origin, line, font=font, fill=255, anchor="la")
    return mask


def render_title(
    image: Image.Image, placement: TitlePlacement, *, shadow: bool = True
) -> Image.Image:
    """Draw a planned title on a copy of ``image``: plate, then optional soft shadow, then text.

    The shadow is drawn in the plate's colour, so it only pushes pixels further from the text
    colour: the plan's contrast promise still holds."""
    out = _to_rgb(image)
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
        font = _font(font_path, size)
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


# -- shared helpers --------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image with no metadata; transparency is flattened onto black."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        flat.alpha_composite(rgba)
        rgb = flat.convert("RGB")
    else:
        rgb = image.convert("RGB")
    rgb.info = {}
    return rgb


@lru_cache(maxsize=1)
def _system_font_path() -> str | None:
    """The full path of DejaVu Sans Bold if Pillow can find it among the system fonts."""
    try:
        return str(ImageFont.truetype(_SYSTEM_FONT, 12).path)
    except OSError:
        return None


@lru_cache(maxsize=64)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    """A scalable font: ``path`` if given, else Pillow's bundled Aileron (needs FreeType)."""
    if path is not None:
        try:
            return ImageFont.truetype(path, size)
        except OSError as error:
            raise ValueError(f"font_path {path!r} is not a font file Pillow can read.") from error
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):
        # Without FreeType Pillow falls back to a tiny fixed bitmap font that ignores `size`.
        raise RuntimeError("Pillow was built without FreeType; install a standard Pillow wheel.")
    return font


# SD 1.x latent channels → RGB, a linear fit (a widely shared community approximation): enough
# to show composition and colour while denoising, at 1/8 of the image size, for free.
_LATENT_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)


def latent_previews(latents: Any) -> list[Image.Image]:
    """Rough RGB pictures of SD-style latents (B, 4, h, w), one per image, h×w pixels each,
    without running the VAE."""
    import torch

    factors = torch.tensor(_LATENT_RGB, dtype=torch.float32)  # (4, 3)
    rgb = torch.einsum("bchw,cd->bhwd", latents.detach().float().cpu(), factors)  # (B, h, w, 3)
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return [Image.fromarray(array, "RGB") for array in pixels]


def preview_strip(images: Sequence[Image.Image], cell: int = 128) -> Image.Image:
    """Previews side by side, each scaled to ``cell`` px with hard pixel edges (they are
    rough; smoothing would pretend otherwise)."""
    if not images:
        raise ValueError("`images` is empty: a strip needs at least one preview.")
    strip = Image.new("RGB", (cell * len(images), cell))
    for position, image in enumerate(images):
        scaled = image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
        strip.paste(scaled, (position * cell, 0))
    return strip
