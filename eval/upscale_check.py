"""Which upscale keeps a small cover's edges clean at 512 px? Measured against the rules' own
512 px drawing (issue 29).

    python -m eval.upscale_check --split validation --count 60 [--write docs/upscale.json]

A model renders at its native size (64 or 128 px) and the bot delivers 512 px. For a cover the
synthetic rules draw (:mod:`training.synthetic`), the rules can also draw the *same* cover at
512 px: that drawing is what a perfect upscale would give. So each method takes the rules'
native-size drawing – what a perfect model would render – up to 512 px and is compared with it:

* ``mae``: mean absolute error to the 512 px drawing, 0–255 (blur and ringing both cost);
* ``sharpness``: the mean of the upscaled image's steepest 1% of gradients over the drawing's
  own steepest 1% (1 = edges as crisp as the drawing's; below 1 blurred);
* ``overshoot``: how far pixels leave the range of the drawing's own 9x9 neighbourhood, mean,
  0–255 (ringing halos; 0 = none);
* ``blockiness``: gradient energy on the source pixels' borders over the energy elsewhere
  (1 = no grid; NEAREST puts all of it on the borders: the "grid lines").

Only covers without a mood or an era are used: stars, rain and film grain are drawn per pixel,
so their 512 px drawing is a different picture, not a sharper one. Each figure is a mean over
n covers with a 95% bootstrap interval (estimate ± 1.96 SE).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from eval.metrics import bootstrap
from training.synthetic import draw_example

TARGET = 512
Resize = Callable[[Image.Image, int], Image.Image]


def _plain(method: Image.Resampling) -> Resize:
    return lambda image, size: image.resize((size, size), method)


def _sharpened(method: Image.Resampling, radius: float, percent: int) -> Resize:
    def resize(image: Image.Image, size: int) -> Image.Image:
        up = image.resize((size, size), method)
        return up.filter(ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=0))

    return resize


def _two_stage(image: Image.Image, size: int) -> Image.Image:
    """LANCZOS to twice the size, then BICUBIC the rest of the way: fewer, smaller halos."""
    double = image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS)
    return double.resize((size, size), Image.Resampling.BICUBIC)


METHODS: dict[str, Resize] = {
    "nearest": _plain(Image.Resampling.NEAREST),
    "bilinear": _plain(Image.Resampling.BILINEAR),
    "bicubic": _plain(Image.Resampling.BICUBIC),
    "lanczos": _plain(Image.Resampling.LANCZOS),
    "lanczos, then bicubic": _two_stage,
    "bicubic + unsharp (r 2, 60%)": _sharpened(Image.Resampling.BICUBIC, 2, 60),
    "bicubic + unsharp (r 4, 80%)": _sharpened(Image.Resampling.BICUBIC, 4, 80),
    "lanczos + unsharp (r 2, 40%)": _sharpened(Image.Resampling.LANCZOS, 2, 40),
}


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def gradient(pixels: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(pixels)
    return np.hypot(gx, gy)


def _steepest(magnitude: np.ndarray, share: float = 0.01) -> float:
    return float(np.sort(magnitude.ravel())[-max(1, int(magnitude.size * share)) :].mean())


def measure(up: Image.Image, reference: Image.Image, source: int) -> dict[str, float]:
    """The four figures of one upscaled image (see the module docstring)."""
    a, b = np.asarray(up, np.float64), np.asarray(reference, np.float64)  # (S, S, 3)
    ref_grad, up_grad = gradient(grey(reference)), gradient(grey(up))
    low = np.asarray(reference.filter(ImageFilter.MinFilter(9)), np.float64)
    high = np.asarray(reference.filter(ImageFilter.MaxFilter(9)), np.float64)
    outside = np.maximum(low - a, 0) + np.maximum(a - high, 0)
    step = TARGET // source  # output pixels per source pixel
    dx = np.abs(np.diff(grey(up), axis=1)).mean(axis=0)  # (S - 1,): column j → j + 1
    dy = np.abs(np.diff(grey(up), axis=0)).mean(axis=1)
    border = (np.arange(TARGET - 1) + 1) % step == 0
    # NEAREST leaves no gradient inside a block at all; the floor keeps its ratio finite.
    inside = max(dx[~border].mean() + dy[~border].mean(), 1e-3)
    block = (dx[border].mean() + dy[border].mean()) / inside
    return {
        "mae": float(np.abs(a - b).mean()),
        "sharpness": float(_steepest(up_grad) / (_steepest(ref_grad) + 1e-9)),
        "overshoot": float(outside.mean()),
        "blockiness": float(block),
    }


def grid_ratio(image: Image.Image, period: int) -> float:
    """Gradient energy on every ``period``-th pixel border over the energy elsewhere, in one
    image: a decoder that paints each latent cell a little apart leaves lines every
    ``period`` pixels (its downsampling factor), ~1.0 for the rules' drawings."""
    pixels = grey(image)
    dx = np.abs(np.diff(pixels, axis=1)).mean(axis=0)
    dy = np.abs(np.diff(pixels, axis=0)).mean(axis=1)
    border = (np.arange(len(dx)) + 1) % period == 0
    return float(
        (dx[border].mean() + dy[border].mean()) / max(dx[~border].mean() + dy[~border].mean(), 1e-3)
    )


def covers(split: str, count: int, sizes: tuple[int, ...]) -> list[dict[int, Image.Image]]:
    """``count`` covers without mood or era, each drawn at every size in ``sizes``."""
    out: list[dict[int, Image.Image]] = []
    index = 0
    while len(out) < count:
        image, meta = draw_example("covers", split, index, seed=0, size=sizes[0])
        if meta["mood"] is None and meta["era"] is None:
            drawn = {sizes[0]: image}
            for size in sizes[1:]:
                drawn[size] = draw_example("covers", split, index, seed=0, size=size)[0]
            out.append(drawn)
        index += 1
    return out


def run(split: str, count: int, sources: tuple[int, ...] = (64, 128)) -> dict[str, Any]:
    drawn = covers(split, count, (TARGET, *sources))
    results: dict[str, Any] = {"split": split, "n": count, "target": TARGET, "sources": {}}
    for source in sources:
        table = {}
        for name, method in METHODS.items():
            rows = [measure(method(d[source], TARGET), d[TARGET], source) for d in drawn]
            table[name] = {}
            for key in rows[0]:
                values = np.array([row[key] for row in rows])
                e = bootstrap(lambda v: float(v.mean()), (values,), resamples=400, seed=0)
                table[name][key] = {"value": e.value, "low": e.low, "high": e.high}
        results["sources"][str(source)] = table
    return results


def format_table(results: dict[str, Any]) -> str:
    lines = []
    for source, table in results["sources"].items():
        lines.append(
            f"\n{source} px → {results['target']} px, n = {results['n']} covers ({results['split']})"
        )
        lines.append(
            f"{'method':32} {'MAE':>20} {'sharpness':>20} {'overshoot':>20} {'blockiness':>20}"
        )
        for name, row in table.items():
            cells = [
                f"{row[k]['value']:.3f} ({row[k]['low']:.3f}–{row[k]['high']:.3f})"
                for k in ("mae", "sharpness", "overshoot", "blockiness")
            ]
            lines.append(f"{name:32} " + " ".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.upscale_check", description=__doc__)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--write", default=None, help="a JSON file for the figures")
    args = parser.parse_args(argv)
    results = run(args.split, args.count)
    print(format_table(results))
    if args.write:
        Path(args.write).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
