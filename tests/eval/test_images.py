"""Image handling for the study (eval/images.py): clean-fid's resize, the split, content hashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from eval.images import clean_resize, content_hash, list_images, read_split


def _reference_image(size: int) -> np.ndarray:
    """Hard edges, thin lines, a gradient and noise: what separates resize filters."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    array = np.stack(
        [
            np.tile(ramp, (size, 1)),
            np.tile(ramp[:, None], (1, size)),
            rng.uniform(0, 255, (size, size)),
        ],
        axis=2,
    ).astype(np.uint8)
    image = Image.fromarray(array)
    draw = ImageDraw.Draw(image)
    for x in range(0, size, 4):
        draw.line([(x, 0), (x, size // 3)], fill=(255, 255, 255))
    draw.ellipse([size // 3, size // 3, size - 10, size - 10], fill=(10, 200, 30))
    return np.asarray(image)


def _keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """The bicubic convolution kernel (Keys, 1981) with a = −0.5, as PIL uses it."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _antialiased_bicubic_1d(length: int, size: int) -> np.ndarray:
    """(size, length) weights: each output pixel averages the inputs under a cubic kernel
    widened by the scale when shrinking (that widening is the antialiasing)."""
    scale = length / size
    stretch = max(scale, 1.0)
    centres = (np.arange(size) + 0.5) * scale  # (size,)
    inputs = np.arange(length) + 0.5  # (length,)
    weights = _keys_cubic((inputs[None, :] - centres[:, None]) / stretch)  # (size, length)
    return weights / weights.sum(axis=1, keepdims=True)


def _reference_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Separable antialiased bicubic in float64, written from the filter's definition."""
    rows = _antialiased_bicubic_1d(image.shape[0], size)  # (size, H)
    cols = _antialiased_bicubic_1d(image.shape[1], size)  # (size, W)
    x = image.astype(np.float64)
    resized = np.stack([rows @ x[:, :, c] @ cols.T for c in range(3)], axis=2)  # (size, size, 3)
    return np.clip(resized, 0.0, 255.0)  # clean-fid clips each resized channel


@pytest.mark.parametrize("source", [512, 128], ids=["down", "up"])
def test_resize_is_antialiased_bicubic_in_float(source: int) -> None:
    image = _reference_image(source)
    ours = clean_resize(image, 299)
    assert ours.shape == (299, 299, 3) and ours.dtype == np.float32
    assert np.abs(ours - _reference_resize(image, 299)).max() < 0.02  # float32 accumulation
    if source > 299:  # a resize without antialiasing is far off when shrinking
        import torch

        plain = (
            torch.nn.functional.interpolate(
                torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None],
                size=(299, 299),
                mode="bicubic",
                align_corners=False,
                antialias=False,
            )[0]
            .permute(1, 2, 0)
            .numpy()
        )
        assert np.abs(plain - ours).mean() > 5.0


def test_resize_matches_pil_8_bit_bicubic_up_to_rounding() -> None:
    # PIL's 8-bit path is the same filter but rounds (and clips) after each of its two passes,
    # so it agrees with the float path to two roundings where no edge overshoots.
    rng = np.random.default_rng(1)
    smooth = Image.fromarray(rng.integers(40, 215, (24, 24, 3), dtype=np.uint8)).resize(
        (400, 400), Image.Resampling.BILINEAR
    )
    image = np.asarray(smooth)
    pil = np.asarray(smooth.resize((299, 299), Image.Resampling.BICUBIC)).astype(np.float32)
    difference = np.abs(clean_resize(image, 299) - pil)
    assert difference.max() <= 1.5
    assert difference.mean() < 0.35


def test_resize_clips_the_bicubic_overshoot_like_clean_fid() -> None:
    checker = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(checker[:, :, None], 3, axis=2)
    resized = clean_resize(image, 299)
    assert resized.min() == 0.0 and resized.max() == 255.0  # would overshoot both ways unclipped
    unclipped = np.asarray(
        Image.fromarray(checker.astype(np.float32), mode="F").resize(
            (299, 299), Image.Resampling.BICUBIC
        )
    )
    assert unclipped.min() < -1.0 and unclipped.max() > 256.0
    assert resized.dtype == np.float32


def test_resize_keeps_floats_unrounded_and_constants_constant() -> None:
    constant = np.full((64, 80, 3), 77, dtype=np.uint8)
    assert np.allclose(clean_resize(constant, 299), 77.0, atol=1e-3)
    ramp = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    resized = clean_resize(ramp, 299)
    assert not np.allclose(resized, np.round(resized))  # no quantisation back to 8 bits


def _write_split(root: Path, lines: list[str], images: int = 3) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / f"{i}.png")
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_read_split(tmp_path: Path) -> None:
    lines = [
        json.dumps({"file_name": f"{i}.png", "text": f"Title {i} playlist cover image"})
        for i in range(3)
    ]
    _write_split(tmp_path, [*lines, ""])
    split = read_split(tmp_path)
    assert [p.name for p in split.files] == ["0.png", "1.png", "2.png"]
    assert split.prompts[1] == "Title 1 playlist cover image"
    assert len(read_split(tmp_path, limit=2)) == 2


@pytest.mark.parametrize(
    ("lines", "error", "match"),
    [
        (['{"file_name": "0.png"}'], ValueError, r"metadata.jsonl:1 .*file_name and text"),
        (["not json"], ValueError, r"metadata.jsonl:1"),
        (['{"file_name": "missing.png", "text": "x"}'], FileNotFoundError, "missing.png"),
        (['{"file_name": "0.png", "text": "x"}'], ValueError, "at least 2 images"),
    ],
    ids=["no-text", "not-json", "missing-file", "too-few"],
)
def test_read_split_rejects_bad_metadata(
    tmp_path: Path, lines: list[str], error: type[Exception], match: str
) -> None:
    _write_split(tmp_path, lines)
    with pytest.raises(error, match=match):
        read_split(tmp_path)


def test_read_split_needs_metadata(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"metadata\.jsonl"):
        read_split(tmp_path)


def test_list_images_and_content_hash(tmp_path: Path) -> None:
    _write_split(tmp_path / "a", [])
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    files = list_images(tmp_path / "a")
    assert [p.name for p in files] == ["0.png", "1.png", "2.png"]
    # The key follows the bytes, not the folder: a copy elsewhere hits the same cache entry.
    copy = tmp_path / "b"
    copy.mkdir()
    for path in files:
        (copy / path.name).write_bytes(path.read_bytes())
    assert content_hash(files) == content_hash(list_images(copy))
    assert content_hash(files) != content_hash(files, salt="other-network")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(copy / "0.png")
    assert content_hash(files) != content_hash(list_images(copy))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        list_images(empty)
