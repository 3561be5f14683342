"""The open-ended training run (training/converge.py) at toy size: it resumes exactly, and a
finished run goes on when given more steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.converge import ConvergeConfig, converge, vae_loss
from training.synthetic import DatasetSizes, write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(
        root, sizes=DatasetSizes(covers=(8, 2, 2), generic=(8, 2, 2)), size=128, log=lambda _: None
    )
    return root


def _config(data: Path, out: Path, cover_steps: int) -> ConvergeConfig:
    return ConvergeConfig(
        data=str(data),
        out=str(out),
        vae_steps=2,
        vae_batch_size=2,
        generic_steps=1,
        generic_images=4,
        cover_steps=cover_steps,
        batch_size=2,
        warmup_steps=2,
        checkpoint_every=1,
        snapshot_every=2,
        log_every=1,
    )


def test_a_run_given_more_steps_ends_where_one_long_run_ends(data: Path, tmp_path: Path) -> None:
    straight = converge(_config(data, tmp_path / "a", 4), log=lambda _: None)
    converge(_config(data, tmp_path / "b", 2), log=lambda _: None)
    resumed = converge(_config(data, tmp_path / "b", 4), log=lambda _: None)
    a = torch.load(straight / "state.pt", weights_only=False)
    b = torch.load(resumed / "state.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 4
    for name in ("unet", "text_encoder", "vae"):
        for key, value in a[name].items():
            assert torch.equal(value, b[name][key]), f"{name}.{key} differs after resuming"
    assert (resumed / "snapshots" / "covers-000004" / "unet").is_dir()


def test_no_cover_steps_stops_after_the_generic_phase(data: Path, tmp_path: Path) -> None:
    """The miniature study's fixed baseline (`--cover-steps 0`): the generic snapshot is
    written and the UNet and text encoder never train on a cover; a rerun changes nothing."""
    out = converge(_config(data, tmp_path / "generic", 0), log=lambda _: None)
    snapshots = sorted(path.name for path in (out / "snapshots").iterdir())
    assert snapshots == ["generic-000001"]
    assert (out / "snapshots/generic-000001/model_index.json").is_file()
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["state"] == {**state["state"], "phase": "covers", "step": 0}
    again = converge(_config(data, tmp_path / "generic", 0), log=lambda _: None)
    assert sorted(path.name for path in (again / "snapshots").iterdir()) == snapshots
    resumed = torch.load(again / "state.pt", weights_only=False)
    for key, value in state["unet"].items():
        assert torch.equal(value, resumed["unet"][key])


def test_the_edge_term_charges_a_blur() -> None:
    config = ConvergeConfig(data="", out="", kl_weight=0.0)
    sharp = torch.zeros(1, 3, 16, 16)
    sharp[..., 8:] = 1.0
    soft = sharp.clone()
    soft[..., 7:9] = 0.5  # the same edge, two pixels wide
    kl = torch.zeros(1)
    with_edges = vae_loss(soft, sharp, kl, config) - vae_loss(sharp, sharp, kl, config)
    config.edge_weight = 0.0
    without = vae_loss(soft, sharp, kl, config) - vae_loss(sharp, sharp, kl, config)
    assert with_edges > without > 0


def _package(tmp_path: Path) -> Path:
    from models.embedded import build_architecture, export_to_package

    pipe = build_architecture(seed=3, native_size=128)
    folder = tmp_path / "package"
    export_to_package(pipe, {"name": "embedded", "version": "test", "native_size": 128}, folder)
    return folder


def test_a_continued_run_starts_from_the_package_and_keeps_its_vae(
    data: Path, tmp_path: Path
) -> None:
    from models.embedded import from_package

    package = _package(tmp_path)
    config = _config(data, tmp_path / "c", 2)
    config.init_from = str(package)
    out = converge(config, log=lambda _: None)
    saved = torch.load(out / "state.pt", weights_only=False)
    assert saved["state"] == {**saved["state"], "phase": "covers", "step": 2}
    assert "generic" not in {p.name.split("-")[0] for p in (out / "snapshots").iterdir()}
    trained = from_package(package)
    latents = torch.load(out / "latents.pt")
    assert latents["scaling"] == trained.vae.config.scaling_factor  # the UNet's latent scale
    for key, value in trained.vae.state_dict().items():  # the UNet learnt on these latents
        assert torch.equal(value, saved["vae"][key]), f"vae.{key} moved"
    moved = [
        k for k, v in trained.unet.state_dict().items() if not torch.equal(v, saved["unet"][k])
    ]
    assert moved, "the UNet did not start from the package or did not train"


def test_a_continued_run_refuses_a_package_of_another_size(data: Path, tmp_path: Path) -> None:
    from models.embedded import build_architecture, export_to_package
    from training.config import TrainingError

    folder = tmp_path / "small"
    export_to_package(build_architecture(seed=0, native_size=64), {"native_size": 64}, folder)
    config = _config(data, tmp_path / "d", 1)
    config.init_from = str(folder)
    with pytest.raises(TrainingError, match="64 px"):
        converge(config, log=lambda _: None)


def test_the_decoder_learns_and_the_encoder_stays(data: Path, tmp_path: Path) -> None:
    from models.embedded import from_package
    from training.decoder import DecoderConfig, reconstruction_error, tune_decoder

    package = _package(tmp_path)

    def config(steps: int, out: str) -> DecoderConfig:
        return DecoderConfig(
            data=str(data),
            out=str(tmp_path / out),
            init_from=str(package),
            steps=steps,
            batch_size=2,
            window=4,
            learning_rate=1e-3,
            checkpoint_every=1,
            snapshot_every=4,
            log_every=1,
        )

    straight = tune_decoder(config(4, "straight"), log=lambda _: None)
    tune_decoder(config(2, "resumed"), log=lambda _: None)
    resumed = tune_decoder(config(4, "resumed"), log=lambda _: None)
    a = torch.load(straight / "decoder-state.pt", weights_only=False)["vae"]
    b = torch.load(resumed / "decoder-state.pt", weights_only=False)["vae"]
    assert all(torch.equal(v, b[k]) for k, v in a.items()), "resuming changed the result"
    before = from_package(package).vae.state_dict()
    encoder = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and all(torch.equal(before[k], a[k]) for k in encoder)
    assert any(not torch.equal(before[k], a[k]) for k in decoder)

    from diffusers import AutoencoderKL

    snapshot = AutoencoderKL.from_pretrained(straight / "decoder-000004")
    import numpy as np

    from training.converge import _pixels

    covers, _ = _pixels(data / "covers")
    error = reconstruction_error(snapshot, covers, factor=8)
    assert error["n"] == len(covers) and 0 <= error["mae"] <= 255 and error["grid"] > 0
    assert np.isfinite(error["mae"])


def test_shipping_puts_the_sharper_decoder_in_the_package_and_refuses_a_foreign_one(
    tmp_path: Path,
) -> None:
    from models.embedded import build_architecture, from_package, packaged_info
    from training.config import TrainingError
    from training.ship_embedded import ship

    pipe = build_architecture(seed=0, native_size=128)
    pipe.save_pretrained(tmp_path / "snapshot")
    sharper = build_architecture(seed=0, native_size=128).vae
    with torch.no_grad():
        sharper.decoder.conv_out.bias.add_(0.25)  # a decoder that learnt, same encoder
    sharper.save_pretrained(tmp_path / "decoder")
    folder = tmp_path / "package"
    ship(
        tmp_path / "snapshot",
        decoder=tmp_path / "decoder",
        validation={"kid": {"value": 0.07}},
        version="test-v9",
        folder=folder,
    )
    shipped = from_package(folder)
    expected = sharper.decoder.conv_out.bias.half().float()
    assert torch.equal(shipped.vae.decoder.conv_out.bias, expected)
    assert packaged_info(folder)["version"] == "test-v9"

    foreign = build_architecture(seed=5, native_size=128).vae  # another encoder
    foreign.save_pretrained(tmp_path / "foreign")
    with pytest.raises(TrainingError, match="encoder"):
        ship(
            tmp_path / "snapshot",
            decoder=tmp_path / "foreign",
            validation={},
            version="x",
            folder=tmp_path / "other",
        )
