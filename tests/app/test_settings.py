"""Settings: typed, read from env and .env, secrets hidden, missing credentials named."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.app.errors import LinkingDisabled, MissingSetting
from bot.app.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in (
        "SPOTIFY_CLIENT_ID",
        "SPOTIFY_CLIENT_SECRET",
        "DISCORD_TOKEN",
        "COVER_TOKEN_KEY",
        "SPOTIFY_REDIRECT_URI",
    ):
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


# -- linking a Spotify account ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "bind"),
    [
        ("http://127.0.0.1:8888/spotify/callback", ("127.0.0.1", 8888, "/spotify/callback")),
        ("http://[::1]:9000/cb", ("::1", 9000, "/cb")),
        ("https://covers.example.org/spotify/callback", ("127.0.0.1", 8888, "/spotify/callback")),
    ],
)
def test_redirect_uris_spotify_accepts(uri, bind):
    settings = Settings(_env_file=None, spotify_redirect_uri=uri)
    assert settings.spotify_redirect_uri == uri
    assert settings.callback_bind() == bind


def test_the_callback_server_can_listen_elsewhere_behind_a_proxy(monkeypatch):
    monkeypatch.setenv("SPOTIFY_REDIRECT_URI", "https://covers.example.org/spotify/callback")
    monkeypatch.setenv("COVER_CALLBACK_HOST", "0.0.0.0")
    monkeypatch.setenv("COVER_CALLBACK_PORT", "8080")
    assert Settings(_env_file=None).callback_bind() == ("0.0.0.0", 8080, "/spotify/callback")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://localhost:8888/callback", "use 127.0.0.1 instead"),
        ("http://example.org/callback", "must be https://"),
        ("http://127.0.0.1/callback", "needs its port"),
        ("https://example.org/callback#top", "no #fragment"),
        ("ftp://example.org/callback", "must be https://"),
        ("127.0.0.1:8888/callback", "must be"),
    ],
)
def test_redirect_uris_spotify_refuses(monkeypatch, uri, reason):
    monkeypatch.setenv("SPOTIFY_REDIRECT_URI", uri)
    with pytest.raises(ValidationError, match=reason):
        Settings(_env_file=None)


def test_linking_needs_a_token_key_and_never_shows_it(monkeypatch):
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", "id")
    with pytest.raises(LinkingDisabled, match="has not set COVER_TOKEN_KEY") as caught:
        Settings(_env_file=None).require_linking()
    assert "Fernet.generate_key()" in str(caught.value)
    monkeypatch.setenv("COVER_TOKEN_KEY", "token-key-value")
    settings = Settings(_env_file=None)
    client_id, key = settings.require_linking()
    assert client_id == "id" and key.get_secret_value() == "token-key-value"
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "token-key-value" not in text
    monkeypatch.delenv("SPOTIFY_CLIENT_ID")
    with pytest.raises(LinkingDisabled, match="SPOTIFY_CLIENT_ID"):
        Settings(_env_file=None).require_linking()


def test_a_link_lasts_a_positive_time(monkeypatch):
    monkeypatch.setenv("COVER_LINK_STATE_TTL_S", "0")
    with pytest.raises(ValidationError, match="more than 0"):
        Settings(_env_file=None)


# -- where generation runs (COVER_DEVICES, COVER_RAY_*; bot/app/runners.py) -----------------


def test_devices_and_ray_settings_are_read_and_checked(monkeypatch):
    assert (Settings().devices, Settings().ray_address) == ("auto", None)  # default: in-process
    monkeypatch.setenv("COVER_DEVICES", "cuda:0,cuda:1")
    monkeypatch.setenv("COVER_RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("COVER_RAY_WORKERS", "3")
    monkeypatch.setenv("COVER_RAY_GPUS_PER_WORKER", "0.5")
    settings = Settings()
    assert settings.devices == "cuda:0,cuda:1" and settings.ray_address == "ray://head:10001"
    assert (settings.ray_workers, settings.ray_gpus_per_worker) == (3, 0.5)
    monkeypatch.setenv("COVER_RAY_WORKERS", "-1")
    with pytest.raises(ValidationError, match="ray_workers"):
        Settings()


def test_local_devices_follow_the_setting():
    from models.errors import ModelUnavailable
    from models.registry import local_devices

    assert local_devices("auto") == ["cpu"]  # this machine has no CUDA device
    assert local_devices("auto", cuda_only=True) == []  # with Ray, a CPU takes no batches
    assert local_devices("none") == []
    assert local_devices(" CPU ") == ["cpu"]
    with pytest.raises(ModelUnavailable, match="twice"):
        local_devices("cpu,cpu")
    with pytest.raises(ModelUnavailable, match="no CUDA"):
        local_devices("cuda:0,cuda:1")


def test_build_runners_one_per_device_and_none_is_a_clear_error(tmp_path):
    from bot.app.runners import build_runners
    from models.errors import NoWorkers

    settings = Settings(_env_file=None, cache_dir=tmp_path, device="cpu")  # type: ignore[call-arg]
    runners, release = build_runners(settings)
    assert [r.device for r in runners] == ["cpu"]
    release()
    with pytest.raises(NoWorkers, match="COVER_DEVICES names no device"):
        build_runners(settings.model_copy(update={"devices": "none"}))


def test_importing_bot_and_models_does_not_import_ray():
    """Ray is an optional extra: only COVER_RAY_ADDRESS makes the bot import it."""
    import subprocess
    import sys

    code = (
        "import sys, bot, bot.__main__, bot.app.cover, bot.client, bot.app.settings, models, "
        "models.queue, models.runner, modeltools.benchmark, models.ray_workers, models.registry\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    "field", ["cooldown_s", "vote_close_after_s", "ray_workers", "ray_cpus_per_worker"]
)
def test_negative_counts_and_waits_are_refused(field: str) -> None:
    from pydantic import ValidationError

    from bot.app.settings import Settings

    with pytest.raises(ValidationError, match="must be 0 or more"):
        Settings(_env_file=None, **{field: -1})
