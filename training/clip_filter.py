"""``python -m training clip-filter``: drop image/caption pairs whose CLIP similarity is too low.

    DATA/metadata.jsonl ─► CLIP cosine of every (image, text) pair, in batches
      ─► OUT/metadata.jsonl + the kept images (hard links where the disk allows, else copies)
      ─► OUT/clip_scores.jsonl (every pair, its cosine, kept or not)
      ─► OUT/clip_filter_report.md and .json (histogram of the cosines, the pairs at the cut)

Seed 003 removed every pair "with a similarity score lower than 0.2" (§4.1): the raw cosine of
CLIP's projected embeddings, so that is the default ``--threshold``. The scorer is eval's
(:class:`eval.clip_score.ClipScorer`, default ``openai/clip-vit-large-patch14``): the filter and
``python -m eval study``'s CLIP score (100 · max(cosine, 0)) come from the same model and code.
Cosines of real CLIP models crowd into a narrow band (matching pairs ≈ 0.25–0.35 for ViT-L/14),
so look at the report's histogram before trusting a threshold on a new kind of image.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data import METADATA, DatasetError, is_relative_inside, read_rgb

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.2  # seed 003 §4.1
SCORES = "clip_scores.jsonl"
REPORT = "clip_filter_report"


@dataclass(frozen=True)
class FilterConfig:
    data: Path  # an image folder with metadata.jsonl (file_name, text)
    out: Path  # where the kept set goes (a new folder, or one this command wrote before)
    threshold: float = DEFAULT_THRESHOLD
    model: str | None = None  # None: eval's default CLIP
    caption_column: str = "text"
    batch_size: int = 16
    examples: int = 5  # pairs shown on each side of the cut
    bins: int = 20
    device: str = "auto"

    def check(self) -> None:
        data, out = Path(self.data), Path(self.out)
        if not (data / METADATA).is_file():
            raise DatasetError(
                f"{str(data)!r} has no {METADATA}; caption it first (python -m training caption {data})."
            )
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(
                f"--threshold is a cosine similarity in [-1, 1], got {self.threshold}."
            )
        if self.batch_size < 1 or self.bins < 1 or self.examples < 0:
            raise ValueError("--batch-size and --bins must be at least 1, --examples 0 or more.")
        if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
            raise ValueError(f"--out {str(out)!r} must lie outside the data folder {str(data)!r}.")
        if out.exists() and any(out.iterdir()) and not (out / SCORES).is_file():
            raise ValueError(f"--out {str(out)!r} is a folder with other files; give a new one.")


@dataclass(frozen=True)
class FilterResult:
    pairs: int
    kept: int
    seconds: float  # scoring time (model loading excluded)
    out: Path
    report: Path

    @property
    def images_per_second(self) -> float | None:
        return self.pairs / self.seconds if self.seconds > 0 else None


# -- pure functions ----------------------------------------------------------------------------


def histogram(scores: Sequence[float], *, bins: int, threshold: float) -> list[dict[str, Any]]:
    """``bins`` equal bins over [min, max] of ``scores`` (widened to include ``threshold``), each
    with its count and whether it lies below the threshold, straddles it or lies above."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        return []
    low = min(float(values.min()), threshold)
    high = max(float(values.max()), threshold)
    if high - low < 1e-9:
        high = low + 1e-3
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    out = []
    for count, lo, hi in zip(counts.tolist(), edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        side = "below" if hi <= threshold else "above" if lo >= threshold else "cut"
        out.append({"low": lo, "high": hi, "count": int(count), "side": side})
    return out


def at_the_cut(scores: Sequence[float], threshold: float, k: int) -> tuple[list[int], list[int]]:
    """Indices of the ``k`` pairs just under the threshold (dropped, highest first) and the ``k``
    just over it (kept, lowest first): where a wrong threshold shows first."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    below = [i for i in order if scores[i] < threshold][-k:][::-1] if k else []
    above = [i for i in order if scores[i] >= threshold][:k]
    return below, above


# -- the run -----------------------------------------------------------------------------------


def read_pairs(folder: Path, caption_column: str = "text") -> list[dict[str, Any]]:
    rows = []
    metadata = folder / METADATA
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = str(row["file_name"]), row[caption_column]
        except (ValueError, KeyError, TypeError):
            raise DatasetError(
                f"{metadata}, line {number}: not a JSON object with file_name and {caption_column}."
            ) from None
        if not is_relative_inside(name):
            raise DatasetError(
                f"{metadata}, line {number}: the file name {name!r} leads outside the folder."
            )
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(
                f"{metadata}, line {number}: the {caption_column!r} of {name} is empty."
            )
        if not (folder / name).is_file():
            raise DatasetError(f"{metadata}, line {number}: the image {folder / name} is missing.")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{metadata} lists no images.")
    return rows


def filter_pairs(
    config: FilterConfig,
    *,
    scorer: Callable[[], Any] | None = None,
    log_line: Callable[[str], None] = log.info,
) -> FilterResult:
    """Score, keep, report (module docstring). ``scorer`` builds the CLIP scorer (tests may
    inject one); by default eval's loader with the local cache only."""
    from tqdm.auto import tqdm

    config.check()
    data, out = Path(config.data), Path(config.out)
    # 1. The pairs, checked before the model loads.
    rows = read_pairs(data, config.caption_column)
    clip = scorer() if scorer is not None else _load_scorer(config)

    # 2. Cosines in batches.
    scores: list[float] = []
    seconds = 0.0
    with tqdm(total=len(rows), desc="clip filter", unit="img") as bar:
        for start in range(0, len(rows), config.batch_size):
            batch = rows[start : start + config.batch_size]
            images = [read_rgb(data / r["file_name"]) for r in batch]
            began = time.perf_counter()
            cosines = clip.cosines(images, [r[config.caption_column] for r in batch])
            seconds += time.perf_counter() - began
            scores += [float(c) for c in cosines]
            bar.update(len(batch))
    kept = [r for r, s in zip(rows, scores, strict=True) if s >= config.threshold]

    # 3. The kept set: images linked (or copied) beside a new metadata.jsonl.
    out.mkdir(parents=True, exist_ok=True)
    for row in kept:
        link_or_copy(data / row["file_name"], out / row["file_name"])
    _write_lines(out / METADATA, [json.dumps(r, ensure_ascii=False) for r in kept])
    _write_lines(
        out / SCORES,
        [
            json.dumps(
                {
                    "file_name": r["file_name"],
                    "text": r[config.caption_column],
                    "cosine": round(s, 6),
                    "kept": s >= config.threshold,
                },
                ensure_ascii=False,
            )
            for r, s in zip(rows, scores, strict=True)
        ],
    )

    # 4. The report: numbers in JSON, the same for people in Markdown.
    name = getattr(clip, "name", config.model or "CLIP")
    report = _report(config, rows, scores, len(kept), name, seconds)
    (out / f"{REPORT}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{REPORT}.md").write_text(_markdown(report), encoding="utf-8")
    log_line(f"Kept {len(kept)} of {len(rows)} pairs (cosine ≥ {config.threshold:g}).")
    if not kept:
        raise DatasetError(
            f"No pair reaches the threshold {config.threshold:g} (the highest cosine is "
            f"{max(scores):.4f}); see {out / (REPORT + '.md')} and lower --threshold."
        )
    return FilterResult(len(rows), len(kept), seconds, out, out / f"{REPORT}.md")


def _load_scorer(config: FilterConfig) -> Any:
    from eval.clip_score import DEFAULT_CLIP_MODEL, load_clip
    from models.errors import ModelUnavailable
    from models.registry import pick_device, quiet_libraries
    from models.support import model_folder

    quiet_libraries()
    name = config.model or DEFAULT_CLIP_MODEL
    folder = model_folder(name, role="CLIP")  # the message names the model and the pull command
    scorer = load_clip(str(folder), device=pick_device(config.device))
    if isinstance(scorer, str):
        raise ModelUnavailable(scorer)
    scorer.name = name
    return scorer


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)  # no second copy of a large dataset on the same disk
    except OSError:
        shutil.copyfile(source, target)


def _write_lines(path: Path, lines: list[str]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


def _report(
    config: FilterConfig,
    rows: list[dict[str, Any]],
    scores: list[float],
    kept: int,
    model: str,
    seconds: float,
) -> dict[str, Any]:
    values = np.asarray(scores)
    below, above = at_the_cut(scores, config.threshold, config.examples)

    def example(i: int) -> dict[str, Any]:
        return {
            "file_name": rows[i]["file_name"],
            "text": rows[i][config.caption_column],
            "cosine": round(scores[i], 6),
        }

    return {
        "model": model,
        "threshold": config.threshold,
        "pairs": len(rows),
        "kept": kept,
        "dropped": len(rows) - kept,
        "cosine": {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "median": float(np.median(values)),
            "max": float(values.max()),
        },
        "histogram": histogram(scores, bins=config.bins, threshold=config.threshold),
        "dropped_at_the_cut": [example(i) for i in below],
        "kept_at_the_cut": [example(i) for i in above],
        "scoring_seconds": seconds,
        "images_per_second": len(rows) / seconds if seconds > 0 else None,
    }


def _markdown(report: dict[str, Any]) -> str:
    share = report["kept"] / report["pairs"]
    c = report["cosine"]
    lines = [
        "# CLIP filter",
        "",
        f"Model `{report['model']}`, threshold cosine ≥ {report['threshold']:g} (seed 003: 0.2).",
        f"Kept **{report['kept']} of {report['pairs']}** pairs ({share:.0%}); dropped {report['dropped']}.",
        f"Cosine: mean {c['mean']:.4f}, sd {c['std']:.4f}, min {c['min']:.4f}, median "
        f"{c['median']:.4f}, max {c['max']:.4f}.",
        "",
        "## Histogram of the cosines",
        "",
        "| from | to | pairs | |",
        "|---:|---:|---:|:---|",
    ]
    top = max((b["count"] for b in report["histogram"]), default=1) or 1
    for b in report["histogram"]:
        bar = "█" * math.ceil(30 * b["count"] / top) if b["count"] else ""
        mark = {"below": "dropped", "above": "kept", "cut": "← threshold"}[b["side"]]
        lines.append(f"| {b['low']:.4f} | {b['high']:.4f} | {b['count']} | {bar} {mark} |")
    for title, key in (
        ("Dropped, just under the threshold", "dropped_at_the_cut"),
        ("Kept, just over the threshold", "kept_at_the_cut"),
    ):
        lines += ["", f"## {title}", ""]
        if not report[key]:
            lines.append("(none)")
        for e in report[key]:
            text = e["text"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"- {e['cosine']:.4f} `{e['file_name']}`: {text}")
    return "\n".join(lines) + "\n"
