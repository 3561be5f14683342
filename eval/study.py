"""The FID study of seed 000 (Table 2), for any set of models.

    test split (metadata.jsonl) ─► prompts ─► models/ (one image per prompt per model, fixed
    seeds, resumable) ─► drop all-black images ─► features (real ones cached by content)
    ─► FID, KID, CLIP score, prompt following, each with an interval that contains it
    ─► paired differences between models (the same real resample and the same prompts for
       both; the report's headline) and, for models grouped as one arm trained with several
       seeds, the mean ± spread over seeds ─► results.json, report.md, chart.png

Generation goes through :class:`models.runner.DiffusersRunner`, so every model name the project
knows works: presets, local diffusers folders, and either of them with a LoRA. Under
``accelerate launch`` each process generates its share of the prompts on its own GPU; the main
process then computes the metrics. Each model's own measurements are made here; FID, KID and
the paired statistics across models are computed in eval/study_stats.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval.clip_score import ClipScorer
from eval.features import FeatureExtractor, cached_features, describe
from eval.images import TestSplit, read_split
from eval.metrics import Estimate, bootstrap
from eval.progress import progress
from eval.study_stats import (
    DECIDED_METRICS,
    Measured,
    adjust_for_multiplicity,
    clipped,
    difference,
    fid_estimate,
    joint_metrics,
    kid_estimate,
    pooled,
)

log = logging.getLogger(__name__)

# The study's statistics live in eval/study_stats.py; the ones other code takes from the study
# are named here too.
__all__ = [
    "CHART_FILE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "ModelEntry",
    "StudyConfig",
    "adjust_for_multiplicity",
    "clipped",
    "default_cache_dir",
    "difference",
    "fid_estimate",
    "generation_params",
    "kid_estimate",
    "parse_models",
    "pooled",
    "run_study",
]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CHART_FILE = "chart.png"
_LORA_MARK = "+lora="


@dataclass(frozen=True)
class ModelEntry:
    """One row of the study: a model (preset or folder), optionally with a LoRA file."""

    model: str
    lora: str | None = None
    name: str | None = None  # the label in the report; default: derived from the paths
    group: str | None = None  # an arm trained with several seeds: rows of one group are pooled
    # Added to every generation seed of this model: one model drawn with several sets of noise
    # (a fixed baseline in a study whose training seeds each draw their own) is several rows.
    noise_offset: int = 0

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = Path(self.model).name if ("/" in self.model or "\\" in self.model) else self.model
        return f"{base} + LoRA {Path(self.lora).stem}" if self.lora else base


def parse_models(text: str) -> list[ModelEntry]:
    """``"embedded,./my-finetune,small-sd+lora=covers.safetensors"`` → entries, in order."""
    entries = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        model, _, lora = item.partition(_LORA_MARK)
        if not model.strip() or (_LORA_MARK in item and not lora.strip()):
            raise ValueError(f"--models entry {item!r} must read MODEL or MODEL+lora=FILE.")
        entries.append(ModelEntry(model.strip(), lora.strip() or None))
    if not entries:
        raise ValueError(f"--models must name at least one model, got {text!r}.")
    if len(set(entries)) != len(entries):
        raise ValueError(f"--models names a model twice: {text!r}.")
    return entries


@dataclass(frozen=True)
class StudyConfig:
    test_dir: Path
    models: tuple[ModelEntry, ...]
    out_dir: Path
    seed: int = 0  # prompt i is generated with seed + i by every model
    size: int | None = None  # px; default: each model's native size
    steps: int | None = None  # default: each model's own
    guidance: float | None = None  # default: each model's own
    lora_scale: float = 1.0
    batch_size: int = 8  # images per pipeline call
    limit: int | None = None  # use the first N test prompts only
    device: str = "auto"
    feature_batch_size: int = 32
    bootstrap: int = 100  # resamples per interval; 0 = no intervals
    fid_resamples: int = 50  # FID half-samples (each costs one FID per model)
    generate: int | None = None  # generate for the first N prompts only (all real images count)
    cache_dir: Path | None = None  # the project cache (embedded model; features in eval/)
    allow_downloads: bool = False  # fetch hub models that are not cached
    follow_label: str | None = None  # a metadata field (e.g. "genre") for the palette test
    # The one test declared before the run, (group a, group b, metric): b − a with its
    # seed-aware interval and p-value, reported first and kept out of the Holm family.
    primary: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class ModelRun:
    """Where one model's images are and what they were made with."""

    entry: ModelEntry
    params: Any  # models.jobs.GenerationParams
    folder: Path
    images: tuple[Path, ...]  # one per prompt, index order


def check_config(config: StudyConfig) -> None:
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {config.batch_size}.")
    if config.size is not None and (config.size < 8 or config.size % 8):
        raise ValueError(f"size must be a multiple of 8, at least 8, got {config.size}.")
    if config.steps is not None and config.steps < 1:
        raise ValueError(f"steps must be at least 1, got {config.steps}.")
    if config.bootstrap < 0:
        raise ValueError(f"bootstrap must be 0 or more, got {config.bootstrap}.")
    if config.generate is not None and config.generate < 4:
        raise ValueError(f"generate must be at least 4 prompts, got {config.generate}.")
    if not config.models:
        raise ValueError("models must name at least one model.")
    if config.primary is not None:
        a, b, metric = config.primary
        groups = {entry.group or entry.label for entry in config.models}
        if a == b or not {a, b} <= groups:
            raise ValueError(
                f"primary must name two different groups of the study's models, got {a!r} and "
                f"{b!r} (groups: {', '.join(sorted(groups))})."
            )
        if metric not in DECIDED_METRICS:
            raise ValueError(f"primary's metric must be one of {DECIDED_METRICS}, got {metric!r}.")


# -- 1. generation ---------------------------------------------------------------------------


def generation_params(config: StudyConfig, entry: ModelEntry) -> Any:
    """The :class:`~models.jobs.GenerationParams` of one model: its own settings unless the
    config overrides them."""
    from models.jobs import GenerationParams
    from models.registry import resolve_model

    spec = resolve_model(entry.model, lora=entry.lora)
    size = config.size or spec.native_size
    return GenerationParams(
        model=entry.model,
        width=size,
        height=size,
        steps=config.steps or spec.steps,
        guidance=spec.guidance if config.guidance is None else config.guidance,
        lora=str(spec.lora) if spec.lora else None,
        lora_scale=config.lora_scale,
    )


def image_folder(out_dir: Path, entry: ModelEntry, params: Any) -> Path:
    """``out_dir/images/<label>-<hash of the settings>``: other settings, other images."""
    settings = json.dumps(asdict(params), sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", entry.label).strip("-")[:60] or "model"
    return Path(out_dir) / "images" / f"{slug}-{digest}"


def prompt_count(config: StudyConfig, split: TestSplit) -> int:
    """How many prompts each model answers: the first ``config.generate``, or all."""
    return len(split) if config.generate is None else min(config.generate, len(split))


def image_path(folder: Path, index: int, seed: int) -> Path:
    return folder / f"{index:05d}-seed{seed}.png"


def generate_images(
    config: StudyConfig,
    entry: ModelEntry,
    split: TestSplit,
    runner: Any,
    *,
    indices: Sequence[int] | None = None,
) -> ModelRun:
    """Make one image per prompt (prompt i with seed ``config.seed + entry.noise_offset + i``)
    into the model's folder,
    skipping images already there, ``batch_size`` prompts per pipeline call. Black images are
    written too – the metrics step drops and counts them – so a resumed run never redoes them.
    ``indices`` limits this process to its share of the prompts."""
    from models.jobs import ImageSpec, NoControl

    params = generation_params(config, entry)
    folder = image_folder(config.out_dir, entry, params)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"model": entry.model, "lora": entry.lora, "params": asdict(params)}
    (folder / "settings.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    count = prompt_count(config, split)
    first = config.seed + entry.noise_offset
    paths = tuple(image_path(folder, i, first + i) for i in range(count))
    mine = range(count) if indices is None else indices
    missing = [i for i in mine if not paths[i].is_file()]
    with progress(len(missing), f"generate {entry.label}", "img") as bar:
        for start in range(0, len(missing), config.batch_size):
            batch = missing[start : start + config.batch_size]
            specs = [ImageSpec(prompt=split.prompts[i], seed=first + i) for i in batch]
            for i, made in zip(batch, runner(params, specs, NoControl()), strict=True):
                partial = paths[i].with_suffix(".tmp.png")
                made.image.save(partial)
                partial.replace(paths[i])  # atomic: an interrupted run leaves no half image
            bar.update(len(batch))
    return ModelRun(entry=entry, params=params, folder=folder, images=paths)


# -- 2. metrics ------------------------------------------------------------------------------


def split_black(paths: Sequence[Path]) -> tuple[list[int], list[int]]:
    """(indices kept, indices dropped): seed 000's policy drops all-black images (a safety
    checker's replacement) before FID, for every model alike."""
    from PIL import Image

    from models.postprocess import is_black

    kept, dropped = [], []
    for index, path in enumerate(paths):
        with Image.open(path) as image:
            (dropped if is_black(image) else kept).append(index)
    return kept, dropped


def clip_estimate(
    scorer: ClipScorer,
    images: Sequence[Path],
    prompts: Sequence[str],
    *,
    batch_size: int,
    resamples: int,
    seed: int,
) -> tuple[Estimate, int]:
    """The mean CLIP score of ``images`` against their prompts, with a bootstrap interval."""
    from PIL import Image

    scores = []
    with progress(len(images), "clip score", "img") as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            loaded = []
            for path in chunk:
                with Image.open(path) as image:
                    loaded.append(image.convert("RGB"))
            scores.append(scorer(loaded, prompts[start : start + batch_size]))
            bar.update(len(chunk))
    values = np.concatenate(scores) if scores else np.empty(0)

    def mean(sample: np.ndarray) -> float:
        return float(sample.mean())

    return bootstrap(mean, (values,), resamples=resamples, seed=seed), len(values)


def model_metrics(
    config: StudyConfig,
    run: ModelRun,
    split: TestSplit,
    real: np.ndarray,
    extractor: FeatureExtractor,
    clip: ClipScorer | str | None,
    feature_cache: Path,
    real_palettes: np.ndarray | None = None,
) -> Measured:
    """What one model's images say on their own: counts, features, CLIP score, the palette
    test. FID and KID are added by :func:`joint_metrics`, which resamples all models alike.
    ``real_palettes`` (the real images' colour histograms, when the study has a
    ``follow_label``) adds the palette test."""
    kept, dropped = split_black(run.images)
    row: dict[str, Any] = {
        "label": run.entry.label,
        "group": run.entry.group or run.entry.label,
        "model": _relative(run.entry.model, config.out_dir),
        "lora": _relative(run.entry.lora, config.out_dir) if run.entry.lora else None,
        "params": {**asdict(run.params), "model": _relative(run.params.model, config.out_dir)},
        "images_dir": _relative(str(run.folder), config.out_dir),
        "prompts": len(run.images),
        "generated": len(run.images),
        "dropped_black": len(dropped),
        "kept": len(kept),
    }
    if run.params.lora:
        row["params"]["lora"] = _relative(run.params.lora, config.out_dir)
    if len(kept) < 2:
        row["skipped"] = "fewer than 2 images left after dropping black ones"
        return Measured(row)
    kept_paths = [run.images[i] for i in kept]
    fake = cached_features(
        kept_paths,
        extractor,
        feature_cache,
        batch_size=config.feature_batch_size,
        description=f"features {run.entry.label}",
    )
    measured = Measured(row, features=fake, prompts=np.asarray(kept, dtype=np.int64))
    if isinstance(clip, ClipScorer):
        score, count = clip_estimate(
            clip,
            kept_paths,
            [split.prompts[i] for i in kept],
            batch_size=config.feature_batch_size,
            resamples=config.bootstrap,
            seed=config.seed,
        )
        row["clip_score"] = {**asdict(score), "n": count, "model": clip.name}
    else:
        row["clip_score"] = {"skipped": clip or "not requested"}
    if real_palettes is not None:
        from eval.prompt_following import histograms, prompt_following, prompt_hits

        generated = histograms(kept_paths)
        labels = [split.labels[i] for i in kept]
        result = prompt_following(
            real_palettes,
            split.labels,
            generated,
            labels,
            resamples=config.bootstrap,
            seed=config.seed,
        )
        row["prompt_following"] = {"label": config.follow_label, **result.as_dict()}
        measured.hits = prompt_hits(real_palettes, split.labels, generated, labels)
    return measured


def _relative(path: str | None, root: Path) -> str | None:
    """``path`` relative to the study folder's parent (the run folder) when it lies inside it,
    so committed results carry no machine paths; other names (presets) stay as they are."""
    if path is None:
        return None
    candidate = Path(path)
    base = Path(root).resolve().parent
    try:
        return str(candidate.resolve().relative_to(base))
    except ValueError:
        return str(path) if not candidate.is_absolute() else candidate.name


# -- 3. the whole study ------------------------------------------------------------------------


def run_study(
    config: StudyConfig,
    *,
    load_extractor: Callable[[], FeatureExtractor],
    load_clip: Callable[[], ClipScorer | str] | None = None,
    runner: Any = None,
) -> dict[str, Any] | None:
    """Generate, measure and report; returns the results (None on non-main processes under
    ``accelerate launch``). The feature network and CLIP are loaded (``load_extractor``,
    ``load_clip``: a scorer, or the reason there is none) only once the images exist, after the
    pipeline is released, so they never share memory with it. ``runner`` defaults to a
    :class:`~models.runner.DiffusersRunner` without black-image retries."""
    from eval.report import write_chart, write_report

    check_config(config)
    started = time.perf_counter()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = read_split(config.test_dir, limit=config.limit, label=config.follow_label)
    cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    feature_cache = cache_root / "eval"

    # 1. Images: each process its share of the prompts; a run that stopped resumes here.
    state = _distributed_state()
    indices: list[int] | None = None
    device = config.device
    if state is not None:
        with state.split_between_processes(list(range(prompt_count(config, split)))) as share:
            indices = list(share)
        device = str(state.device) if config.device == "auto" else config.device
    if runner is None:
        from models.runner import DiffusersRunner

        # No black-image retries: the seed dropped black outputs instead, and so do we.
        runner = DiffusersRunner(
            device=device,
            cache_dir=cache_root,
            allow_downloads=config.allow_downloads,
            black_retries=0,
        )
    runs = [
        generate_images(config, entry, split, runner, indices=indices) for entry in config.models
    ]
    if state is not None:
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        runs = [generate_images(config, entry, split, runner) for entry in config.models]
    del runner  # free the pipeline before the feature network loads

    # 2. Features of the real images: cached by content, so the next study starts here.
    extractor = load_extractor()
    real = cached_features(
        list(split.files),
        extractor,
        feature_cache,
        batch_size=config.feature_batch_size,
        description="features (real)",
    )
    clip = load_clip() if load_clip is not None else None

    # 3. Metrics per model, then the three outputs.
    palettes = None
    if config.follow_label:
        from eval.prompt_following import histograms

        palettes = histograms(split.files)
    measured = [
        model_metrics(config, run, split, real, extractor, clip, feature_cache, palettes)
        for run in runs
    ]
    joint = joint_metrics(
        measured,
        real,
        extractor.dim,
        bootstrap=config.bootstrap,
        fid_resamples=config.fid_resamples,
        seed=config.seed,
        primary=config.primary,
    )
    rows = [m.row for m in measured]
    results = {
        "study": "seed 000 Table 2: FID of generated vs real test images",
        "test_split": {
            "dir": _relative(str(split.root), out_dir),
            "images": len(split),
            "generated_prompts": max((r["prompts"] for r in rows), default=0),
        },
        "seed": config.seed,
        "bootstrap_resamples": config.bootstrap,
        "fid_resamples": config.fid_resamples,
        "confidence": 0.95,
        "feature_network": describe(extractor),
        "follow_label": config.follow_label,
        "models": rows,
        **joint,
        "notes": _notes(rows, extractor.dim),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_report(results, out_dir / REPORT_FILE)
    write_chart(results, out_dir / CHART_FILE)
    return results


def _notes(rows: Sequence[dict[str, Any]], dim: int) -> list[str]:
    notes = []
    for row in rows:
        if row.get("dropped_black"):
            notes.append(
                f"{row['label']}: {row['dropped_black']} of {row['generated']} images were "
                "all black and were dropped before the metrics (seed 000's policy)."
            )
        fid = row.get("fid")
        if fid and not fid["reliable"]:
            notes.append(
                f"{row['label']}: FID on {min(fid['n_real'], fid['n_generated'])} images, fewer "
                f"than the {dim} feature dimensions – the covariance is singular and FID is "
                "biased upwards; it is unreliable. Compare models by KID here."
            )
        if "skipped" in row:
            notes.append(f"{row['label']}: no metrics – {row['skipped']}.")
    skipped_clip = {
        r["clip_score"]["skipped"] for r in rows if "skipped" in r.get("clip_score", {})
    }
    for reason in sorted(skipped_clip):
        notes.append(f"CLIP score skipped: {reason}.")
    return notes


def _distributed_state() -> Any:
    """accelerate's process state when launched with several processes, else None."""
    try:
        from accelerate import PartialState
    except ImportError:
        return None
    state = PartialState()
    return state if state.num_processes > 1 else None


def default_cache_dir() -> Path:
    """The project cache, as the bot's ``COVER_CACHE_DIR`` setting defaults it."""
    return Path(os.environ.get("COVER_CACHE_DIR") or "~/.cache/playlist-cover").expanduser()
