"""Training reads images that a folder or an export names (issue 31): a decompression bomb, a
text-chunk bomb, a FIFO or a non-image is skipped and counted when the data is loaded, never a
crash mid-epoch or a reader stuck for ever."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from PIL import Image

from tests.hostile import declared_png, ztxt_bomb
from training.data import DatasetError, load_examples, open_rgb


def _hostile_images(folder: Path) -> list[str]:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "good.png")
    (folder / "bomb.png").write_bytes(declared_png(30_000, 30_000))
    (folder / "ztxt.png").write_bytes(ztxt_bomb())
    (folder / "text.png").write_text("not an image", encoding="utf-8")
    os.mkfifo(folder / "fifo.png")
    return ["good.png", "bomb.png", "ztxt.png", "text.png", "fifo.png"]


def test_an_image_folder_skips_and_counts_what_it_cannot_use(tmp_path, caplog):
    names = _hostile_images(tmp_path)
    rows = [{"file_name": name, "text": f"caption of {name}"} for name in names]
    (tmp_path / "metadata.jsonl").write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        examples = load_examples(tmp_path)
    assert [e.image.name for e in examples] == ["good.png"]
    assert "Skipped 4 image(s)" in caplog.text and "line 2: bomb.png" in caplog.text
    assert open_rgb(examples[0].image).size == (32, 32)


def test_the_pairs_loader_skips_and_counts_pairs_with_a_bad_image(tmp_path, caplog):
    from training.preferences import load_pairs

    names = _hostile_images(tmp_path)
    rows = [
        {"text": "a cover", "winner_file": "good.png", "loser_file": loser, "margin": 1}
        for loser in names
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        pairs = load_pairs(tmp_path)
    assert [p.loser.name for p in pairs] == ["good.png"]
    assert "Skipped 4 image(s)" in caplog.text


@pytest.mark.parametrize("make", [lambda: declared_png(30_000, 30_000), ztxt_bomb, lambda: b"x"])
def test_open_rgb_refuses_a_bomb_with_a_dataset_error(make):
    with pytest.raises(DatasetError, match=r"not a readable image|more pixels"):
        open_rgb(make())
