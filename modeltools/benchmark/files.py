"""The files a benchmark leaves: a report's JSON and its chart, a comparison's JSON and its
Markdown (the command and the table)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from modeltools.benchmark.chart import render_chart
from modeltools.benchmark.report import BenchmarkReport, Comparison


def write_report(report: BenchmarkReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``benchmark-<start time>.json`` and its chart ``.png`` into ``out_dir`` (made if
    missing; an earlier run's files are never overwritten). Returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report.started_at).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem, attempt = f"benchmark-{stamp}", 1
    while (out_dir / f"{stem}.json").exists() or (out_dir / f"{stem}.png").exists():
        attempt += 1
        stem = f"benchmark-{stamp}-{attempt}"
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    render_chart(report).save(png_path)
    return json_path, png_path


def write_comparison(comparison: Comparison, out_dir: Path, command: str) -> tuple[Path, Path]:
    """Write ``compare-<start time>.json`` and a ``.md`` with the command and the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.fromisoformat(comparison.ours.started_at).astimezone(UTC)
    stem = f"compare-{comparison.ours.device.replace(':', '')}-{started:%Y%m%dT%H%M%SZ}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(comparison.to_json(), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(
        f"# Baseline vs our queue, {started:%Y-%m-%d}\n\n```\n{command}\n```\n\n"
        f"```\n{comparison.table()}\n```\n",
        encoding="utf-8",
    )
    return json_path, md_path
