"""Image post-processing: from a raw candidate to something fit to post and upload.

Pillow and NumPy only (no torch), so the bot, the CLI and eval can all use it cheaply:

- :func:`is_black` spots the safety checker's all-black replacement image;
- :func:`upscale` brings a candidate to a square cover size;
- :func:`contact_sheet` lays candidates out in a numbered grid for the vote (reactions 1️⃣..4️⃣);
- :func:`encode_jpeg_under` makes a baseline JPEG that fits Spotify's upload limit;
- :func:`latent_previews` / :func:`preview_strip` show a candidate while it is denoised.

The playlist title in real type over a cover is models/title.py; the fonts and colours both use
are here (:func:`load_font`, :func:`to_rgb`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "BLACK_LEVEL",
    "SPOTIFY_JPEG_LIMIT",
    "SPOTIFY_JPEG_MAX_BYTES",
    "cell_origin",
    "contact_sheet",
    "encode_jpeg_under",
    "is_black",
    "latent_previews",
    "load_font",
    "preview_strip",
    "system_font_path",
    "to_rgb",
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

RGB = tuple[int, int, int]


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
    rgb = to_rgb(image)
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
    font = load_font(system_font_path(), int(big * 0.58))
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

    current = to_rgb(image)
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


# -- shared helpers --------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
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
def system_font_path() -> str | None:
    """The full path of DejaVu Sans Bold if Pillow can find it among the system fonts."""
    try:
        return str(ImageFont.truetype(_SYSTEM_FONT, 12).path)
    except OSError:
        return None


@lru_cache(maxsize=64)
def load_font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
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
