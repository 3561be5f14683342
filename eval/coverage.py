"""Does the study's seed-aware interval cover the truth at the study's own size? A simulation
with a known answer (``python -m eval coverage``; docs/eval.md reports its figures).

    real P = N(μ, diag σ²), μ and σ shaped like Inception pool features (non-negative, skewed)
    an arm = a distribution over training seeds: seed s paints Q_s = N(μ + δ + s, diag σ_q²),
             s ~ N(0, τ² I) – every retraining lands somewhere else
    the truth = the arm's KID averaged over its seeds, E_s MMD²(P, Q_s), from the kernel's
             closed-form expectations (eval.metrics.kernel_expectation_gaussians)
    a trial = 600 real and, per seed, 80 generated rows in 2048 dimensions (the study's size),
             KID of each seed with the paired bootstrap, then the arm's interval over k seeds

Each trial counts whether the seed-aware interval (eval.metrics.seed_aware_interval) and the
test-only interval (the bootstrap of the mean alone) hold the truth.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from eval.metrics import (
    interval_from_replicates,
    kernel_expectation_gaussians,
    kid_replicates,
    seed_aware_interval,
)


@dataclass(frozen=True)
class Scenario:
    """One simulated study. ``seed_sd`` (τ) sets how far retraining moves a model; the default
    makes the spread of KID over seeds about four times its test-sampling standard error, as
    the committed miniature study measured (docs/miniature.md)."""

    seeds: int = 3
    n_real: int = 600
    n_generated: int = 80
    dim: int = 2048
    seed_sd: float = 0.4
    shift_sd: float = 0.05  # δ: the arm's own systematic offset from the real features
    resamples: int = 100
    truth_draws: int = 4000  # seeds averaged for the truth


@dataclass(frozen=True)
class Coverage:
    trials: int
    seed_aware: int  # trials whose seed-aware interval held the truth
    test_only: int
    seed_aware_width: float  # mean half-width
    test_only_width: float
    truth: float
    kid_seed_sd: float  # the spread of one seed's KID over seeds, measured in the trials
    kid_test_se: float  # the mean bootstrap standard error of one seed's KID

    def share(self, hits: int) -> tuple[float, float, float]:
        """Share of trials with its 95% Wilson interval."""
        n, p, z = self.trials, hits / self.trials, 1.959963984540054
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return p, max(0.0, centre - half), min(1.0, centre + half)


def _features_like_inception(dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension means and standard deviations shaped like Inception-v3 pool features:
    non-negative, most small, a long tail (gamma-distributed)."""
    return rng.gamma(1.5, 0.25, dim), rng.gamma(2.0, 0.15, dim) + 0.05


def _kid_of(mean_p: np.ndarray, sd_p: np.ndarray, mean_q: np.ndarray, sd_q: np.ndarray) -> float:
    return (
        kernel_expectation_gaussians(mean_p, sd_p, mean_p, sd_p)
        + kernel_expectation_gaussians(mean_q, sd_q, mean_q, sd_q)
        - 2.0 * kernel_expectation_gaussians(mean_p, sd_p, mean_q, sd_q)
    )


def simulate(scenario: Scenario, trials: int, *, seed: int = 0) -> Coverage:
    rng = np.random.default_rng(seed)
    mean_p, sd_p = _features_like_inception(scenario.dim, rng)
    mean_q = mean_p + rng.normal(0.0, scenario.shift_sd, scenario.dim)
    sd_q = sd_p * rng.uniform(0.8, 1.2, scenario.dim)
    # 1. The truth: the arm's KID averaged over its distribution of seeds.
    offsets = rng.normal(0.0, scenario.seed_sd, (scenario.truth_draws, scenario.dim))
    truth = float(np.mean([_kid_of(mean_p, sd_p, mean_q + o, sd_q) for o in offsets]))
    # 2. Trials: a new real sample, k new seeds, each with its own generated sample.
    aware = test = 0
    aware_width, test_width, seed_sds, test_ses = [], [], [], []
    for trial in range(trials):
        real = mean_p + sd_p * rng.standard_normal((scenario.n_real, scenario.dim))
        generated = [
            mean_q
            + rng.normal(0.0, scenario.seed_sd, scenario.dim)
            + sd_q * rng.standard_normal((scenario.n_generated, scenario.dim))
            for _ in range(scenario.seeds)
        ]
        prompts = [np.arange(scenario.n_generated)] * scenario.seeds
        values, reps = kid_replicates(
            real, generated, prompts=prompts, resamples=scenario.resamples, seed=trial
        )
        mean_reps = reps.mean(axis=1)
        both = seed_aware_interval(values, mean_reps)
        alone = interval_from_replicates(both.value, mean_reps)
        aware += both.low <= truth <= both.high
        test += alone.low <= truth <= alone.high
        aware_width.append((both.high - both.low) / 2)
        test_width.append((alone.high - alone.low) / 2)
        seed_sds.append(float(values.std(ddof=1)))
        test_ses.append(float(reps.std(axis=0, ddof=1).mean()))
    return Coverage(
        trials,
        aware,
        test,
        float(np.mean(aware_width)),
        float(np.mean(test_width)),
        truth,
        float(np.mean(seed_sds)),
        float(np.mean(test_ses)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval coverage",
        description="Coverage of the seed-aware and the test-only 95%% intervals of an arm's "
        "mean KID, simulated at the study's size with a known truth.",
    )
    parser.add_argument("--trials", type=int, default=400, help="simulated studies (400)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per arm (3)")
    parser.add_argument(
        "--seed-sd",
        type=float,
        action="append",
        help="τ, how far a retraining moves the features (repeatable; default 0.4 and 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation (0)")
    args = parser.parse_args(argv)
    if args.trials < 2 or args.seeds < 2:
        parser.error("--trials and --seeds must be at least 2")
    rows = []
    for tau in args.seed_sd or [Scenario.seed_sd, 0.0]:
        scenario = Scenario(seeds=args.seeds, seed_sd=tau)
        result = simulate(scenario, args.trials, seed=args.seed)
        aware, test = result.share(result.seed_aware), result.share(result.test_only)
        print(
            f"τ = {tau:g}, {args.seeds} seeds, {args.trials} trials "
            f"(KID over seeds ± {result.kid_seed_sd * 1e3:.2f}×10⁻³, test SE "
            f"{result.kid_test_se * 1e3:.2f}×10⁻³): seed-aware {aware[0]:.1%} "
            f"({aware[1]:.1%} – {aware[2]:.1%}), test only {test[0]:.1%} "
            f"({test[1]:.1%} – {test[2]:.1%})",
            flush=True,
        )
        rows.append({"scenario": asdict(scenario), **asdict(result)})
    print(json.dumps(rows, indent=2))
    return 0
