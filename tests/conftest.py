"""Shared fixtures. Tests never touch the network: the Hugging Face hub is switched off here,
before any test module can import huggingface_hub (which reads the variable once, at import)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path

import pytest

from tests import properties

properties.load()  # hypothesis: derandomised in CI, exploring locally (tests/properties.py)

# -- the embedded model (models/embedded.py) --------------------------------------------


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project cache root shared by the whole session; the embedded model lives in it, so
    ``DiffusersRunner(cache_dir=cache_dir)`` finds it without rebuilding. Don't delete it."""
    return tmp_path_factory.mktemp("cover-cache")


@pytest.fixture(scope="session")
def embedded_model_dir(cache_dir: Path) -> Path:
    """The embedded tiny pipeline, built once per session into ``cache_dir``."""
    from models.embedded import ensure_embedded  # lazy: tests without it skip torch's import

    return ensure_embedded(cache_dir)


# -- stand-ins of the hub presets (modeltools/standins/) ---------------------------------------

HUB_PRESETS = ("small-sd", "sd15", "sd-turbo", "deepfloyd-if")


@pytest.fixture(scope="session")
def standin_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face hub cache holding every hub preset's stand-in, written once per session;
    point ``HF_HUB_CACHE`` at it."""
    from modeltools.standins import write_standin

    hub = tmp_path_factory.mktemp("hub")
    for name in HUB_PRESETS:
        write_standin(name, hub)
    return hub


SUPPORT_MODELS = ("blip", "clip", "magicprompt")


@pytest.fixture(scope="session")
def support_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face hub cache holding the support models' stand-ins (captioner, CLIP, prompt
    expander: models/support.py), written once per session; point ``HF_HUB_CACHE`` at it."""
    from modeltools.standins import write_support_standin

    hub = tmp_path_factory.mktemp("support-hub")
    for name in SUPPORT_MODELS:
        write_support_standin(name, hub)
    return hub


@pytest.fixture(scope="session")
def tiny_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchScript file in NVlabs' layout (a `layers` module, 299 px in, 2048 features out)
    standing in for the FID network, which no wheel here ships."""
    import warnings

    import torch

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 13, stride=13)
            self.fc = torch.nn.Linear(8 * 23 * 23, 2048)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = Layers()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "tiny-inception.pt"
    with warnings.catch_warnings():  # torch 2.9+ deprecates TorchScript; the FID file is one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Net()).save(str(path))
    return path


# -- the local fake Spotify server (tests/fakes/spotify/) -------------------------------

from tests.fakes.spotify import fake_spotify_fixture  # noqa: E402, F401  (registers `fake_spotify`)

PLAYLISTS = Path(__file__).resolve().parents[1] / "examples" / "playlists"


@pytest.fixture
def playlist_link(fake_spotify) -> str:
    """A public playlist on the fake Spotify, as a person pastes it (Discord's <…>, ?si=)."""
    stored = fake_spotify.add_snapshot(PLAYLISTS / "late-night-drive.json")
    return f"<https://open.spotify.com/intl-de/playlist/{stored.meta['id']}?si=abc123>"


# -- the local fake Discord (tests/fakes/discord/) ---------------------------------------


@pytest.fixture
async def discord():
    """A fresh fake Discord (REST and gateway on a local port) for one test."""
    from tests.fakes.discord import FakeDiscord

    async with FakeDiscord() as server:
        yield server


# -- one local Ray instance for the session (models/ray_workers.py) ------------------------


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray, started once per session and shut down at its end: 2 logical CPUs
    (tests' actors ask for fractions of one), no dashboard, token auth off (a local test
    instance needs none; docs/facts.md). Not skipped when Ray is missing: CI installs it."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# -- a throw-away PostgreSQL server (tests/postgres.py) -----------------------------------------

from tests.postgres import (  # noqa: E402,F401  (fixtures)
    db_engine,
    db_target,
    parametrize_engines,
    postgres_server,
    postgres_url,
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_engines(metafunc)  # db_engine: sqlite and postgres
