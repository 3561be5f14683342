"""Image files in and out of the study: listing a folder, loading, clean-fid's resize, the test
split's ``metadata.jsonl``, and content hashes for caches.

The resize is clean-fid's default ("clean" mode, Parmar et al. 2022, *On Aliased Resizing and
Surprising Subtleties in GAN Evaluation*): each channel of the 8-bit image becomes a float32 PIL
image, is resized with PIL's antialiased bicubic filter and clipped to [0, 255] (clean-fid's
``resize_single_channel`` ends in ``np.clip(img, 0, 255)``: bicubic overshoots at sharp edges),
and the result is *not* rounded back to 8 bits. Resizing with a filter that does not antialias (``torch.nn.functional.interpolate``
without ``antialias``) changes FID by several points.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
METADATA_FILE = "metadata.jsonl"


@dataclass(frozen=True)
class TestSplit:
    """A test split: real images and the prompt written for each (``metadata.jsonl``)."""

    root: Path
    files: tuple[Path, ...]
    prompts: tuple[str, ...]
    labels: tuple[str, ...] = ()  # each image's ``label`` field, when read_split was asked for one

    def __len__(self) -> int:
        return len(self.files)


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"The image folder {str(folder)!r} does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"The folder {str(folder)!r} holds no images ({_suffix_list()}).")
    return files


def read_split(folder: Path, *, limit: int | None = None, label: str | None = None) -> TestSplit:
    """Read a split folder: images beside a ``metadata.jsonl`` whose lines carry ``file_name``
    (relative to the folder) and ``text`` (the prompt) – the layout of the training dataset and
    of Hugging Face's ``imagefolder``. ``limit`` keeps the first N lines; ``label`` names a
    field every line must also carry (e.g. ``genre``), read into :attr:`TestSplit.labels`."""
    root = Path(folder)
    metadata = root / METADATA_FILE
    if not metadata.is_file():
        raise FileNotFoundError(
            f"The test split {str(root)!r} has no {METADATA_FILE} (lines of "
            '{"file_name": ..., "text": ...}).'
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}.")
    files: list[Path] = []
    prompts: list[str] = []
    labels: list[str] = []
    lines = metadata.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row["text"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{metadata}:{number} is not a JSON object with file_name and text ({error})."
            ) from error
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{metadata}:{number} names {name!r}, which does not exist.")
        if label is not None:
            if not isinstance(row.get(label), str):
                raise ValueError(f"{metadata}:{number} has no {label!r} field (a string).")
            labels.append(row[label])
        files.append(path)
        prompts.append(str(text))
        if limit is not None and len(files) >= limit:
            break
    if len(files) < 2:
        raise ValueError(f"The test split {str(root)!r} needs at least 2 images, has {len(files)}.")
    return TestSplit(root=root, files=tuple(files), prompts=tuple(prompts), labels=tuple(labels))


def load_rgb(path: Path) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB (alpha dropped, palettes expanded)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def clean_resize(image: np.ndarray, size: int) -> np.ndarray:
    """clean-fid's resize of an (H, W, 3) uint8 image to (size, size, 3) float32 in [0, 255]:
    per channel, PIL bicubic with antialiasing in 32-bit float, then clipped to [0, 255] as
    clean-fid clips each resized channel (bicubic overshoots near sharp edges; unclipped, 1% of
    the 64 px covers' pixels fall outside, issue 17), no rounding."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}.")
    channels = [
        np.asarray(
            Image.fromarray(image[:, :, c].astype(np.float32), mode="F").resize(
                (size, size), resample=Image.Resampling.BICUBIC
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=2), 0.0, 255.0)  # (size, size, 3)


def load_for_features(path: Path, size: int) -> np.ndarray:
    """Load and resize one file the way FID expects: (size, size, 3) float32."""
    return clean_resize(load_rgb(path), size)


def content_hash(paths: Iterable[Path], *, salt: str = "") -> str:
    """SHA-256 over the bytes of ``paths`` in order (and ``salt``): a cache key that changes when
    any image, their order, or the salt (the feature network) changes – and never for a rename
    of the folder."""
    digest = hashlib.sha256(salt.encode())
    for path in paths:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()


def _suffix_list() -> str:
    return ", ".join(sorted(IMAGE_SUFFIXES))
