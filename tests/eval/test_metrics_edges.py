"""The statistics where mutation samples found them untested (docs/testing.md, "Mutation
samples"): an interval's width against a known spread, FID∞ against a curve with a known
intercept, the smallest inputs each function takes and the first it refuses, KID's refusal of a
set without two different images, the bootstrap's replayed draws, the documented defaults, and
the seed-aware interval and Holm's adjustment field by field. Each test names the mutant it was
seen to kill. NumPy, and SciPy's t distribution for the expected values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

import eval.metrics
from eval.metrics import (
    KernelBlock,
    bootstrap,
    feature_statistics,
    fid_infinity,
    frechet_distance,
    frechet_distance_from_features,
    half_sample_replicates,
    holm,
    interval_from_replicates,
    kernel_inception_distance,
    kid_replicates,
    kid_value,
    poly_kernel,
    same_row_ids,
    seed_aware_from_se,
    seed_aware_interval,
    weighted_pair_mean,
)

Z95, Z90 = 1.959963984540054, 1.6448536269514722  # NormalDist().inv_cdf(0.975), (0.95)


# -- interval widths against a known spread ----------------------------------------------------


@pytest.mark.parametrize(("confidence", "z"), [(0.95, Z95), (0.90, Z90)])
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_an_interval_is_the_estimate_plus_minus_z_scale_sd(confidence, z, scale):
    """Replicates 1, 3, 5, 7: standard deviation (ddof 1) √(20/3). Kills ``z * scale * std`` →
    ``z / scale * std``, ddof 1 → 0 and the confidence → z mapping."""
    estimate = interval_from_replicates(
        10.0, np.array([1.0, 3.0, 5.0, 7.0]), confidence=confidence, scale=scale
    )
    half = z * scale * math.sqrt(20.0 / 3.0)
    assert estimate.value == 10.0
    assert estimate.low == pytest.approx(10.0 - half, rel=1e-12)
    assert estimate.high == pytest.approx(10.0 + half, rel=1e-12)


def test_two_replicates_are_enough_for_an_interval_and_one_is_not():
    """Kills ``len(reps) < 2`` → ``<= 2``."""
    two = interval_from_replicates(0.0, np.array([-1.0, 1.0]))
    assert two.high == pytest.approx(Z95 * math.sqrt(2.0))
    one = interval_from_replicates(0.0, np.array([1.0]))
    assert math.isnan(one.low) and math.isnan(one.high)


def test_half_samples_spread_like_the_standard_error_of_the_whole_sample():
    """The mean of N = 400 draws with σ = 2 has standard error σ/√N = 0.1; half-samples without
    replacement have (N − d)/d · Var(θ_half) = Var(θ_N) (docs of half_sample_replicates), so their
    spread is that standard error. Kills halving the rows by another divisor, drawing with
    replacement and dropping the rows' sort."""
    data = np.random.default_rng(3).normal(0.0, 2.0, size=400)
    standard_error = data.std(ddof=1) / math.sqrt(len(data))
    seen_rows: list[np.ndarray] = []

    def mean_of(real_rows: np.ndarray, prompt_rows: np.ndarray) -> float:
        seen_rows.append(real_rows)
        assert len(prompt_rows) == 5  # ⌊11/2⌋ prompts
        return float(data[real_rows].mean())

    reps = half_sample_replicates(mean_of, len(data), 11, resamples=400, seed=1)
    assert reps.shape == (400,)
    assert reps.std(ddof=1) == pytest.approx(standard_error, rel=0.12)
    for rows in seen_rows:
        assert len(rows) == 200 and len(set(rows.tolist())) == 200
        assert (np.diff(rows) > 0).all()


# -- FID∞ against a curve with a known intercept --------------------------------------------------


def test_fid_infinity_recovers_the_intercept_of_an_exact_one_over_n_curve(monkeypatch):
    """FID replaced by a + b/N of the second set's size: the fit must return a exactly. Kills
    ``np.ones_like(…)`` → ``2.0 * …`` in the design matrix, the slope column ``1.0 / N`` → ``N``,
    the sizes of the first set recorded instead of the second's, the smallest fraction and the
    sizes' ``dtype=np.float64`` → ``None`` (integer sizes)."""
    a, b = 3.0, 250.0
    monkeypatch.setattr(eval.metrics, "frechet_distance_from_features", lambda x, y: a + b / len(y))
    x1, x2 = np.zeros((300, 2)), np.zeros((200, 2))
    infinite, sizes, fids = fid_infinity(x1, x2, points=4, smallest=0.25)
    assert sizes.tolist() == [50.0, 100.0, 150.0, 200.0]
    assert sizes.dtype == np.float64  # the module's promise: float64 throughout
    assert fids == pytest.approx(a + b / sizes, rel=1e-12)
    assert infinite == pytest.approx(a, rel=1e-9)


def test_fid_infinity_of_two_samples_of_one_gaussian_is_near_zero():
    """Real FIDs: both sets from N(0, I₄), so the true FID is 0 and each FID at N is the
    small-sample bias alone, larger for smaller sets; the extrapolation removes most of it."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    infinite, _, fids = fid_infinity(x, y, points=5, smallest=0.2)
    assert fids[0] > fids[-1] > 0.0  # smaller sets: larger bias
    assert abs(infinite) < 0.5 * fids[-1]


@pytest.mark.parametrize("smallest", [0.0, 1.0])
def test_fid_infinity_refuses_fractions_outside_zero_to_one(smallest):
    """Kills ``0.0 < smallest`` → ``<=`` and ``smallest < 1.0`` → ``<=``."""
    features = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="0 < smallest < 1"):
        fid_infinity(features, features, points=3, smallest=smallest)


def test_fid_infinity_draws_at_least_two_rows_of_each_set():
    """Three rows and a smallest fraction of a quarter: 0.75 rows rounds to 1, and a covariance
    needs 2. Kills either ``max(2, …)`` → ``max(1, …)``."""
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(3, 2)), rng.normal(size=(3, 2)) + 1.0
    _, sizes, fids = fid_infinity(x, y, points=2, smallest=0.25)
    assert sizes.tolist() == [2.0, 3.0] and np.isfinite(fids).all()


def test_fid_infinity_fits_a_line_through_two_points():
    """Kills ``points < 2`` → ``<= 2``."""
    features = np.random.default_rng(0).normal(size=(40, 2))
    _, sizes, _ = fid_infinity(features, features + 1.0, points=2, smallest=0.5)
    assert sizes.tolist() == [20.0, 40.0]


# -- the smallest input each function takes, and the first it refuses ----------------------------


def test_two_rows_make_a_covariance_and_one_does_not():
    """Kills ``len(x) < 2`` → ``<= 2`` in feature_statistics and ``min(…) < 2`` → ``<= 2`` in
    frechet_distance_from_features (both routes: fewer and more rows than features)."""
    two = np.array([[0.0, 1.0], [2.0, 3.0]])
    mean, cov = feature_statistics(two)
    assert mean.tolist() == [1.0, 2.0] and cov.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    wide = np.random.default_rng(1).normal(size=(2, 8))  # 2 rows < 8 features: the SVD route
    assert frechet_distance_from_features(wide, wide) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance_from_features(two, two + 1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        feature_statistics(two[:1])
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance_from_features(two[:1], two)


def test_kid_takes_subsets_of_two_rows_and_refuses_one():
    """Kills ``m < 2`` → ``<= 2`` and ``subsets < 1`` → ``<= 1`` in kernel_inception_distance."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 1.0
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=2, seed=0)
    assert math.isfinite(mean) and std == 0.0  # one subset: no spread
    with pytest.raises(ValueError, match="at least 2 rows"):
        kernel_inception_distance(x, y, subset_size=1)
    with pytest.raises(ValueError, match="subsets must be at least 1"):
        kernel_inception_distance(x, y, subsets=0)


def test_half_samples_take_four_rows_and_refuse_three():
    """Kills ``min(n_real, n_prompts) < 4`` → ``<= 4``."""
    reps = half_sample_replicates(lambda r, p: np.array([len(r), len(p)]), 4, 5, resamples=3)
    assert reps.tolist() == [[2.0, 2.0]] * 3
    for n_real, n_prompts in ((3, 4), (4, 3)):
        with pytest.raises(ValueError, match="at least 4 rows"):
            half_sample_replicates(lambda r, p: 0.0, n_real, n_prompts)


def test_a_bootstrap_without_resamples_is_the_estimate_alone_and_negative_is_refused():
    """Kills ``resamples < 0`` → ``<= 0``."""
    estimate = bootstrap(np.mean, (np.arange(5.0),), resamples=0)
    assert estimate.value == 2.0 and math.isnan(estimate.low)
    with pytest.raises(ValueError, match="resamples must be 0 or more, got -1"):
        bootstrap(np.mean, (np.arange(5.0),), resamples=-1)


# -- KID needs two different images ------------------------------------------------------------


def test_kid_refuses_a_set_of_one_image_repeated():
    """Identical rows are one image: no pair of different images to average. Kills ``count <=
    0`` → ``< 0`` in weighted_pair_mean (a division by zero instead of the refusal)."""
    rng = np.random.default_rng(4)
    real = rng.normal(size=(5, 3))
    same = np.repeat(rng.normal(size=(1, 3)), 4, axis=0)
    with pytest.raises(ValueError, match="at least 2 different images"):
        kid_value(real, same)
    with pytest.raises(ValueError, match="at least 2 different images"):
        kid_value(same, real)
    two = np.concatenate([same, rng.normal(size=(1, 3))])  # two different images: enough
    assert math.isfinite(kid_value(real, two))


def test_kid_bootstrap_draws_again_when_a_resample_has_one_image():
    """Three real rows, two of them one image: about a third of the draws hold one image only
    and are drawn again. Each replicate is then the KID of its resample (duplicates are one
    image, so their pairs drop out either way), in the seeded order of the draws. Kills
    ``break`` → ``continue`` after a good draw and ``continue`` → ``break`` after a bad one
    (which left a replicate unwritten)."""
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    real = np.concatenate([a, a, b])
    generated = rng.normal(size=(6, 3)) + 0.5
    _, reps = kid_replicates(real, [generated], resamples=40, seed=0)

    draws = np.random.default_rng(0)
    expected, redrawn = [], 0
    while len(expected) < 40:
        rows = draws.integers(0, 3, 3)
        prompts = draws.integers(0, 6, 6)
        if set(rows.tolist()) <= {0, 1} or set(rows.tolist()) == {2}:
            redrawn += 1  # one image only: drawn again
            continue
        expected.append(kid_value(real[rows], generated[prompts]))
    assert redrawn > 5
    assert reps[:, 0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_kid_of_one_image_against_another_is_their_kernel_value():
    """The mean over pairs of one row on each side is that one pair's kernel value; one image
    against itself has no pair. Kills ``count <= 0`` → ``<= 1`` in weighted_pair_mean."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(1, 3)), rng.normal(size=(1, 3))
    ids_x, ids_y = same_row_ids(x, y)
    kernel = poly_kernel(x, y)
    one = np.ones(1)
    block_x = KernelBlock(ids_x, np.diag(poly_kernel(x, x)))
    block_y = KernelBlock(ids_y, np.diag(poly_kernel(y, y)))
    assert weighted_pair_mean(kernel, one, one, block_x, block_y) == kernel[0, 0]
    with pytest.raises(ValueError, match="at least 2 different images"):
        weighted_pair_mean(poly_kernel(x, x), one, one, block_x, block_x)


def test_kid_bootstrap_replays_its_seeded_draws_with_every_real_row_drawable():
    """Five different real rows: a draw that misses the last row (about a third do) is as good
    as any other and is kept. Each replicate is the KID of its resample, in the order of the
    seeded draws. Kills dropping ``minlength`` from the real rows' ``bincount`` (a draw without
    the last row then had too few weights, failed, and was silently drawn again)."""
    rng = np.random.default_rng(8)
    real, generated = rng.normal(size=(5, 3)), rng.normal(size=(6, 3)) + 0.5
    _, reps = kid_replicates(real, [generated], resamples=30, seed=0)

    draws = np.random.default_rng(0)
    expected, without_last = [], 0
    while len(expected) < 30:
        rows, prompts = draws.integers(0, 5, 5), draws.integers(0, 6, 6)
        if len(set(rows.tolist())) < 2 or len(set(prompts.tolist())) < 2:
            continue  # one image only: drawn again
        without_last += 4 not in rows
        expected.append(kid_value(real[rows], generated[prompts]))
    assert without_last > 3
    assert reps[:, 0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_kid_bootstrap_says_so_when_no_draw_has_two_different_images(monkeypatch):
    """Two images per set and one draw allowed per replicate (the module's ``_REDRAWS``): three
    draws in four hold a single image, so some replicate finds none – a refusal, never a
    replicate left unwritten. Kills deleting that ``raise``."""
    monkeypatch.setattr(eval.metrics, "_REDRAWS", 1)
    rng = np.random.default_rng(11)
    real, generated = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    with pytest.raises(ValueError, match="found no resample with 2 different images"):
        kid_replicates(real, [generated], resamples=20, seed=0)


def test_kid_replicates_without_resamples_or_models_are_empty():
    """No resamples: no replicate rows; no models: no values and no columns. Kills
    ``max(resamples, 0)`` → ``max(resamples, 1)`` (one row of uninitialised memory) and the
    prompt count's ``default=-1`` → ``None`` (a TypeError for an empty list of models)."""
    rng = np.random.default_rng(9)
    real, generated = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    values, reps = kid_replicates(real, [generated, generated + 1.0], resamples=0)
    assert values.shape == (2,) and reps.shape == (0, 2)
    values, reps = kid_replicates(real, [], resamples=3)
    assert values.shape == (0,) and reps.shape == (3, 0)


def test_frechet_distance_takes_means_as_rows():
    """A mean may come as a (1, D) row, as ``features.mean(axis=0, keepdims=True)`` gives it.
    Kills ``mu2.reshape(-1)`` → ``reshape(None)`` (the row then fails the shape check)."""
    sigma = np.eye(2)
    flat = frechet_distance(np.zeros(2), sigma, np.array([3.0, 4.0]), sigma)
    rows = frechet_distance(np.zeros((1, 2)), sigma, np.array([[3.0, 4.0]]), sigma)
    assert flat == rows == pytest.approx(25.0)


def test_the_default_draws_are_the_documented_ones():
    """KID averages 100 subsets (Bińkowski et al. 2018, as clean-fid does) and both samplers'
    default seed is 0, so a call without them repeats the committed numbers. Kills ``subsets``
    100 → 101 and half_sample_replicates' ``seed`` 0 → 1."""
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 3)) + 0.2
    assert kernel_inception_distance(x, y, subset_size=5) == kernel_inception_distance(
        x, y, subsets=100, subset_size=5, seed=0
    )

    def rows_drawn(real_rows: np.ndarray, prompt_rows: np.ndarray) -> np.ndarray:
        return np.concatenate([real_rows, prompt_rows]).astype(float)

    default = half_sample_replicates(rows_drawn, 10, 10, resamples=4)
    seed_0 = half_sample_replicates(rows_drawn, 10, 10, resamples=4, seed=0)
    assert default.tolist() == seed_0.tolist()


# -- seed-aware intervals and Holm's adjustment, field by field ---------------------------------
#
# tests/eval/test_seed_aware.py covers these too, but it is not among the tests the mutation
# samples judge with: it reads the committed study (docs/miniature/results.json, which the samples
# do not copy) and runs a 10 s coverage simulation. So the cases are here, computed by hand.

SEEDS = [0.10, 0.12, 0.14]  # mean 0.12, s² = 0.0004, s²/k = 0.0004/3


def test_a_seed_aware_interval_by_hand_where_the_test_set_dominates():
    """a = s²/k, b = SE²: mean ± t_df·√(a + b), df = (a + b)²/(a²/(k − 1) + b²/df_b), and a
    p-value from the same t. Kills each field dropped, shifted or set to None, s² with ddof 2,
    ``total**2`` → ``total**3`` and the t quantile called without its level or its df."""
    a, b, df_b = 0.0004 / 3, 0.05**2, 199
    got = seed_aware_from_se(SEEDS, 0.05, df_b)
    df = (a + b) ** 2 / (a**2 / 2 + b**2 / df_b)
    se = math.sqrt(a + b)
    half = stats.t.ppf(0.975, df) * se
    assert got.value == pytest.approx(0.12)
    assert (got.low, got.high) == pytest.approx((0.12 - half, 0.12 + half), rel=1e-12)
    assert got.seed_se == pytest.approx(math.sqrt(a), rel=1e-12)
    assert got.test_se == 0.05
    assert got.df == pytest.approx(df, rel=1e-12)
    assert got.p_value == pytest.approx(2 * stats.t.sf(0.12 / se, df), rel=1e-9)


def test_a_seed_aware_interval_is_never_narrower_than_the_seeds_own():
    """Test noise as large as the seeds' and measured on 10⁶ degrees of freedom: Satterthwaite's
    df ≈ 8 gives 2.31·√(2a) < t₂·√a = 4.30·√a, so the seeds' t interval is taken, on k − 1 = 2
    degrees of freedom, with the larger of the two p-values. Kills the p-value's ``max(p_value,
    …)`` → ``max(None, …)``."""
    a = 0.0004 / 3
    got = seed_aware_from_se(SEEDS, math.sqrt(a), 10**6)
    assert got.df == 2.0
    assert got.high - got.value == pytest.approx(stats.t.ppf(0.975, 2) * math.sqrt(a), rel=1e-12)
    satterthwaite = (2 * a) ** 2 / (a**2 / 2 + a**2 / 10**6)
    p_both = 2 * stats.t.sf(0.12 / math.sqrt(2 * a), satterthwaite)
    p_seeds = 2 * stats.t.sf(0.12 / math.sqrt(a), 2)
    assert got.p_value == pytest.approx(max(p_both, p_seeds), rel=1e-9)


def test_two_seeds_have_a_variance_and_one_has_none():
    """Two seeds: the seeds' t interval on 1 degree of freedom (a test part of 0 adds nothing).
    One seed: the test-set interval, ``seed_se`` NaN, and no NumPy warning. No seed: refused.
    Kills ``k > 1`` → ``k > 2`` and → ``k > 0`` (a variance of one value: NaN, with a warning)
    for the seed variance, and ``len(values) < 1`` → ``<= 1``."""
    two = seed_aware_from_se([0.1, 0.2], 0.0, 50)
    seed_se = math.sqrt(0.005 / 2)
    assert two.df == pytest.approx(1.0) and two.seed_se == pytest.approx(seed_se)
    assert two.high - two.value == pytest.approx(stats.t.ppf(0.975, 1) * seed_se)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy warning for a variance of one value
        one = seed_aware_from_se([0.3], 0.02, 99)
    assert one.value == 0.3 and math.isnan(one.seed_se) and one.df == pytest.approx(99.0)
    assert one.high - one.value == pytest.approx(stats.t.ppf(0.975, 99) * 0.02)
    with pytest.raises(ValueError, match="at least one per-seed value"):
        seed_aware_from_se([], 0.02, 99)


def test_the_interval_from_replicates_is_the_one_from_their_standard_error():
    """``seed_aware_interval`` is ``seed_aware_from_se`` with SE = the replicates' SD (ddof 1) on
    R − 1 degrees of freedom. Kills the replicates or their SE dropped from either call."""
    reps = np.array([0.11, 0.13, 0.12, 0.10, 0.14])
    got = seed_aware_interval(SEEDS, reps)
    assert got == seed_aware_from_se(SEEDS, float(reps.std(ddof=1)), 4)


def test_holm_by_hand_with_a_missing_p_value_and_the_cap_at_1():
    """Four tested p-values (a NaN takes no part): sorted 0.01·4 = 0.04, 0.03·3 = 0.09,
    0.04·2 = 0.08 → 0.09 (never below an earlier one), 0.5·1; and 2·0.6 is capped at 1. Kills
    each step of the running maximum set to None, ``(m − rank) * p`` → ``/ p`` and the NaN filter
    dropped."""
    got = holm([0.01, float("nan"), 0.04, 0.03, 0.5])
    adjusted = [p for p, _ in got]
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1])
    assert adjusted[2:] == pytest.approx([0.09, 0.09, 0.5])
    assert [rejected for _, rejected in got] == [True, False, False, False, False]
    assert holm([0.6, 0.7]) == [(1.0, False), (1.0, False)]


def test_identical_seeds_leave_the_test_set_interval():
    """Seeds that agree exactly have no seed variance to floor the interval with: it is the
    test-set t interval. Kills ``k > 1 and seed_var > 0 and …`` → ``k > 1 or …`` (a zero-width
    interval from the seeds' spread of 0)."""
    got = seed_aware_from_se([0.25, 0.25, 0.25], 0.01, 99)
    assert got.seed_se == 0.0 and got.df == pytest.approx(99.0)
    assert got.high - got.value == pytest.approx(stats.t.ppf(0.975, 99) * 0.01)
    assert got.value - got.low == pytest.approx(stats.t.ppf(0.975, 99) * 0.01)


def test_a_test_error_without_degrees_of_freedom_counts_as_unknown():
    """A standard error kept with 0 degrees of freedom (one replicate) says nothing: the
    interval is the seeds' own t interval. Kills ``… and test_df >= 1`` → ``… or True`` (then a
    division by those 0 degrees of freedom)."""
    seeds = [0.10, 0.12, 0.14]
    seed_se = float(np.std(seeds, ddof=1)) / math.sqrt(3)
    got = seed_aware_from_se(seeds, 0.05, 0)
    assert math.isnan(got.test_se) and got.df == pytest.approx(2.0)
    assert got.high - got.value == pytest.approx(stats.t.ppf(0.975, 2) * seed_se)


@pytest.mark.parametrize("confidence", [0.0, 1.0])
def test_seed_aware_intervals_refuse_a_confidence_of_0_or_1(confidence):
    """Kills ``0.0 < confidence`` → ``<=`` and the message dropped from the refusal."""
    with pytest.raises(ValueError, match=f"confidence must be between 0 and 1, got {confidence}"):
        seed_aware_from_se([0.1, 0.2], 0.01, 50, confidence=confidence)
