"""The composition test (eval/composition.py): it must tell the rules' layouts apart, ignore the
palette, and score a prompt-blind painter at its null."""

from __future__ import annotations

import numpy as np
from PIL import Image

from eval.composition import (
    PLAIN,
    CompositionClassifier,
    activity_labels,
    composition_features,
    composition_following,
)
from training.synthetic import draw_example


def _covers(split: str, count: int) -> tuple[np.ndarray, list[str]]:
    rows, features = [], []
    for index in range(count):
        image, meta = draw_example("covers", split, index, seed=3, size=32)
        rows.append(meta)
        features.append(composition_features(image))
    return np.stack(features), activity_labels(rows)


def test_it_learns_the_layouts_from_the_train_covers_and_knows_them_on_unseen_ones() -> None:
    x, y = _covers("train", 360)
    classifier = CompositionClassifier.fit(x, y, steps=200)
    test_x, test_y = _covers("test", 120)
    result = composition_following(classifier, test_x, test_y, resamples=50, permutations=200)
    assert result.accuracy.value > 0.7  # 9 labels: chance is ~0.2 (plain is 40% of titles)
    assert result.accuracy.low <= result.accuracy.value <= result.accuracy.high
    assert result.p_value < 0.01


def test_labels_shuffled_before_training_teach_nothing() -> None:
    x, y = _covers("train", 360)
    shuffled = list(np.random.default_rng(0).permutation(y))
    classifier = CompositionClassifier.fit(x, shuffled, steps=200)
    test_x, test_y = _covers("test", 120)
    result = composition_following(classifier, test_x, test_y, resamples=50, permutations=200)
    assert result.accuracy.value < 0.45


def test_a_palette_swap_keeps_the_features() -> None:
    """The same grid in two colour schemes (light on dark, dark on light) has the same layout."""
    pixels = np.zeros((64, 64, 3), np.uint8)
    for i in range(0, 64, 16):
        for j in range(0, 64, 16):
            pixels[i + 2 : i + 14, j + 2 : j + 14] = (250, 200, 0)
    swapped = 255 - pixels
    a = composition_features(Image.fromarray(pixels))
    b = composition_features(Image.fromarray(swapped))
    stripes = np.zeros_like(pixels)
    stripes[:, ::16] = 255
    c = composition_features(Image.fromarray(stripes))
    assert np.abs(a - b).max() < 1e-9
    assert np.abs(a - c).sum() > 1.0  # another layout is far away


def test_round_trip_through_json(tmp_path) -> None:
    x, y = _covers("train", 60)
    classifier = CompositionClassifier.fit(x, y, steps=20)
    classifier.save(tmp_path / "c.json")
    again = CompositionClassifier.load(tmp_path / "c.json")
    assert again.predict(x) == classifier.predict(x)
    assert PLAIN in again.names
