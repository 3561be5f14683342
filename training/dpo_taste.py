"""The DPO miniature's hidden taste and how it is scored (training/dpo_miniature.py): pure.

The simulated community likes covers lit from above (:func:`top_light`); each voter picks with a
logit choice (:func:`choose`); a trained model wins a held-out prompt when its image has more of
the taste (:func:`win_shares`), and a win rate over training seeds gets a seed-aware interval
(:func:`seed_aware_share`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eval.metrics import seed_aware_interval


def top_light(pixels: np.ndarray) -> float:
    """Mean luminance (ITU-R BT.601, 0–1) of the top half minus that of the bottom half of an
    (H, W, 3) uint8 image: positive when the light comes from above."""
    rgb = np.asarray(pixels, dtype=np.float64) / 255.0
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 2:
        raise ValueError(f"pixels must be an (H, W, 3) image with H ≥ 2, got {rgb.shape}")
    luma = rgb @ np.array([0.299, 0.587, 0.114])  # (H, W)
    half = luma.shape[0] // 2
    return float(luma[:half].mean() - luma[-half:].mean())


def choose(tastes: np.ndarray, noise: float, rng: np.random.Generator) -> int:
    """One voter's choice, 0-based: argmax of taste / noise + Gumbel(0, 1) – a logit choice
    with P(j) ∝ exp(taste_j / noise)."""
    return int(np.argmax(np.asarray(tastes) / noise + rng.gumbel(size=len(tastes))))


def win_shares(dpo: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per prompt: 1 where the DPO image has more of the taste, 0.5 on a tie, else 0."""
    dpo, base = np.asarray(dpo, dtype=np.float64), np.asarray(base, dtype=np.float64)
    return np.where(dpo > base, 1.0, np.where(dpo == base, 0.5, 0.0))


def seed_aware_share(wins: np.ndarray, *, resamples: int, seed: int) -> dict[str, Any]:
    """The mean of ``wins`` (seeds, prompts) – each training seed's win share over the same
    held-out prompts – with its seed-aware 95% interval: the spread over seeds together with a
    bootstrap over prompts that resamples every seed with the same prompts. Stops at 0 and 1
    (still holding the estimate)."""
    wins = np.atleast_2d(np.asarray(wins, dtype=np.float64))  # (S, P)
    rng = np.random.default_rng(seed)
    prompts = wins.shape[1]
    reps = np.array([wins[:, rng.integers(0, prompts, prompts)].mean() for _ in range(resamples)])
    both = seed_aware_interval(wins.mean(axis=1), reps)
    return {
        "value": both.value,
        "low": max(0.0, both.low),
        "high": min(1.0, both.high),
        "seeds": wins.shape[0],
        "n": int(wins.size),
        "per_seed": [float(v) for v in wins.mean(axis=1)],
    }
