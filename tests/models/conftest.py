"""Fixtures of the fast CPU path's tests (test_fast_cpu.py, test_exported_decoder.py):
sd-turbo's and TAESD's stand-ins (modeltools/standins/) in a hub cache of their own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def turbo_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub cache with sd-turbo's stand-in and, under its own repo, TAESD's. Read only."""
    from modeltools.standins import write_standin, write_tiny_decoder_standin

    hub = tmp_path_factory.mktemp("turbo-hub")
    write_standin("sd-turbo", hub)
    write_tiny_decoder_standin(hub)
    return hub


@pytest.fixture
def hub_without_taesd(turbo_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of :func:`turbo_hub` without TAESD, made the hub cache."""
    from modeltools.standins import repo_folder

    bare = tmp_path / "hub-without-taesd"
    shutil.copytree(turbo_hub, bare, symlinks=True)
    shutil.rmtree(repo_folder(bare, "madebyollin/taesd"))
    monkeypatch.setenv("HF_HUB_CACHE", str(bare))
    return bare


@pytest.fixture
def runner_for(turbo_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``runner_for("decoder=tiny,…")``: a CPU runner with those switches over the defaults,
    its model cache in ``cache`` (default: this test's own)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(turbo_hub))

    def make(switches: str, cache: Path | None = None):
        from models.optimize import Optimizations
        from models.runner import DiffusersRunner

        return DiffusersRunner(
            device="cpu",
            cache_dir=cache or tmp_path / "cache",
            optimizations=Optimizations().replace(switches),
        )

    return make
