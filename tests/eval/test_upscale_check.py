"""The upscale measurement (eval/upscale_check.py) must see a grid, a blur and a halo."""

from __future__ import annotations

from PIL import Image, ImageFilter

from eval.upscale_check import METHODS, TARGET, measure
from training.synthetic import draw_example


def _drawn(size: int) -> Image.Image:
    return draw_example("covers", "validation", 1, seed=0, size=size)[0]


def test_the_drawing_against_itself_is_perfect() -> None:
    reference = _drawn(TARGET)
    figures = measure(reference, reference, 64)
    assert figures["mae"] == 0
    assert abs(figures["sharpness"] - 1) < 1e-9
    assert figures["overshoot"] == 0


def test_nearest_is_a_grid_and_a_blur_is_soft() -> None:
    reference, small = _drawn(TARGET), _drawn(64)
    nearest = measure(METHODS["nearest"](small, TARGET), reference, 64)
    bilinear = measure(METHODS["bilinear"](small, TARGET), reference, 64)
    blurred = measure(reference.filter(ImageFilter.GaussianBlur(4)), reference, 64)
    assert nearest["blockiness"] > 5 * bilinear["blockiness"]
    assert blurred["sharpness"] < 0.5


def test_a_strong_unsharp_mask_overshoots() -> None:
    reference, small = _drawn(TARGET), _drawn(64)
    plain = measure(METHODS["bicubic"](small, TARGET), reference, 64)
    strong = small.resize((TARGET, TARGET), Image.Resampling.BICUBIC).filter(
        ImageFilter.UnsharpMask(radius=6, percent=300, threshold=0)
    )
    assert measure(strong, reference, 64)["overshoot"] > 2 * plain["overshoot"]
