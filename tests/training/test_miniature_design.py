"""The miniature study's fixed-baseline design at smoke size (training/miniature.py): every arm
fine-tuned from one fixed checkpoint, the seeds' fine-tunes in worker processes, a learning-rate
sweep chosen on validation, EMA for every arm, the declared primary test outside the Holm
family; and the budget plan. The numbers mean nothing at this size; the wiring is what is
checked, with real tiny diffusers pipelines and a small stand-in for Inception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.eval.test_study import TinyFeatures
from training.miniature import (
    ARMS,
    BASELINE,
    FULL,
    LORA,
    Finetune,
    MiniatureConfig,
    finetune_config,
    run_finetunes,
    run_miniature,
)
from training.miniature_config import (
    BUDGET_MINUTES,
    check_config,
    plan,
    resolution,
    sweep_folder,
)

pytestmark = pytest.mark.slow


def _fixed_checkpoint(folder: Path, size: int = 64) -> Path:
    """A stand-in for a converged generic checkpoint: the embedded architecture, saved."""
    from models.embedded import build_architecture

    build_architecture(seed=7, native_size=size).save_pretrained(folder, safe_serialization=True)
    return folder


def _quick_fixed(out: Path, baseline: Path) -> MiniatureConfig:
    config = MiniatureConfig.quick(out)
    config.baseline = str(baseline)
    config.learning_rates = {"full": (2e-4, 1e-3), "full-unet": (5e-4,), "lora": (2e-3,)}
    config.generate = 8
    config.validate = 4
    config.workers = 2
    return config


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MiniatureConfig, dict]:
    root = tmp_path_factory.mktemp("fixed")
    config = _quick_fixed(root / "run", _fixed_checkpoint(root / "generic-000200"))
    lines: list[str] = []
    summary = run_miniature(config, load_extractor=TinyFeatures, log=lines.append)
    assert not any("pretrain" in line for line in lines)  # the baseline is not retrained
    assert sum("in a worker process" in line for line in lines) == 4 + 3  # sweep, then seeds
    return config, summary


def test_every_arm_and_seed_starts_from_the_one_fixed_checkpoint(
    fixed_run: tuple[MiniatureConfig, dict],
) -> None:
    config, summary = fixed_run
    out = Path(config.out)
    assert not (out / "baseline").exists()
    for arm in ARMS:
        for k in range(config.train_seeds):
            report = json.loads((out / ARMS[arm][0] / f"seed{k}/training_report.json").read_text())
            assert Path(report["base"]) == Path(config.baseline)
            settings = json.loads((out / ARMS[arm][0] / f"seed{k}/config.json").read_text())
            assert settings["seed"] == config.seed + k
            # Like with like: an EMA with one decay for every arm, LoRA's adapters included.
            assert settings["use_ema"] is True and settings["ema_decay"] == config.ema_decay
    # The baseline arm is the checkpoint itself, drawn with each seed's own noise.
    results = json.loads((out / "study/results.json").read_text())
    baselines = [row for row in results["models"] if row["group"] == BASELINE]
    assert len(baselines) == config.train_seeds
    assert len({row["model"] for row in baselines}) == 1
    assert len({row["kid"]["value"] for row in baselines}) == config.train_seeds
    first_images = [sorted((out / row["images_dir"]).glob("*.png"))[0].name for row in baselines]
    assert first_images == ["00000-seed0.png", "00000-seed100000.png"]
    assert summary["study"][BASELINE]["seeds"] == config.train_seeds


def test_the_sweep_chooses_each_arms_rate_on_validation_and_seed_0_is_that_run(
    fixed_run: tuple[MiniatureConfig, dict],
) -> None:
    config, summary = fixed_run
    out = Path(config.out)
    validation = json.loads((out / "validation/results.json").read_text())
    kid = {row["group"]: row["kid"]["value"] for row in validation["models"]}
    assert len(kid) == 4 and BASELINE not in kid  # every (arm, rate) of seed 0, no baseline
    for arm, (folder, _, _) in ARMS.items():
        grid = config.learning_rates[folder]
        chosen = summary["learning_rates"][arm]["chosen"]
        assert summary["learning_rates"][arm]["grid"] == list(grid)
        # One arm's grid is a single rate, but the study sweeps: every label names its rate.
        assert chosen == min(grid, key=lambda r, a=arm: kid[f"{a} lr {r:g}"])
        assert summary["validation"][arm]["kid"]["value"] == kid[f"{arm} lr {chosen:g}"]
        # The other seeds train at the chosen rate; seed 0 is the sweep's run at it.
        for k in range(config.train_seeds):
            settings = json.loads((out / folder / f"seed{k}/config.json").read_text())
            assert settings["learning_rate"] == chosen
        swept = sweep_folder(config, arm, chosen)
        name = (
            "lora/pytorch_lora_weights.safetensors"
            if arm == LORA
            else "model/unet/diffusion_pytorch_model.safetensors"
        )
        assert load_file(swept / name).keys() == load_file(out / folder / "seed0" / name).keys()
        for key, value in load_file(swept / name).items():
            assert torch.equal(value, load_file(out / folder / "seed0" / name)[key])
    assert summary["chosen_on_validation"] == min(
        ARMS, key=lambda arm: summary["validation"][arm]["kid"]["value"]
    )


def test_the_primary_test_is_reported_first_and_outside_the_holm_family(
    fixed_run: tuple[MiniatureConfig, dict],
) -> None:
    config, summary = fixed_run
    out = Path(config.out)
    results = json.loads((out / "study/results.json").read_text())
    primary = results["primary"]
    assert (primary["a"], primary["b"], primary["metric"]) == (BASELINE, FULL, "kid")
    assert primary["low"] <= primary["value"] <= primary["high"]
    assert 0 <= primary["p_value"] <= 1 and "before the run" in primary["declared"]
    assert summary["primary"] == primary
    comparison = next(c for c in results["comparisons"] if (c["a"], c["b"]) == (BASELINE, FULL))
    assert comparison["kid"]["primary"] is True and "holm_p" not in comparison["kid"]
    others = [c["kid"] for c in results["comparisons"] if c is not comparison]
    assert all("holm_p" in kid for kid in others)
    # Every decided comparison with a p-value and every permutation test, less the primary.
    decided = [
        c[metric]
        for c in results["comparisons"]
        for metric in ("kid", "prompt_gain")
        if c.get(metric, {}).get("p_value") is not None
    ]
    assert results["multiplicity"]["tests"] == len(decided) - 1 + len(results["models"])
    report = (out / "study/report.md").read_text()
    assert report.index("**Primary test**") < report.index("**Paired differences**")
    assert "| primary |" in report


def test_fine_tunes_in_worker_processes_equal_one_after_another(
    fixed_run: tuple[MiniatureConfig, dict], tmp_path: Path
) -> None:
    """Seed 1 of two arms again, here in this process one after another: the same weights,
    bit for bit, as the worker processes made."""
    config, summary = fixed_run
    out = Path(config.out)
    runs = []
    for arm in (FULL, LORA):
        rate = summary["learning_rates"][arm]["chosen"]
        again = finetune_config(
            config, Path(config.baseline), arm, 1, learning_rate=rate, out=tmp_path / ARMS[arm][0]
        )
        runs.append(Finetune(f"{arm} again", arm, again))
    finished = run_finetunes(runs, workers=1, log=lambda _: None)
    assert [run.name for run, _ in finished] == [run.name for run in runs]
    for name in (
        "full/model/unet/diffusion_pytorch_model.safetensors",
        "full/model/text_encoder/model.safetensors",
        "lora/lora/pytorch_lora_weights.safetensors",
    ):
        folder, rest = name.split("/", 1)
        mine, theirs = load_file(tmp_path / name), load_file(out / folder / "seed1" / rest)
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            assert torch.equal(value, theirs[key]), f"{name}: {key} differs"


def test_publish_keeps_the_sweeps_reports_and_no_pretraining(
    fixed_run: tuple[MiniatureConfig, dict], tmp_path: Path
) -> None:
    from training.miniature import publish

    config, _ = fixed_run
    names = {str(path.relative_to(tmp_path)) for path in publish(config, tmp_path)}
    assert {
        "training/sweep/full-lr0.0002-seed0.json",
        "training/sweep/lora-lr0.002-seed0.json",
    } <= names
    assert {f"training/{folder}-seed1.json" for folder in ("full", "full-unet", "lora")} <= names
    assert not any(name.startswith("training/baseline") for name in names)
    assert json.loads((tmp_path / "miniature.json").read_text())["primary"]["metric"] == "kid"


def test_a_rerun_with_other_workers_continues(fixed_run: tuple[MiniatureConfig, dict]) -> None:
    config, summary = fixed_run
    config.workers = 1  # how, not what: the run folder is still this run's
    lines: list[str] = []
    again = run_miniature(config, load_extractor=TinyFeatures, log=lines.append)
    config.workers = 2
    assert sum("already done" in line for line in lines) == 4 + 4 + 3
    assert again["primary"] == summary["primary"]


# -- the design's settings and the budget plan, without training ----------------------------


def test_the_resolution_follows_the_fixed_baseline(tmp_path: Path) -> None:
    baseline = _fixed_checkpoint(tmp_path / "generic", size=128)
    config = MiniatureConfig(out=tmp_path / "run", baseline=str(baseline))
    assert resolution(config) == 128 and resolution(MiniatureConfig()) == 64
    train = finetune_config(config, baseline, LORA, 2, learning_rate=1e-3)
    assert train.resolution == 128 and train.use_ema and train.seed == 2
    assert Path(train.base) == baseline
    stages = plan(config)
    assert not any("pretrain" in stage.name for stage in stages)
    assert sum(stage.minutes for stage in stages) <= BUDGET_MINUTES


def test_the_config_refuses_what_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="baseline must be a diffusers folder"):
        check_config(MiniatureConfig(baseline=str(tmp_path)))
    with pytest.raises(ValueError, match="a grid for each arm"):
        check_config(MiniatureConfig(learning_rates={"full": (1e-3,)}))
    rates = {"full": (1e-3, 1e-3), "full-unet": (1e-3,), "lora": (1e-3,)}
    with pytest.raises(ValueError, match="distinct positive"):
        check_config(MiniatureConfig(learning_rates=rates))
    with pytest.raises(ValueError, match="workers must be at least 1"):
        check_config(MiniatureConfig(workers=0))


def test_the_plan_is_printed_and_a_plan_over_the_hour_refused(tmp_path: Path, capsys) -> None:
    from training.__main__ import main

    baseline = _fixed_checkpoint(tmp_path / "generic", size=128)
    out = tmp_path / "run"
    assert main(["miniature", "--plan", "--baseline", str(baseline), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seed-0 fine-tunes × 9" in printed and "total (estimated wall)" in printed
    assert "pretrain" not in printed
    # Twelve seeds do not fit the hour: refused, unless asked for.
    argv = ["miniature", "--plan", "--baseline", str(baseline), "--out", str(out)]
    assert main([*argv, "--train-seeds", "12"]) == 2
    assert "over the 60-minute budget" in capsys.readouterr().err
    assert main([*argv, "--train-seeds", "12", "--over-budget"]) == 0
    assert not out.exists()  # a plan runs nothing
    # One worker: the fine-tunes take twice the wall time.
    one = MiniatureConfig(baseline=str(baseline), workers=1)
    two = MiniatureConfig(baseline=str(baseline), workers=2)
    stage = lambda c: next(s for s in plan(c) if s.name.startswith("fine-tunes"))  # noqa: E731
    assert stage(one).minutes == pytest.approx(2 * stage(two).minutes)
