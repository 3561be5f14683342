"""What ``python -m training dpo-miniature`` writes for people to read: ``report.md``, the win-rate
chart and the sample sheet (training/dpo_miniature.py runs the study)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def _milli(e: dict[str, float]) -> str:
    return f"{1e3 * e['value']:+.1f} ({1e3 * e['low']:+.1f} – {1e3 * e['high']:+.1f})"


def _pct(e: dict[str, float]) -> str:
    return f"{100 * e['value']:.1f}% ({100 * e['low']:.1f} – {100 * e['high']:.1f})"


def report_markdown(results: dict[str, Any], top: str) -> str:
    settings = results["settings"]
    objectives = settings["objectives"]
    seeds = settings["seeds"]
    head = "| votes | pairs |"
    rule = "|---|---|"
    for objective in objectives:
        name = objective.upper()
        head += f" {name} vs control (95% CI) | {name} vs base (95% CI) |"
        rule += "---|---|"
    if "kto_vs_dpo" in results["win_rate_by_votes"][0]:
        head += " KTO vs DPO (95% CI) |"
        rule += "---|"
    lines = [
        "# DPO and KTO miniature: results",
        "",
        f"Hidden taste: {results['taste']}.",
        "",
        f"Win rates on {settings['held_out']} held-out prompts; every trained arm with {seeds} "
        f"training seeds on the same votes (n = {seeds} × {settings['held_out']}); seed k "
        "against seed k of the control (the largest vote count's pairs, a random half swapped: "
        "no taste left). Intervals are seed-aware: the spread over seeds with a bootstrap over "
        "prompts (docs/eval.md). Against the control is the headline: against the base, a model "
        "also wins by merely being changed.",
        "",
        head,
        rule,
    ]
    for row in results["win_rate_by_votes"]:
        line = f"| {row['votes']} | {row['pairs']} |"
        for objective in objectives:
            arm = row[objective]
            line += f" {_pct(arm['win_rate_vs_control'])} | {_pct(arm['win_rate'])} |"
        if "kto_vs_dpo" in row:
            line += f" {_pct(row['kto_vs_dpo'])} |"
        lines.append(line)
    control = results["control_swapped_pairs"]
    lines += [
        "",
        f"Control against the base, n = {control['win_rate']['n']}: {_pct(control['win_rate'])}.",
    ]
    kid, pf = results["kid"], results["prompt_following"]
    k = lambda e: f"{1e3 * e['value']:.2f} ({1e3 * e['low']:.2f} – {1e3 * e['high']:.2f})"  # noqa: E731
    lines += [
        "",
        f"KID ×10³ against {kid['n_real']} real test covers, {kid['n_generated']} images each: "
        f"base {k(kid['base'])}, {top} {k(kid[top])}, difference {k(kid['difference'])}.",
        "",
        f"Prompt following (palette test, n = {pf['n']}): base {_pct(pf['base'])}, "
        f"{top} {_pct(pf[top])}, difference {_pct(pf['difference'])}.",
        "",
        f"Wall time {results['wall_s'] / 60:.1f} min; stages {results['timings_s']}.",
        "",
    ]
    return "\n".join(lines)


def write_chart(
    curve: list[dict[str, Any]],
    path: Path,
    size: tuple[int, int] = (640, 400),
    control: dict[str, Any] | None = None,
) -> None:
    """Win rate against votes (log-spaced x), with the 95% intervals and the 50% line; the
    control (swapped pairs) as a grey point beside the largest N."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 70, width - 30, 30, height - 60
    lo, hi = 0.3, 1.0
    votes = [row["votes"] for row in curve]
    xs = np.log([max(v, 1) for v in votes])
    span = (xs.max() - xs.min()) or 1.0

    def x_of(v: float) -> float:
        return left + (math.log(v) - xs.min()) / span * (right - left)

    def y_of(r: float) -> float:
        return bottom - (min(max(r, lo), hi) - lo) / (hi - lo) * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline="black")
    for r in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        draw.line((left - 4, y_of(r), left, y_of(r)), fill="black")
        draw.text((left - 40, y_of(r) - 6), f"{r:.0%}", fill="black")
    draw.line((left, y_of(0.5), right, y_of(0.5)), fill=(200, 0, 0))
    series = [
        (o, "win_rate_vs_control", c, dx)
        for (o, c, dx) in (("dpo", (0, 0, 160), 0), ("kto", (0, 130, 0), 6))
        if o in curve[0]
    ]
    for objective, key, colour, dx in series:
        points = []
        for row in curve:
            x, rate = x_of(row["votes"]) + dx, row[objective][key]
            draw.line((x, y_of(rate["low"]), x, y_of(rate["high"])), fill=colour, width=2)
            points.append((x, y_of(rate["value"])))
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
    for row in curve:
        draw.text((x_of(row["votes"]) - 10, bottom + 8), str(row["votes"]), fill="black")
    for number, (objective, _, colour, _) in enumerate(series):
        draw.text(
            (right - 170, top + 8 + 14 * number), f"{objective.upper()} vs control", fill=colour
        )
    if control is not None and curve:
        x, rate = x_of(curve[-1]["votes"]) - 12, control["win_rate"]
        draw.line((x, y_of(rate["low"]), x, y_of(rate["high"])), fill=(140, 140, 140), width=2)
        draw.ellipse(
            (x - 4, y_of(rate["value"]) - 4, x + 4, y_of(rate["value"]) + 4), fill=(140, 140, 140)
        )
        draw.text((x - 150, y_of(rate["value"]) - 6), "control vs base", fill=(110, 110, 110))
    n = curve[0][series[0][0]]["win_rate"]["n"] if curve and series else 0
    draw.text(
        (left, bottom + 30),
        f"closed votes used for training (n = {n} each: seeds × held-out prompts)",
        fill="black",
    )
    draw.text(
        (left, 10), "win rate against the taste-free control (seed-aware 95% CI)", fill="black"
    )
    image.save(path)


def write_samples(
    base: list[Path],
    dpo: list[Path],
    prompts: list[str],
    path: Path,
    count: int = 8,
    scale: int = 2,
) -> None:
    """Two rows, same prompts and seeds: the base on top, DPO below."""
    count = min(count, len(base))
    tile = 64 * scale
    sheet = Image.new("RGB", (count * tile + 50, 2 * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for row, paths in enumerate((base, dpo)):
        draw.text((4, row * tile + tile // 2), ("base", "DPO")[row], fill="black")
        for i in range(count):
            with Image.open(paths[i]) as image:
                sheet.paste(image.convert("RGB").resize((tile, tile)), (50 + i * tile, row * tile))
    sheet.save(path)
