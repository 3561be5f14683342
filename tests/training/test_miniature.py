"""``python -m training miniature`` at smoke size: every stage really runs (dataset → from-scratch
pretraining → three fine-tune arms, two training seeds each → validation → study → shipping),
on a few dozen images and a handful of steps, with a small stand-in for the Inception network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.eval.test_study import TinyFeatures
from training.miniature import (
    ARMS,
    BASELINE,
    FULL,
    FULL_UNET,
    LORA,
    MiniatureConfig,
    run_miniature,
    ship,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[MiniatureConfig, dict]:
    out = tmp_path_factory.mktemp("miniature")
    config = MiniatureConfig.quick(out)
    lines: list[str] = []
    summary = run_miniature(config, load_extractor=TinyFeatures, log=lines.append)
    assert any("[pretrain seed 1] done" in line for line in lines)
    return config, summary


def test_every_stage_leaves_its_result(quick_run: tuple[MiniatureConfig, dict]) -> None:
    config, summary = quick_run
    out = Path(config.out)
    assert (out / "data/covers/test/metadata.jsonl").is_file()
    for k in range(config.train_seeds):
        assert (out / f"baseline/seed{k}/model/model_index.json").is_file()
        assert (out / f"full/seed{k}/model/model_index.json").is_file()
        assert (out / f"full-unet/seed{k}/model/model_index.json").is_file()
        assert (out / f"lora/seed{k}/lora/pytorch_lora_weights.safetensors").is_file()
    reports = [
        json.loads((out / f"baseline/seed{k}/pretrain_report.json").read_text()) for k in range(2)
    ]
    for k, report in enumerate(reports):
        assert report["vae_scaling_factor"] > 0 and np.isfinite(report["final_loss"])
        assert report["config"]["seed"] == config.seed + k
    assert reports[0]["final_loss"] != reports[1]["final_loss"]  # two seeds, two baselines
    # Seed k of every arm starts from the baseline's seed k.
    for arm in ARMS:
        for k in range(2):
            trained = json.loads((out / ARMS[arm][0] / f"seed{k}/training_report.json").read_text())
            assert Path(trained["base"]) == out / f"baseline/seed{k}/model"
    arms = [f"{ARMS[arm][0]} seed {k}" for arm in ARMS for k in range(2)]
    pretrains = [f"pretrain seed {k}" for k in range(2)]
    assert set(summary["seconds"]) == {"dataset", *pretrains, *arms, "validate", "study", "samples"}
    assert set(summary["study"]) == {BASELINE, FULL, FULL_UNET, LORA}
    for row in summary["study"].values():
        assert row["seeds"] == 2  # the baseline has its training seeds too
        for metric in ("kid", "fid", "prompt_following"):
            assert row[metric]["low"] <= row[metric]["value"] <= row[metric]["high"]
            assert row[metric]["spread"] is not None
    # Every arm against every other: 4 arms, 6 paired differences.
    assert len(summary["comparisons"]) == 6
    for row in summary["comparisons"]:
        assert row["kid"]["low"] <= row["kid"]["value"] <= row["kid"]["high"]
        assert row["seeds"] == 2 and row["kid"]["spread"] is not None  # per-seed pairs
    # Decisions on validation: only the arms' first seeds, and the choice comes from there.
    assert set(summary["validation"]) == set(ARMS)
    assert summary["chosen_on_validation"] == min(
        ARMS, key=lambda arm: summary["validation"][arm]["kid"]["value"]
    )
    results = json.loads((out / "study/results.json").read_text())
    assert len(results["models"]) == 4 * 2
    for row in results["models"]:
        assert row["kept"] == 24
        assert 0 <= row["prompt_following"]["accuracy"]["value"] <= 1
        assert 0 < row["prompt_following"]["chance"] < 1  # the permutation null's mean
    assert str(out) not in (out / "study/results.json").read_text()  # relative paths only
    with Image.open(out / "study/samples.png") as sheet:  # 6 titles x (4 arms + the rule)
        assert sheet.width > 6 * 64 and sheet.height > 5 * 64
    markdown = (out / "study/report.md").read_text()
    assert "Prompt following, genre" in markdown and "LoRA fine-tune" in markdown


def test_the_text_encoder_learns_in_pretraining_and_in_the_full_fine_tune(
    quick_run: tuple[MiniatureConfig, dict],
) -> None:
    """From scratch means from scratch: the baseline's text encoder differs from its random
    init; the full fine-tune trains it further (the base never saw the cover words), while the
    LoRA run leaves it alone and saves adapters for the UNet only."""
    import torch
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from models.embedded import build_architecture

    config, _ = quick_run
    out = Path(config.out)
    key = "encoder.layers.0.self_attn.q_proj.weight"
    initial = build_architecture(seed=config.seed).text_encoder.state_dict()[key]
    trained, finetuned, frozen = (
        CLIPTextModel.from_pretrained(out / run / "model/text_encoder").state_dict()[key]
        for run in ("baseline/seed0", "full/seed0", "full-unet/seed0")
    )
    assert not torch.equal(initial, trained)
    assert not torch.equal(trained, finetuned)
    assert torch.equal(trained, frozen)  # the fourth arm: the UNet alone, encoder as the base's
    adapters = load_file(out / "lora/seed0/lora/pytorch_lora_weights.safetensors")
    assert adapters and all(name.startswith("unet.") for name in adapters)


def test_a_rerun_skips_finished_stages(quick_run: tuple[MiniatureConfig, dict]) -> None:
    config, summary = quick_run
    lines: list[str] = []
    again = run_miniature(config, load_extractor=TinyFeatures, log=lines.append)
    assert sum("already done" in line for line in lines) == 4 + 2 + 3 * 2
    assert again["study"] == summary["study"]


def test_a_run_folder_refuses_other_settings(quick_run: tuple[MiniatureConfig, dict]) -> None:
    config, _ = quick_run
    other = MiniatureConfig.quick(Path(config.out), seed=config.seed + 1)
    with pytest.raises(ValueError, match="other settings"):
        run_miniature(other, load_extractor=TinyFeatures, log=lambda _: None)


def test_ship_packages_a_loadable_embedded_model(
    quick_run: tuple[MiniatureConfig, dict], tmp_path: Path
) -> None:
    from models.embedded import build_embedded_pipeline, packaged_info
    from models.jobs import GenerationParams, ImageSpec, NoControl
    from models.runner import DiffusersRunner

    config, summary = quick_run
    package = ship(config, summary, folder=tmp_path / "package")
    size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    assert size < 10_000_000
    info = packaged_info(package)
    assert info is not None and info["trained"] and info["method"] in {"full", "lora"}
    assert info["arm"] == summary["chosen_on_validation"]

    built = build_embedded_pipeline(tmp_path / "cache/models/x", package=package)
    runner = DiffusersRunner(device="cpu", cache_dir=tmp_path / "cache")
    params = GenerationParams(model=str(built), width=64, height=64, steps=2, guidance=4.0)
    specs = [ImageSpec(prompt="jazz drive playlist cover image", seed=1)]
    images = runner(params, specs, NoControl())
    assert images[0].image.size == (64, 64)


def test_publish_copies_the_results_with_relative_paths(
    quick_run: tuple[MiniatureConfig, dict], tmp_path: Path
) -> None:
    from training.miniature import publish

    config, summary = quick_run
    docs = tmp_path / "docs"
    (docs / "training").mkdir(parents=True)
    (docs / "training" / "stale-seed9.json").write_text("{}")  # from an earlier publish
    written = publish(config, docs)
    names = {str(path.relative_to(docs)) for path in written}
    assert {"miniature.json", "report.md", "results.json", "chart.png", "samples.png"} <= names
    assert {"validation/report.md", "validation/results.json"} <= names
    assert {
        f"training/{run}-seed{k}.json"
        for run in ("baseline", "full", "full-unet", "lora")
        for k in range(2)
    } <= names
    assert not (docs / "training" / "stale-seed9.json").exists()
    for path in docs.rglob("*.json"):
        text = path.read_text()
        assert str(config.out) not in text and str(Path(config.out).resolve()) not in text, path
    copied = json.loads((docs / "miniature.json").read_text())
    assert copied["study"] == summary["study"] and copied["config"]["out"] == "."
    lora = json.loads((docs / "training" / "lora-seed1.json").read_text())
    assert lora["base"] == "baseline/seed1/model"


def test_publish_refuses_an_unfinished_run(tmp_path: Path) -> None:
    from training.miniature import publish

    with pytest.raises(ValueError, match="no finished study"):
        publish(MiniatureConfig.quick(tmp_path / "nothing"), tmp_path / "docs")
