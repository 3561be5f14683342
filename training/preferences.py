"""Preference data for Diffusion-DPO and -KTO (training/dpo.py), read from a folder that
``python -m training export-pairs`` wrote: the pairs file's rows as DPO's (winner, loser) pairs
or as KTO's single images liked or disliked, and torch datasets over them whose crops and flips
follow ``(seed, epoch, index)`` like every other training dataset (training/data.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import FileRefused
from models.safe_files import check_image
from training.data import DatasetError, open_rgb, prepare_image, report_skipped, sample_rng
from training.export import PAIRS_FILE


@dataclass(frozen=True)
class Pair:
    text: str
    winner: Path
    loser: Path
    margin: int


def load_pairs(folder: str | Path, *, min_margin: int = 1) -> list[Pair]:
    """The pairs of an export-pairs folder with at least ``min_margin``; DatasetError when the
    folder, its pairs file or an image is missing or no pair is left."""
    root = Path(folder).expanduser()
    path = root / PAIRS_FILE
    if not path.is_file():
        raise DatasetError(
            f"{root} has no {PAIRS_FILE}; write one with 'python -m training export-pairs'."
        )
    pairs = []
    refused: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = Pair(
                str(row["text"]),
                root / row["winner_file"],
                root / row["loser_file"],
                int(row["margin"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path} line {number} is not a pair ({exc}).") from None
        for image in (pair.winner, pair.loser):
            if not image.exists():
                raise DatasetError(f"{path} line {number}: the image {image} is missing.")
        try:
            for image in (pair.winner, pair.loser):
                check_image(image)  # a bomb or a non-image: a counted skip, not a crash mid-run
        except FileRefused as why:
            refused.append(f"line {number}: {why}")
            continue
        if pair.margin >= min_margin:
            pairs.append(pair)
    report_skipped(path, refused)
    if not pairs:
        raise DatasetError(f"{path} has no pair with a margin of at least {min_margin}.")
    return pairs


class _EpochDataset:
    """A map-style torch dataset over ``items`` whose crops and flips follow
    ``(seed, epoch, index)`` (training/data.py ``sample_rng``); the epoch is set with
    :meth:`use_epoch`."""

    def __init__(self, items: list[Any], *, resolution: int, random_flip: bool, seed: int):
        self.items, self.resolution, self.random_flip, self.seed = (
            items,
            resolution,
            random_flip,
            seed,
        )
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)


class PreferencePairs(_EpochDataset):
    """``{"winner", "loser": (3, R, R) in [-1, 1], "caption"}``; the two images get the same
    crop and flip."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch

        pair = self.items[index]
        flip = self.random_flip and sample_rng(self.seed, self.epoch, index).random() < 0.5
        out: dict[str, Any] = {"caption": pair.text}
        for side, path in (("winner", pair.winner), ("loser", pair.loser)):
            image = prepare_image(
                open_rgb(path),
                resolution=self.resolution,
                center_crop=True,
                flip=False,
                rng=sample_rng(self.seed, self.epoch, index),
            )
            pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (R, R, 3)
            if flip:
                pixels = pixels[:, ::-1]
            out[side] = torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()
        return out


def collate_pairs(batch: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {
        "winner": torch.stack([b["winner"] for b in batch]),  # (B, 3, R, R)
        "loser": torch.stack([b["loser"] for b in batch]),  # (B, 3, R, R)
        "captions": [b["caption"] for b in batch],
    }


@dataclass(frozen=True)
class Labelled:
    text: str
    image: Path
    liked: bool


def load_labelled(folder: str | Path, *, min_margin: int = 1) -> list[Labelled]:
    """Every image of an export-pairs folder once, liked when it drew a vote: the winners and
    the losers with votes are liked, the losers without any disliked (KTO's data). Only pairs
    with at least ``min_margin`` count, as for DPO."""
    pairs = load_pairs(folder, min_margin=min_margin)
    rows = {}
    path = Path(folder).expanduser() / PAIRS_FILE
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)  # load_pairs has checked every line's shape
            rows[str(row["loser_file"])] = int(row.get("loser_votes", 0))
            rows[str(row["winner_file"])] = max(1, int(row.get("winner_votes", 1)))
    root = Path(folder).expanduser()
    seen: dict[Path, Labelled] = {}
    for pair in pairs:
        for image in (pair.winner, pair.loser):
            votes = rows.get(image.relative_to(root).as_posix(), 0)
            seen.setdefault(image, Labelled(pair.text, image, liked=votes > 0))
    return list(seen.values())


class LabelledImages(_EpochDataset):
    """KTO's examples: ``{"image": (3, R, R) in [-1, 1], "liked", "caption"}``."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch

        item = self.items[index]
        rng = sample_rng(self.seed, self.epoch, index)
        image = prepare_image(
            open_rgb(item.image),
            resolution=self.resolution,
            center_crop=True,
            flip=self.random_flip and rng.random() < 0.5,
            rng=rng,
        )
        pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # (R, R, 3)
        return {
            "image": torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous(),
            "liked": item.liked,
            "caption": item.text,
        }


def collate_labelled(batch: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {
        "image": torch.stack([b["image"] for b in batch]),  # (B, 3, R, R)
        "liked": torch.tensor([b["liked"] for b in batch]),  # (B,) bool
        "captions": [b["caption"] for b in batch],
    }
