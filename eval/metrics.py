"""The study's statistics as pure functions of feature arrays: no files, no networks, no torch.

    features (N, D) ─► mean and covariance ─► Fréchet distance (FID)
                   │                          └─► FID at several N, fitted to 1/N ─► FID∞
                   └─► polynomial-kernel MMD² (KID), pairs of one image with itself left out
    intervals: KID ─► bootstrap over rows, duplicate pairs dropped (kid_replicates)
               FID ─► half-samples drawn without replacement (half_sample_replicates)
               any ─► value ± z·standard error (interval_from_replicates), so an interval
                      always contains its own estimate; differences of models use the same
                      resamples for every model (paired)
               arms of k training seeds ─► mean ± t·√(seed variance/k + test variance),
                      Welch–Satterthwaite degrees of freedom (seed_aware_interval); p-values
                      from the same t, adjusted over a family by Holm's step-down (holm)

Everything is float64 NumPy. The matrix square root is computed here (no SciPy) from symmetric
eigendecompositions, which stay real and stable when a covariance is singular – as it always is
when a set has fewer images than features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

KID_DEGREE = 3  # the polynomial kernel of Bińkowski et al. (2018), Demystifying MMD GANs, §3
KID_WHOLE_KERNEL_LIMIT = 4096  # rows in both sets together; above it kernels are per subset


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% interval, centred on it (``low``/``high`` are NaN when no
    bootstrap was run)."""

    value: float
    low: float = float("nan")
    high: float = float("nan")


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of ``features`` (N, D), N ≥ 2."""
    x = _as_features(features, "features")
    if len(x) < 2:
        raise ValueError(f"features needs at least 2 rows for a covariance, got {len(x)}.")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between the Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂) (Dowson & Landau, 1982):

        d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr((Σ₁ Σ₂)^½)

    FID is this with the means and covariances of Inception pool features (Heusel et al., 2017).

    Tr((Σ₁Σ₂)^½) is the sum of the square roots of the eigenvalues of Σ₁Σ₂, which equal those
    of the symmetric positive semi-definite S Σ₂ S with S = Σ₁^½ (similar matrices). Both S and
    those eigenvalues come from ``eigh``; eigenvalues within rounding noise of zero (below
    D·ε·λ_max, numpy's rank tolerance) count as zero, since each would otherwise add √noise. So
    singular and near-singular covariances need no added ε and never give complex numbers."""
    mu1 = np.asarray(mu1, dtype=np.float64).reshape(-1)
    mu2 = np.asarray(mu2, dtype=np.float64).reshape(-1)
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    dim = mu1.shape[0]
    if mu2.shape != (dim,):
        raise ValueError(f"mu2 must have shape ({dim},) like mu1, got {mu2.shape}.")
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} must have shape ({dim}, {dim}), got {sigma.shape}.")
    sqrt1 = _psd_sqrt(sigma1)
    product = sqrt1 @ _symmetric(sigma2) @ sqrt1  # similar to Σ₁Σ₂, but symmetric PSD
    trace_sqrt = np.sqrt(_clip_noise(np.linalg.eigvalsh(_symmetric(product)))).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return float(max(distance, 0.0))  # rounding may leave -1e-12 for identical inputs


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets (N₁, D), (N₂, D).

    Same value as :func:`frechet_distance` on :func:`feature_statistics`, computed the cheaper
    way when a set has fewer rows than features: with centred, scaled data A = (X₁ − μ₁)/√(N₁−1)
    and B likewise, Σ₁ = AᵀA and Σ₂ = BᵀB, and the non-zero eigenvalues of Σ₁Σ₂ = AᵀABᵀB are
    those of (ABᵀ)(ABᵀ)ᵀ, so

        Tr((Σ₁ Σ₂)^½) = ‖A Bᵀ‖_*   (the nuclear norm: the sum of singular values of an N₁×N₂
                                     matrix instead of two D×D eigendecompositions).
    """
    x1, x2 = _feature_pair(features1, features2)
    if min(len(x1), len(x2)) < 2:
        raise ValueError("each feature set needs at least 2 rows for a covariance.")
    if max(len(x1), len(x2)) >= x1.shape[1]:
        return frechet_distance(*feature_statistics(x1), *feature_statistics(x2))
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    a = (x1 - mu1) / np.sqrt(len(x1) - 1)  # (N1, D)
    b = (x2 - mu2) / np.sqrt(len(x2) - 1)  # (N2, D)
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu1 - mu2
    distance = diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * trace_sqrt
    return float(max(distance, 0.0))


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Bińkowski et al., 2018): the unbiased estimate of the squared maximum mean
    discrepancy with the polynomial kernel k(x, y) = (xᵀy / D + 1)³, averaged over ``subsets``
    random subsets of m = min(``subset_size``, N₁, N₂) rows drawn without replacement from each
    set. For one subset pair X, Y:

        MMD²ᵤ = 1/(m(m−1)) Σ_{i≠j} k(xᵢ, xⱼ) + 1/(m(m−1)) Σ_{i≠j} k(yᵢ, yⱼ) − 2/m² Σ_{i,j} k(xᵢ, yⱼ)

    Unbiased, so its expectation is 0 when both sets come from one distribution (single values
    may be negative) – unlike FID it is meaningful on small sets. Returns (mean, standard
    deviation over the subsets). Deterministic for a given ``seed``.
    """
    x1, x2 = _feature_pair(features1, features2)
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}.")
    m = min(subset_size, len(x1), len(x2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows in each set, got {len(x1)} and {len(x2)}.")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    # Small sets: every kernel value once, subsets index into it (m² work per subset instead
    # of m²·D). Large sets: kernels of each subset only, to keep memory at O(m²).
    whole = len(x1) + len(x2) <= KID_WHOLE_KERNEL_LIMIT
    if whole:
        k11, k22, k12 = _poly_kernel(x1, x1), _poly_kernel(x2, x2), _poly_kernel(x1, x2)
    for s in range(subsets):
        i = rng.choice(len(x1), m, replace=False)
        j = rng.choice(len(x2), m, replace=False)
        if whole:
            values[s] = _mmd2_unbiased(k11[np.ix_(i, i)], k22[np.ix_(j, j)], k12[np.ix_(i, j)])
        else:
            x, y = x1[i], x2[j]
            values[s] = _mmd2_unbiased(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))
    return float(values.mean()), float(values.std())


def bootstrap(
    statistic: Callable[..., float],
    samples: tuple[np.ndarray, ...],
    *,
    resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """``statistic(*samples)`` with a bootstrap interval (Efron, 1979): each of the
    ``resamples`` replicates draws every sample's rows with replacement, independently, and
    recomputes the statistic; the interval is the estimate ± z · the replicates' standard
    deviation (:func:`interval_from_replicates`), so it contains the estimate.

    For means and proportions (CLIP score, prompt following). Not for FID or KID: a resample
    repeats rows, which biases both upwards – use :func:`half_sample_replicates` and
    :func:`kid_replicates` instead (docs/eval.md)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}.")
    if resamples < 0:
        raise ValueError(f"resamples must be 0 or more, got {resamples}.")
    value = float(statistic(*samples))
    if resamples == 0:
        return Estimate(value)
    rng = np.random.default_rng(seed)
    replicates = np.empty(resamples)
    for r in range(resamples):
        drawn = tuple(s[rng.integers(0, len(s), len(s))] for s in samples)
        replicates[r] = statistic(*drawn)
    return interval_from_replicates(value, replicates, confidence=confidence)


# -- intervals that contain their estimate ----------------------------------------------------


_REDRAWS = 100  # draws tried for one KID bootstrap replicate (kid_replicates)


def interval_from_replicates(
    value: float, replicates: np.ndarray, *, confidence: float = 0.95, scale: float = 1.0
) -> Estimate:
    """The normal-theory interval value ± z·SE, with SE = ``scale`` · (standard deviation of
    ``replicates``) (Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, §13.2, "the
    standard interval"). It is centred on the estimate, so it always contains it – unlike a
    percentile interval of a biased statistic (FID's resamples sit above their estimate, see
    docs/eval.md). NaN bounds when there are fewer than 2 replicates."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}.")
    reps = np.asarray(replicates, dtype=np.float64).reshape(-1)
    if len(reps) < 2:
        return Estimate(float(value))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    half = z * scale * float(reps.std(ddof=1))
    return Estimate(float(value), float(value) - half, float(value) + half)


@dataclass(frozen=True)
class SeedAwareEstimate(Estimate):
    """The mean of an arm's k training seeds (or of k paired per-seed differences) with an
    interval that counts both sources of variance: ``seed_se`` (from the spread over seeds,
    ``s/√k``; NaN for one seed, when it cannot be estimated) and ``test_se`` (the bootstrap
    standard error of the mean over the test set), on ``df`` degrees of freedom."""

    seed_se: float = float("nan")
    test_se: float = float("nan")
    df: float = float("nan")
    p_value: float = float("nan")  # two-sided, against a true value of 0


def seed_aware_interval(
    per_seed: Sequence[float] | np.ndarray,
    test_replicates: np.ndarray,
    *,
    confidence: float = 0.95,
) -> SeedAwareEstimate:
    """Mean of ``per_seed`` ± t_df · √(s²/k + v), the interval of an arm trained with k seeds.

    - s² is the sample variance over the k per-seed values: training-seed variance, plus the
      part of the test-sampling noise that differs from seed to seed (each seed's images are
      its own draw);
    - v is the variance of ``test_replicates``, the bootstrap replicates of the *mean* over
      seeds (every seed resampled with the same real rows and prompts): test-sampling noise,
      the part all seeds share included.

    The seed-specific test noise is so counted twice, once in each term: the interval errs wide
    by at most that, which the shared real set and prompts keep small (docs/eval.md measures
    the coverage at the study's own size). The degrees of freedom are Welch–Satterthwaite's,
    df = (a + b)² / (a²/(k−1) + b²/(R−1)) with a = s²/k, b = v and R replicates: near k − 1
    when seeds dominate (three seeds: t = 4.30, not 1.96), large when the test set does.
    The half-width is never below the plain t interval over the seeds, t_(k−1)·s/√k. The
    estimate is always inside its interval. One seed: the test-only interval (seed
    variance unknown, ``seed_se`` NaN)."""
    reps = np.asarray(test_replicates, dtype=np.float64).reshape(-1)
    test_se = float(reps.std(ddof=1)) if len(reps) > 1 else float("nan")
    return seed_aware_from_se(per_seed, test_se, len(reps) - 1, confidence=confidence)


def seed_aware_from_se(
    per_seed: Sequence[float] | np.ndarray,
    test_se: float,
    test_df: float,
    *,
    confidence: float = 0.95,
) -> SeedAwareEstimate:
    """:func:`seed_aware_interval` from the test-sampling standard error of the mean and its
    degrees of freedom, for results that kept the standard error but not the replicates."""
    from scipy import stats  # lazy: the rest of this module needs only NumPy

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}.")
    values = np.asarray(per_seed, dtype=np.float64).reshape(-1)
    if len(values) < 1:
        raise ValueError("seed_aware_interval needs at least one per-seed value.")
    value, k = float(values.mean()), len(values)
    seed_var = float(values.var(ddof=1)) / k if k > 1 else float("nan")
    test_var = test_se**2 if math.isfinite(test_se) and test_df >= 1 else float("nan")
    parts = [(v, d) for v, d in ((seed_var, k - 1), (test_var, test_df)) if math.isfinite(v)]
    total = sum(v for v, _ in parts)
    seed_se, t_se = math.sqrt(seed_var), math.sqrt(test_var)  # NaN stays NaN
    if total <= 0.0:  # nothing varies (or nothing is known): a point, not an interval
        low = high = value if parts else float("nan")
        return SeedAwareEstimate(value, low, high, seed_se, t_se, float("nan"), float("nan"))
    df = total**2 / sum(v**2 / d for v, d in parts if v > 0)
    se = math.sqrt(total)
    level = 0.5 + confidence / 2.0
    half = float(stats.t.ppf(level, df)) * se
    p_value = float(2.0 * stats.t.sf(abs(value) / se, df))
    if k > 1 and seed_var > 0 and half < float(stats.t.ppf(level, k - 1)) * math.sqrt(seed_var):
        # Never narrower than the t interval over the seeds alone: with a few seeds the
        # Satterthwaite df trusts the well-measured test part for a spread that the seeds'
        # own k − 1 degrees of freedom cannot vouch for.
        df = float(k - 1)
        half = float(stats.t.ppf(level, df)) * math.sqrt(seed_var)
        p_value = max(p_value, float(2.0 * stats.t.sf(abs(value) / math.sqrt(seed_var), df)))
    return SeedAwareEstimate(value, value - half, value + half, seed_se, t_se, df, p_value)


def holm(p_values: Sequence[float], *, alpha: float = 0.05) -> list[tuple[float, bool]]:
    """Holm's step-down adjustment (Holm 1979): (adjusted p, rejected at ``alpha``) per test,
    in the order given. Sorted ascending, the i-th smallest p (from 0) becomes
    max over j ≤ i of min(1, (m − j)·p₍ⱼ₎); a test is rejected when its adjusted p ≤ alpha.
    It controls the family-wise error rate under any dependence between the tests, which the
    paired comparisons of one study have (they share arms, real images and prompts). NaN
    p-values take no part and come back as (NaN, False)."""
    p = np.asarray(p_values, dtype=np.float64)
    tested = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(len(p), np.nan)
    m = len(tested)
    running = 0.0
    for rank, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[index])))
        adjusted[index] = running
    return [(float(a), bool(np.isfinite(a) and a <= alpha)) for a in adjusted]


def same_row_ids(*feature_sets: np.ndarray) -> list[np.ndarray]:
    """For each set, an id per row such that identical rows – in one set or across sets – share
    an id. Identical Inception features mean the same image: a pair of an image with itself
    says nothing about the distance between two distributions."""
    sizes = [len(s) for s in feature_sets]
    stacked = np.concatenate([np.asarray(s, dtype=np.float64) for s in feature_sets])
    _, inverse = np.unique(stacked, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return list(np.split(inverse, np.cumsum(sizes)[:-1]))


def poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(xᵢ, yⱼ) = (xᵢᵀyⱼ / D + 1)³ for all pairs: (Nx, Ny)."""
    return _poly_kernel(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


@dataclass(frozen=True)
class KernelBlock:
    """One set's rows as the weighted MMD needs them: its kernel diagonal and row ids."""

    ids: np.ndarray  # (N,) from same_row_ids
    diagonal: np.ndarray  # (N,) k(xᵢ, xᵢ)


def weighted_pair_mean(
    kernel: np.ndarray,
    w: np.ndarray,
    v: np.ndarray,
    block_x: KernelBlock,
    block_y: KernelBlock,
) -> float:
    """The mean of k(x, y) over all pairs of draws, row i drawn wᵢ times on one side and row j
    vⱼ times on the other, leaving out every pair of one image with itself (same id):

        Σᵢⱼ wᵢ vⱼ K_ij − Σ_id W_id V_id κ_id          W_id = Σ_{i: id(i) = id} wᵢ, κ_id = k(x, x)
        ─────────────────────────────────────
              (Σ w)(Σ v) − Σ_id W_id V_id

    With w = v = 1 and one set against itself this is the off-diagonal mean of the unbiased
    MMD²; with a bootstrap's counts as weights it drops the duplicate pairs that resampling
    with replacement creates (which otherwise inflate the within-set terms)."""
    size = int(max(block_x.ids.max(initial=-1), block_y.ids.max(initial=-1))) + 1
    w_id = np.bincount(block_x.ids, weights=w, minlength=size)
    v_id = np.bincount(block_y.ids, weights=v, minlength=size)
    kappa = np.zeros(size)
    kappa[block_x.ids] = block_x.diagonal
    kappa[block_y.ids] = block_y.diagonal
    total = float(w @ kernel @ v) - float((w_id * v_id * kappa).sum())
    count = float(w.sum() * v.sum()) - float((w_id * v_id).sum())
    if count <= 0:
        raise ValueError("KID needs at least 2 different images in each set.")
    return total / count


def kid_value(features1: np.ndarray, features2: np.ndarray) -> float:
    """KID on all rows: the unbiased MMD² (Bińkowski et al. 2018, eq. 4 with the cubic
    polynomial kernel) of the two whole sets, pairs of one image with itself left out – so a
    set against itself gives exactly 0. Equals :func:`kernel_inception_distance` with one
    subset of every row when the sets share no image."""
    x1, x2 = _feature_pair(features1, features2)
    return kid_replicates(x1, [x2], resamples=0)[0][0]


def kid_replicates(
    real: np.ndarray,
    generated: Sequence[np.ndarray],
    *,
    prompts: Sequence[np.ndarray] | None = None,
    resamples: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """KID of each generated set against ``real``, and its bootstrap replicates, paired.

    Returns (values (M,), replicates (resamples, M)). Each replicate draws the real rows with
    replacement once and the prompts with replacement once, and every model uses both draws:
    row j of model m counts as many times as its prompt ``prompts[m][j]`` was drawn (default:
    row j answers prompt j). So the replicates of a difference between models are the
    differences of their replicates – a paired bootstrap. Duplicate pairs are dropped
    (:func:`weighted_pair_mean`), which keeps the replicates centred on the estimate; the
    plain bootstrap's duplicates bias every replicate upwards (tests/eval/test_metrics.py
    measures both).

    Memory is O(N²): the kernels are computed once and each replicate is a weighted sum."""
    x = _as_features(real, "real")
    sets = [_as_features(g, f"generated[{m}]") for m, g in enumerate(generated)]
    if prompts is None:
        prompts = [np.arange(len(g)) for g in sets]
    prompts = [np.asarray(p, dtype=np.int64) for p in prompts]
    if len(prompts) != len(sets) or any(
        len(p) != len(g) for p, g in zip(prompts, sets, strict=True)
    ):
        raise ValueError("prompts must give one prompt index per generated row, per model.")
    ids = same_row_ids(x, *sets)
    k_xx = _poly_kernel(x, x)
    real_block = KernelBlock(ids[0], np.diag(k_xx).copy())
    blocks, k_gg, k_xg = [], [], []
    for m, g in enumerate(sets):
        k = _poly_kernel(g, g)
        k_gg.append(k)
        k_xg.append(_poly_kernel(x, g))
        blocks.append(KernelBlock(ids[m + 1], np.diag(k).copy()))
    n_prompts = int(max((p.max(initial=-1) for p in prompts), default=-1)) + 1

    def values(w_real: np.ndarray, w_prompt: np.ndarray) -> np.ndarray:
        within_real = weighted_pair_mean(k_xx, w_real, w_real, real_block, real_block)
        out = np.empty(len(sets))
        for m in range(len(sets)):
            w = w_prompt[prompts[m]]
            within = weighted_pair_mean(k_gg[m], w, w, blocks[m], blocks[m])
            cross = weighted_pair_mean(k_xg[m], w_real, w, real_block, blocks[m])
            out[m] = within_real + within - 2.0 * cross
        return out

    point = values(np.ones(len(x)), np.ones(n_prompts))
    rng = np.random.default_rng(seed)
    reps = np.empty((max(resamples, 0), len(sets)))
    for r in range(max(resamples, 0)):
        # A draw that leaves a set with a single distinct image has no pair to average: it is
        # drawn again (only tiny sets, a few images per style, ever meet one).
        for _attempt in range(_REDRAWS):
            w_real = np.bincount(rng.integers(0, len(x), len(x)), minlength=len(x)).astype(float)
            w_prompt = np.bincount(rng.integers(0, n_prompts, n_prompts), minlength=n_prompts)
            try:
                reps[r] = values(w_real, w_prompt.astype(float))
                break
            except ValueError:
                continue
        else:
            raise ValueError("KID's bootstrap found no resample with 2 different images per set.")
    return point, reps


def half_sample_replicates(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_real: int,
    n_prompts: int,
    *,
    resamples: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Replicates of ``statistic(real_rows, prompt_indices)`` on half-samples drawn without
    replacement: ⌊N/2⌋ of the real rows and ⌊P/2⌋ of the prompts, the same halves for every
    model the statistic covers (paired). (resamples, …).

    No row repeats, so no replicate is biased by duplicates, which is what breaks the plain
    bootstrap of FID. This is the delete-d jackknife with d = N/2 (Shao & Wu 1989, *A General
    Theory for Jackknife Variance Estimation*): Var(θ_N) ≈ (N − d)/d · Var(θ_half) = Var(θ_half),
    so the replicates' standard deviation is the standard error of the full-sample statistic
    (use ``scale=1`` in :func:`interval_from_replicates`). It is an estimate of the spread, not
    of the bias: FID on fewer images than features stays biased upwards (docs/eval.md)."""
    if min(n_real, n_prompts) < 4:
        raise ValueError(f"half-samples need at least 4 rows, got {n_real} and {n_prompts}.")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        real_rows = np.sort(rng.choice(n_real, n_real // 2, replace=False))
        prompt_rows = np.sort(rng.choice(n_prompts, n_prompts // 2, replace=False))
        out.append(np.asarray(statistic(real_rows, prompt_rows), dtype=np.float64))
    return np.array(out)


def fid_infinity(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    points: int = 8,
    smallest: float = 0.5,
    seed: int = 0,
) -> tuple[float, np.ndarray, np.ndarray]:
    """FID∞ (Chong & Forsyth 2020, *Effectively Unbiased FID and Inception Score and where to
    find them*, §3): FID's bias is close to linear in 1/N, so FID is computed at ``points``
    sizes – fractions from ``smallest`` to 1 of both sets, drawn without replacement – a line
    FID = a + b/N is fitted by least squares, and its intercept a (N → ∞) is FID∞.

    Returns (FID∞, the sizes N of the second set, the FID at each). Only meaningful where
    every size has at least as many rows as features: below that the covariance is singular
    and the 1/N law does not hold; callers check (eval/study.py)."""
    x1, x2 = _feature_pair(features1, features2)
    if not 0.0 < smallest < 1.0 or points < 2:
        raise ValueError("fid_infinity needs 0 < smallest < 1 and points ≥ 2.")
    rng = np.random.default_rng(seed)
    fractions = np.linspace(smallest, 1.0, points)
    sizes, fids = [], []
    for f in fractions:
        n1, n2 = max(2, round(f * len(x1))), max(2, round(f * len(x2)))
        a = x1[rng.choice(len(x1), n1, replace=False)]
        b = x2[rng.choice(len(x2), n2, replace=False)]
        sizes.append(n2)
        fids.append(frechet_distance_from_features(a, b))
    sizes_arr, fids_arr = np.array(sizes, dtype=np.float64), np.array(fids)
    design = np.stack([np.ones_like(sizes_arr), 1.0 / sizes_arr], axis=1)  # (points, 2)
    intercept, _slope = np.linalg.lstsq(design, fids_arr, rcond=None)[0]
    return float(intercept), sizes_arr, fids_arr


def kernel_expectation_gaussians(
    mean1: np.ndarray, std1: np.ndarray, mean2: np.ndarray, std2: np.ndarray
) -> float:
    """E k(x, y) of KID's kernel for independent x ~ N(μ₁, diag σ₁²), y ~ N(μ₂, diag σ₂²):
    the exact value a coverage test compares KID with. With s = xᵀy / D = Σᵢ zᵢ / D and
    zᵢ = xᵢyᵢ independent, E(1 + s)³ = 1 + 3E s + 3E s² + E s³, and the moments of s come from
    the additive cumulants of the zᵢ, whose raw moments are products of normal moments:
    E z = ab, E z² = (a² + σ²)(b² + τ²), E z³ = (a³ + 3aσ²)(b³ + 3bτ²)."""
    a, s = np.asarray(mean1, float), np.asarray(std1, float) * np.ones_like(mean1, dtype=float)
    b, t = np.asarray(mean2, float), np.asarray(std2, float) * np.ones_like(mean2, dtype=float)
    dim = len(a)
    m1 = a * b
    m2 = (a**2 + s**2) * (b**2 + t**2)
    m3 = (a**3 + 3 * a * s**2) * (b**3 + 3 * b * t**2)
    k1 = m1.sum() / dim
    k2 = (m2 - m1**2).sum() / dim**2
    k3 = (m3 - 3 * m2 * m1 + 2 * m1**3).sum() / dim**3
    e1, e2, e3 = k1, k2 + k1**2, k3 + 3 * k2 * k1 + k1**3
    return float(1.0 + 3.0 * e1 + 3.0 * e2 + e3)


# -- helpers -------------------------------------------------------------------------------


def _feature_pair(features1: np.ndarray, features2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets checked, as float arrays of the same width."""
    x1 = _as_features(features1, "features1")
    x2 = _as_features(features2, "features2")
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"features1 and features2 must have the same width, got {x1.shape[1]} and "
            f"{x2.shape[1]}."
        )
    return x1, x2


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values.")
    return x


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(xᵢ, yⱼ) = (xᵢᵀyⱼ / D + 1)³ for all pairs: (Nx, Ny)."""
    return (x @ y.T / x.shape[1] + 1.0) ** KID_DEGREE


def _mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """The unbiased MMD² of one subset pair from its (m, m) kernel matrices."""
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return (matrix + matrix.T) / 2.0  # removes the asymmetry rounding leaves in a covariance


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a positive semi-definite matrix, negative rounding noise in
    its eigenvalues clipped to zero."""
    eigenvalues, eigenvectors = np.linalg.eigh(_symmetric(matrix))
    roots = np.sqrt(_clip_noise(eigenvalues))
    return (eigenvectors * roots) @ eigenvectors.T


def _clip_noise(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise around zero set to zero: below
    D·ε·λ_max they are indistinguishable from zero (the tolerance ``numpy.linalg.matrix_rank``
    uses)."""
    top = float(np.abs(eigenvalues).max(initial=0.0))
    tolerance = top * len(eigenvalues) * np.finfo(np.float64).eps
    return np.where(eigenvalues > tolerance, eigenvalues, 0.0)
