"""The seeds' study in miniature, end to end on a laptop: ``python -m training miniature``.

    1. dataset    synthetic covers + a generic domain (training.synthetic),  out/data/
                  at the baseline's resolution
    2. baseline   either fixed (--baseline: one pretrained checkpoint that   out/baseline/seed<k>/
                  never saw a cover, as seed 000 took SD 1.5 off the shelf)
                  or pretrained here from nothing on the generic domain,
                  once per training seed (training.pretrain)
    3. sweep      seed 0 of each fine-tune arm at every learning rate of     out/sweep/<arm>-lr<r>/
                  its grid, the same step budget for all (training.train):   (out/<arm>/seed0/ when
                  full with the text encoder; full with it frozen; LoRA.     the grid has one rate)
                  Every arm keeps an EMA of its weights with one decay
    4. validate   every seed-0 fine-tune on the validation split (KID): the out/validation/
                  lowest picks each arm's learning rate, and the arm with the
                  lowest at its rate is the one ``--ship`` exports
    5. seeds      seeds 1 … of each arm at its chosen rate (seed 0 is the     out/<arm>/seed<k>/
                  sweep's run at that rate)
    6. study      baseline and every arm and seed on the covers' test split: out/study/
                  the declared primary test (baseline → full fine-tune, KID)
                  first, then FID, KID, palette prompt-following and paired
                  differences under Holm (eval.study)
    7. samples    six titles through each arm's first seed                  out/study/samples.png
    8. ship       (--ship) the arm chosen on validation becomes the embedded default model

Decisions use the validation split, the table the test split: nothing measured on the test
split chooses anything. The fine-tunes of a stage run as separate processes, one torch thread
each (``workers``); every draw is seeded, so the result is the same as one after another.

Each stage leaves its result on disk and is skipped when that result is already there, so an
interrupted run continues where it stopped; ``--fresh`` starts over. docs/miniature.md has the
design, the budget and the committed results.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.miniature_config import (
    ARMS,
    BASELINE,
    FOLLOW_LABEL,
    FULL,
    FULL_UNET,
    LORA,
    NOISE_STRIDE,
    PRIMARY,
    STUDY_STEPS,
    SUMMARY_FILE,
    MiniatureConfig,
    arm_output,
    baseline_folder,
    baseline_model,
    check_config,
    finetune_config,
    model_and_lora,
    output_of,
    resolution,
    run_folder,
    sweep_folder,
    sweeping,
)
from training.miniature_outputs import (
    SAMPLE_COVERS,
    SAMPLES_FILE,
    best_finetune,
    complete,
    publish,
    ship,
    write_samples,
)
from training.pretrain import PretrainConfig

# The names other code and the tests take from the study.
__all__ = [
    "ARMS",
    "BASELINE",
    "FULL",
    "FULL_UNET",
    "LORA",
    "SAMPLE_COVERS",
    "MiniatureConfig",
    "arm_output",
    "baseline_folder",
    "best_finetune",
    "finetune_config",
    "publish",
    "run_finetunes",
    "run_miniature",
    "ship",
]

# Settings that change how a run is carried out, not what it computes: a run folder made with
# other values of these continues.
_HOW = ("out", "workers")


@dataclass(frozen=True)
class Finetune:
    """One training run of a stage: its name in the log and the summary, and its config."""

    name: str
    arm: str
    config: TrainConfig

    @property
    def done(self) -> bool:
        return output_of(Path(self.config.out), self.arm).is_file()


def run_miniature(
    config: MiniatureConfig,
    *,
    load_extractor: Callable[[], Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage that has not run yet; return (and write) the summary with timings.

    ``load_extractor`` gives the FID feature network (default: the Inception file, see
    ``docs/eval.md``); tests pass a small stand-in.
    """
    from training.pretrain import pretrain
    from training.synthetic import write_dataset

    check_config(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / SUMMARY_FILE
    summary: dict[str, Any] = (
        json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    )
    settings = _jsonable(asdict(config))
    earlier = summary.get("config", settings)
    if _what(earlier) != _what(settings):
        raise ValueError(
            f"{out} holds a run made with other settings; continue it with those, or start "
            "over with --fresh (or another --out)."
        )
    summary.setdefault("seconds", {})
    summary.setdefault("wall_seconds", {})
    summary["config"] = settings

    def save() -> None:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    def stage(name: str, done: bool, work: Callable[[], Any]) -> None:
        if done:
            log(f"[{name}] already done, skipped")
            return
        log(f"[{name}] ...")
        started = time.perf_counter()
        work()
        summary["seconds"][name] = summary["wall_seconds"][name] = round(
            time.perf_counter() - started, 1
        )
        log(f"[{name}] done in {summary['seconds'][name] / 60:.1f} min")
        save()

    def finetunes(group: str, runs: list[Finetune]) -> None:
        for run in runs:
            if run.done:
                log(f"[{run.name}] already done, skipped")
        pending = [run for run in runs if not run.done]
        if not pending:
            return
        started = time.perf_counter()
        for run, seconds in run_finetunes(pending, workers=config.workers, log=log):
            summary["seconds"][run.name] = round(seconds, 1)
            log(f"[{run.name}] done in {seconds / 60:.1f} min")
            save()
        summary["wall_seconds"][group] = round(time.perf_counter() - started, 1)
        save()

    data = out / "data"
    size = resolution(config)

    # 1. The dataset at the baseline's resolution (its writer skips complete splits by itself).
    stage(
        "dataset",
        (data / "dataset.json").is_file(),
        lambda: write_dataset(data, sizes=config.sizes, seed=config.seed, size=size, log=log),
    )
    # 2. The baseline: the fixed checkpoint, or pretrained here, from nothing, on the generic
    # domain, once per training seed.
    if config.baseline is not None:
        log(f"[baseline] fixed: {config.baseline} ({size} px), shared by every arm and seed")
        summary["baseline"] = {"fixed": str(config.baseline), "resolution": size}
    for k in range(config.train_seeds if config.baseline is None else 0):
        pretrain_config = PretrainConfig(
            data=str(data / "generic"),
            out=str(baseline_folder(config, k)),
            seed=config.seed + k,
            device=config.device,
            **config.pretrain,
        )
        stage(
            f"pretrain seed {k}",
            (baseline_folder(config, k) / "model" / "model_index.json").is_file(),
            lambda c=pretrain_config: pretrain(c, log=log),
        )
    # 3. Seed 0 of every arm at every rate of its grid, from the baseline's seed 0.
    sweep = sweeping(config)
    seed0 = {
        (arm, rate): _seed0_run(config, arm, rate, sweep)
        for arm in ARMS
        for rate in _grid(config, arm)
    }
    finetunes("seed-0 fine-tunes", list(seed0.values()))
    # 4. Validation decides: each seed-0 run on the validation split; per arm the lowest KID
    # picks the learning rate.
    validation_dir = out / "validation"
    validation_entries = tuple(
        _entry(config, arm, 0, folder=Path(run.config.out), tag=_rate_tag(rate, sweep))
        for (arm, rate), run in seed0.items()
    )
    stage(
        "validate",
        complete(validation_dir),
        lambda: _study(
            config,
            data / "covers" / "validation",
            validation_entries,
            validation_dir,
            config.validate,
            load_extractor,
        ),
    )
    validation = json.loads((validation_dir / "results.json").read_text(encoding="utf-8"))
    headline = {row["group"]: _headline(row) for row in validation["models"]}
    rates = {
        arm: min(
            _grid(config, arm),
            key=lambda r, a=arm: headline[_group(a, _rate_tag(r, sweep))]["kid"]["value"],
        )
        for arm in ARMS
    }
    summary["learning_rates"] = {
        arm: {
            "grid": list(_grid(config, arm)),
            "chosen": rates[arm],
            "validation_kid": {
                f"{r:g}": headline[_group(arm, _rate_tag(r, sweep))]["kid"]["value"]
                for r in _grid(config, arm)
            },
        }
        for arm in ARMS
    }
    summary["validation"] = {
        arm: headline[_group(arm, _rate_tag(rates[arm], sweep))] for arm in ARMS
    }
    summary["chosen_on_validation"] = best_finetune(summary)
    save()
    # 5. The other seeds at the chosen rates; seed 0 at that rate is the sweep's run, copied.
    if sweep:
        for arm in ARMS:
            _copy_run(Path(seed0[arm, rates[arm]].config.out), run_folder(config, arm, 0))
    finetunes(
        "fine-tunes",
        [
            Finetune(
                f"{ARMS[arm][0]} seed {k}",
                arm,
                finetune_config(
                    config, baseline_model(config, k), arm, k, learning_rate=rates[arm]
                ),
            )
            for arm in ARMS
            for k in range(1, config.train_seeds)
        ],
    )
    # 6. The study on the covers' test split: every arm, every seed, the primary test first.
    study_dir = out / "study"
    stage(
        "study",
        complete(study_dir),
        lambda: _study(
            config,
            data / "covers" / "test",
            _test_entries(config),
            study_dir,
            config.generate,
            load_extractor,
            primary=PRIMARY,
        ),
    )
    # 7. A picture of what the numbers mean: the same titles through each arm's first seed.
    samples = study_dir / SAMPLES_FILE
    models = {BASELINE: (baseline_model(config, 0), None)}
    for arm in ARMS:
        models[arm] = model_and_lora(config, arm, 0)
    stage("samples", samples.is_file(), lambda: write_samples(config, models, samples))
    results = json.loads((study_dir / "results.json").read_text(encoding="utf-8"))
    summary["primary"] = results.get("primary")
    summary["study"] = {row["group"]: _pooled(row) for row in results["groups"]}
    summary["comparisons"] = [_difference(row) for row in results["comparisons"]]
    summary["total_seconds"] = round(sum(summary["seconds"].values()), 1)
    summary["total_wall_seconds"] = round(sum(summary["wall_seconds"].values()), 1)
    save()
    return summary


def run_finetunes(
    runs: Sequence[Finetune], *, workers: int, log: Callable[[str], None] = print
) -> list[tuple[Finetune, float]]:
    """Train ``runs``, ``workers`` at a time, each in its own process with one torch thread
    (one worker: here, one after another, also with one thread). Returns (run, seconds) in
    the order they finished. Every draw of a run is seeded by its config and one thread sums
    in one order, so the weights are the same whichever way they ran."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    if workers == 1 or len(runs) == 1:
        finished = []
        for run in runs:
            log(f"[{run.name}] ...")
            finished.append((run, _train_one_thread(run.config)))
        return finished
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a forked child would inherit torch's thread pools and locks mid-use.
    context = multiprocessing.get_context("spawn")
    finished = []
    with ProcessPoolExecutor(
        min(workers, len(runs)), mp_context=context, initializer=_one_thread_worker
    ) as pool:
        futures = {}
        for run in runs:
            log(f"[{run.name}] ... (in a worker process)")
            futures[pool.submit(_train_one_thread, run.config)] = run
        for future in as_completed(futures):
            finished.append((futures[future], future.result()))
    return finished


def _one_thread_worker() -> None:
    """A fresh worker process: one thread for OpenMP, set before torch first loads."""
    import os

    os.environ["OMP_NUM_THREADS"] = "1"


def _train_one_thread(config: TrainConfig) -> float:
    """Train ``config`` with one torch thread; the seconds it took."""
    import torch

    from training.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        train(config)
    finally:
        torch.set_num_threads(threads)
    return time.perf_counter() - started


def _grid(config: MiniatureConfig, arm: str) -> tuple[float, ...]:
    return tuple(config.learning_rates[ARMS[arm][0]])


def _rate_tag(rate: float, sweep: bool) -> str:
    """How a seed-0 run's label names its rate: not at all when there is no sweep."""
    return f" lr {rate:g}" if sweep else ""


def _group(arm: str, tag: str) -> str:
    return f"{arm}{tag}"


def _seed0_run(config: MiniatureConfig, arm: str, rate: float, sweep: bool) -> Finetune:
    folder = sweep_folder(config, arm, rate) if sweep else run_folder(config, arm, 0)
    train_config = finetune_config(
        config, baseline_model(config, 0), arm, 0, learning_rate=rate, out=folder
    )
    return Finetune(f"{ARMS[arm][0]}{_rate_tag(rate, sweep)} seed 0", arm, train_config)


def _copy_run(source: Path, target: Path) -> None:
    """``source``'s finished run as ``target`` (through a temporary name: never half a copy)."""
    if target.is_dir():
        return
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoint-*"))
    partial.rename(target)


def _entry(
    config: MiniatureConfig, arm: str, k: int, *, folder: Path | None = None, tag: str = ""
) -> Any:
    from eval.study import ModelEntry

    model, lora = model_and_lora(config, arm, k, folder)
    return ModelEntry(
        str(model),
        lora=str(lora) if lora else None,
        name=f"{arm}{tag} s{k}",
        group=_group(arm, tag),
        noise_offset=_noise(config, k),
    )


def _noise(config: MiniatureConfig, k: int) -> int:
    """Seed k's generation seeds: the same for all (pretrained per seed: seed k's baseline is a
    model of its own), or their own (a fixed baseline: its k rows are k draws of it)."""
    return 0 if config.baseline is None else k * NOISE_STRIDE


def _test_entries(config: MiniatureConfig) -> tuple[Any, ...]:
    from eval.study import ModelEntry

    entries = [
        ModelEntry(
            str(baseline_model(config, k)),
            name=f"{BASELINE} s{k}",
            group=BASELINE,
            noise_offset=_noise(config, k),
        )
        for k in range(config.train_seeds)
    ]
    entries += [_entry(config, arm, k) for arm in ARMS for k in range(config.train_seeds)]
    return tuple(entries)


def _study(
    config: MiniatureConfig,
    split: Path,
    entries: tuple[Any, ...],
    study_dir: Path,
    generate: int,
    load_extractor: Callable[[], Any] | None,
    *,
    primary: tuple[str, str, str] | None = None,
) -> None:
    from eval.features import load_inception
    from eval.study import StudyConfig, run_study
    from models.registry import pick_device

    device = pick_device(config.device)
    study = StudyConfig(
        test_dir=split,
        models=entries,
        out_dir=study_dir,
        seed=config.seed,
        steps=STUDY_STEPS,
        guidance=config.guidance,
        device=device,
        bootstrap=config.bootstrap,
        fid_resamples=config.fid_resamples,
        generate=generate,
        cache_dir=Path(config.out) / "cache",
        follow_label=FOLLOW_LABEL,
        primary=primary,
    )
    extractor = load_extractor or (lambda: load_inception(None, device=device))
    results = run_study(
        study, load_extractor=extractor, load_clip=lambda: "no CLIP weights offline"
    )
    assert results is not None  # one process
    results["complete"] = True
    (study_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def _what(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what a run computes (see _HOW)."""
    return {k: v for k, v in settings.items() if k not in _HOW}


def _headline(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("value", "low", "high")
    line: dict[str, Any] = {"kept": row.get("kept")}
    for metric in ("fid", "kid"):
        if metric in row:
            line[metric] = {k: row[metric][k] for k in keep}
    if "prompt_following" in row:
        line["prompt_following"] = {k: row["prompt_following"]["accuracy"][k] for k in keep}
        line["null_mean"] = row["prompt_following"]["chance"]
        line["p_value"] = row["prompt_following"]["p_value"]
    return line


def _pooled(group: dict[str, Any]) -> dict[str, Any]:
    keep = ("value", "low", "high", "spread")
    line: dict[str, Any] = {"seeds": group["seeds"]}
    for metric in ("kid", "fid", "prompt_following"):
        if metric in group:
            line[metric] = {k: group[metric][k] for k in keep}
    return line


def _difference(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("value", "low", "high", "spread")
    line: dict[str, Any] = {"a": row["a"], "b": row["b"], "seeds": row["seeds"]}
    for metric in ("kid", "fid", "prompt_following"):
        if metric in row:
            line[metric] = {k: row[metric][k] for k in keep}
    return line


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value) if isinstance(value, Path) else value
