"""Intervals that contain their estimates and cover the truth (issue 17): KID's bootstrap with
duplicate pairs dropped, FID's half-samples without replacement, FID∞, paired differences and
the normal-theory interval they all end in. Pure NumPy; no files, no networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import (
    _mmd2_unbiased,
    frechet_distance,
    frechet_distance_from_features,
    half_sample_replicates,
    interval_from_replicates,
    kernel_expectation_gaussians,
    kid_replicates,
    kid_value,
    poly_kernel,
)

DIM = 8
SHIFT, SCALE = 0.3, 1.2  # Q = N(0.3, 1.2²) per dimension against P = N(0, 1)


def true_kid(dim: int = DIM, shift: float = SHIFT, scale: float = SCALE) -> float:
    """MMD² of P = N(0, 1) and Q = N(shift, scale²) per dimension exactly, from the kernel's
    closed-form expectations."""
    zero, mean = np.zeros(dim), np.full(dim, shift)
    return (
        kernel_expectation_gaussians(zero, 1.0, zero, 1.0)
        + kernel_expectation_gaussians(mean, scale, mean, scale)
        - 2.0 * kernel_expectation_gaussians(zero, 1.0, mean, scale)
    )


def test_kernel_against_a_hand_computed_value() -> None:
    # xᵀy = 1·3 + 2·(−1) = 1, D = 2: (1/2 + 1)³ = 3.375
    assert poly_kernel(np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]]))[0, 0] == 3.375


def test_kernel_expectation_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    mean = np.linspace(-0.5, 0.5, DIM)
    x = rng.normal(size=(3000, DIM)) * 0.8 + mean
    y = rng.normal(size=(3000, DIM)) * 1.3
    sampled = poly_kernel(x, y).mean()
    exact = kernel_expectation_gaussians(mean, 0.8, np.zeros(DIM), 1.3)
    assert sampled == pytest.approx(exact, rel=0.01)
    # one dimension by hand: E(xy + 1)³ with x ~ N(1, 0), y ~ N(0, 1) = E(y + 1)³ = 1 + 3 = 4
    assert kernel_expectation_gaussians(np.ones(1), 0.0, np.zeros(1), 1.0) == pytest.approx(4.0)


def test_kid_value_is_the_unbiased_mmd_and_zero_for_a_set_against_itself() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, DIM)), rng.normal(size=(50, DIM)) + 0.4
    by_hand = _mmd2_unbiased(poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y))
    assert kid_value(x, y) == pytest.approx(by_hand, rel=1e-12)
    assert kid_value(x, x) == 0.0


@pytest.mark.parametrize("n", [40, 150])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_interval_contains_its_estimate(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, DIM)), rng.normal(size=(n, DIM)) * SCALE + SHIFT
    values, reps = kid_replicates(x, [y, x], resamples=60, seed=seed)
    for m in range(2):
        kid = interval_from_replicates(values[m], reps[:, m])
        assert kid.low <= kid.value <= kid.high
    assert interval_from_replicates(values[1], reps[:, 1]).low <= 0.0  # x against itself

    def fids(real_rows: np.ndarray, prompt_rows: np.ndarray) -> np.ndarray:
        return np.array(
            [frechet_distance_from_features(x[real_rows], g[prompt_rows]) for g in (y, x)]
        )

    point = fids(np.arange(n), np.arange(n))
    reps = half_sample_replicates(fids, n, n, resamples=30, seed=seed)
    for m in range(2):
        fid = interval_from_replicates(point[m], reps[:, m])
        assert fid.low <= fid.value <= fid.high
    assert point[1] == pytest.approx(0.0, abs=1e-9)
    assert interval_from_replicates(point[1], reps[:, 1]).low <= 0.0


@pytest.mark.parametrize(("dim", "shift", "scale"), [(8, SHIFT, SCALE), (64, 0.1, 1.05)])
def test_kid_interval_covers_the_true_value(dim: int, shift: float, scale: float) -> None:
    """95% intervals from 40 independent pairs of samples (N = 200) should hold the exact MMD²
    about 38 times. The plain percentile bootstrap that keeps duplicate pairs does worse, and
    in 64 dimensions – where k(x, x) dwarfs k(x, y), as with Inception features – it misses
    almost always (measured: 0 of 40, against 40 of 40 here)."""
    truth = true_kid(dim, shift, scale)
    rng = np.random.default_rng(2)
    covered = naive_covered = 0
    repeats = 40
    for trial in range(repeats):
        x = rng.normal(size=(200, dim))
        y = rng.normal(size=(200, dim)) * scale + shift
        values, reps = kid_replicates(x, [y], resamples=100, seed=trial)
        kid = interval_from_replicates(values[0], reps[:, 0])
        covered += kid.low <= truth <= kid.high
        k_xx, k_yy, k_xy = poly_kernel(x, x), poly_kernel(y, y), poly_kernel(x, y)
        naive = []
        draw = np.random.default_rng(trial)
        for _ in range(100):
            i, j = draw.integers(0, 200, 200), draw.integers(0, 200, 200)
            naive.append(_mmd2_unbiased(k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)]))
        low, high = np.quantile(naive, [0.025, 0.975])
        naive_covered += low <= truth <= high
    assert covered >= 0.85 * repeats
    assert naive_covered < covered
    if dim == 64:
        assert naive_covered <= 0.25 * repeats


def test_fid_half_sample_interval_covers_the_truth_where_fid_is_nearly_unbiased() -> None:
    """Gaussians in 4 dimensions, 400 rows each: the true FID is 4 · 0.5² = 1 and the bias
    ~(Tr Σ₁ + Tr Σ₂)/N is small beside the spread, so the intervals should cover 1."""
    rng = np.random.default_rng(3)
    repeats, covered = 30, 0
    for trial in range(repeats):
        x, y = rng.normal(size=(400, 4)), rng.normal(size=(400, 4)) + 0.5

        def fid(real_rows: np.ndarray, prompt_rows: np.ndarray, x=x, y=y) -> np.ndarray:
            return np.array([frechet_distance_from_features(x[real_rows], y[prompt_rows])])

        reps = half_sample_replicates(fid, 400, 400, resamples=40, seed=trial)
        estimate = interval_from_replicates(fid(np.arange(400), np.arange(400))[0], reps[:, 0])
        covered += estimate.low <= 1.0 <= estimate.high
    assert covered >= 0.8 * repeats


def test_paired_difference_is_tighter_than_the_models_apart() -> None:
    """Two models whose images differ only a little, prompt by prompt: the paired difference's
    interval is far narrower than either model's own, and it is the difference of the values."""
    rng = np.random.default_rng(4)
    real = rng.normal(size=(150, DIM))
    base = rng.normal(size=(150, DIM)) * SCALE + SHIFT
    better = base * 0.9 + 0.05 * rng.normal(size=base.shape)
    values, reps = kid_replicates(real, [base, better], resamples=100, seed=0)
    diff = interval_from_replicates(values[1] - values[0], reps[:, 1] - reps[:, 0])
    alone = interval_from_replicates(values[0], reps[:, 0])
    assert diff.value == pytest.approx(values[1] - values[0])
    assert diff.high - diff.low < 0.5 * (alone.high - alone.low)
    assert diff.high < 0  # "better" is closer to the real set, and the test sees it


def test_prompt_indices_pair_rows_across_models_of_different_length() -> None:
    rng = np.random.default_rng(5)
    real, g = rng.normal(size=(30, DIM)), rng.normal(size=(30, DIM))
    kept = np.arange(30) != 7  # one image dropped (black) from the second model
    values, _ = kid_replicates(
        real, [g, g[kept]], prompts=[np.arange(30), np.arange(30)[kept]], resamples=5
    )
    assert values[1] == pytest.approx(kid_value(real, g[kept]))
    with pytest.raises(ValueError, match="one prompt index"):
        kid_replicates(real, [g], prompts=[np.arange(5)])


def test_interval_from_replicates() -> None:
    estimate = interval_from_replicates(2.0, np.array([1.0, 3.0]), confidence=0.95)
    assert estimate.high - 2.0 == pytest.approx(1.959964 * math.sqrt(2.0), rel=1e-5)
    assert math.isnan(interval_from_replicates(1.0, np.array([1.0])).low)
    with pytest.raises(ValueError, match="confidence"):
        interval_from_replicates(1.0, np.ones(3), confidence=1.0)


def test_fid_infinity_removes_most_of_the_small_sample_bias() -> None:
    from eval.metrics import fid_infinity

    rng = np.random.default_rng(6)
    dim = 32
    x, y = rng.normal(size=(600, dim)), rng.normal(size=(600, dim)) * 1.1
    truth = frechet_distance(np.zeros(dim), np.eye(dim), np.zeros(dim), 1.21 * np.eye(dim))
    at_n = frechet_distance_from_features(x, y)
    infinite, sizes, fids = fid_infinity(x, y, points=6, smallest=0.3)
    assert len(sizes) == len(fids) == 6 and sizes[-1] == 600
    assert abs(infinite - truth) < 0.5 * abs(at_n - truth)


def test_a_folder_against_itself_gives_intervals_that_hold_zero() -> None:
    """What `python -m eval fid A A` and `python -m eval kid A A` compute."""
    from eval.study import fid_estimate, kid_estimate

    x = np.random.default_rng(7).normal(size=(24, 64))  # fewer images than features, as in FID
    fid = fid_estimate(x, x, resamples=20, seed=0)
    kid, std_error = kid_estimate(x, x, resamples=50, seed=0)
    assert fid.value == pytest.approx(0.0, abs=1e-9) and fid.low == 0.0 < fid.high
    assert kid.value == 0.0 and kid.low < 0.0 < kid.high and std_error > 0
