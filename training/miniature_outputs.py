"""What a finished miniature study (training/miniature.py) leaves for people: the samples sheet,
the shipped embedded model (``--ship``) and the published results (``--publish``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from training.miniature_config import (
    ARMS,
    BASELINE,
    STUDY_STEPS,
    SUMMARY_FILE,
    MiniatureConfig,
    baseline_folder,
    model_and_lora,
    resolution,
    run_folder,
)
from training.synthetic import CoverSpec

SAMPLES_FILE = "samples.png"
STUDY_FILES = ("report.md", "results.json", "chart.png", SAMPLES_FILE)


# Titles for the samples sheet, with the signatures the synthetic rules give them.
SAMPLE_COVERS = (
    CoverSpec("late night jazz drive", "jazz", "drive", "night", None),
    CoverSpec("80s techno workout", "techno", "workout", None, "80s"),
    CoverSpec("rainy day lofi study", "lofi", "study", "rain", None),
    CoverSpec("summer reggae party", "reggae", "party", "summer", None),
    CoverSpec("sad piano sleep", "classical", "sleep", "sad", None),
    CoverSpec("90s punk", "punk", None, None, "90s"),
)


def write_samples(
    config: MiniatureConfig, models: dict[str, tuple[Path, Path | None]], path: Path
) -> None:
    """A grid: one column per :data:`SAMPLE_COVERS` title, one row per model (same seed for
    all) and a last row drawn by the synthetic rules themselves."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from models.jobs import GenerationParams, ImageSpec, NoControl
    from models.registry import pick_device
    from models.runner import DiffusersRunner
    from training.synthetic import render_cover

    cell, label_w, head_h = 96, 130, 34
    size = resolution(config)
    rows = [*models, "synthetic rule"]
    sheet = Image.new(
        "RGB", (label_w + cell * len(SAMPLE_COVERS), head_h + cell * len(rows)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=11)
    for column, cover in enumerate(SAMPLE_COVERS):
        words = cover.title.split()
        half = (len(words) + 1) // 2
        text = " ".join(words[:half]) + "\n" + " ".join(words[half:])
        draw.multiline_text((label_w + column * cell + 4, 3), text, fill="black", font=font)
    runner = DiffusersRunner(
        device=pick_device(config.device), cache_dir=Path(config.out) / "cache", black_retries=0
    )
    specs = [ImageSpec(prompt=cover.caption, seed=config.seed) for cover in SAMPLE_COVERS]
    images_by_row: list[list[Image.Image]] = []
    for model, lora in models.values():
        params = GenerationParams(
            model=str(model),
            width=size,
            height=size,
            steps=STUDY_STEPS,
            guidance=config.guidance,
            lora=str(lora) if lora else None,
        )
        images_by_row.append([made.image for made in runner(params, specs, NoControl())])
    rng = np.random.default_rng(config.seed)
    images_by_row.append([render_cover(cover, rng, size) for cover in SAMPLE_COVERS])
    for row, (name, images) in enumerate(zip(rows, images_by_row, strict=True)):
        top = head_h + row * cell
        draw.text((4, top + cell // 2 - 7), name, fill="black", font=font)
        for column, image in enumerate(images):
            tile = image.resize((cell - 4, cell - 4), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + column * cell + 2, top + 2))
    sheet.save(path)


def best_finetune(summary: dict[str, Any]) -> str:
    """The arm whose first seed has the lowest KID on the validation split (the baseline is
    never shipped; the test split chooses nothing)."""
    return min(ARMS, key=lambda arm: summary["validation"][arm]["kid"]["value"])


def ship(config: MiniatureConfig, summary: dict[str, Any], *, folder: Path | None = None) -> Path:
    """Export the arm chosen on validation (lowest KID, first seed) as the embedded default's
    packaged weights."""
    from models.embedded import EMBEDDED_VERSION, PACKAGED, export_to_package
    from models.registry import load_pipeline, resolve_model

    out = Path(config.out)
    arm = best_finetune(summary)
    model, lora = model_and_lora(config, arm, 0)
    method = ARMS[arm][1]
    spec = resolve_model(str(model), lora=str(lora.parent) if lora else None)
    pipe = load_pipeline(spec, device="cpu", cache_dir=out / "cache")
    target = Path(folder) if folder else PACKAGED
    if target.exists():
        shutil.rmtree(target)
    info = {
        "name": "embedded",
        "version": EMBEDDED_VERSION,
        "native_size": resolution(config),  # the fixed baseline's, or PretrainConfig's 64
        "trained": True,
        "method": method,
        "arm": arm,
        "chosen_on": "validation split, lowest KID",
        "validation": summary["validation"],
        "study": summary["study"],
        "note": (
            "Trained by `python -m training miniature` on synthetic playlist covers: "
            + (
                "VAE and UNet + CLIP text encoder from scratch on a generic domain"
                if config.baseline is None
                else "from a fixed generic checkpoint (training.converge --cover-steps 0)"
            )
            + f", then the {arm} on covers. docs/miniature.md says what it learned at this "
            "budget, and what not."
        ),
    }
    export_to_package(pipe, info, target)
    return target


def publish(config: MiniatureConfig, folder: Path) -> list[Path]:
    """Copy a finished run's results into ``folder`` (docs/miniature/ for the committed study):
    the summary, the test study's report, results, chart and samples, the validation's report
    and results, and every training run's report as ``training/<run>-seed<k>.json`` (the
    learning-rate sweep's as ``training/sweep/<arm>-lr<rate>-seed0.json``). Paths
    inside the run folder are written relative to it, so nothing names the machine it ran on.
    Returns the files written."""
    out, folder = Path(config.out), Path(folder)
    if not (out / SUMMARY_FILE).is_file() or not complete(out / "study"):
        raise ValueError(f"{out} holds no finished study; run it first, then publish.")
    copies = {
        out / SUMMARY_FILE: folder / SUMMARY_FILE,
        **{out / "study" / name: folder / name for name in STUDY_FILES},
        **{out / "validation" / name: folder / "validation" / name for name in STUDY_FILES[:2]},
    }
    for k in range(config.train_seeds):
        if config.baseline is None:  # a fixed baseline was trained elsewhere
            report = baseline_folder(config, k) / "pretrain_report.json"
            copies[report] = folder / "training" / f"{BASELINE}-seed{k}.json"
        for arm in ARMS:
            run = run_folder(config, arm, k)
            copies[run / "training_report.json"] = (
                folder / "training" / f"{run.parent.name}-seed{k}.json"
            )
    for report in sorted((out / "sweep").glob("*/training_report.json")):
        copies[report] = folder / "training" / "sweep" / f"{report.parent.name}-seed0.json"
    if (folder / "training").is_dir():  # runs of an earlier publish that this one lacks
        shutil.rmtree(folder / "training")
    written = []
    for source, target in copies.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".json":
            text = json.dumps(_relative(json.loads(source.read_text("utf-8")), out), indent=2)
            target.write_text(text + "\n", encoding="utf-8")
        else:
            shutil.copyfile(source, target)
        written.append(target)
    return written


def _relative(value: Any, root: Path) -> Any:
    """``value`` with every string that names a path inside ``root`` made relative to it (and
    ``root`` itself written as ".")."""
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    if isinstance(value, str) and value:
        for base in {str(root), str(root.resolve())}:
            if value == base:
                return "."
            if value.startswith(base.rstrip("/") + "/"):
                return value[len(base.rstrip("/")) + 1 :]
    return value


def complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished study (its results.json says so)."""
    path = folder / "results.json"
    return path.is_file() and json.loads(path.read_text()).get("complete", False)
