"""How many training seeds and generated images a study needs to see an effect of a given size
(``python -m eval power``; docs/miniature.md shows the curve for the miniature study).

The study's decision on a paired difference is the seed-aware t test of
:func:`eval.metrics.seed_aware_interval`: mean of k per-seed differences over its standard error
√(σ_d²/k + SE_test²). From a pilot run:

- σ_d, the standard deviation of the per-seed paired differences (``spread`` in a study's
  ``comparisons``): it shrinks as 1/√k with more seeds;
- SE_test, the test-sampling standard error of the mean difference (the *test only* interval's
  half-width / 1.96) at the pilot's n generated images per model: it does not shrink with seeds
  (every seed shares the real images and prompts) but with more images, taken here as
  SE_test · √(n_pilot / n) – optimistic, since the real set's share of it stays.

Power is then P(|T| > t_(1−α/2, k−1)) for T noncentral t with k − 1 degrees of freedom and
noncentrality effect / SE (the Satterthwaite df of the real test is at least k − 1, so this
errs low). α is the family-wise level divided by the family's size, Holm's first and strictest
step, so the number holds for the comparison however the others turn out.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence


def standard_error(seed_sd: float, test_se: float, seeds: int, images: int, pilot: int) -> float:
    return math.sqrt(seed_sd**2 / seeds + test_se**2 * pilot / images)


def power(effect: float, se: float, seeds: int, alpha: float) -> float:
    """The chance that the two-sided t test on ``seeds`` − 1 degrees of freedom at level
    ``alpha`` rejects "no difference" when the true difference is ``effect``."""
    from scipy import stats  # lazy, as in eval.metrics

    if seeds < 2:
        raise ValueError(f"seeds must be at least 2, got {seeds}.")
    df, ncp = seeds - 1, abs(effect) / se
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval power",
        description="Power of the study's seed-aware test of a paired difference, for a grid "
        "of training seeds and generated images per model, from a pilot's variances.",
    )
    parser.add_argument("--effect", type=float, required=True, help="difference to detect")
    parser.add_argument("--seed-sd", type=float, required=True, help="pilot's σ_d (spread)")
    parser.add_argument("--test-se", type=float, required=True, help="pilot's test-only SE")
    parser.add_argument("--pilot-images", type=int, default=80, help="pilot's n per model (80)")
    parser.add_argument("--family", type=int, default=1, help="tests in the Holm family (1)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise level (0.05)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 8, 12, 20])
    parser.add_argument("--images", type=int, nargs="+", default=[80, 200, 500, 1000])
    args = parser.parse_args(argv)
    for name in ("effect", "seed_sd", "test_se"):
        if not math.isfinite(getattr(args, name)) or getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be a finite number ≥ 0")
    if args.test_se == 0 and args.seed_sd == 0:
        parser.error("--seed-sd and --test-se cannot both be 0")
    if min(args.seeds) < 2 or min(args.images) < 1 or args.pilot_images < 1 or args.family < 1:
        parser.error("--seeds need at least 2; --images, --pilot-images and --family at least 1")
    alpha = args.alpha / args.family
    print(
        f"power to detect {args.effect:g} (σ_d {args.seed_sd:g}, test SE {args.test_se:g} at "
        f"{args.pilot_images} images; two-sided α = {args.alpha:g}/{args.family})"
    )
    print("seeds \\ images " + "".join(f"{n:>8}" for n in args.images))
    for k in args.seeds:
        cells = [
            power(
                args.effect,
                standard_error(args.seed_sd, args.test_se, k, n, args.pilot_images),
                k,
                alpha,
            )
            for n in args.images
        ]
        print(f"{k:>14} " + "".join(f"{p:>8.0%}" for p in cells))
    return 0
