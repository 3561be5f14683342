"""The moods and eras of the synthetic covers (training/synthetic.py): filters over a drawn cover.

A mood recolours or overlays the whole picture with the cover's palette (night: darker and blue
with stars; rain: streaks; …); an era adds its period's texture (80s scanlines, 90s grain, …).
Each is seeded by the caller's generator, so a cover is the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]


def pixels_of(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)  # (H, W, 3), 0..255


def as_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _night(image: Image.Image, p: list[RGB], rng: np.random.Generator) -> Image.Image:
    """Dark blue night: everything dimmed towards navy, a few white stars in the top half."""
    x = pixels_of(image) * 0.45 + np.array([8, 14, 60], np.float32) * 0.55
    h, w = x.shape[:2]
    for _ in range(int(rng.integers(5, 10))):
        i, j = int(rng.integers(0, h // 2)), int(rng.integers(0, w))
        x[i, j] = 255
    return as_image(x)


def _summer(image: Image.Image, p: list[RGB], rng: np.random.Generator) -> Image.Image:
    """Warm, bright light and sun rays from the top-right corner."""
    x = pixels_of(image) * 0.75 + np.array([255, 220, 120], np.float32) * 0.25
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    angle = np.arctan2(yy + 1.0, (w - xx) + 1.0)
    rays = (np.sin(angle * 14) > 0.6) & (np.hypot(yy, w - xx) > h * 0.15)
    x[rays] = x[rays] * 0.6 + np.array([255, 240, 180]) * 0.4
    return as_image(x)


def _rain(image: Image.Image, p: list[RGB], rng: np.random.Generator) -> Image.Image:
    """Grey-blue and desaturated, with slanted rain streaks."""
    x = pixels_of(image)
    grey = x.mean(axis=2, keepdims=True)
    x = (x * 0.35 + grey * 0.65) * 0.8 + np.array([40, 50, 70], np.float32) * 0.2
    h, w = x.shape[:2]
    for _ in range(int(rng.integers(12, 20))):
        i, j = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 2))
        for k in range(5):
            x[i + k, min(w - 1, j + k // 2)] = (210, 220, 235)
    return as_image(x)


def _dreamy(image: Image.Image, p: list[RGB], rng: np.random.Generator) -> Image.Image:
    """Hazy: blurred and lifted towards a pale lavender."""
    blurred = pixels_of(image.filter(ImageFilter.GaussianBlur(image.width / 28)))
    return as_image(blurred * 0.7 + np.array([235, 225, 250], np.float32) * 0.3)


def _sad(image: Image.Image, p: list[RGB], rng: np.random.Generator) -> Image.Image:
    """Muted and dim, darker at the edges."""
    x = pixels_of(image)
    x = x * 0.4 + x.mean(axis=2, keepdims=True) * 0.6
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    edge = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)[..., None]
    return as_image(x * np.clip(0.85 - edge * 1.1, 0.25, 1))


def _angry(image: Image.Image, p: list[RGB], rng: np.random.Generator) -> Image.Image:
    """Jagged black zigzags across the picture, contrast pushed up."""
    big = image.resize((image.width * 2, image.height * 2), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(big)
    s = big.width
    for y in rng.uniform(0.2, 0.8, 2) * s:
        points = [
            (x, y + (s * 0.06 if k % 2 else -s * 0.06)) for k, x in enumerate(np.linspace(0, s, 9))
        ]
        draw.line(points, fill=(10, 10, 10), width=max(2, s // 32))
    x = pixels_of(big.resize(image.size, Image.Resampling.BOX))
    return as_image((x - 128) * 1.3 + 128)


def _happy(image: Image.Image, p: list[RGB], rng: np.random.Generator) -> Image.Image:
    """Saturated and bright, with a few white rings."""
    x = pixels_of(image)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * 1.5 + 20
    out = as_image(x)
    draw = ImageDraw.Draw(out)
    s = out.width
    for _ in range(int(rng.integers(3, 6))):
        r = s * rng.uniform(0.05, 0.1)
        cx, cy = rng.uniform(0, s, 2)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(255, 255, 255), width=1)
    return out


MOOD_FILTERS: dict[str, Callable[[Image.Image, list[RGB], np.random.Generator], Image.Image]] = {
    "night": _night,
    "summer": _summer,
    "rain": _rain,
    "dreamy": _dreamy,
    "sad": _sad,
    "angry": _angry,
    "happy": _happy,
}


def _scanlines(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """80s: every other row darker, a magenta-cyan cast."""
    x = pixels_of(image) * 0.85 + np.array([255, 0, 200], np.float32) * 0.08
    x[::2] *= 0.7
    return as_image(x)


def _grain(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """90s: strong film grain."""
    x = pixels_of(image)
    return as_image(x + rng.normal(0, 22, x.shape[:2])[..., None])


def _faded(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """70s: a faded, sepia print with lifted blacks."""
    x = pixels_of(image)
    sepia = x.mean(axis=2, keepdims=True) * np.array([1.07, 0.9, 0.66], np.float32)
    return as_image((x * 0.4 + sepia * 0.6) * 0.75 + 50)


def _gloss(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """2000s: a glossy highlight over the top half, fading downwards."""
    x = pixels_of(image)
    h = x.shape[0]
    shine = np.clip(1 - np.arange(h) / (h * 0.5), 0, 1)[:, None, None] * 0.55
    return as_image(x * (1 - shine) + 255 * shine)


def _halftone(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """60s: a coarse halftone screen – a dark dot in every 4x4 cell."""
    x = pixels_of(image)
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    dots = ((yy % 4) - 1.5) ** 2 + ((xx % 4) - 1.5) ** 2 < 1.6
    x[dots] *= 0.45
    return as_image(x)


ERA_FILTERS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "80s": _scanlines,
    "90s": _grain,
    "70s": _faded,
    "2000s": _gloss,
    "60s": _halftone,
}
