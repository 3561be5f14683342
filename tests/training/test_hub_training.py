"""Training and the study on real-shaped models: full fine-tune (EMA) and LoRA starting from the
SD 1.5 stand-in in a hub cache, their outputs used by ``bot cover``; a two-process accelerate
run with resume; ``eval`` comparing two hub presets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import main as bot_main
from tests.eval.test_study import PROMPTS, TinyFeatures, test_split  # noqa: F401  (fixture)
from tests.training.test_train import make_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "playlists" / "late-night-drive.json"
TINY = [  # seed001 shrunk: 32 px, 2 x 2 micro-batches, 2 steps, a checkpoint at the end
    *("--preset", "seed001", "--caption-column", "caption", "--base", "sd15"),
    *("--resolution", "32", "--train-batch-size", "2", "--gradient-accumulation-steps", "2"),
    *("--max-train-steps", "2", "--checkpointing-steps", "2", "--seed", "5"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, standin_hub: Path, tmp_path: Path, cache_dir: Path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(standin_hub))
    monkeypatch.setenv("COVER_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("COVER_DB_PATH", str(tmp_path / "covers.db"))
    monkeypatch.setenv("COVER_DEVICE", "cpu")
    return tmp_path


def _cover(*args: str) -> list[str]:
    return ["cover", str(EXAMPLE), "--count", "1", "--steps", "2", "--seed", "1", *args]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fine_tunes_of_the_sd15_standin_make_covers(
    method: str, dataset: Path, hub_env: Path, cache_dir: Path, capsys
) -> None:
    from training.__main__ import main as training_main

    out = hub_env / method
    argv = [*TINY, "--method", method, "--data", str(dataset), "--out", str(out)]
    assert training_main([*argv, "--cache-dir", str(cache_dir)]) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert (report["base"], report["method"], report["steps"]) == ("sd15", method, 2)
    if method == "full":
        # EMA weights went into the model; the checkpoint holds EMA's shadow too.
        assert (out / "checkpoints" / "checkpoint-2" / "custom_checkpoint_0.pkl").is_file()
        model = ["--model", str(out / "model")]
        index = json.loads((out / "model" / "model_index.json").read_text())
        assert index["_class_name"] == "StableDiffusionPipeline"
    else:
        model = ["--model", "sd15", "--lora", str(out / "lora")]
    capsys.readouterr()
    assert bot_main(_cover(*model)) == 0, capsys.readouterr().err
    assert any(line.endswith("candidate-1.png") for line in capsys.readouterr().out.split())


def test_a_two_process_accelerate_run_trains_as_one_and_resumes(
    dataset: Path, standin_hub: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """``accelerate launch --multi_gpu --num_processes 2`` on a CPU: one gloo group (8 images a
    step from 2 x 2 x 2), one writer of checkpoints and the model, EMA, then a resume."""
    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_CACHE": str(standin_hub), "OMP_NUM_THREADS": "1"}
    launch = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"),
        *("--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"),
        *("--dynamo_backend", "no", "--main_process_port", "0", "-m", "training"),
        *TINY,
        *("--data", str(dataset), "--out", str(out), "--cache-dir", str(cache_dir)),
    ]

    def run(*extra: str) -> str:
        done = subprocess.run(
            [*launch, *extra], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    first = run()
    assert first.count("Trained 2 steps") == 1  # only the main process reports
    report = json.loads((out / "training_report.json").read_text())
    assert (report["processes"], report["images_per_step"]) == (2, 8)
    assert (out / "checkpoints" / "checkpoint-2" / "custom_checkpoint_0.pkl").is_file()  # EMA
    # Each process keeps its own RNG state in the checkpoint; the model is written once.
    rng_states = sorted(p.name for p in (out / "checkpoints" / "checkpoint-2").glob("random_*"))
    assert rng_states == ["random_states_0.pkl", "random_states_1.pkl"]

    resumed = run("--resume", "latest", "--max-train-steps", "4")
    assert "Resumed from" in resumed and resumed.count("Trained") == 1
    report = json.loads((out / "training_report.json").read_text())
    assert (report["steps"], report["steps_this_run"], report["processes"]) == (4, 2, 2)
    assert (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_the_study_compares_two_hub_presets(
    test_split: Path,  # noqa: F811  (the fixture imported above)
    standin_hub: Path,
    cache_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eval.study import ModelEntry, StudyConfig, run_study
    from models.runner import DiffusersRunner

    monkeypatch.setenv("HF_HUB_CACHE", str(standin_hub))
    config = StudyConfig(
        test_dir=test_split,
        models=(ModelEntry("small-sd"), ModelEntry("sd-turbo")),
        out_dir=tmp_path / "study",
        size=64,
        steps=1,
        batch_size=4,
        bootstrap=10,
        fid_resamples=5,
        cache_dir=tmp_path / "cache",
        device="cpu",
    )
    network = TinyFeatures()
    results = run_study(
        config,
        load_extractor=lambda: network,
        load_clip=lambda: None,
        runner=DiffusersRunner(device="cpu", cache_dir=cache_dir),
    )
    assert results is not None
    small, turbo = results["models"]
    assert (small["label"], turbo["label"]) == ("small-sd", "sd-turbo")
    assert small["kept"] == turbo["kept"] == len(PROMPTS)
    assert network.images_seen == 3 * len(PROMPTS)  # the real split and both models
    assert small["fid"]["value"] != turbo["fid"]["value"]
