"""The embedded model's checks: paired differences of accuracy, and the decoder's floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from eval.embedded_check import reconstruct
from eval.embedded_compare import _paired_accuracy


def test_a_paired_difference_counts_only_the_prompts_that_changed() -> None:
    a = np.array([1.0, 0.0, 1.0, 0.0] * 10)
    same = _paired_accuracy(a, a.copy(), resamples=200, seed=0)
    assert same["value"] == same["low"] == same["high"] == 0.0  # paired: no noise at all
    b = a.copy()
    b[1::4] = 1.0  # 10 of 40 prompts gained
    gain = _paired_accuracy(a, b, resamples=400, seed=0)
    assert gain["value"] == 0.25 and gain["low"] < 0.25 < gain["high"]
    assert gain["low"] > 0  # ten of forty, every one a gain: clearly above zero
    assert (gain["a"], gain["b"]) == (0.5, 0.75)


def test_the_shipped_decoder_gives_back_each_cover_nearer_itself_than_another(
    tmp_path: Path,
) -> None:
    from models.embedded import PACKAGED, from_package
    from training.synthetic import draw_example

    paths = []
    for index in range(2):
        image, _ = draw_example("covers", "test", index, seed=0, size=128)
        paths.append(tmp_path / f"{index:05d}.png")
        image.save(paths[-1])
    out = reconstruct(from_package(PACKAGED).vae, paths, tmp_path / "reconstructed")
    assert [p.name for p in out] == [p.name for p in paths]

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float64)

    for index, path in enumerate(out):
        own = np.abs(pixels(path) - pixels(paths[index])).mean()
        other = np.abs(pixels(path) - pixels(paths[1 - index])).mean()
        assert own < other, f"cover {index}: {own:.1f} to itself, {other:.1f} to the other"
