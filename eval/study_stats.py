"""The study's statistics (eval/study.py): each model's FID and KID with their intervals, and
the paired statistics across models – differences between arms, the pooled rows of an arm
trained with several seeds, and Holm's adjustment over the decided comparisons. Everything
here works on features and per-prompt results already measured; the resampling itself is in
eval/metrics.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from eval.metrics import (
    Estimate,
    fid_infinity,
    frechet_distance_from_features,
    half_sample_replicates,
    holm,
    interval_from_replicates,
    kid_replicates,
    seed_aware_interval,
)

HALF_SAMPLE_MIN = 4  # rows a side that half-sampling needs (eval/metrics.py)


def fid_estimate(real: np.ndarray, fake: np.ndarray, *, resamples: int, seed: int) -> Estimate:
    """FID with the half-sampling interval (:func:`~eval.metrics.half_sample_replicates`);
    rows are treated as unpaired (two folders)."""
    value = frechet_distance_from_features(real, fake)
    if resamples == 0 or min(len(real), len(fake)) < HALF_SAMPLE_MIN:
        return Estimate(value)

    def statistic(real_rows: np.ndarray, fake_rows: np.ndarray) -> np.ndarray:
        return np.array([frechet_distance_from_features(real[real_rows], fake[fake_rows])])

    reps = half_sample_replicates(statistic, len(real), len(fake), resamples=resamples, seed=seed)
    return _non_negative(interval_from_replicates(value, reps[:, 0]))


def _non_negative(estimate: Estimate) -> Estimate:
    """FID is a squared distance: an interval's lower end below 0 becomes 0 (it still holds
    the estimate, which is ≥ 0)."""
    return Estimate(estimate.value, max(0.0, estimate.low), estimate.high)


def kid_estimate(
    real: np.ndarray, fake: np.ndarray, *, resamples: int, seed: int
) -> tuple[Estimate, float]:
    """KID on every row with its duplicate-free bootstrap interval, and the replicates'
    standard deviation (the standard error)."""
    values, reps = kid_replicates(
        real, [fake], prompts=[np.arange(len(fake))], resamples=resamples, seed=seed
    )
    estimate = interval_from_replicates(values[0], reps[:, 0])
    return estimate, float(reps[:, 0].std(ddof=1)) if len(reps) > 1 else float("nan")


@dataclass
class Measured:
    """One model's row of results.json, and what the joint (paired) statistics need."""

    row: dict[str, Any]
    features: np.ndarray | None = None  # (kept, D)
    prompts: np.ndarray | None = None  # (kept,) the prompt index of each kept image
    hits: np.ndarray | None = None  # (kept,) palette test: 1 where it lands on its own label


def joint_metrics(
    measured: Sequence[Measured],
    real: np.ndarray,
    dim: int,
    *,
    bootstrap: int,
    fid_resamples: int,
    seed: int,
    primary: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """FID and KID of every model with intervals, and the paired statistics: differences
    between models and the pooled rows of arms trained with several seeds; ``primary``
    (group a, group b, metric), the one test declared before the run, comes out as
    ``primary`` and stays out of the Holm family (:func:`adjust_for_multiplicity`).

    Every model is resampled with the same draws – the same real rows and the same prompts
    (:func:`~eval.metrics.kid_replicates`, :func:`~eval.metrics.half_sample_replicates`,
    prompts drawn with replacement for the palette test) – so the replicates of a difference
    or of a mean over seeds are that combination of the models' replicates. Those intervals
    cover test-set sampling; the spread over seeds (when a group has several) covers
    training. ``bootstrap`` and ``fid_resamples`` are the resample counts (StudyConfig's),
    ``seed`` seeds every draw."""
    usable = [m for m in measured if m.features is not None]
    if not usable:
        return {"groups": [], "comparisons": []}
    n_prompts = max(m.row["prompts"] for m in usable)
    resamples = bootstrap
    # 1. KID: values and paired, duplicate-free bootstrap replicates (R, M).
    kid_values, kid_reps = kid_replicates(
        real,
        [m.features for m in usable],
        prompts=[m.prompts for m in usable],
        resamples=resamples,
        seed=seed,
    )
    # 2. FID: values and paired half-samples without replacement (R', M).
    fid_values = np.array([frechet_distance_from_features(real, m.features) for m in usable])

    def fids(real_rows: np.ndarray, prompt_rows: np.ndarray) -> np.ndarray:
        return np.array(
            [
                frechet_distance_from_features(
                    real[real_rows], m.features[np.isin(m.prompts, prompt_rows)]
                )
                for m in usable
            ]
        )

    fid_reps = (
        half_sample_replicates(fids, len(real), n_prompts, resamples=fid_resamples, seed=seed)
        # Half-samples need 4 rows a side; fewer (a style with a handful of test covers) get
        # FID without an interval, as with --fid-resamples 0, rather than no study at all.
        if fid_resamples and resamples and min(len(real), n_prompts) >= HALF_SAMPLE_MIN
        else np.empty((0, len(usable)))
    )
    # 3. Palette test: hits on a common prompt axis (NaN where an image was dropped).
    follow_values = follow_reps = None
    if all(m.hits is not None for m in usable):
        grid = np.full((len(usable), n_prompts), np.nan)
        for k, m in enumerate(usable):
            grid[k, m.prompts] = m.hits
        follow_values = np.nanmean(grid, axis=1)
        rng = np.random.default_rng(seed)
        follow_reps = np.array(
            [
                np.nanmean(grid[:, rng.integers(0, n_prompts, n_prompts)], axis=1)
                for _ in range(resamples)
            ]
        ).reshape(resamples, len(usable))
    metrics = {
        "kid": (kid_values, kid_reps),
        "fid": (fid_values, fid_reps),
        **({"prompt_following": (follow_values, follow_reps)} if follow_values is not None else {}),
    }
    if follow_values is not None and follow_reps is not None:
        # Each model against its own chance line: the permutation null's mean differs from
        # model to model (it depends on how its predictions spread over the labels), so raw
        # accuracies are not comparable; the gain over the null is (constant per model, so the
        # replicates shift with it).
        chance = np.array([m.row["prompt_following"]["chance"] for m in usable])
        metrics["prompt_gain"] = (follow_values - chance, follow_reps - chance)
        for k, m in enumerate(usable):
            m.row["prompt_following"]["gain"] = float(follow_values[k] - chance[k])
    for k, m in enumerate(usable):
        n_real, n_fake = len(real), len(m.features)
        fid = _non_negative(interval_from_replicates(fid_values[k], fid_reps[:, k]))
        m.row["fid"] = {
            **asdict(fid),
            "method": "half-samples without replacement (delete-N/2 jackknife)",
            "resamples": len(fid_reps),
            "n_real": n_real,
            "n_generated": n_fake,
            "dim": dim,
            "reliable": min(n_real, n_fake) >= dim,
        }
        if min(n_real, n_fake) // 2 >= dim:  # every fitted size has N ≥ D (Chong & Forsyth)
            infinite, sizes, values = fid_infinity(real, m.features, seed=seed)
            m.row["fid"]["infinity"] = {
                "value": infinite,
                "sizes": sizes.tolist(),
                "fids": values.tolist(),
            }
        kid = interval_from_replicates(kid_values[k], kid_reps[:, k])
        m.row["kid"] = {
            **asdict(kid),
            "method": "every row; bootstrap with duplicate pairs dropped",
            "std_error": float(kid_reps[:, k].std(ddof=1)) if len(kid_reps) > 1 else None,
            "resamples": len(kid_reps),
            "n_real": n_real,
            "n_generated": n_fake,
        }
    labels = [m.row["label"] for m in usable]
    groups: dict[str, list[int]] = {}
    for k, m in enumerate(usable):
        groups.setdefault(m.row["group"], []).append(k)
    group_rows = []
    for name, members in groups.items():
        row = {"group": name, "members": [labels[k] for k in members], "seeds": len(members)}
        row.update({metric: pooled(v, r, members, metric) for metric, (v, r) in metrics.items()})
        group_rows.append(row)
    comparisons = []
    names = list(groups)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            row = {"a": a, "b": b, "seeds": min(len(groups[a]), len(groups[b]))}
            row.update({"seeds_a": len(groups[a]), "seeds_b": len(groups[b])})
            row.update(
                {
                    metric: difference(v, r, groups[a], groups[b])
                    for metric, (v, r) in metrics.items()
                }
            )
            comparisons.append(row)
    declared = primary_test(comparisons, primary) if primary is not None else None
    family = adjust_for_multiplicity([m.row for m in usable], comparisons, primary=primary)
    return {
        **({"primary": declared} if declared is not None else {}),
        "groups": group_rows,
        "comparisons": comparisons,
        "multiplicity": family,
    }


def primary_test(
    comparisons: Sequence[dict[str, Any]], primary: tuple[str, str, str]
) -> dict[str, Any]:
    """The declared primary test's result: b − a on ``metric`` with its seed-aware interval
    and unadjusted two-sided p-value (it is the only test at α = 0.05, so no adjustment), and
    whether it rejects "no difference". Its comparison's metric is marked ``primary``."""
    a, b, metric = primary
    row = next((c for c in comparisons if (c["a"], c["b"]) == (a, b)), None)
    if row is None or metric not in row:
        raise ValueError(f"the primary test {a!r} → {b!r} on {metric} has no comparison here.")
    row[metric]["primary"] = True
    result = row[metric]
    p_value = result.get("p_value")
    return {
        "a": a,
        "b": b,
        "metric": metric,
        "declared": "before the run",
        "seeds_a": row["seeds_a"],
        "seeds_b": row["seeds_b"],
        **{key: result[key] for key in ("value", "low", "high", "test_low", "test_high")},
        **{key: result[key] for key in ("seed_se", "test_se", "df", "p_value", "interval")},
        "alpha": 0.05,
        "rejects_no_difference": p_value is not None and p_value <= 0.05,
    }


# The metrics whose paired comparisons and permutation tests make the family that decisions are
# taken on (Holm-adjusted together): KID, the declared primary metric, and prompt following's
# gain over each model's own chance line. FID is reported, never decided on: at fewer images
# than feature dimensions it is mostly bias, and the bias depends on each model's spread.
DECIDED_METRICS = ("kid", "prompt_gain")


def _test_only(estimate: Estimate) -> dict[str, float]:
    return {"test_low": estimate.low, "test_high": estimate.high}


def _known(value: float) -> float | None:
    """None for what could not be estimated (one seed has no seed variance): JSON has no NaN."""
    return value if np.isfinite(value) else None


def clipped(metric: str, low: float, high: float) -> tuple[float, float]:
    """FID's interval stops at 0 and a share's at 0 and 1 (both still hold the estimate)."""
    if metric == "fid":
        return max(0.0, low), high
    if metric == "prompt_following":
        return max(0.0, low), min(1.0, high)
    return low, high


def pooled(
    values: np.ndarray, reps: np.ndarray, members: Sequence[int], metric: str = "kid"
) -> dict[str, Any]:
    """The mean over an arm's seeds with its seed-aware interval
    (:func:`~eval.metrics.seed_aware_interval`: training seeds and test set together), the
    test-sampling interval alone (``test_low``/``test_high``, the replicates of the mean) and
    the training spread (the standard deviation over seeds; None for a single seed)."""
    members = list(members)
    mean_reps = reps[:, members].mean(axis=1)
    both = seed_aware_interval(values[members], mean_reps)
    test = interval_from_replicates(both.value, mean_reps)
    low, high = clipped(metric, both.low, both.high)
    test_low, test_high = clipped(metric, test.low, test.high)
    spread = float(values[members].std(ddof=1)) if len(members) > 1 else None
    return {
        "value": both.value,
        "low": low,
        "high": high,
        "test_low": test_low,
        "test_high": test_high,
        "seed_se": _known(both.seed_se),
        "test_se": _known(both.test_se),
        "df": _known(both.df),
        "interval": "seeds and test set" if len(members) > 1 else "test set only (one seed)",
        "spread": spread,
        "seeds": len(members),
    }


def difference(
    values: np.ndarray, reps: np.ndarray, a: Sequence[int], b: Sequence[int]
) -> dict[str, Any]:
    """Arm b minus arm a (each the mean over its seeds), paired twice over: seed k of b against
    seed k of a (or against a's only model, a fixed baseline), and every model resampled with
    the same real rows and prompts. The interval is seed-aware over the per-seed differences
    (:func:`~eval.metrics.seed_aware_interval`), with its two-sided p-value against no
    difference; ``test_low``/``test_high`` is the test-sampling interval alone. The spread is
    the standard deviation of the per-seed differences."""
    a, b = list(a), list(b)
    coefficients = np.zeros(len(values))
    coefficients[b] += 1.0 / len(b)
    coefficients[a] -= 1.0 / len(a)
    diff_reps = reps @ coefficients
    test = interval_from_replicates(values @ coefficients, diff_reps)
    pairs = [(a[k % len(a)], b[k]) for k in range(len(b))] if len(a) in (1, len(b)) else []
    per_seed = [values[j] - values[i] for i, j in pairs]
    if per_seed:
        both = seed_aware_interval(per_seed, diff_reps)
        interval = "seeds and test set" if len(per_seed) > 1 else "test set only (one seed)"
    else:  # arms of unequal seed counts: no pairs, the test-only interval is all there is
        both = seed_aware_interval([test.value], diff_reps)
        interval = "test set only (unpaired seeds)"
    spread = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    return {
        "value": both.value,
        "low": both.low,
        "high": both.high,
        **_test_only(test),
        "seed_se": _known(both.seed_se),
        "test_se": _known(both.test_se),
        "df": _known(both.df),
        "p_value": _known(both.p_value),
        "interval": interval,
        "spread": spread,
    }


def adjust_for_multiplicity(
    models: Sequence[dict[str, Any]],
    comparisons: Sequence[dict[str, Any]],
    *,
    primary: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """Holm's step-down over one family: every paired comparison on the decided metrics and
    every model's permutation test of prompt following, except the declared ``primary`` test
    (group a, group b, metric), which is tested alone. Each member gets ``holm_p`` and
    ``survives`` (adjusted p ≤ 0.05) written into its own dict; returns the family's summary."""
    members: list[dict[str, Any]] = []
    for row in comparisons:
        members += [
            row[m]
            for m in DECIDED_METRICS
            if m in row and row[m].get("p_value") is not None and (row["a"], row["b"], m) != primary
        ]
    members += [row["prompt_following"] for row in models if "prompt_following" in row]
    for member, (adjusted, survives) in zip(
        members, holm([m["p_value"] for m in members]), strict=True
    ):
        member["holm_p"], member["survives"] = adjusted, survives
    return {
        "method": "Holm step-down, family-wise α = 0.05",
        "tests": len(members),
        "metrics": [*DECIDED_METRICS, "permutation tests of prompt following"],
        "excluded": (
            f"the primary test ({primary[0]} → {primary[1]}, {primary[2]}), declared before "
            "the run and tested alone"
            if primary is not None
            else None
        ),
    }
