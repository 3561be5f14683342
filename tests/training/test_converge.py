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
