"""Fixtures shared by the end-to-end tests of the command line."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli_env(monkeypatch, tmp_path, cache_dir, embedded_model_dir):
    """A working directory and environment like a new user's: no credentials, no .env."""
    monkeypatch.chdir(tmp_path)
    for var in (
        "SPOTIFY_CLIENT_ID",
        "SPOTIFY_CLIENT_SECRET",
        "DISCORD_TOKEN",
        "COVER_DEFAULT_MODEL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COVER_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("COVER_DB_PATH", str(tmp_path / "data" / "covers.db"))
    monkeypatch.setenv("COVER_OUTPUT_DIR", str(tmp_path / "covers"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path
