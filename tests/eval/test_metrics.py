"""The study's maths (eval/metrics.py) against analytic cases: Fréchet distance, KID, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import (
    bootstrap,
    feature_statistics,
    fid_infinity,
    frechet_distance,
    frechet_distance_from_features,
    kernel_expectation_gaussians,
    kernel_inception_distance,
    kid_replicates,
)


def _rotation(dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return q


def _random_psd(dim: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(dim, dim))
    return a @ a.T / dim


# -- Fréchet distance --------------------------------------------------------------------------


def test_identical_statistics_give_zero() -> None:
    mu = np.random.default_rng(0).normal(size=32)
    sigma = _random_psd(32, 1)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_equal_covariances_give_the_squared_mean_difference() -> None:
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    sigma = _random_psd(16, 3)
    expected = float(((mu1 - mu2) ** 2).sum())
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-9)


def test_one_dimensional_case() -> None:
    # N(1, 2²) vs N(3, 3²): (1 − 3)² + 2² + 3² − 2·2·3 = (1 − 3)² + (2 − 3)² = 5
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0, rel=1e-12)


def test_non_commuting_two_by_two_case() -> None:
    # For 2×2 M with non-negative eigenvalues, Tr(√M) = √(tr M + 2√det M).
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    trace_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1 @ s2)))
    mu1, mu2 = np.array([0.5, -1.0]), np.array([1.5, 0.0])
    expected = 2.0 + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_near_singular_covariances_stay_real_and_exact() -> None:
    # Σ₁ = Q diag(a) Qᵀ, Σ₂ = Q diag(b) Qᵀ commute, so d² = Σ (√aᵢ − √bᵢ)²; half the eigenvalues
    # are zero or 1e-14, as in a covariance of fewer samples than dimensions.
    dim = 64
    q = _rotation(dim, 4)
    rng = np.random.default_rng(5)
    a = rng.uniform(0.5, 2.0, dim)
    b = rng.uniform(0.5, 2.0, dim)
    a[: dim // 2] = 0.0
    b[dim // 4 : dim // 2 + 8] = 1e-14
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    value = frechet_distance(np.zeros(dim), s1, np.zeros(dim), s2)
    assert math.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(("n1", "n2", "dim"), [(12, 9, 40), (200, 150, 8)], ids=["n<d", "n>d"])
def test_both_routes_agree(n1: int, n2: int, dim: int) -> None:
    rng = np.random.default_rng(6)
    x1 = rng.normal(size=(n1, dim))
    x2 = rng.normal(size=(n2, dim)) * 1.3 + 0.2
    via_stats = frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    assert frechet_distance_from_features(x1, x2) == pytest.approx(via_stats, rel=1e-10)


def test_same_features_give_zero_even_when_singular() -> None:
    x = np.random.default_rng(7).normal(size=(5, 100))  # rank 4 covariance in 100-d
    assert frechet_distance_from_features(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(*feature_statistics(x), *feature_statistics(x)) == pytest.approx(
        0.0, abs=1e-8
    )


def test_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="same width"):
        frechet_distance_from_features(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance_from_features(np.full((4, 3), np.nan), np.zeros((4, 3)))


# -- KID ---------------------------------------------------------------------------------------


def test_kid_is_zero_in_expectation_for_one_distribution() -> None:
    rng = np.random.default_rng(8)
    values = []
    for trial in range(40):
        x, y = rng.normal(size=(60, 16)), rng.normal(size=(60, 16))
        values.append(kernel_inception_distance(x, y, subsets=5, subset_size=50, seed=trial)[0])
    values = np.array(values)
    standard_error = values.std() / math.sqrt(len(values))
    assert abs(values.mean()) < 3 * standard_error  # unbiased: no offset from zero
    assert (values < 0).any()  # single unbiased estimates do go below zero


def test_kid_is_clearly_positive_for_shifted_samples() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(60, 16))
    same, same_std = kernel_inception_distance(x, rng.normal(size=(60, 16)), subsets=20)
    shifted, _ = kernel_inception_distance(x, rng.normal(size=(60, 16)) + 0.7, subsets=20)
    assert shifted > 0.1
    assert shifted > 20 * max(abs(same), same_std)


def test_kid_works_on_small_sets_and_is_deterministic() -> None:
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(5, 8)), rng.normal(size=(7, 8)) + 1
    first = kernel_inception_distance(x, y, subsets=10, subset_size=1000, seed=3)
    assert first == kernel_inception_distance(x, y, subsets=10, subset_size=1000, seed=3)
    assert first[0] > 0
    with pytest.raises(ValueError, match="at least 2 rows"):
        kernel_inception_distance(x[:1], y)


# -- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_interval_of_a_mean() -> None:
    sample = np.random.default_rng(11).normal(loc=3.0, size=400)
    estimate = bootstrap(lambda s: float(s.mean()), (sample,), resamples=300, seed=1)
    assert estimate.value == pytest.approx(sample.mean())
    assert estimate.low < estimate.value < estimate.high
    # the 95% interval of a mean is about ±1.96·σ/√n = ±0.098 here
    assert estimate.high - estimate.low == pytest.approx(2 * 1.96 / 20, rel=0.25)
    again = bootstrap(lambda s: float(s.mean()), (sample,), resamples=300, seed=1)
    assert again == estimate


def test_bootstrap_interval_is_centred_on_its_estimate_even_for_a_biased_statistic() -> None:
    """FID's resamples repeat rows and sit above the estimate (docs/eval.md); the interval is
    the estimate ± z·SE all the same, so it contains the estimate."""
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(80, 4)), rng.normal(size=(80, 4)) + 0.5  # true FID: 4 · 0.5² = 1
    estimate = bootstrap(frechet_distance_from_features, (x, y), resamples=100)
    assert estimate.low < estimate.value < estimate.high
    assert (estimate.low + estimate.high) / 2 == pytest.approx(estimate.value)
    none = bootstrap(frechet_distance_from_features, (x, y), resamples=0)
    assert none.value == estimate.value and math.isnan(none.low) and math.isnan(none.high)


def test_kid_whole_kernel_and_per_subset_kernels_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    import eval.metrics

    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 0.3
    whole = kernel_inception_distance(x, y, subsets=7, subset_size=20, seed=2)
    monkeypatch.setattr(eval.metrics, "KID_WHOLE_KERNEL_LIMIT", 0)
    per_subset = kernel_inception_distance(x, y, subsets=7, subset_size=20, seed=2)
    assert per_subset == pytest.approx(whole, rel=1e-12)


def test_progress_in_a_log_is_a_line_per_quarter(capsys) -> None:
    """Under pytest stderr is not a terminal: no bar, a plain line at each quarter of the work
    (and none for empty work)."""
    from eval.progress import progress

    with progress(10, "generate baseline", "img") as bar:
        for _ in range(10):
            bar.update(1)
    with progress(0, "nothing", "img") as bar:
        bar.update(0)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        f"generate baseline: {done}/10 img" for done in (3, 5, 8, 10)
    ]


# -- what a mutation run found untested (issue 15) -------------------------------------------


def test_the_exact_kernel_expectation_matches_a_monte_carlo_estimate():
    """E(xᵀy/D + 1)³ for unequal, non-zero means and spreads per dimension: every cumulant term
    of :func:`kernel_expectation_gaussians` matters here (zero means would hide the odd ones)."""
    mean1, std1 = np.array([0.8, -1.0, 1.6]), np.array([0.6, 0.5, 0.9])
    mean2, std2 = np.array([1.2, 0.4, 1.1]), np.array([0.7, 1.1, 0.4])
    rng = np.random.default_rng(0)
    n = 2_000_000
    x = rng.normal(mean1, std1, size=(n, 3))
    y = rng.normal(mean2, std2, size=(n, 3))
    k = ((x * y).sum(axis=1) / 3 + 1) ** 3
    standard_error = k.std() / np.sqrt(n)
    exact = kernel_expectation_gaussians(mean1, std1, mean2, std2)
    assert abs(exact - k.mean()) < 4 * standard_error, (exact, k.mean(), standard_error)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda bad, good: feature_statistics(bad), "features"),
        (lambda bad, good: frechet_distance_from_features(bad, good), "features1"),
        (lambda bad, good: frechet_distance_from_features(good, bad), "features2"),
        (lambda bad, good: kid_replicates(bad, [good]), "real"),
    ],
)
def test_a_bad_feature_array_is_refused_by_its_argument_name(call, name):
    good = np.zeros((4, 3))
    with pytest.raises(ValueError, match=f"^{name} must be a 2-D array"):
        call(np.zeros(3), good)


def test_bootstrap_and_fid_infinity_name_their_bad_settings():
    data = (np.arange(10.0),)
    with pytest.raises(ValueError, match=r"confidence must be between 0 and 1, got 1\.5"):
        bootstrap(np.mean, data, confidence=1.5)
    features = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="points ≥ 2"):
        fid_infinity(features, features, points=1, smallest=0.5)
