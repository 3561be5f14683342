"""Seed-aware intervals, Holm's adjustment and the study's multiplicity family (issue 30):
pure NumPy/SciPy against hand-computed cases, and a coverage simulation at the study's size."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from eval.coverage import Scenario, simulate
from eval.metrics import holm, seed_aware_from_se, seed_aware_interval
from eval.report import report_markdown
from eval.study import adjust_for_multiplicity, difference, pooled


def test_with_no_test_noise_it_is_the_t_interval_over_the_seeds():
    seeds = [0.150, 0.130, 0.175]
    got = seed_aware_interval(seeds, np.full(200, 0.15))  # replicates without spread
    s = np.std(seeds, ddof=1) / math.sqrt(3)
    half = stats.t.ppf(0.975, 2) * s  # 4.30 standard errors, not 1.96
    assert got.value == pytest.approx(np.mean(seeds))
    assert (got.low, got.high) == pytest.approx((got.value - half, got.value + half))
    assert got.df == pytest.approx(2.0)
    assert got.p_value == pytest.approx(2 * stats.t.sf(got.value / s, 2))


def test_test_noise_widens_it_and_one_seed_gives_the_test_interval():
    rng = np.random.default_rng(0)
    reps = rng.normal(0.15, 0.004, 400)
    seeds = [0.150, 0.148, 0.153]  # seeds agree closer than the test set can measure
    both = seed_aware_interval(seeds, reps)
    seeds_only = seed_aware_interval(seeds, np.full(400, 0.15))
    assert both.high - both.low > seeds_only.high - seeds_only.low
    assert both.test_se == pytest.approx(reps.std(ddof=1))
    assert both.low <= both.value <= both.high
    one = seed_aware_interval([0.15], reps)
    assert math.isnan(one.seed_se) and one.df == pytest.approx(399)
    assert one.high - one.value == pytest.approx(stats.t.ppf(0.975, 399) * reps.std(ddof=1))


def test_satterthwaite_degrees_of_freedom_and_the_floor():
    # a = s²/k, b = SE²: df = (a + b)² / (a²/(k−1) + b²/df_b)
    seeds, k = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 5
    a, b, df_b = seeds.var(ddof=1) / k, 0.5**2, 50
    got = seed_aware_from_se(seeds, 0.5, df_b)
    assert got.df == pytest.approx((a + b) ** 2 / (a**2 / (k - 1) + b**2 / df_b))
    assert got.high - got.value == pytest.approx(stats.t.ppf(0.975, got.df) * math.sqrt(a + b))
    # Where Satterthwaite would trust the test part for more than the seeds can vouch for,
    # the interval is still at least the seeds' own t interval.
    few = seed_aware_from_se([0.0, 1.0], 2.0, 10_000)
    assert few.high - few.value >= stats.t.ppf(0.975, 1) * 0.5 - 1e-12


def test_holm_by_hand():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → max(0.06, 0.04)
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert [round(p, 10) for p, _ in got] == [0.03, 0.06, 0.06, 0.02]
    assert [r for _, r in got] == [True, False, False, True]
    assert holm([0.5, float("nan")])[1][1] is False and math.isnan(holm([float("nan")])[0][0])
    assert holm([0.2, 0.9]) == [(0.4, False), (0.9, False)]


def _replicated(values: list[float], se: float, resamples: int = 300) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.asarray(values) + rng.normal(0, se, (resamples, 1))  # shared test noise


def test_pooled_and_difference_carry_both_intervals_and_the_difference_its_p_value():
    # models 0-2: arm a's seeds, 3-5: arm b's seeds
    values = np.array([0.150, 0.130, 0.170, 0.100, 0.085, 0.120])
    reps = _replicated(list(values), 0.003)
    arm = pooled(values, reps, [0, 1, 2])
    assert arm["interval"] == "seeds and test set"
    assert arm["low"] < arm["test_low"] <= arm["value"] <= arm["test_high"] < arm["high"]
    diff = difference(values, reps, [0, 1, 2], [3, 4, 5])
    per_seed = values[3:] - values[:3]
    assert diff["value"] == pytest.approx(per_seed.mean())
    assert diff["spread"] == pytest.approx(per_seed.std(ddof=1))
    assert diff["low"] <= diff["value"] <= diff["high"] and 0 < diff["p_value"] < 1
    # A fixed baseline (one model) against an arm of three seeds still pairs every seed.
    fixed = difference(values, reps, [0], [3, 4, 5])
    assert fixed["value"] == pytest.approx((values[3:] - values[0]).mean())
    assert fixed["interval"] == "seeds and test set"


def test_the_family_is_adjusted_together_and_the_report_marks_survivors():
    values = np.array([0.150, 0.151, 0.149, 0.100, 0.101, 0.099])
    reps = _replicated(list(values), 0.001)
    comparisons = [
        {
            "a": "base",
            "b": "tuned",
            "seeds": 3,
            "kid": difference(values, reps, [0, 1, 2], [3, 4, 5]),
            "fid": difference(values * 100, reps * 100, [0, 1, 2], [3, 4, 5]),
        },
    ]
    models = [{"prompt_following": {"p_value": 0.04}}, {"prompt_following": {"p_value": 0.03}}]
    family = adjust_for_multiplicity(models, comparisons)
    assert family["tests"] == 3  # FID decides nothing and is not in the family
    assert comparisons[0]["kid"]["survives"] is True
    assert "holm_p" not in comparisons[0]["fid"]
    # Both permutation tests pass alone (p < 0.05); adjusted (0.03·2 = 0.06) neither does.
    assert [m["prompt_following"]["holm_p"] for m in models] == pytest.approx([0.06, 0.06])
    assert not any(m["prompt_following"]["survives"] for m in models)
    results = {
        "test_split": {"dir": "test", "images": 600, "generated_prompts": 80},
        "feature_network": {"name": "x", "dim": 2048, "input_size": 299},
        "models": [],
        "groups": [],
        "comparisons": comparisons,
        "multiplicity": family,
        "seed": 0,
        "bootstrap_resamples": 300,
        "notes": [],
    }
    text = report_markdown(results)
    assert "Holm p" in text and "✓" in text and "test only" in text


def test_the_seed_aware_interval_covers_at_the_studys_size_where_the_test_only_one_does_not():
    """A fast version of ``python -m eval coverage`` (docs/eval.md has the full run): 600 real
    against 80 generated rows per seed in 2048 dimensions, three seeds whose spread dwarfs the
    test-sampling error, as in the committed study. The test-only interval misses the arm's
    truth most of the time; the seed-aware one holds it about as often as it says."""
    result = simulate(Scenario(seed_sd=0.4, resamples=60, truth_draws=1500), 24, seed=3)
    assert result.kid_seed_sd > 2.5 * result.kid_test_se  # the study's regime
    assert result.seed_aware >= 0.8 * result.trials
    assert result.test_only <= 0.7 * result.trials
    assert result.seed_aware_width > result.test_only_width


def test_the_committed_study_carries_seed_aware_intervals_and_adjusted_decisions():
    """docs/miniature/results.json: each arm's KID interval is at least as wide as the t
    interval over its own seeds, and every decided comparison says whether it survives Holm."""
    import json
    from pathlib import Path

    results = json.loads(
        (Path(__file__).parents[2] / "docs" / "miniature" / "results.json").read_text()
    )
    kid = {row["label"]: row["kid"]["value"] for row in results["models"]}
    for group in results["groups"]:
        values = [kid[label] for label in group["members"]]
        k = len(values)
        half = (group["kid"]["high"] - group["kid"]["low"]) / 2
        assert half >= stats.t.ppf(0.975, k - 1) * np.std(values, ddof=1) / math.sqrt(k) - 1e-12
        assert group["kid"]["low"] <= group["kid"]["value"] <= group["kid"]["high"]
    for comparison in results["comparisons"]:
        for metric in ("kid", "prompt_gain"):
            assert isinstance(comparison[metric]["survives"], bool)
            assert comparison[metric]["holm_p"] >= comparison[metric]["p_value"]
    assert results["multiplicity"]["tests"] == 2 * len(results["comparisons"]) + len(
        results["models"]
    )


def test_reanalysis_recomputes_from_what_a_study_kept(tmp_path):
    """An old-style results.json (test-only intervals, no replicates) read again: the arm's
    interval becomes the seed-aware one from the per-model values and the stored SE."""
    import json

    from eval.reanalysis import main as reanalyse

    def model(label: str, group: str, value: float) -> dict:
        return {
            "label": label,
            "group": group,
            "kept": 80,
            "dropped_black": 0,
            "clip_score": {"skipped": "x"},
            "kid": {"value": value, "low": value - 0.01, "high": value + 0.01},
            "fid": {
                "value": 100 * value,
                "low": 90 * value,
                "high": 110 * value,
                "reliable": False,
            },
        }

    models = [model(f"a s{k}", "a", v) for k, v in enumerate([0.15, 0.13, 0.17])]
    models += [model(f"b s{k}", "b", v) for k, v in enumerate([0.10, 0.09, 0.12])]
    se = 0.004
    z = 1.959963984540054

    def stored(value: float) -> dict:
        return {"value": value, "low": value - z * se, "high": value + z * se, "spread": 0.0}

    results = {
        "test_split": {"dir": "test", "images": 600, "generated_prompts": 80},
        "feature_network": {"name": "x", "dim": 2048, "input_size": 299},
        "seed": 0,
        "bootstrap_resamples": 200,
        "fid_resamples": 40,
        "notes": [],
        "models": models,
        "groups": [
            {
                "group": g,
                "members": [f"{g} s{k}" for k in range(3)],
                "seeds": 3,
                "kid": stored(m),
                "fid": stored(100 * m),
            }
            for g, m in (("a", 0.15), ("b", 0.103333))
        ],
        "comparisons": [
            {"a": "a", "b": "b", "seeds": 3, "kid": stored(-0.046667), "fid": stored(-4.6667)}
        ],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert reanalyse([str(path)]) == 0
    again = json.loads(path.read_text())
    arm = again["groups"][0]["kid"]
    expected = seed_aware_from_se([0.15, 0.13, 0.17], se, 199)
    assert (arm["low"], arm["high"]) == pytest.approx((expected.low, expected.high))
    assert arm["test_low"] == pytest.approx(0.15 - z * se)
    diff = again["comparisons"][0]["kid"]
    assert diff["value"] == pytest.approx(np.mean([-0.05, -0.04, -0.05]))
    assert "survives" in diff and (tmp_path / "report.md").exists()
    assert reanalyse([str(tmp_path / "missing.json")]) == 1


def test_power_against_the_normal_case_and_its_edges():
    from eval.power import power, standard_error

    # Many seeds: the t test is the z test; a 2.8-SE effect is found 80% of the time at 5%.
    assert power(2.8, 1.0, seeds=10_000, alpha=0.05) == pytest.approx(0.80, abs=0.005)
    assert power(0.0, 1.0, seeds=5, alpha=0.05) == pytest.approx(0.05)  # no effect: α
    assert power(2.8, 1.0, seeds=3, alpha=0.05) < power(2.8, 1.0, seeds=30, alpha=0.05)
    # Seeds shrink only the seed part; images only the test part.
    assert standard_error(2.0, 0.0, 4, 80, 80) == pytest.approx(1.0)
    assert standard_error(0.0, 1.0, 4, 320, 80) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seeds"):
        power(1.0, 1.0, seeds=1, alpha=0.05)


def _three_arms() -> list[dict]:
    """base, full and lora, two seeds each (models 0-1, 2-3, 4-5), full clearly better."""
    values = np.array([0.150, 0.152, 0.100, 0.101, 0.149, 0.152])
    reps = _replicated(list(values), 0.001)
    groups = {"base": [0, 1], "full": [2, 3], "lora": [4, 5]}
    return [
        {
            "a": a,
            "b": b,
            "seeds": 2,
            "seeds_a": 2,
            "seeds_b": 2,
            "kid": difference(values, reps, groups[a], groups[b]),
        }
        for a, b in (("base", "full"), ("base", "lora"), ("full", "lora"))
    ]


def test_the_declared_primary_test_is_tested_alone_and_reported_first():
    from eval.study_stats import primary_test

    comparisons = _three_arms()
    primary = ("base", "full", "kid")
    declared = primary_test(comparisons, primary)
    family = adjust_for_multiplicity([], comparisons, primary=primary)
    # Alone: its own p-value at α = 0.05, no Holm factor; the other two are the family.
    assert family["tests"] == 2 and "base → full" in family["excluded"]
    assert "holm_p" not in comparisons[0]["kid"] and comparisons[0]["kid"]["primary"] is True
    assert declared["p_value"] == comparisons[0]["kid"]["p_value"] < 0.05
    assert declared["rejects_no_difference"] is True and declared["value"] < 0
    assert declared["low"] <= declared["value"] <= declared["high"]
    assert all("holm_p" in c["kid"] for c in comparisons[1:])
    without = _three_arms()
    assert adjust_for_multiplicity([], without)["tests"] == 3  # undeclared: all in the family
    results = {
        "test_split": {"dir": "test", "images": 600, "generated_prompts": 80},
        "feature_network": {"name": "x", "dim": 2048, "input_size": 299},
        "models": [],
        "groups": [],
        "primary": declared,
        "comparisons": [{**c, "fid": c["kid"]} for c in comparisons],
        "multiplicity": family,
        "seed": 0,
        "bootstrap_resamples": 300,
        "notes": [],
    }
    text = report_markdown(results)
    assert text.index("**Primary test**, declared before the run") < text.index("**Paired")
    assert "rejects no difference at α = 0.05" in text and "| primary |" in text
    with pytest.raises(ValueError, match="no comparison here"):
        primary_test(comparisons, ("full", "base", "kid"))


def test_a_study_refuses_a_primary_test_it_cannot_run(tmp_path):
    from eval.study import ModelEntry, StudyConfig, check_config

    models = (ModelEntry("embedded", group="base"), ModelEntry("x", group="full"))
    config = StudyConfig(tmp_path, models, tmp_path, primary=("base", "lora", "kid"))
    with pytest.raises(ValueError, match="two different groups"):
        check_config(config)
    with pytest.raises(ValueError, match="metric must be one of"):
        check_config(StudyConfig(tmp_path, models, tmp_path, primary=("base", "full", "fid")))
    check_config(StudyConfig(tmp_path, models, tmp_path, primary=("base", "full", "kid")))


def test_a_models_noise_offset_moves_every_generation_seed(tmp_path):
    """One checkpoint drawn with two sets of noise: the same prompts, other seeds, other files."""
    from types import SimpleNamespace

    from PIL import Image

    from eval.images import TestSplit
    from eval.study import ModelEntry, StudyConfig, generate_images

    split = TestSplit(tmp_path, (tmp_path / "a.png",) * 4, ("p0", "p1", "p2", "p3"))
    asked: list[tuple[str, int]] = []

    def runner(params, specs, control):  # records what it is asked for; draws nothing
        asked.extend((spec.prompt, spec.seed) for spec in specs)
        return [SimpleNamespace(image=Image.new("RGB", (8, 8))) for _ in specs]

    entries = (
        ModelEntry("embedded", name="base s0"),
        ModelEntry("embedded", name="base s1", noise_offset=100_000),
    )
    config = StudyConfig(tmp_path, entries, tmp_path / "out", seed=5)
    first, second = (generate_images(config, entry, split, runner) for entry in entries)
    assert asked == [(f"p{i}", 5 + i) for i in range(4)] + [
        (f"p{i}", 100_005 + i) for i in range(4)
    ]
    assert first.images[0].name == "00000-seed5.png"
    assert second.images[0].name == "00000-seed100005.png"
    assert first.folder != second.folder
