"""The study's statistics as pure functions of feature arrays: no files, no networks, no torch.

    features (N, D) ─► mean and covariance ─► Fréchet distance (FID)
                   └─► polynomial-kernel MMD² over subsets (KID)
    any statistic of two samples ─► percentile bootstrap ─► confidence interval

Everything is float64 NumPy. The matrix square root is computed here (no SciPy) from symmetric
eigendecompositions, which stay real and stable when a covariance is singular – as it always is
when a set has fewer images than features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

KID_DEGREE = 3  # the polynomial kernel of Bińkowski et al. (2018), Demystifying MMD GANs, §3
KID_WHOLE_KERNEL_LIMIT = 4096  # rows in both sets together; above it kernels are per subset


@dataclass(frozen=True)
class Estimate:
    """A statistic with its percentile-bootstrap interval (``low``/``high`` are NaN when no
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
    """``statistic(*samples)`` with a percentile-bootstrap interval (Efron, 1979): each of the
    ``resamples`` replicates draws every sample's rows with replacement, independently, and
    recomputes the statistic; the interval is the replicates' (1 − c)/2 and (1 + c)/2 quantiles.

    Caveat, measured in the tests and stated in the docs: FID is biased upwards on small sets and
    a resample repeats rows, so the FID interval sits slightly above the point value; it shows
    the spread, and the point value is the number to report.
    """
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
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Estimate(value, float(low), float(high))


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
