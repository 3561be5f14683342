"""A finished study read again with today's statistics (``python -m eval reanalyse``): the arms'
and comparisons' seed-aware intervals, prompt following against each model's own null, and
Holm's adjustment over the family – from what ``results.json`` kept, without generating or
measuring anything again.

A study written before seed-aware intervals existed kept, per model, its values, and per arm
and per comparison, the test-sampling interval (estimate ± 1.96 SE) but not the replicates. The
standard error is read back from the upper half-width (the lower end may have been clipped at
0), and :func:`~eval.metrics.seed_aware_from_se` combines it with the spread over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

from eval.metrics import seed_aware_from_se
from eval.study import CHART_FILE, REPORT_FILE, adjust_for_multiplicity, clipped

_Z = NormalDist().inv_cdf(0.975)


def _test_se(metric: dict[str, Any]) -> float:
    return (metric["high"] - metric["value"]) / _Z


def _per_model(row: dict[str, Any], metric: str) -> float:
    if metric == "prompt_gain":
        score = row["prompt_following"]
        return score["accuracy"]["value"] - score["chance"]
    if metric == "prompt_following":
        return row["prompt_following"]["accuracy"]["value"]
    return row[metric]["value"]


def _recomputed(
    stored: dict[str, Any], per_seed: Sequence[float], resamples: int, metric: str = "kid"
) -> dict[str, Any]:
    """``stored`` (a group's or comparison's metric as written) with the seed-aware interval as
    its primary one and the stored test-only interval kept beside it. ``metric`` names an
    arm's metric whose interval stops at a bound (FID at 0, a share at 0 and 1); differences
    pass none."""
    both = seed_aware_from_se(per_seed, _test_se(stored), resamples - 1)
    low, high = clipped(metric, both.low, both.high)
    known = {
        k: (v if v == v else None)
        for k, v in (  # NaN → None
            ("seed_se", both.seed_se),
            ("test_se", both.test_se),
            ("df", both.df),
            ("p_value", both.p_value),
        )
    }
    return {
        **stored,
        "value": both.value,
        "low": low,
        "high": high,
        "test_low": stored.get("test_low", stored["low"]),
        "test_high": stored.get("test_high", stored["high"]),
        **known,
        "interval": "seeds and test set" if len(per_seed) > 1 else "test set only (one seed)",
    }


def reanalyse(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with groups and comparisons recomputed as above; the models' own rows keep
    their values and gain a prompt-following ``gain``."""
    rows = {row["label"]: row for row in results["models"] if "kid" in row}
    resamples = int(results["bootstrap_resamples"])
    members = {g["group"]: [rows[label] for label in g["members"]] for g in results["groups"]}
    has_follow = all("prompt_following" in row for row in rows.values())
    for row in rows.values():
        if has_follow:
            row["prompt_following"]["gain"] = _per_model(row, "prompt_gain")
    for group in results["groups"]:
        models = members[group["group"]]
        for metric in ("kid", "fid", "prompt_following"):
            if metric in group:
                values = [_per_model(m, metric) for m in models]
                group[metric] = _recomputed(group[metric], values, resamples, metric)
        if has_follow:
            gains = [_per_model(m, "prompt_gain") for m in models]
            group["prompt_gain"] = _recomputed(group["prompt_following"], gains, resamples)
            # The gain's test-only interval is the hit rate's, shifted by the mean null.
            shift = group["prompt_gain"]["value"] - group["prompt_following"]["value"]
            for end in ("test_low", "test_high"):
                group["prompt_gain"][end] = group["prompt_following"][end] + shift
    for comparison in results["comparisons"]:
        a, b = members[comparison["a"]], members[comparison["b"]]
        if len(a) not in (1, len(b)):
            continue  # unpaired seeds: the stored test-only interval stays
        pairs = [(a[k % len(a)], b[k]) for k in range(len(b))]
        metrics = [m for m in ("kid", "fid", "prompt_following") if m in comparison]
        for metric in metrics + (["prompt_gain"] if has_follow else []):
            stored = comparison["prompt_following" if metric == "prompt_gain" else metric]
            diffs = [_per_model(j, metric) - _per_model(i, metric) for i, j in pairs]
            comparison[metric] = _recomputed(stored, diffs, resamples)
    declared = results.get("primary")  # the declared primary test stays out of the family
    primary = (declared["a"], declared["b"], declared["metric"]) if declared else None
    results["multiplicity"] = adjust_for_multiplicity(
        list(rows.values()), results["comparisons"], primary=primary
    )
    results["reanalysed"] = (
        "groups and comparisons recomputed with seed-aware intervals, prompt following's gain "
        "over each model's null and Holm's adjustment (python -m eval reanalyse); the test-only "
        "standard errors read back from the stored intervals"
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from eval.report import write_chart, write_report

    parser = argparse.ArgumentParser(
        prog="python -m eval reanalyse",
        description="Recompute a finished study's arm and comparison intervals with the "
        "seed-aware method, prompt following against each model's own null and Holm's "
        "adjustment; rewrites results.json, report.md and chart.png beside it.",
    )
    parser.add_argument("results", type=Path, help="a study's results.json")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
        if not isinstance(results, dict) or "groups" not in results:
            raise ValueError("not a study's results.json (no 'groups')")
        results = reanalyse(results)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {args.results}: {error}", file=sys.stderr)
        return 1
    args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_report(results, args.results.with_name(REPORT_FILE))
    write_chart(results, args.results.with_name(CHART_FILE))
    print(args.results.with_name(REPORT_FILE).read_text(encoding="utf-8"))
    return 0
