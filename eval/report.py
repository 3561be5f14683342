"""A study's results as people read them: a Markdown table shaped like seed 000's Table 2 and
a bar chart with the confidence intervals (drawn with Pillow: no plotting library needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

UNRELIABLE = "†"  # marks a FID computed on fewer images than feature dimensions
KID_SCALE = 1000.0  # KID values are ~1e-3; the table shows KID × 10³ as is customary


def _number(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def _interval(metric: dict[str, Any], scale: float = 1.0, digits: int = 2) -> str:
    low, high = metric.get("low"), metric.get("high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"{low * scale:.{digits}f} – {high * scale:.{digits}f}"


def _with_interval(metric: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    if not metric or "value" not in metric:
        return "–"
    return f"{_number(metric['value'] * scale, digits)} ({_interval(metric, scale, digits)})"


def _percent(metric: dict[str, Any] | None) -> str:
    if not metric or "value" not in metric:
        return "–"
    return f"{metric['value']:.1%} ({_percent_interval(metric)})"


def _spread(metric: dict[str, Any], scale: float = 1.0, percent: bool = False) -> str:
    spread = metric.get("spread")
    if spread is None:
        return "–"
    return f"{spread:.1%}" if percent else f"{spread * scale:.2f}"


def report_markdown(results: dict[str, Any]) -> str:
    """The report: the paired differences first (the headline), then each model's own numbers,
    the arms pooled over training seeds, how it was measured, and the notes."""
    split = results["test_split"]
    network = results["feature_network"]
    rows = results["models"]
    follow = [row["prompt_following"] for row in rows if "prompt_following" in row]
    has_follow = bool(follow)
    n_gen = split.get("generated_prompts", split["images"])
    lines: list[str] = []
    comparisons = results.get("comparisons", [])
    if results.get("primary"):
        lines += _primary_lines(results["primary"])
    if comparisons:
        family = results.get("multiplicity", {})
        lines += [
            "**Paired differences** (b − a; each arm the mean over its training seeds, seed k "
            "of b against seed k of a). The interval counts the training seeds and the test "
            "set together (mean ± t·SE on Welch–Satterthwaite degrees of freedom; docs/eval.md); "
            "*test only* is the test-sampling interval alone, narrower and not a prediction of "
            "what another set of seeds would give. Holm p: adjusted over the family of "
            f"{family.get('tests', '?')} tests (KID and prompt-following gain comparisons, and "
            f"each model's permutation test); {SURVIVES} = survives at α = 0.05. Negative KID "
            "and positive gain differences favour b. Conclusions rest on KID; ΔFID is shown "
            f"with its bias caveat ({UNRELIABLE}) and decides nothing.",
            "",
            "| a | b | seeds a / b | ΔKID ×10³ (95% CI) | Holm p | test only | ± seeds "
            "| ΔFID (95% CI) |"
            + (" Δ gain over own null (95% CI) | Holm p |" if has_follow else ""),
            "|---|---|---|---|---|---|---|---|" + ("---|---|" if has_follow else ""),
        ]
        for c in comparisons:
            line = (
                f"| {c['a']} | {c['b']} | {c.get('seeds_a', c['seeds'])} / "
                f"{c.get('seeds_b', c['seeds'])} | {_with_interval(c['kid'], KID_SCALE)} "
                f"| {_holm(c['kid'])} | {_test_interval(c['kid'], KID_SCALE)} "
                f"| {_spread(c['kid'], KID_SCALE)} | {_with_interval(c['fid'])} {UNRELIABLE} |"
            )
            if has_follow and "prompt_gain" in c:
                gain = c["prompt_gain"]
                line += f" {_signed_percent(gain)} | {_holm(gain)} |"
            elif has_follow:
                line += " – | – |"
            lines.append(line)
        lines.append("")
    groups = [g for g in results.get("groups", []) if g["seeds"] > 1]
    if groups:
        lines += [
            "**Arms over training seeds** (the mean over seeds; its interval counts the seeds "
            "and the test set, *test only* the test set alone; ± the standard deviation over "
            "seeds). Prompt following's gain is over each model's own permutation null.",
            "",
            "| Arm | seeds | KID ×10³ (95% CI) | test only | ± seeds | FID (95% CI) |"
            + (" Prompt following (95% CI) | gain over own null (95% CI) |" if has_follow else ""),
            "|---|---|---|---|---|---|" + ("---|---|" if has_follow else ""),
        ]
        for g in results["groups"]:
            line = (
                f"| {g['group']} | {g['seeds']} | {_with_interval(g['kid'], KID_SCALE)} "
                f"| {_test_interval(g['kid'], KID_SCALE)} | {_spread(g['kid'], KID_SCALE)} "
                f"| {_with_interval(g['fid'])} |"
            )
            if has_follow and "prompt_following" in g:
                line += f" {_percent(g['prompt_following'])} |"
                line += f" {_signed_percent(g['prompt_gain'])} |" if "prompt_gain" in g else " – |"
            lines.append(line)
        lines.append("")
    follow_head = (
        f" Prompt following, {follow[0]['label']} (95% CI) | null mean / 95th pct, p |"
        if has_follow
        else ""
    )
    lines += [
        f"| Model | KID ×10³ (95% CI) | FID (95% CI) | CLIP score (95% CI) |{follow_head} "
        "Images used / dropped black |",
        "|---|---|---|---|" + ("---|---|" if has_follow else "") + "---|",
    ]
    for row in rows:
        fid, kid, clip = row.get("fid"), row.get("kid"), row.get("clip_score", {})
        fid_cell = "–"
        if fid:
            fid_cell = _with_interval(fid) + ("" if fid["reliable"] else f" {UNRELIABLE}")
            if "infinity" in fid:
                fid_cell += f"; FID∞ {_number(fid['infinity']['value'])}"
        clip_cell = _with_interval(clip) if "value" in clip else "skipped"
        follow_cell = ""
        if has_follow:
            score = row.get("prompt_following")
            follow_cell = " – | – |"
            if score:
                follow_cell = (
                    f" {_percent(score['accuracy'])} | {score['chance']:.1%} / "
                    f"{score['null_high']:.1%}, p = {score['p_value']:.3g}"
                    + (f", Holm p {_holm(score)}" if "holm_p" in score else "")
                    + " |"
                )
        lines.append(
            f"| {row['label']} | {_with_interval(kid, KID_SCALE)} | {fid_cell} | {clip_cell} |"
            f"{follow_cell} {row['kept']} / {row['dropped_black']} |"
        )
    lines += [
        "",
        f"Table 2. FID scores for evaluated models on the {_split_name(split['dir'])} "
        f"(`{split['dir']}`, "
        f"{split['images']} real images; one generated image for each of the first {n_gen} "
        f"prompts per model, seeds {results['seed']}…{results['seed'] + n_gen - 1}).",
        "",
        f"Features: `{network['name']}` ({network['dim']}-d, inputs resized to "
        f"{network['input_size']} px with PIL bicubic + antialiasing in float, clipped to "
        f"[0, 255], as clean-fid). Intervals: estimate ± 1.96 standard errors, so each "
        f"contains its estimate. KID: every row, {results['bootstrap_resamples']} bootstrap "
        "resamples with duplicate pairs dropped. FID: "
        f"{results.get('fid_resamples', 0)} half-samples drawn without replacement. "
        f"{UNRELIABLE} = fewer images than feature dimensions: that FID is biased upwards – "
        "KID is the primary metric.",
    ]
    if has_follow:
        lines += [
            "",
            f"Prompt following: how often a generated image's colour histogram is nearest the "
            f"real test images of its own prompt's {follow[0]['label']} (nearest centroid over "
            f"{follow[0]['labels']} labels; docs/eval.md). The null: the same images with the "
            f"labels shuffled among them ({follow[0]['permutations']} permutations; its mean, "
            "95th percentile and a one-sided p-value per model). The real images themselves "
            f"score {follow[0]['real_ceiling']:.1%} (leave-one-out).",
        ]
    if results["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in results["notes"]]
    return "\n".join(lines) + "\n"


SURVIVES = "✓"  # marks a test that survives the family's Holm adjustment


def _primary_lines(primary: dict[str, Any]) -> list[str]:
    """The declared primary test, first and on its own (it is outside the Holm family)."""
    scale = KID_SCALE if primary["metric"] == "kid" else 1.0
    name = "ΔKID ×10³" if primary["metric"] == "kid" else f"Δ{primary['metric']}"
    verdict = (
        "rejects no difference at α = 0.05"
        if primary["rejects_no_difference"]
        else "does not reject no difference at α = 0.05"
    )
    return [
        f"**Primary test**, declared {primary['declared']} (the one test the study is run "
        "for: its p-value is not adjusted, and it is not part of the Holm family below): "
        f"{primary['b']} − {primary['a']}, {name} = "
        f"{_with_interval(primary, scale)} (95% CI counting the seeds and the test set; "
        f"{primary['seeds_a']} / {primary['seeds_b']} seeds), p = "
        f"{_number(primary['p_value'], 3)}: {verdict}.",
        "",
    ]


def _holm(metric: dict[str, Any]) -> str:
    if metric.get("primary"):
        return "primary"
    adjusted = metric.get("holm_p")
    if adjusted is None or not math.isfinite(adjusted):
        return "–"
    return f"{adjusted:.3g}" + (f" {SURVIVES}" if metric.get("survives") else "")


def _test_interval(metric: dict[str, Any], scale: float = 1.0) -> str:
    if "test_low" not in metric:
        return "–"
    return _interval({"low": metric["test_low"], "high": metric["test_high"]}, scale)


def _split_name(folder: str) -> str:
    """'validation split' for a validation folder (decisions), else 'test set' (the table)."""
    return "validation split" if folder.rstrip("/").endswith("validation") else "test set"


def _signed_percent(metric: dict[str, Any]) -> str:
    low, high = metric.get("low"), metric.get("high")
    return f"{metric['value']:+.1%} ({low:+.1%} – {high:+.1%})"


def _percent_interval(metric: dict[str, Any]) -> str:
    low, high = metric.get("low"), metric.get("high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"{low:.1%} – {high:.1%}"


def write_report(results: dict[str, Any], path: Path) -> None:
    Path(path).write_text(report_markdown(results), encoding="utf-8")


# -- the chart -------------------------------------------------------------------------------

_WIDTH, _LABEL_W, _ROW_H, _PAD = 960, 260, 34, 24
_BAR, _WHISKER, _INK, _GRID = (70, 110, 180), (20, 20, 20), (0, 0, 0), (225, 225, 225)


def write_chart(results: dict[str, Any], path: Path) -> None:
    """One panel per metric (FID, KID ×10³, CLIP score where measured): a bar per model and a
    whisker for its 95% interval."""
    rows = [row for row in results["models"] if "fid" in row]
    panels = [("FID (lower is better)", [_bar(r["fid"]) for r in rows])]
    panels.append(("KID x 1000 (lower is better)", [_bar(r["kid"], KID_SCALE) for r in rows]))
    if any("value" in r["clip_score"] for r in rows):
        panels.append(("CLIP score (higher is better)", [_bar(r["clip_score"]) for r in rows]))
    if all("prompt_following" in r for r in rows) and rows:
        panels.append(
            (
                "Prompt following, % (higher is better)",
                [_bar(r["prompt_following"]["accuracy"], 100.0) for r in rows],
            )
        )
    labels = [r["label"] for r in rows]
    panel_h = _PAD * 2 + _ROW_H * max(1, len(rows))
    image = Image.new("RGB", (_WIDTH, panel_h * len(panels) + _PAD), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    for p, (title, bars) in enumerate(panels):
        _panel(draw, font, title, labels, bars, top=p * panel_h + _PAD // 2, height=panel_h)
    image.save(path)


def _bar(metric: dict[str, Any], scale: float = 1.0) -> tuple[float, float, float]:
    value = metric.get("value", float("nan"))
    return value * scale, metric.get("low", value) * scale, metric.get("high", value) * scale


def _panel(
    draw: ImageDraw.ImageDraw,
    font: Any,
    title: str,
    labels: Sequence[str],
    bars: Sequence[tuple[float, float, float]],
    *,
    top: int,
    height: int,
) -> None:
    draw.text((_PAD, top), title, fill=_INK, font=font)
    finite = [v for bar in bars for v in bar if math.isfinite(v)]
    lowest = min([0.0, *finite])
    highest = max([1e-12, *finite])
    left, right = _LABEL_W, _WIDTH - _PAD - 70

    def x_of(value: float) -> float:
        return left + (value - lowest) / (highest - lowest) * (right - left)

    draw.line([(x_of(0.0), top + _PAD), (x_of(0.0), top + height - _PAD // 2)], fill=_GRID)
    for i, (label, (value, low, high)) in enumerate(zip(labels, bars, strict=True)):
        y = top + _PAD + i * _ROW_H
        draw.text((_PAD, y + 8), label[:32], fill=_INK, font=font)
        if not math.isfinite(value):
            continue
        draw.rectangle([x_of(min(0.0, value)), y + 6, x_of(max(0.0, value)), y + _ROW_H - 6], _BAR)
        if math.isfinite(low) and math.isfinite(high):
            mid = y + _ROW_H // 2
            draw.line([(x_of(low), mid), (x_of(high), mid)], fill=_WHISKER, width=2)
            for end in (low, high):
                draw.line([(x_of(end), mid - 6), (x_of(end), mid + 6)], fill=_WHISKER, width=2)
        draw.text(
            (x_of(max(value, high if math.isfinite(high) else value)) + 6, y + 8),
            f"{value:.2f}",
            fill=_INK,
            font=font,
        )
