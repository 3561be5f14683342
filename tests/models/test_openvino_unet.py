"""The UNet in OpenVINO (``unet_runtime=openvino``, models/openvino_unet.py): the real
converter and the real OpenVINO on sd-turbo's stand-in (modeltools/standins/) at 64 px."""

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


def test_the_switch_parses_and_refuses_what_cannot_work() -> None:
    assert Optimizations().unet_runtime == "auto"
    assert Optimizations.plain().unet_runtime == "torch"
    openvino = Optimizations().replace("unet_runtime=OpenVINO")
    assert openvino.unet_runtime == "openvino" and "unet_runtime=openvino" in openvino.describe()
    with pytest.raises(ValueError, match=r"`unet_runtime` takes auto, torch, openvino, got 'trt'"):
        Optimizations().replace("unet_runtime=trt")
    with pytest.raises(ValueError, match="unet_runtime=openvino and compile=on"):
        Optimizations(unet_runtime="openvino", compile=True)


def test_auto_takes_openvino_only_where_it_won_and_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    import models.optimize

    class Sized(torch.nn.Module):
        def __init__(self, count: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(count, device="meta"))

    real, tiny = Sized(models.optimize.BFLOAT16_FROM), Sized(1_500_000)
    auto = Optimizations()
    monkeypatch.setattr(models.optimize, "AUTO_UNET_OPENVINO", True)
    assert auto.wants_openvino_unet(real, device="cpu", installed=True)
    assert not auto.wants_openvino_unet(tiny, device="cpu", installed=True)  # not measured
    assert not auto.wants_openvino_unet(real, device="cpu", installed=False)
    assert not auto.wants_openvino_unet(real, device="cuda:0", installed=True)
    torch_only = Optimizations(unet_runtime="torch")
    assert not torch_only.wants_openvino_unet(real, device="cpu", installed=True)
    monkeypatch.setattr(models.optimize, "AUTO_UNET_OPENVINO", False)
    assert not auto.wants_openvino_unet(real, device="cpu", installed=True)
    named = Optimizations(unet_runtime="openvino")
    assert named.wants_openvino_unet(tiny, device="cpu", installed=False)  # the loader says why


def _unet_inputs(unet, batch: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, unet.config.in_channels, 8, 8, generator=generator)  # (B, 4, h, w)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=generator)
    return sample, torch.tensor(499), context


def test_the_openvino_unet_predicts_what_the_torch_unet_does(runner_for, tmp_path: Path) -> None:
    import torch
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    from models.openvino_unet import openvino_unet

    unet = runner_for("unet_runtime=torch,channels_last=off").pipeline(PARAMS).unet
    module = openvino_unet(unet, tmp_path)
    for batch in (3, 1, 3):
        sample, step, context = _unet_inputs(unet, batch)
        with torch.no_grad():
            expected = unet(sample, step, encoder_hidden_states=context).sample
        got = module(sample, step, encoder_hidden_states=context)
        assert isinstance(got, UNet2DConditionOutput)
        assert got.sample.shape == expected.shape == (batch, 4, 8, 8)
        assert got.sample.dtype == torch.float32
        assert torch.allclose(got.sample, expected, atol=1e-4)
        (bare,) = module(sample, step, context, return_dict=False)
        assert torch.equal(bare, got.sample)
    assert len(module.compiled) == 2  # one compiled model per input shape, reused
    assert module.config is unet.config and module.dtype == torch.float32
    with pytest.raises(ValueError, match="takes sample, timestep and encoder_hidden_states only"):
        module(sample, step, context, timestep_cond=torch.zeros(3, 8))


def test_in_bfloat16_it_computes_in_bfloat16_and_stays_close(runner_for, tmp_path: Path) -> None:
    import torch

    from models.openvino_unet import openvino_unet

    unet = runner_for("unet_runtime=torch,channels_last=off").pipeline(PARAMS).unet
    module = openvino_unet(unet, tmp_path, bfloat16=True)
    assert module.ov_config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert module.dtype == torch.bfloat16
    sample, step, context = _unet_inputs(unet, 2)
    with torch.no_grad():
        expected = unet(sample, step, encoder_hidden_states=context).sample
    got = module(sample.to(torch.bfloat16), step, context.to(torch.bfloat16)).sample
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    scale = float(expected.abs().max())
    assert float((got.float() - expected).abs().max()) <= 0.05 * scale  # bfloat16: ~3 digits


def test_the_runner_makes_the_same_covers_with_either_unet(runner_for) -> None:
    torch_runner = runner_for("unet_runtime=torch,channels_last=off,cpu_bfloat16=off")
    outside = runner_for("unet_runtime=openvino,channels_last=off,cpu_bfloat16=off")
    by_torch = torch_runner(PARAMS, SPECS, NoControl())
    by_openvino = outside(PARAMS, SPECS, NoControl())
    assert type(outside.pipeline(PARAMS).unet).__name__ == "OpenVinoUNet"
    assert type(torch_runner.pipeline(PARAMS).unet).__name__ == "UNet2DConditionModel"
    for a, b in zip(by_torch, by_openvino, strict=True):
        pixels_a, pixels_b = np.asarray(a.image, np.int16), np.asarray(b.image, np.int16)
        assert pixels_a.shape == pixels_b.shape == (64, 64, 3)
        assert np.abs(pixels_a - pixels_b).max() <= 2  # float32 both ways: rounding only


def test_the_export_is_kept_and_reused_per_weights(
    runner_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.openvino_unet

    exports: list[Path] = []
    real_export = models.openvino_unet._export

    def counted(unet, path, openvino):
        exports.append(path)
        return real_export(unet, path, openvino)

    monkeypatch.setattr(models.openvino_unet, "_export", counted)
    cache = tmp_path / "cache"
    first = runner_for("unet_runtime=openvino", cache)
    first(PARAMS, SPECS[:1], NoControl())
    runner_for("unet_runtime=openvino", cache)(PARAMS, SPECS[:2], NoControl())
    assert len(exports) == 1  # the second load and a second shape: no second export
    files = sorted(p.name for p in (cache / "openvino").iterdir())
    assert files == [exports[0].with_suffix(".bin").name, exports[0].name]  # no partial files
    assert exports[0].name.startswith("unet-v1-") and "-ov20" in exports[0].name
    runner_for("unet_runtime=openvino", tmp_path / "other")(PARAMS, SPECS[:1], NoControl())
    assert len(exports) == 2  # another cache: exported there


def test_a_failed_export_says_so_and_leaves_no_file(
    runner_for, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openvino

    from models.openvino_unet import openvino_unet

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    unet = runner_for("unet_runtime=torch").pipeline(PARAMS).unet
    monkeypatch.setattr(openvino, "convert_model", broken)
    with pytest.raises(ModelUnavailable, match=r"unsupported operator.*unet_runtime=torch"):
        openvino_unet(unet, tmp_path)
    assert not list((tmp_path / "openvino").iterdir())


@pytest.fixture
def without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def without(name: str, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)


def test_without_openvino_the_switch_names_the_install(runner_for, without_openvino) -> None:
    runner = runner_for("unet_runtime=openvino")
    with pytest.raises(ModelUnavailable, match=r"pip install -e '\.\[openvino\]' in the"):
        runner.pipeline(PARAMS)


@pytest.mark.parametrize("installed", [True, False])
def test_auto_falls_back_to_torch_without_openvino(
    runner_for, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, installed: bool
) -> None:
    import models.optimize

    monkeypatch.setattr(models.optimize, "AUTO_UNET_OPENVINO", True)
    monkeypatch.setattr(models.optimize, "BFLOAT16_FROM", 1)  # the stand-in counts as real-size
    if not installed:
        request.getfixturevalue("without_openvino")
    runner = runner_for("unet_runtime=auto,channels_last=off")
    images = runner(PARAMS, SPECS[:1], NoControl())
    expected = "OpenVinoUNet" if installed else "UNet2DConditionModel"
    assert type(runner.pipeline(PARAMS).unet).__name__ == expected
    assert images[0].image.size == (64, 64)
