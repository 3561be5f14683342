"""Training data: image/caption pairs from a folder, a Hugging Face ``datasets`` folder, or an
export of the bot's votes, turned into deterministic, augmented tensors.

Formats (``--data DIR``):

* **image folder** – ``DIR/metadata.jsonl``, one JSON object a line, the image's path relative to
  ``DIR`` in the image column (default ``file_name``, as Hugging Face's ``imagefolder`` and the
  seeds' datasets have it) and its caption in the caption column (default ``text``). A folder
  with ``train/metadata.jsonl`` instead (what ``python -m training collect`` writes) is read from
  its ``train/`` split.
* **Hugging Face datasets folder** – what ``Dataset.save_to_disk`` wrote (``state.json`` or
  ``dataset_dict.json``); a ``DatasetDict``'s ``train`` split (``--split``). Image column
  default ``image`` (an ``Image`` feature, a path, or ``{"bytes": ...}``). Needs
  ``pip install datasets``, imported only when such a folder is given.

Randomness (random crop, horizontal flip, shuffling) is drawn from generators seeded by
``(seed, epoch, index)``, never from global state: a run resumed from a checkpoint sees exactly
the batches the uninterrupted run saw, and every process of a multi-GPU run the same order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from models.errors import FileRefused
from models.safe_files import check_image, open_image

log = logging.getLogger(__name__)

METADATA = "metadata.jsonl"
DATASETS_HINT = "pip install datasets"
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message says what is wrong and where."""


@dataclass(frozen=True)
class Example:
    """One training pair before any transform: the image (a path or bytes) and its caption."""

    image: Any  # a Path, bytes, or a PIL image (from a datasets folder)
    caption: str


def load_examples(
    data: str | Path,
    *,
    image_column: str | None = None,
    caption_column: str = "text",
    split: str = "train",
) -> list[Example]:
    """Read the pairs of ``data`` (see the module docstring for the formats)."""
    root = Path(data).expanduser()
    if not root.is_dir():
        raise DatasetError(f"The dataset folder {str(root)!r} does not exist.")
    if not (root / METADATA).is_file() and (root / split / METADATA).is_file():
        root = root / split
    if (root / METADATA).is_file():
        return _from_metadata(root, image_column or "file_name", caption_column)
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        return _from_datasets(root, image_column or "image", caption_column, split)
    raise DatasetError(
        f"The folder {str(root)!r} is not a dataset: it has neither {METADATA} (an image "
        "folder) nor dataset_dict.json/state.json (a Hugging Face datasets folder)."
    )


def _from_metadata(root: Path, image_column: str, caption_column: str) -> list[Example]:
    """The listed pairs; an image that is not a sane image (not a regular file, a bomb, not an
    image at all: checked from its header) is skipped and counted, not a crash mid-epoch."""
    examples = []
    refused: list[str] = []
    lines = (root / METADATA).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise DatasetError(f"{root / METADATA}, line {number}: not JSON ({error}).") from None
        for column in (image_column, caption_column):
            if column not in row:
                raise DatasetError(
                    f"{root / METADATA}, line {number}: no {column!r} column (it has "
                    f"{', '.join(sorted(row))}); choose the columns with --image-column and "
                    "--caption-column."
                )
        path = root / str(row[image_column])
        if not path.exists():
            raise DatasetError(f"{root / METADATA}, line {number}: the image {path} is missing.")
        try:
            check_image(path)
        except FileRefused as why:
            refused.append(f"line {number}: {why}")
            continue
        examples.append(Example(path, str(row[caption_column])))
    report_skipped(root / METADATA, refused)
    if not examples:
        raise DatasetError(f"{root / METADATA} lists no usable images.")
    return examples


def report_skipped(source: Path, refused: list[str]) -> None:
    """One warning with the count of the images left out of ``source`` and the first reason."""
    if refused:
        log.warning(
            "Skipped %d image(s) of %s that can't be used (%s%s)",
            len(refused),
            source,
            refused[0],
            "; …" if len(refused) > 1 else "",
        )


def _from_datasets(root: Path, image_column: str, caption_column: str, split: str) -> list[Example]:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"{str(root)!r} is a Hugging Face datasets folder; reading it needs the datasets "
            f"package: {DATASETS_HINT}"
        ) from None
    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DatasetError(
                f"The datasets folder {str(root)!r} has no split {split!r}; it has "
                f"{', '.join(loaded)} (choose one with --split)."
            )
        loaded = loaded[split]
    missing = [c for c in (image_column, caption_column) if c not in loaded.column_names]
    if missing:
        raise DatasetError(
            f"The datasets folder {str(root)!r} has no column {missing[0]!r} (it has "
            f"{', '.join(loaded.column_names)}); choose with --image-column/--caption-column."
        )
    examples = []
    for row in loaded:
        image = row[image_column]
        if isinstance(image, dict):  # Image(decode=False) or raw {"bytes", "path"}
            image = image.get("bytes") or Path(image["path"])
        elif isinstance(image, str):
            image = root / image if not Path(image).is_absolute() else Path(image)
        examples.append(Example(image, str(row[caption_column])))
    return examples


def open_rgb(image: Any) -> Image.Image:
    """A loaded RGB copy of an :class:`Example`'s image, whatever form it came in, read through
    the safe reader (models/safe_files.py); DatasetError for one it refuses."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        return open_image(image).convert("RGB")
    except FileRefused as why:
        raise DatasetError(str(why)) from None


def read_rgb(path: Path) -> Image.Image:
    """An RGB copy of the image file at ``path`` opened with Pillow directly (the caption and
    CLIP-filter commands read a user's own folder); DatasetError for one Pillow cannot read."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{path} is not a readable image ({type(error).__name__}).") from None


def is_relative_inside(name: str) -> bool:
    """Whether a metadata file name stays inside its folder (no absolute path, no ``..``): the
    caption and CLIP-filter commands write to ``OUT/<file_name>``, which must not land
    elsewhere."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The generator for one example's augmentation in one epoch (stable across processes and
    Python runs: ``hash()`` of a tuple would not be)."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def prepare_image(
    image: Image.Image, *, resolution: int, center_crop: bool, flip: bool, rng: random.Random
) -> Image.Image:
    """Resize the shorter side to ``resolution`` (bilinear), crop a square (centre or random)
    and flip horizontally with probability 1/2 when ``flip``."""
    scale = resolution / min(image.size)
    size = (
        max(resolution, round(image.width * scale)),
        max(resolution, round(image.height * scale)),
    )
    image = image.resize(size, Image.Resampling.BILINEAR)
    if center_crop:
        left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    else:
        left = rng.randint(0, image.width - resolution)
        top = rng.randint(0, image.height - resolution)
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


class CaptionedImages:
    """A map-style torch dataset: ``{"pixel_values": (3, R, R) in [-1, 1], "caption": str}``.

    The epoch is set with :meth:`use_epoch` (not ``set_epoch``: accelerate calls that with its
    own loader count, which restarts at 0 after a resume).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        resolution: int,
        center_crop: bool,
        random_flip: bool,
        seed: int,
    ) -> None:
        self.examples = list(examples)
        self.resolution = resolution
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.seed = seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch

        example = self.examples[index]
        image = prepare_image(
            open_rgb(example.image),
            resolution=self.resolution,
            center_crop=self.center_crop,
            flip=self.random_flip,
            rng=sample_rng(self.seed, self.epoch, index),
        )
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)  # (R, R, 3)
        return {"pixel_values": pixels.permute(2, 0, 1).contiguous(), "caption": example.caption}


class EpochShuffle:
    """A sampler: a permutation of ``range(size)`` fixed by ``(seed, epoch)``."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.size))
        sample_rng(self.seed, self.epoch, -1).shuffle(order)
        return iter(order)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {
        "pixel_values": torch.stack([b["pixel_values"] for b in batch]),  # (B, 3, R, R)
        "captions": [b["caption"] for b in batch],
    }


def token_ids(tokenizer: Any, captions: list[str]) -> Any:
    """(N, 77) CLIP token ids of ``captions``, padded and truncated to the tokenizer's length."""
    return tokenizer(
        captions,
        max_length=tokenizer.model_max_length,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    ).input_ids


def write_image_folder(rows: Sequence[dict[str, Any]], folder: Path) -> Path:
    """Write ``metadata.jsonl`` for ``rows`` (already holding ``file_name`` and ``text``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / METADATA
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
