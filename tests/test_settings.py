"""Settings: typed, read from env and .env, secrets hidden, missing credentials named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.errors import MissingSetting
from bot.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in ("SPOTIFY_CLIENT_ID", "SPOTIFY_CLIENT_SECRET", "DISCORD_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def test_reads_environment_and_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("SPOTIFY_CLIENT_ID=from-dotenv\nCOVER_QUEUE_MAX_BATCH=3\n")
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("SPOTIFY_API_BASE", "http://127.0.0.1:9/v1")
    settings = Settings()
    assert settings.spotify_client_id == "from-dotenv"
    assert settings.queue_max_batch == 3
    assert settings.spotify_api_base == "http://127.0.0.1:9/v1"
    client_id, secret = settings.require_spotify()
    assert client_id == "from-dotenv" and secret.get_secret_value() == "s3cret-value"


def test_secrets_never_appear_in_repr(monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "discord-token-value")
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", "spotify-secret-value")
    settings = Settings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "discord-token-value" not in text and "spotify-secret-value" not in text


@pytest.mark.parametrize(
    ("env", "call", "variable"),
    [
        ({}, "require_spotify", "SPOTIFY_CLIENT_ID"),
        ({"SPOTIFY_CLIENT_ID": "id"}, "require_spotify", "SPOTIFY_CLIENT_SECRET"),
        (
            {"SPOTIFY_CLIENT_ID": "id", "SPOTIFY_CLIENT_SECRET": ""},
            "require_spotify",
            "SPOTIFY_CLIENT_SECRET",
        ),
        ({}, "require_discord_token", "DISCORD_TOKEN"),
    ],
)
def test_missing_credentials_name_the_variable(monkeypatch, env, call, variable):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(MissingSetting) as caught:
        getattr(Settings(), call)()
    assert str(caught.value).startswith(variable)
    assert caught.value.variable == variable


def test_queue_limits_must_be_positive(monkeypatch):
    monkeypatch.setenv("COVER_QUEUE_MAX_PER_USER", "0")
    with pytest.raises(ValidationError, match="at least 1"):
        Settings()


def test_optimisation_switches_are_checked_when_settings_are_read(monkeypatch):
    monkeypatch.setenv("COVER_OPTIMIZATIONS", "compile=on,turbo=on")
    with pytest.raises(ValidationError, match="Unknown optimisation 'turbo'"):
        Settings(_env_file=None)
    monkeypatch.setenv("COVER_OPTIMIZATIONS", "compile=on,channels_last=off")
    assert Settings(_env_file=None).optimizations == "compile=on,channels_last=off"
