"""The tiny decoder outside torch (``decoder_runtime=openvino|onnx``,
models/exported_decoder.py): the real exporter, the real OpenVINO and ONNX Runtime, on
sd-turbo's and TAESD's stand-ins (modeltools/standins/) at 64 px."""

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
RUNTIMES = {
    "onnx": ("OnnxRuntimeModule", "onnxruntime"),
    "openvino": ("OpenVinoModule", "openvino"),
}


def test_the_switch_parses_and_refuses_what_cannot_work() -> None:
    assert Optimizations().decoder_runtime == "torch"
    assert Optimizations.plain().decoder_runtime == "torch"
    onnx = Optimizations().replace("decoder=tiny,decoder_runtime=onnx")
    assert onnx.decoder_runtime == "onnx" and "decoder_runtime=onnx" in onnx.describe()
    assert Optimizations().replace("decoder_runtime=OpenVINO").decoder_runtime == "openvino"
    with pytest.raises(
        ValueError, match=r"`decoder_runtime` takes torch, openvino, onnx, got 'trt'"
    ):
        Optimizations().replace("decoder_runtime=trt")
    with pytest.raises(ValueError, match="decoder_runtime=openvino runs the tiny decoder only"):
        Optimizations(decoder="full", decoder_runtime="openvino")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_runtime_decodes_the_same_pictures_as_torch(runner_for, runtime: str) -> None:
    torch_runner = runner_for("decoder=tiny,channels_last=off")
    outside = runner_for(f"decoder=tiny,channels_last=off,decoder_runtime={runtime}")
    by_torch = torch_runner(PARAMS, SPECS, NoControl())
    by_outside = outside(PARAMS, SPECS, NoControl())
    assert type(outside.pipeline(PARAMS).vae.decoder).__name__ == RUNTIMES[runtime][0]
    assert type(torch_runner.pipeline(PARAMS).vae.decoder).__name__ == "DecoderTiny"
    for a, b in zip(by_torch, by_outside, strict=True):
        pixels_a, pixels_b = np.asarray(a.image, np.int16), np.asarray(b.image, np.int16)
        assert pixels_a.shape == pixels_b.shape == (64, 64, 3)
        assert np.abs(pixels_a - pixels_b).max() <= 1  # float32 both ways: rounding at most


def test_openvino_in_bfloat16_with_cpu_bfloat16(runner_for) -> None:
    runner = runner_for("decoder=tiny,cpu_bfloat16=on,decoder_runtime=openvino")
    images = runner(PARAMS, SPECS[:2], NoControl())
    decoder = runner.pipeline(PARAMS).vae.decoder
    assert decoder.config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert [made.image.size for made in images] == [(64, 64)] * 2
    assert images[0].image.tobytes() != images[1].image.tobytes()


def test_the_export_is_kept_and_reused_per_weights(runner_for, tmp_path: Path) -> None:
    import torch

    from models.embedded import build_tiny_decoder_architecture
    from models.exported_decoder import onnx_decoder, openvino_decoder

    cache = tmp_path / "cache"
    runner_for("decoder=tiny,decoder_runtime=onnx", cache).pipeline(PARAMS)
    files = sorted((cache / "onnx").glob("*.onnx"))
    assert len(files) == 1 and not list((cache / "onnx").glob(".*"))  # no partial files left
    stamp = files[0].stat().st_mtime_ns
    runner_for("decoder=tiny,decoder_runtime=openvino", cache).pipeline(PARAMS)
    assert files[0].stat().st_mtime_ns == stamp  # reused by the other runtime, not re-exported
    # Other weights, another file; both decode at sizes the export never saw.
    other = build_tiny_decoder_architecture(seed=1).eval()
    modules = [onnx_decoder(other, cache), openvino_decoder(other, cache)]
    assert len(list((cache / "onnx").glob("*.onnx"))) == 2
    for shape in ((2, 4, 6, 10), (1, 4, 8, 8), (2, 4, 6, 10)):
        latents = torch.randn(*shape)
        with torch.no_grad():
            expected = other.decoder(latents)
        for module in modules:
            got = module(latents.to(torch.bfloat16))
            assert got.dtype == torch.bfloat16 and got.shape == expected.shape
            assert torch.allclose(module(latents), expected, atol=1e-4)
    assert len(modules[1].compiled) == 2  # one compiled model per input shape, reused


def test_openvino_keeps_a_bounded_number_of_compiled_shapes(tmp_path: Path) -> None:
    import torch

    from models.embedded import build_tiny_decoder_architecture
    from models.exported_decoder import OPENVINO_SHAPES, openvino_decoder

    module = openvino_decoder(build_tiny_decoder_architecture().eval(), tmp_path)
    for side in range(1, OPENVINO_SHAPES + 3):
        module(torch.randn(1, 4, side, 2))
    assert len(module.compiled) == OPENVINO_SHAPES
    assert (1, 4, 1, 2) not in module.compiled and (1, 4, OPENVINO_SHAPES + 2, 2) in module.compiled


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_previews_go_through_the_runtime_too(runner_for, runtime: str) -> None:
    class Keep(NoControl):
        def __init__(self) -> None:
            self.sizes: list[tuple[int, int]] = []

        def preview(self, step: int, images) -> None:
            self.sizes += [image.size for image in images]

    control = Keep()
    runner = runner_for(f"decoder=tiny,decoder_runtime={runtime},previews_every=1")
    runner(PARAMS, SPECS[:1], control)
    assert control.sizes and set(control.sizes) == {(64, 64)}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_without_the_runtime_the_error_names_the_install(
    runner_for, monkeypatch: pytest.MonkeyPatch, runtime: str
) -> None:
    real_import = builtins.__import__
    missing = RUNTIMES[runtime][1]

    def without(name: str, *args, **kwargs):
        if name == missing:
            raise ImportError(f"No module named {missing!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    runner = runner_for(f"decoder=tiny,decoder_runtime={runtime}")
    with pytest.raises(ModelUnavailable, match=rf"pip install -e '\.\[{runtime}\]' in the"):
        runner.pipeline(PARAMS)


def test_a_failed_export_says_so_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from models.embedded import build_tiny_decoder_architecture
    from models.exported_decoder import onnx_decoder

    def broken(*args, **kwargs):
        Path(args[2]).write_bytes(b"half a file")
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ModelUnavailable, match=r"unsupported operator.*decoder_runtime=torch"):
        onnx_decoder(build_tiny_decoder_architecture().eval(), tmp_path)
    assert not [p for p in (tmp_path / "onnx").iterdir()]


def test_with_the_full_vae_the_runtime_is_ignored_and_torch_decodes(
    runner_for,
    hub_without_taesd: Path,  # in this order: the hub without TAESD wins
) -> None:
    runner = runner_for("decoder=auto,decoder_runtime=openvino")
    images = runner(PARAMS, SPECS[:1], NoControl())
    assert type(runner.pipeline(PARAMS).vae).__name__ == "AutoencoderKL"
    assert images[0].image.size == (64, 64)


def test_the_runtime_benchmark_times_both_runtimes_against_the_tuned_decoders() -> None:
    import torch

    from models.embedded import build_tiny_decoder_architecture
    from modeltools.benchmark.runtime import _exported_rows

    rows: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def decode(module, dtype=torch.float32, batch: int = 1):
        z = torch.randn(batch, 4, 8, 8).to(dtype)  # 64 px: small enough for a test
        return lambda: module.decode(z).sample

    def record(component, switch, base, other, note=""):
        assert note.startswith(("onnxruntime ", "openvino "))
        rows.append((switch, tuple(base().shape), tuple(other().shape)))

    torch.set_grad_enabled(False)
    try:
        _exported_rows(record, decode, build_tiny_decoder_architecture().eval(), "tiny", print)
    finally:
        torch.set_grad_enabled(True)
    assert [row[0] for row in rows] == [
        "ONNX Runtime vs eager float32",
        "ONNX Runtime vs float32 + channels_last",
        "ONNX Runtime vs bfloat16 + channels_last",
        "OpenVINO float32 vs float32 + channels_last",
        "OpenVINO bfloat16 vs bfloat16 + channels_last",
    ]
    assert all(base == other == (4, 3, 64, 64) for _, base, other in rows)
