"""The optional ONNX Runtime backend of the tiny decoder (``decoder_runtime=onnx``,
models/onnx_decoder.py): the real exporter and the real onnxruntime session, on sd-turbo's and
TAESD's stand-ins (models/standins.py) at 64 px."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from models.errors import ModelUnavailable
from models.jobs import GenerationParams, ImageSpec, NoControl
from models.optimize import Optimizations

PARAMS = GenerationParams(model="sd-turbo", width=64, height=64, steps=2, guidance=0.0)
SPECS = [ImageSpec("Quiet Afternoon playlist cover image", "", seed=k) for k in range(3)]


@pytest.fixture(scope="module")
def turbo_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.standins import write_standin, write_tiny_decoder_standin

    hub = tmp_path_factory.mktemp("onnx-hub")
    write_standin("sd-turbo", hub)
    write_tiny_decoder_standin(hub)
    return hub


@pytest.fixture
def runner_for(turbo_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(turbo_hub))
    from models.runner import DiffusersRunner

    def make(switches: str, cache: Path = tmp_path / "cache"):
        return DiffusersRunner(
            device="cpu", cache_dir=cache, optimizations=Optimizations().replace(switches)
        )

    return make


def test_the_switch_parses_and_refuses_what_cannot_work() -> None:
    assert Optimizations().decoder_runtime == "torch"
    assert Optimizations.plain().decoder_runtime == "torch"
    onnx = Optimizations().replace("decoder=tiny,decoder_runtime=onnx")
    assert onnx.decoder_runtime == "onnx" and "decoder_runtime=onnx" in onnx.describe()
    with pytest.raises(ValueError, match=r"`decoder_runtime` takes torch, onnx, got 'tensorrt'"):
        Optimizations().replace("decoder_runtime=tensorrt")
    with pytest.raises(ValueError, match="runs the tiny decoder only"):
        Optimizations(decoder="full", decoder_runtime="onnx")


def test_onnx_decodes_the_same_pictures_as_torch(runner_for) -> None:
    torch_runner = runner_for("decoder=tiny,channels_last=off")
    onnx_runner = runner_for("decoder=tiny,channels_last=off,decoder_runtime=onnx")
    by_torch = torch_runner(PARAMS, SPECS, NoControl())
    by_onnx = onnx_runner(PARAMS, SPECS, NoControl())
    vae = onnx_runner.pipeline(PARAMS).vae
    assert type(vae.decoder).__name__ == "OnnxModule"
    assert type(torch_runner.pipeline(PARAMS).vae.decoder).__name__ != "OnnxModule"
    for a, b in zip(by_torch, by_onnx, strict=True):
        pixels_a, pixels_b = np.asarray(a.image, np.int16), np.asarray(b.image, np.int16)
        assert pixels_a.shape == pixels_b.shape == (64, 64, 3)
        assert np.abs(pixels_a - pixels_b).max() <= 1  # float32 both ways: rounding at most


def test_the_export_is_kept_and_reused_per_weights(runner_for, tmp_path: Path) -> None:
    import torch

    from models.embedded import build_tiny_decoder_architecture
    from models.onnx_decoder import onnx_decoder

    cache = tmp_path / "cache"
    runner_for("decoder=tiny,decoder_runtime=onnx", cache).pipeline(PARAMS)
    files = sorted((cache / "onnx").glob("*.onnx"))
    assert len(files) == 1 and not list((cache / "onnx").glob(".*"))  # no partial files left
    stamp = files[0].stat().st_mtime_ns
    runner_for("decoder=tiny,decoder_runtime=onnx", cache).pipeline(PARAMS)
    assert files[0].stat().st_mtime_ns == stamp  # reused, not exported again
    # Other weights, another file; and it decodes at sizes the export never saw.
    other = build_tiny_decoder_architecture(seed=1).eval()
    module = onnx_decoder(other, cache)
    assert len(list((cache / "onnx").glob("*.onnx"))) == 2
    latents = torch.randn(2, 4, 6, 10)
    with torch.no_grad():
        expected = other.decoder(latents)
    got = module(latents.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape == (2, 3, 48, 80)
    assert torch.allclose(module(latents), expected, atol=1e-4)


def test_previews_go_through_onnx_too(runner_for) -> None:
    class Keep(NoControl):
        def __init__(self) -> None:
            self.sizes: list[tuple[int, int]] = []

        def preview(self, step: int, images) -> None:
            self.sizes += [image.size for image in images]

    control = Keep()
    runner = runner_for("decoder=tiny,decoder_runtime=onnx,previews_every=1")
    runner(PARAMS, SPECS[:1], control)
    assert control.sizes and set(control.sizes) == {(64, 64)}


def test_without_onnx_runtime_the_error_names_the_install(
    runner_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_onnxruntime(name: str, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    runner = runner_for("decoder=tiny,decoder_runtime=onnx")
    with pytest.raises(ModelUnavailable, match=r"pip install 'playlist-cover\[onnx\]'"):
        runner.pipeline(PARAMS)


def test_a_failed_export_says_so_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from models.embedded import build_tiny_decoder_architecture
    from models.onnx_decoder import onnx_decoder

    def broken(*args, **kwargs):
        Path(args[2]).write_bytes(b"half a file")
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ModelUnavailable, match=r"unsupported operator.*decoder_runtime=torch"):
        onnx_decoder(build_tiny_decoder_architecture().eval(), tmp_path)
    assert not [p for p in (tmp_path / "onnx").iterdir()]


def test_with_the_full_vae_onnx_is_ignored_and_torch_decodes(
    runner_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, turbo_hub: Path
) -> None:
    import shutil

    from models.standins import repo_folder

    bare = tmp_path / "hub-without-taesd"
    shutil.copytree(turbo_hub, bare, symlinks=True)
    shutil.rmtree(repo_folder(bare, "madebyollin/taesd"))
    monkeypatch.setenv("HF_HUB_CACHE", str(bare))
    runner = runner_for("decoder=auto,decoder_runtime=onnx")
    images = runner(PARAMS, SPECS[:1], NoControl())
    assert type(runner.pipeline(PARAMS).vae).__name__ == "AutoencoderKL"
    assert images[0].image.size == (64, 64)


def test_the_runtime_benchmark_times_onnx_against_eager_and_both_tuned_decoders() -> None:
    import torch

    from models.benchmark.runtime import _onnx_runtime_rows
    from models.embedded import build_tiny_decoder_architecture

    rows: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def decode(module, dtype=torch.float32, batch: int = 1):
        z = torch.randn(batch, 4, 8, 8).to(dtype)  # 64 px: small enough for a test
        return lambda: module.decode(z).sample

    def record(component, switch, base, other, note=""):
        assert "onnxruntime" in note
        rows.append((switch, tuple(base().shape), tuple(other().shape)))

    torch.set_grad_enabled(False)
    try:
        _onnx_runtime_rows(record, decode, build_tiny_decoder_architecture().eval(), "tiny", print)
    finally:
        torch.set_grad_enabled(True)
    assert [row[0] for row in rows] == [
        "ONNX Runtime vs eager float32",
        "ONNX Runtime vs float32 + channels_last",
        "ONNX Runtime vs bfloat16 + channels_last",
    ]
    assert all(base == other == (4, 3, 64, 64) for _, base, other in rows)
