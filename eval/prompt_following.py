"""Does a model follow the prompt? A palette test that needs no CLIP.

FID and KID say whether generated images look like the real ones *as a set*; they would not
notice a model that paints every prompt in the average palette. Where each test prompt carries
a label whose images have a recognisable palette (the synthetic covers' genre: jazz is warm
orange, techno neon on black), this asks, image by image: is the generated image's palette
closer to its own label's real images than to any other label's?

    colour histogram (4 bins per channel, 64 cells, Hellinger-normalised)
    → one centroid per label over the real test images
    → nearest centroid for each generated image → accuracy, with a bootstrap interval
    → against a permutation null: the same predictions, the labels shuffled among the images

Chance is not 1 / number of labels: the test genres are unbalanced, and a prompt-blind model
that always paints the commonest genre's palette scores that genre's share. Shuffling the
labels keeps both the label shares and the model's own spread of predictions and breaks only
the link between prompt and image, so the null is what a model would score that ignores its
prompt but paints as it does (Good 2005, *Permutation, Parametric and Bootstrap Tests of
Hypotheses*, ch. 3). Its mean has a closed form, Σ_l p_l q_l (label shares p, prediction
shares q); its 95th percentile and a p-value come from the permutations. The same classifier
scored on the real images themselves (leave-one-out, so an image never votes for its own
centroid) is the ceiling a perfect generator would reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import Estimate, bootstrap

BINS = 4  # per channel: 64 colour cells, coarse enough that a palette, not a shape, decides


def colour_histogram(pixels: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The (bins³,) square-rooted colour histogram of an (H, W, 3) uint8 image. The square root
    makes Euclidean distance between two of them the Hellinger distance of the histograms."""
    cells = (pixels.reshape(-1, 3).astype(np.int64) * bins) // 256  # (H*W, 3) in 0..bins-1
    index = (cells[:, 0] * bins + cells[:, 1]) * bins + cells[:, 2]
    counts = np.bincount(index, minlength=bins**3).astype(np.float64)
    return np.sqrt(counts / counts.sum())


def histograms(paths: Sequence[Path]) -> np.ndarray:
    """(N, 64) histograms of image files."""
    from eval.images import load_rgb

    return np.stack([colour_histogram(load_rgb(path)) for path in paths])


def centroids(features: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(the sorted label names, their mean feature vectors (L, D))."""
    names = sorted(set(labels))
    array = np.asarray(labels)
    return names, np.stack([features[array == name].mean(axis=0) for name in names])


def nearest(features: np.ndarray, names: Sequence[str], centres: np.ndarray) -> list[str]:
    """The label of the nearest centre for each row of ``features``."""
    distances = ((features[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # (N, L)
    return [names[i] for i in distances.argmin(axis=1)]


def leave_one_out_accuracy(features: np.ndarray, labels: Sequence[str]) -> float:
    """Nearest-centroid accuracy on ``features`` themselves, each image left out of its own
    label's centroid (the real images' ceiling)."""
    names, centres = centroids(features, labels)
    array = np.asarray(labels)
    counts = np.array([(array == n).sum() for n in names], dtype=np.float64)
    correct = 0
    for row, label in zip(features, labels, strict=True):
        own = names.index(label)
        adjusted = centres.copy()
        if counts[own] > 1:  # remove this image from its centroid's mean
            adjusted[own] = (centres[own] * counts[own] - row) / (counts[own] - 1)
        correct += nearest(row[None], names, adjusted)[0] == label
    return correct / len(labels)


@dataclass(frozen=True)
class FollowResult:
    """How often generated images land nearest their own label's palette."""

    accuracy: Estimate
    chance: float  # the permutation null's mean, Σ_l p_l q_l (see the module docstring)
    null_high: float  # its 95th percentile: a model above it follows its prompts (p < 0.05)
    p_value: float  # (1 + #{null ≥ accuracy}) / (1 + permutations), one-sided
    permutations: int
    real_ceiling: float  # the same classifier on the real images, leave-one-out
    labels: int
    images: int
    per_label: dict[str, float]  # accuracy per label

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["accuracy"] = asdict(self.accuracy)
        return data


def prompt_following(
    real: np.ndarray,
    real_labels: Sequence[str],
    generated: np.ndarray,
    generated_labels: Sequence[str],
    *,
    resamples: int = 200,
    permutations: int = 2000,
    seed: int = 0,
) -> FollowResult:
    """Score generated images' histograms against centroids of the real ones (see the module
    docstring); the interval is a bootstrap over generated images (estimate ± z·SE), the null a
    permutation of their labels."""
    if len(generated) != len(generated_labels) or len(real) != len(real_labels):
        raise ValueError("each set of histograms needs exactly one label per image.")
    if len(set(real_labels)) < 2:
        raise ValueError("prompt following needs at least 2 different labels.")
    unknown = sorted(set(generated_labels) - set(real_labels))
    if unknown:
        raise ValueError(f"labels without real images to compare with: {', '.join(unknown)}.")
    names, centres = centroids(real, real_labels)
    predicted = np.asarray(nearest(generated, names, centres))
    label_array = np.asarray(generated_labels)
    hits = (predicted == label_array).astype(np.float64)
    per_label = {n: float(hits[label_array == n].mean()) for n in names if (label_array == n).any()}
    accuracy = bootstrap(lambda h: float(h.mean()), (hits,), resamples=resamples, seed=seed)
    accuracy = Estimate(accuracy.value, max(0.0, accuracy.low), min(1.0, accuracy.high))
    null = permutation_null(predicted, label_array, permutations=permutations, seed=seed)
    return FollowResult(
        accuracy=accuracy,
        chance=null_mean(predicted, label_array),
        null_high=float(np.quantile(null, 0.95)) if len(null) else float("nan"),
        p_value=float((1 + (null >= accuracy.value).sum()) / (1 + len(null))),
        permutations=len(null),
        real_ceiling=leave_one_out_accuracy(real, real_labels),
        labels=len(names),
        images=len(hits),
        per_label=per_label,
    )


def null_mean(predicted: Sequence[str], labels: Sequence[str]) -> float:
    """The expected accuracy when the labels are shuffled among the images: Σ_l p_l q_l, with
    p_l the share of images labelled l and q_l the share predicted l."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    names = sorted(set(labels.tolist()) | set(predicted.tolist()))
    p = np.array([(labels == n).mean() for n in names])
    q = np.array([(predicted == n).mean() for n in names])
    return float(p @ q)


def permutation_null(
    predicted: Sequence[str], labels: Sequence[str], *, permutations: int = 2000, seed: int = 0
) -> np.ndarray:
    """Accuracies of ``predicted`` against ``permutations`` random shuffles of ``labels``."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    rng = np.random.default_rng(seed)
    return np.array([(predicted == rng.permutation(labels)).mean() for _ in range(permutations)])


def prompt_hits(
    real: np.ndarray,
    real_labels: Sequence[str],
    generated: np.ndarray,
    generated_labels: Sequence[str],
) -> np.ndarray:
    """1.0 where a generated image lands nearest its own label's centroid, else 0.0 (N,)."""
    names, centres = centroids(real, real_labels)
    return (np.asarray(nearest(generated, names, centres)) == np.asarray(generated_labels)).astype(
        np.float64
    )
