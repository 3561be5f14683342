"""Image-to-image inputs for the runner (models/runner.py): how many steps to ask of a pipeline
that runs only ``strength`` of them, the batch's check, and each spec's start image at the size
the model makes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from PIL import Image

from models.jobs import GenerationParams, ImageSpec


def img2img_steps(params: GenerationParams) -> int:
    """Steps to ask of an image-to-image pipeline: it runs ``int(steps * strength)`` of them,
    so at least enough for one (sd-turbo's single step at strength 0.4 asks for 3)."""
    assert params.strength is not None
    return max(params.steps, math.ceil(1 / params.strength))


def check_img2img(params: GenerationParams, specs: Sequence[ImageSpec]) -> None:
    """Refuse an image-to-image batch without a strength in (0, 1] or a start image per spec."""
    if not 0 < params.strength <= 1:  # type: ignore[operator]
        raise ValueError(f"strength must be in (0, 1], got {params.strength}")
    if any(spec.init_image is None for spec in specs):
        raise ValueError("an image-to-image batch needs an init_image on every spec")


def init_image(spec: ImageSpec, width: int, height: int) -> Image.Image:
    """The spec's start image, decoded and resized to the size the model makes."""
    assert spec.init_image is not None
    with Image.open(io.BytesIO(spec.init_image)) as opened:
        image = opened.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image
