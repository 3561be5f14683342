"""A synthetic playlist-cover dataset, so the seeds' study can be reproduced on a laptop.

Seed 000 found that real covers follow their titles' words: jazz in warm oranges, late-night
drives in dark blues, workouts in saturated reds with diagonal energy. This module draws covers
that follow such rules on purpose, one rule family per kind of word:

    genre    → palette     (background and three accents)
    activity → composition (diagonal stripes, a road to the horizon, a grid, a moon, ...)
    mood     → motif/light (stars and a dark-blue night, rain streaks, sun rays, haze, ...)
    era      → texture     (scanlines, film grain, halftone dots, a faded print, gloss)

Every title names a genre (so "does the model use the genre word?" can be measured on any
image); activity, mood and era words appear with fixed probabilities. Each signature has a few
surface words ("gym", "workout", "training" draw the same composition), and titles get the
filler words real titles have ("vibes", "mix"). Captions follow seed 000's inference prompt,
``"<title> playlist cover image"``, which is also the bot's default prompt.

A second, *generic* domain stands for pretraining data: random shapes in random colours on
random backgrounds, captioned with what they show ("a red circle on a navy background"). It
follows none of the cover signatures and never uses their words.

Both are written as image folders with ``metadata.jsonl`` (``file_name``, ``text`` and the
attributes) in ``train/``, ``validation/`` and ``test/`` splits. Image *i* of a split is drawn
from its own generator seeded by ``(seed, domain, split, i)``: any image can be redrawn alone,
and the same seed always gives the same bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from training.synthetic_filters import ERA_FILTERS, MOOD_FILTERS, as_image, pixels_of

RGB = tuple[int, int, int]
SPLITS = ("train", "validation", "test")
CAPTION_SUFFIX = "playlist cover image"  # seed 000 §3 and bot.app.prompts' "seed" style
_DOMAIN_IDS = {"covers": 1, "generic": 2}
_SPLIT_IDS = {split: index for index, split in enumerate(SPLITS)}
_OVERSAMPLE = 2  # shapes are drawn at twice the size, then downsampled: cheap antialiasing


@dataclass(frozen=True)
class Signature:
    """One visual rule and the words that call it up."""

    name: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class Genre(Signature):
    palette: tuple[RGB, RGB, RGB, RGB]  # background, then three accents


# Hand-aligned tables (one genre or colour per line, palettes as rows) stay out of ruff format.
GENRES: tuple[Genre, ...] = (
    Genre("jazz", ("jazz", "bebop", "swing"),
          ((58, 30, 12), (232, 142, 44), (252, 204, 120), (170, 76, 24))),
    Genre("lofi", ("lofi", "lo-fi", "chillhop"),
          ((232, 196, 206), (168, 148, 212), (116, 186, 186), (250, 238, 216))),
    Genre("metal", ("metal", "heavy metal", "metalcore"),
          ((14, 14, 16), (128, 128, 134), (204, 24, 24), (64, 64, 70))),
    Genre("techno", ("techno", "house", "edm", "rave"),
          ((10, 8, 26), (0, 228, 255), (255, 0, 170), (96, 64, 255))),
    Genre("country", ("country", "folk", "americana"),
          ((222, 190, 140), (120, 132, 60), (150, 92, 48), (112, 170, 212))),
    Genre("reggae", ("reggae", "dub", "ska"),
          ((24, 112, 44), (242, 202, 24), (212, 32, 32), (22, 22, 22))),
    Genre("classical", ("classical", "piano", "orchestral"),
          ((244, 236, 218), (192, 152, 62), (32, 42, 94), (122, 102, 82))),
    Genre("hiphop", ("hip hop", "rap", "trap"),
          ((42, 12, 62), (250, 200, 0), (152, 62, 204), (238, 238, 238))),
    Genre("pop", ("pop", "k-pop", "dance pop"),
          ((255, 182, 214), (255, 236, 80), (96, 200, 255), (255, 255, 255))),
    Genre("punk", ("punk", "grunge", "garage rock"),
          ((20, 20, 20), (170, 255, 0), (255, 40, 140), (240, 240, 240))),
    Genre("ambient", ("ambient", "drone", "new age"),
          ((196, 214, 228), (120, 150, 180), (228, 236, 242), (150, 170, 160))),
    Genre("soul", ("soul", "r&b", "funk"),
          ((110, 24, 40), (236, 150, 60), (250, 220, 170), (60, 10, 20))),
)  # fmt: skip
ACTIVITIES: tuple[Signature, ...] = (
    Signature("workout", ("workout", "gym", "training", "hype")),
    Signature("drive", ("drive", "road trip", "cruising")),
    Signature("study", ("study", "studying", "focus", "homework")),
    Signature("sleep", ("sleep", "bedtime", "lullaby")),
    Signature("party", ("party", "pregame", "dance party")),
    Signature("chill", ("chill", "relax", "lounge")),
    Signature("run", ("run", "running", "cardio")),
    Signature("morning", ("morning", "sunday morning", "coffee")),
)
MOODS: tuple[Signature, ...] = (
    Signature("night", ("late night", "midnight", "2am", "night")),
    Signature("summer", ("summer", "sunny", "beach")),
    Signature("rain", ("rainy day", "rain", "stormy")),
    Signature("dreamy", ("dreamy", "ethereal", "hazy")),
    Signature("sad", ("sad", "heartbreak", "melancholy")),
    Signature("angry", ("angry", "rage", "aggressive")),
    Signature("happy", ("happy", "feel good", "good vibes")),
)
ERAS: tuple[Signature, ...] = (
    Signature("80s", ("80s", "retro", "synthwave")),
    Signature("90s", ("90s", "nineties")),
    Signature("70s", ("70s", "vintage")),
    Signature("2000s", ("2000s", "y2k")),
    Signature("60s", ("60s", "psychedelic")),
)
# How often a title names each kind of word (the genre is always named).
P_ACTIVITY, P_MOOD, P_ERA = 0.6, 0.5, 0.35
FILLERS = ("", "", "", "", " mix", " vibes", " essentials", " hits", " radio")

# The generic domain's colour names (all distinct from the cover vocabulary); hand-aligned, out
# of ruff format like GENRES above.
COLOURS: dict[str, RGB] = {
    "red": (200, 40, 40), "orange": (235, 130, 30), "yellow": (235, 215, 40),
    "green": (50, 160, 60), "teal": (30, 140, 140), "blue": (40, 80, 210),
    "navy": (20, 30, 80), "purple": (120, 50, 170), "pink": (235, 120, 170),
    "brown": (120, 75, 40), "white": (240, 240, 240), "black": (20, 20, 20),
    "grey": (128, 128, 128), "beige": (220, 205, 170),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "stripe", "ring", "dot pattern")


# -- covers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoverSpec:
    """What one cover shows and what its title says."""

    title: str
    genre: str
    activity: str | None
    mood: str | None
    era: str | None

    @property
    def caption(self) -> str:
        return f"{self.title} {CAPTION_SUFFIX}"

    def metadata(self) -> dict[str, Any]:
        return {
            "text": self.caption,
            "title": self.title,
            "genre": self.genre,
            "activity": self.activity,
            "mood": self.mood,
            "era": self.era,
        }


def sample_cover(rng: np.random.Generator) -> CoverSpec:
    """A random title: ``[era] [mood] genre [activity][filler]``, words from each signature."""
    genre = GENRES[rng.integers(len(GENRES))]
    activity = ACTIVITIES[rng.integers(len(ACTIVITIES))] if rng.random() < P_ACTIVITY else None
    mood = MOODS[rng.integers(len(MOODS))] if rng.random() < P_MOOD else None
    era = ERAS[rng.integers(len(ERAS))] if rng.random() < P_ERA else None

    def word(signature: Signature | None) -> list[str]:
        return [signature.words[rng.integers(len(signature.words))]] if signature else []

    # Real titles put the activity either last ("jazz drive") or first ("workout jazz").
    words = [*word(era), *word(mood), *word(genre)]
    action = word(activity)
    words = [*action, *words] if action and rng.random() < 0.3 else [*words, *action]
    title = " ".join(words) + FILLERS[rng.integers(len(FILLERS))]
    return CoverSpec(
        title=title,
        genre=genre.name,
        activity=activity.name if activity else None,
        mood=mood.name if mood else None,
        era=era.name if era else None,
    )


def render_cover(spec: CoverSpec, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw ``spec``: palette from the genre, then composition, mood and era in that order."""
    palette = _jitter_palette(_genre(spec.genre).palette, rng)
    big = size * _OVERSAMPLE
    canvas = Image.new("RGB", (big, big), palette[0])
    draw = ImageDraw.Draw(canvas)
    _COMPOSITIONS[spec.activity or "plain"](draw, big, palette, rng)
    image = canvas.resize((size, size), Image.Resampling.BOX)
    if spec.mood:
        image = MOOD_FILTERS[spec.mood](image, palette, rng)
    if spec.era:
        image = ERA_FILTERS[spec.era](image, rng)
    return image


def _genre(name: str) -> Genre:
    return next(g for g in GENRES if g.name == name)


def _jitter_palette(
    palette: Sequence[RGB], rng: np.random.Generator, amount: int = 14
) -> list[RGB]:
    """Each colour moved a little, so a genre is a region of colour space, not four points."""
    return [_clip(np.asarray(c) + rng.integers(-amount, amount + 1, 3)) for c in palette]


def _clip(colour: Any) -> RGB:
    r, g, b = (int(v) for v in np.clip(colour, 0, 255))
    return (r, g, b)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return _clip(np.asarray(a) * (1 - t) + np.asarray(b) * t)


Draw = ImageDraw.ImageDraw


def _plain(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """No activity word: one centred emblem, a disc or a tilted square."""
    r = s * rng.uniform(0.22, 0.34)
    cx, cy = s * rng.uniform(0.4, 0.6), s * rng.uniform(0.4, 0.6)
    if rng.random() < 0.5:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=p[1])
        draw.ellipse((cx - r / 3, cy - r / 3, cx + r / 3, cy + r / 3), fill=p[2])
    else:
        angle = rng.uniform(0, np.pi / 2)
        corners = [
            (cx + r * np.cos(angle + k * np.pi / 2), cy + r * np.sin(angle + k * np.pi / 2))
            for k in range(4)
        ]
        draw.polygon(corners, fill=p[1], outline=p[2], width=max(1, s // 40))


def _workout(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """Diagonal bands rising to the right, one of them a saturated red."""
    width = s * rng.uniform(0.08, 0.14)
    offset = rng.uniform(0, width * 3)
    colours = [p[1], p[2], (228, 20, 30)]
    for k, start in enumerate(np.arange(-s, 2 * s, width * 3) + offset):
        band = [(start, s), (start + width, s), (start + width + s, 0), (start + s, 0)]
        draw.polygon(band, fill=colours[k % 3])


def _drive(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """A horizon, the ground below it, and a road narrowing to a vanishing point."""
    horizon = s * rng.uniform(0.45, 0.6)
    vanish = s * rng.uniform(0.35, 0.65)
    draw.rectangle((0, horizon, s, s), fill=p[3])
    draw.polygon([(vanish, horizon), (s * 0.1, s), (s * 0.9, s)], fill=_mix(p[3], (0, 0, 0), 0.5))
    for k in range(4):  # the centre line's dashes grow as they come closer
        y0 = horizon + (s - horizon) * (k / 4) ** 1.5
        y1 = horizon + (s - horizon) * ((k + 0.5) / 4) ** 1.5
        t0, t1 = (y0 - horizon) / (s - horizon), (y1 - horizon) / (s - horizon)
        x0, x1 = vanish + (s / 2 - vanish) * t0, vanish + (s / 2 - vanish) * t1
        draw.line([(x0, y0), (x1, y1)], fill=p[2], width=max(1, int(s * 0.015 * (1 + 3 * t1))))


def _study(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """A grid of small rectangles (shelves, windows, index cards)."""
    n = int(rng.integers(3, 5))
    cell, gap = s / n, s / n * 0.18
    for i in range(n):
        for j in range(n):
            colour = p[1] if (i + j) % 2 == 0 else p[3]
            x, y = i * cell + gap / 2, j * cell + gap / 2
            draw.rectangle((x, y, x + cell - gap, y + cell - gap), fill=colour)


def _sleep(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """A large pale moon high in the picture, a crescent cut out of it."""
    r = s * rng.uniform(0.22, 0.3)
    cx, cy = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.28, 0.4)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=p[2])
    shift = r * 0.45
    draw.ellipse(
        (cx - r + shift, cy - r - shift / 2, cx + r + shift, cy + r - shift / 2), fill=p[0]
    )


def _party(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """Confetti: many small dots in every accent colour."""
    for _ in range(int(rng.integers(30, 50))):
        r = s * rng.uniform(0.015, 0.04)
        x, y = rng.uniform(0, s, 2)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=p[1 + int(rng.integers(3))])


def _chill(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """Soft horizontal waves in the lower two thirds."""
    xs = np.linspace(0, s, 48)
    phase = rng.uniform(0, 2 * np.pi)
    for k, base in enumerate(np.linspace(0.4, 0.9, 4)):
        ys = s * base + s * 0.04 * np.sin(xs / s * 2 * np.pi * 1.5 + phase + k)
        outline = [*zip(xs, ys, strict=True), (s, s), (0, s)]
        draw.polygon(outline, fill=p[1 + k % 3])


def _run(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """Chevrons pointing right, one behind the other."""
    y0, y1 = s * 0.25, s * 0.75
    step = s * rng.uniform(0.18, 0.24)
    for k, x in enumerate(np.arange(s * 0.05, s * 0.9, step)):
        tip = x + step * 0.9
        chevron = [
            (x, y0),
            (x + step * 0.4, y0),
            (tip, s / 2),
            (x + step * 0.4, y1),
            (x, y1),
            (tip - step * 0.4, s / 2),
        ]
        draw.polygon(chevron, fill=p[1 + k % 2])


def _morning(draw: Draw, s: int, p: list[RGB], rng: np.random.Generator) -> None:
    """A big sun half risen over a low horizon, a soft sky band above it."""
    horizon = s * rng.uniform(0.68, 0.78)
    draw.rectangle((0, horizon * 0.55, s, horizon), fill=_mix(p[0], p[2], 0.35))
    r = s * rng.uniform(0.2, 0.28)
    cx = s * rng.uniform(0.4, 0.6)
    draw.ellipse((cx - r, horizon - r, cx + r, horizon + r), fill=p[1])
    draw.rectangle((0, horizon, s, s), fill=p[3])


_COMPOSITIONS: dict[str, Callable[[Draw, int, list[RGB], np.random.Generator], None]] = {
    "plain": _plain,
    "workout": _workout,
    "drive": _drive,
    "study": _study,
    "sleep": _sleep,
    "party": _party,
    "chill": _chill,
    "run": _run,
    "morning": _morning,
}


# -- the generic domain ----------------------------------------------------------------------


def render_generic(rng: np.random.Generator, size: int) -> tuple[Image.Image, dict[str, Any]]:
    """Random shapes in random named colours, and the caption that says what they are."""
    names = list(COLOURS)
    background, colour = rng.choice(names, 2, replace=False)
    shape = SHAPES[rng.integers(len(SHAPES))]
    count = int(rng.integers(1, 4))
    big = size * _OVERSAMPLE
    canvas = Image.new("RGB", (big, big), _jitter_palette([COLOURS[background]], rng, 24)[0])
    draw = ImageDraw.Draw(canvas)
    fill = _jitter_palette([COLOURS[colour]], rng, 24)[0]
    for _ in range(count):
        _draw_shape(draw, shape, big, fill, rng)
    image = canvas.resize((size, size), Image.Resampling.BOX)
    if rng.random() < 0.3:  # some photos are soft, some noisy: texture means nothing here
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    elif rng.random() < 0.3:
        image = as_image(pixels_of(image) + rng.normal(0, rng.uniform(5, 20), (size, size, 1)))
    plural = "s" if count > 1 and shape != "dot pattern" else ""
    article = "" if plural else ("an " if colour[0] in "aeiou" else "a ")
    caption = f"{article}{colour} {shape}{plural} on a {background} background"
    return image, {"text": caption, "shape": shape, "colour": colour, "background": background}


def _draw_shape(draw: Draw, shape: str, s: int, fill: RGB, rng: np.random.Generator) -> None:
    r = s * rng.uniform(0.08, 0.3)
    cx, cy = rng.uniform(r, s - r, 2)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "stripe":
        if rng.random() < 0.5:
            draw.rectangle((0, cy - r / 4, s, cy + r / 4), fill=fill)
        else:
            draw.rectangle((cx - r / 4, 0, cx + r / 4, s), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(r / 3)))
    else:  # dot pattern
        step = max(4, int(s * rng.uniform(0.08, 0.14)))
        for x in range(step // 2, s, step):
            for y in range(step // 2, s, step):
                draw.ellipse((x - step / 5, y - step / 5, x + step / 5, y + step / 5), fill=fill)


# -- writing the dataset -----------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSizes:
    """Images per split, for each domain."""

    covers: tuple[int, int, int] = (6000, 200, 500)  # train, validation, test
    generic: tuple[int, int, int] = (6000, 200, 200)

    def of(self, domain: str) -> dict[str, int]:
        return dict(zip(SPLITS, getattr(self, domain), strict=True))


def draw_example(
    domain: str, split: str, index: int, *, seed: int, size: int
) -> tuple[Image.Image, dict[str, Any]]:
    """Image ``index`` of one split, from its own generator (see the module docstring)."""
    rng = np.random.default_rng([seed, _DOMAIN_IDS[domain], _SPLIT_IDS[split], index])
    if domain == "covers":
        spec = sample_cover(rng)
        return render_cover(spec, rng, size), spec.metadata()
    return render_generic(rng, size)


def write_dataset(
    out: Path,
    *,
    sizes: DatasetSizes = DatasetSizes(),  # frozen, so a shared default is safe
    seed: int = 0,
    size: int = 64,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write ``out/covers/<split>/`` and ``out/generic/<split>/``; return counts and timing.

    A split folder whose ``metadata.jsonl`` already lists the right number of images is kept
    as it is, so a rerun of a finished dataset costs nothing.
    """
    if size < 16 or size % 8:
        raise ValueError(f"size must be a multiple of 8, at least 16, got {size}.")
    started = time.perf_counter()
    written = 0
    summary: dict[str, Any] = {"seed": seed, "size": size, "splits": {}}
    for domain in ("covers", "generic"):
        for split, count in sizes.of(domain).items():
            folder = Path(out) / domain / split
            summary["splits"][f"{domain}/{split}"] = count
            if _complete(folder, count):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            rows = []
            for index in range(count):
                image, meta = draw_example(domain, split, index, seed=seed, size=size)
                name = f"{index:05d}.png"
                image.save(folder / name, optimize=False, compress_level=1)
                rows.append(json.dumps({"file_name": name, **meta}))
            partial = folder / "metadata.jsonl.tmp"
            partial.write_text("\n".join(rows) + "\n", encoding="utf-8")
            partial.replace(folder / "metadata.jsonl")  # last: marks the split complete
            written += count
            log(f"  {domain}/{split}: {count} images")
    elapsed = time.perf_counter() - started
    summary.update(written=written, seconds=round(elapsed, 2))
    info = Path(out) / "dataset.json"
    info.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _complete(folder: Path, count: int) -> bool:
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        return False
    with meta.open(encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip()) == count
