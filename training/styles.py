"""One model per style, and the study that compares them (seed 003: SD 1.5 retrained per artist,
compared with the original by FID).

    ROOT/<style>/ (an image folder with metadata.jsonl, or train/ + test/ splits)
      ─► OUT/<style>/data/{train,test}   a fixed hold-out split (hash of the file name)
      ─► OUT/<style>/run/                python -m training --preset seed003 on the train split
      ─► OUT/styles.json                 what was trained where
    then ``style-study``:
      ─► OUT/study/<style>/              eval's study on that style's test split: the base model
                                         and every style's model (results.json, report.md)
      ─► OUT/study/report.md, matrix.json  KID (and CLIP score) of every model on every style

A style is whatever the folders are: artists (the paper), genres, or one Discord server's
covers. Each style trains independently from the same base, as in the paper; a finished style
is skipped on a rerun and an interrupted one resumes from its latest checkpoint.

The study reads across: on its own style's test images a style's model should beat the base
model (the paper's claim, in our metric) and, if the styles really differ, the other styles'
models too. KID is the headline number because per-style test sets are small; FID is in each
style's report with its reliability note (eval/study.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.data import METADATA, DatasetError

log = logging.getLogger(__name__)

STYLES_FILE = "styles.json"
DEFAULT_STYLE_PRESET = "seed003"


@dataclass(frozen=True)
class Style:
    name: str
    train: Path
    test: Path


# -- 1. styles and their splits ------------------------------------------------------------------


def find_styles(root: Path, only: list[str] | None = None) -> list[str]:
    """The style folders under ``root``: subfolders with a metadata.jsonl, or with train/ and
    test/ splits that have one; ``only`` picks some of them by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"The styles folder {str(root)!r} does not exist.")
    found = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and ((p / METADATA).is_file() or (p / "train" / METADATA).is_file())
    )
    if not found:
        raise DatasetError(
            f"{str(root)!r} has no style folders: put each style's images in ROOT/<style>/ "
            f"with a {METADATA} (python -m training caption ROOT/<style> writes one)."
        )
    if only:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise DatasetError(
                f"No style folder {', '.join(unknown)} in {str(root)!r}; there are {', '.join(found)}."
            )
        found = [name for name in found if name in only]
    return found


def in_test_split(file_name: str, share: float, seed: int) -> bool:
    """Whether ``file_name`` is held out: a hash of the name, so adding images never moves an
    old one between splits and every rerun agrees."""
    digest = hashlib.sha256(f"{seed}:{file_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_style(source: Path, target: Path, *, share: float, seed: int) -> Style:
    """``source``'s own train/ and test/ splits, or a hold-out split of its images written to
    ``target/train`` and ``target/test`` (images linked, not copied, where the disk allows)."""
    from training.clip_filter import link_or_copy, read_pairs

    name = source.name
    if (source / "train" / METADATA).is_file() and (source / "test" / METADATA).is_file():
        return Style(name, source / "train", source / "test")
    if (source / "train" / METADATA).is_file():
        raise DatasetError(f"{source} has a train/ split but no test/ split to compare on.")
    rows = read_pairs(source)
    if len(rows) < 4:
        raise DatasetError(
            f"The style {name!r} has {len(rows)} images; it needs at least 4 (2 to train on, 2 to test KID on)."
        )
    test = [r for r in rows if in_test_split(r["file_name"], share, seed)]
    train = [r for r in rows if not in_test_split(r["file_name"], share, seed)]
    # Small styles: make sure both sides have at least two, moving the images nearest the cut.
    ranked = sorted(
        rows, key=lambda r: hashlib.sha256(f"{seed}:{r['file_name']}".encode()).digest()
    )
    if len(test) < 2:
        test = ranked[:2]
        train = ranked[2:]
    elif len(train) < 2:
        train, test = ranked[-2:], ranked[:-2]
    for split, chosen in (("train", train), ("test", test)):
        folder = target / split
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for row in chosen:
            link_or_copy(source / row["file_name"], folder / row["file_name"])
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen)
        (folder / METADATA).write_text(lines, encoding="utf-8")
    return Style(name, target / "train", target / "test")


# -- 2. the loop -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleLoopConfig:
    root: Path
    out: Path
    preset: str = DEFAULT_STYLE_PRESET
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields over the preset
    styles: list[str] | None = None  # default: every style folder
    test_share: float = 0.2
    split_seed: int = 0

    def check(self) -> None:
        if not 0 < self.test_share < 1:
            raise ValueError(f"--test-share must be between 0 and 1, got {self.test_share}.")
        for reserved in ("data", "out", "resume"):
            if reserved in self.train:
                raise ValueError(f"--{reserved} is set per style by the loop; leave it out.")


def model_entry(style: str, record: dict[str, Any]) -> tuple[str, str | None]:
    """(model, lora) for eval's study from one styles.json record."""
    if record["method"] == "lora":
        return record["base"], record["output"]
    return record["output"], None


def train_styles(
    config: StyleLoopConfig,
    *,
    train: Callable[[Any], Any] | None = None,
    log_line: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Train one model per style (module docstring); returns styles.json's content."""
    from training.config import REPORT_FILE, check_config, config_from_preset

    config.check()
    out = Path(config.out)
    names = find_styles(config.root, config.styles)
    # Every style's config is checked before the first minute of training.
    planned = []
    for name in names:
        run = out / name / "run"
        style_config = config_from_preset(
            config.preset,
            **{
                **config.train,
                "data": str(out / name / "data" / "train"),
                "out": str(run),
                "resume": "latest",
            },
        )
        check_config(style_config)
        planned.append((name, run, style_config))
    if train is None:
        from training.train import train as run_training

        train = run_training

    summary_path = out / STYLES_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"styles": {}}
    summary.update(
        {
            "root": str(config.root),
            "preset": config.preset,
            "train": {k: v for k, v in config.train.items() if _jsonable(v)},
        }
    )
    for number, (name, run, style_config) in enumerate(planned, 1):
        style = split_style(
            Path(config.root) / name,
            out / name / "data",
            share=config.test_share,
            seed=config.split_seed,
        )
        record = summary["styles"].get(name)
        if (run / REPORT_FILE).is_file() and record and Path(record["output"]).exists():
            log_line(
                f"[{number}/{len(planned)}] {name}: trained before ({record['output']}); skipped."
            )
            continue
        log_line(f"[{number}/{len(planned)}] {name}: training on {style.train} ({config.preset}).")
        result = train(style_config)
        summary["styles"][name] = {
            "train": str(style.train),
            "test": str(style.test),
            "method": style_config.method,
            "base": style_config.base,
            "output": str(result.output),
            "steps": result.report.get("steps"),
            "final_loss": result.report.get("final_loss"),
            "seconds_per_step": result.report.get("seconds_per_step"),
        }
        out.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


# -- 3. the study --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleStudyConfig:
    out: Path  # the loop's OUT (holds styles.json)
    limit: int | None = None  # test prompts per style
    size: int | None = None
    steps: int | None = None
    guidance: float | None = None
    batch_size: int = 8
    seed: int = 0
    bootstrap: int = 100
    fid_resamples: int = 50  # FID half-samples (eval/study.py)
    device: str = "auto"
    cache_dir: Path | None = None


def study_styles(
    config: StyleStudyConfig,
    *,
    load_extractor: Callable[[], Any],
    load_clip: Callable[[], Any] | None = None,
    runner: Any = None,
    log_line: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """eval's study per style (the base and every style's model on that style's test split),
    then one matrix of KID and CLIP score; writes OUT/study/report.md and matrix.json."""
    from eval.study import ModelEntry, StudyConfig, run_study

    summary_path = Path(config.out) / STYLES_FILE
    if not summary_path.is_file():
        raise DatasetError(f"{summary_path} does not exist; run `python -m training styles` first.")
    styles = json.loads(summary_path.read_text())["styles"]
    if not styles:
        raise DatasetError(f"{summary_path} lists no trained style.")
    bases = sorted({record["base"] for record in styles.values()})
    entries = [ModelEntry(base, name=f"base {base}") for base in bases]
    for style, record in sorted(styles.items()):
        model, lora = model_entry(style, record)
        entries.append(ModelEntry(model, lora, name=f"{style} model"))
    results: dict[str, Any] = {}
    for number, (style, record) in enumerate(sorted(styles.items()), 1):
        log_line(f"[{number}/{len(styles)}] study on the {style} test split ({record['test']}).")
        results[style] = run_study(
            StudyConfig(
                test_dir=Path(record["test"]),
                models=tuple(entries),
                out_dir=Path(config.out) / "study" / style,
                seed=config.seed,
                size=config.size,
                steps=config.steps,
                guidance=config.guidance,
                batch_size=config.batch_size,
                limit=config.limit,
                device=config.device,
                bootstrap=config.bootstrap,
                fid_resamples=config.fid_resamples,
                cache_dir=config.cache_dir,
            ),
            load_extractor=load_extractor,
            load_clip=load_clip,
            runner=runner,
        )
    matrix = style_matrix(results, [e.label for e in entries])
    folder = Path(config.out) / "study"
    (folder / "matrix.json").write_text(json.dumps(matrix, indent=2) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(matrix_markdown(matrix), encoding="utf-8")
    return matrix


def style_matrix(results: dict[str, dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """{metric: {model label: {test style: value}}} from each style's results.json, and per
    style whether its own model has the lowest KID, and whether it beats the base."""
    cells: dict[str, dict[str, dict[str, float | None]]] = {"kid": {}, "fid": {}, "clip_score": {}}
    for style, result in results.items():
        rows = {row["label"]: row for row in result["models"]}
        for label in labels:
            row = rows.get(label, {})
            for metric in cells:
                value = row.get(metric, {}).get("value")
                cells[metric].setdefault(label, {})[style] = value
    verdicts = {}
    for style in results:
        own = cells["kid"].get(f"{style} model", {}).get(style)
        kids = {
            label: column[style]
            for label, column in cells["kid"].items()
            if column.get(style) is not None
        }
        base = [v for label, v in kids.items() if label.startswith("base ")]
        verdicts[style] = {
            "own_kid": own,
            "best_model": min(kids, key=kids.__getitem__) if kids else None,
            "own_beats_base": None if own is None or not base else own < min(base),
        }
    return {"metrics": cells, "styles": sorted(results), "models": labels, "verdicts": verdicts}


def matrix_markdown(matrix: dict[str, Any]) -> str:
    styles = matrix["styles"]
    lines = [
        "# One model per style",
        "",
        "Rows: the models; columns: the test split of each style. A style's own model should "
        "have the lowest KID in its column (lower is better; KID because per-style test sets "
        "are small – each style's report.md has FID with its reliability note and the "
        "intervals).",
        "",
    ]
    for metric, title, scale in (("kid", "KID × 1000", 1000.0), ("clip_score", "CLIP score", 1.0)):
        lines += [
            f"## {title}",
            "",
            "| model | " + " | ".join(styles) + " |",
            "|---|" + "---:|" * len(styles),
        ]
        for label in matrix["models"]:
            values = matrix["metrics"][metric].get(label, {})
            cells = []
            for style in styles:
                value = values.get(style)
                text = "–" if value is None else f"{value * scale:.2f}"
                cells.append(f"**{text}**" if label == f"{style} model" else text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Verdicts", ""]
    for style, verdict in matrix["verdicts"].items():
        beats = {True: "beats", False: "does not beat", None: "cannot be compared with"}[
            verdict["own_beats_base"]
        ]
        lines.append(
            f"- {style}: its own model {beats} the base model on KID; lowest KID: {verdict['best_model']}."
        )
    return "\n".join(lines) + "\n"
