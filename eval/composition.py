"""Does a model draw what the activity word calls for? A composition test that needs no CLIP.

The palette test (:mod:`eval.prompt_following`) asks whether a genre word changes the colours.
The synthetic covers carry a second rule, activity → composition: a road to the horizon for a
drive, diagonal bands for a workout, a grid for study, a moon for sleep, confetti for a party,
waves for chill, chevrons for a run, a rising sun for the morning, one centred emblem when the
title names no activity ("plain"). This test asks, image by image, whether the generated image
has its own activity's layout:

    the image at 32 px, grey → gradient orientation histograms in an 8x8 grid of cells
    (6 unsigned orientations, magnitude-weighted, each block normalised: a HOG, Dalal & Triggs
    2005) → a softmax regression trained on the synthetic **train** covers
    → predicted composition for each generated image → accuracy, bootstrap interval,
    the same permutation null as the palette test (:func:`eval.prompt_following.permutation_null`)

Grey gradients with unsigned orientation make the features nearly blind to palette (a jazz
road and a techno road have the same edges, whichever side is darker), so the test measures
layout, not colour. The classifier's accuracy on the real synthetic **test** covers is the
ceiling a generator that draws every composition exactly would reach: moods and eras (haze,
rain streaks, halftone) blur some layouts even in the rules' own drawings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eval.metrics import Estimate, bootstrap
from eval.prompt_following import null_mean, permutation_null

SIDE = 32  # px: layouts are large; finer sizes see the eras' textures instead
CELLS = 8  # per side: 4x4-pixel cells at 32 px
ORIENTATIONS = 6  # unsigned, over 0..π
PLAIN = "plain"  # the label of a title without an activity word


def composition_features(image: Image.Image) -> np.ndarray:
    """The (CELLS² · ORIENTATIONS,) orientation histogram of ``image`` at any size."""
    grey = np.asarray(
        image.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX), dtype=np.float64
    )  # (SIDE, SIDE)
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned: palette order does not flip it
    bins = np.minimum((angle / np.pi * ORIENTATIONS).astype(int), ORIENTATIONS - 1)
    cell = SIDE // CELLS
    rows, cols = np.indices(grey.shape) // cell
    index = (rows * CELLS + cols) * ORIENTATIONS + bins
    histogram = np.bincount(index.ravel(), magnitude.ravel(), CELLS * CELLS * ORIENTATIONS)
    # Normalise by the whole image's edge energy, then a square root: strong contrast (neon on
    # black) and faint contrast (ambient greys) draw the same layout.
    return np.sqrt(histogram / (histogram.sum() + 1e-6))


def features_of(paths: Sequence[Path]) -> np.ndarray:
    """(N, D) composition features of image files."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append(composition_features(image))
    return np.stack(rows)


@dataclass
class CompositionClassifier:
    """Multinomial logistic regression on standardised features (numpy, full-batch gradient
    descent with L2; a few seconds on 6,000 covers)."""

    names: list[str]
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    weights: np.ndarray  # (D + 1, L): the last row is the bias

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: Sequence[str],
        *,
        l2: float = 1e-3,
        steps: int = 400,
        learning_rate: float = 0.5,
    ) -> CompositionClassifier:
        names = sorted(set(labels))
        mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
        x = _with_bias((features - mean) / scale)  # (N, D + 1)
        y = np.eye(len(names))[[names.index(label) for label in labels]]  # (N, L) one-hot
        weights = np.zeros((x.shape[1], len(names)))
        for _ in range(steps):
            gradient = x.T @ (_softmax(x @ weights) - y) / len(x) + l2 * weights
            weights -= learning_rate * gradient
        return cls(names, mean, scale, weights)

    def predict(self, features: np.ndarray) -> list[str]:
        scores = _with_bias((features - self.mean) / self.scale) @ self.weights  # (N, L)
        return [self.names[i] for i in scores.argmax(axis=1)]

    def save(self, path: Path) -> None:
        data = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()}
        Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CompositionClassifier:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["names"], *(np.asarray(data[k]) for k in ("mean", "scale", "weights")))


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1))])


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def activity_labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each metadata row's composition label: its activity, or :data:`PLAIN`."""
    return [row.get("activity") or PLAIN for row in rows]


@dataclass(frozen=True)
class CompositionResult:
    """How often generated images have their own activity's layout."""

    accuracy: Estimate
    chance: float  # the permutation null's mean
    null_high: float  # its 95th percentile
    p_value: float
    images: int
    per_label: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"accuracy": asdict(self.accuracy)}


def composition_following(
    classifier: CompositionClassifier,
    features: np.ndarray,
    labels: Sequence[str],
    *,
    resamples: int = 200,
    permutations: int = 2000,
    seed: int = 0,
) -> CompositionResult:
    """Score images (generated, or real ones for the ceiling) against their prompts' labels;
    the interval is a bootstrap over images (estimate ± z·SE, clipped to [0, 1] – it still
    holds the estimate), the null a permutation of the labels."""
    if len(features) != len(labels):
        raise ValueError("composition following needs exactly one label per image.")
    predicted = np.asarray(classifier.predict(features))
    truth = np.asarray(labels)
    hits = (predicted == truth).astype(np.float64)
    estimate = bootstrap(lambda h: float(h.mean()), (hits,), resamples=resamples, seed=seed)
    estimate = Estimate(estimate.value, max(0.0, estimate.low), min(1.0, estimate.high))
    null = permutation_null(predicted, truth, permutations=permutations, seed=seed)
    return CompositionResult(
        accuracy=estimate,
        chance=null_mean(predicted, truth),
        null_high=float(np.quantile(null, 0.95)),
        p_value=float((1 + (null >= estimate.value).sum()) / (1 + len(null))),
        images=len(hits),
        per_label={n: float(hits[truth == n].mean()) for n in sorted(set(labels))},
    )
