"""Typed settings, read once from the environment and ``.env`` and passed down.

Build one :class:`Settings` in ``__main__`` (or in a test) and hand it to whatever needs it;
nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.app.errors import LinkingDisabled, MissingSetting
from bot.app.shards import Shards, check_shards, parse_shard_ids

GENERATE_KEY = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)
LOOPBACK_HOSTS = ("127.0.0.1", "::1")  # Spotify refuses the word "localhost" (docs/facts.md)


class Settings(BaseSettings):
    """Every knob of the bot and the CLI. Environment names are given beside each field."""

    # hide_input_in_errors: a ValidationError's text otherwise quotes the value it refused
    # (``input_value='postgresql://user:password@…'``) wherever it is printed or logged.
    model_config = SettingsConfigDict(
        env_prefix="COVER_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )

    # --- secrets (never logged: SecretStr hides them in reprs) ---
    discord_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DISCORD_TOKEN", "COVER_DISCORD_TOKEN")
    )
    spotify_client_id: str | None = Field(
        None, validation_alias=AliasChoices("SPOTIFY_CLIENT_ID", "COVER_SPOTIFY_CLIENT_ID")
    )
    spotify_client_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("SPOTIFY_CLIENT_SECRET", "COVER_SPOTIFY_CLIENT_SECRET")
    )
    # COVER_TOKEN_KEY: the Fernet key that encrypts linked accounts' tokens at rest. Unset: no
    # linking. Changing it makes every stored link unreadable: people link again.
    token_key: SecretStr | None = None

    # --- Discord endpoints (Discord's by default; Discord-compatible servers and tests differ) ---
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg"
    discord_guild_id: int | None = None  # sync slash commands to this guild only (instant)
    vote_close_after_s: float = 24 * 3600.0  # an open vote closes itself after this long
    status_edit_interval_s: float = 2.0  # least time between edits of a job's status message
    cooldown_s: float = 30.0  # least time between one person's accepted /cover requests
    benchmark_steps: int | None = None  # /benchmark's denoising steps (None: the model preset's)
    benchmark_requests: tuple[int, ...] = (1, 4, 8)  # /benchmark's workloads: concurrent requests
    # --- shard processes (docs/deployment.md, bot/app/shards.py) ---
    # COVER_SHARD_IDS="0,1" with COVER_SHARD_COUNT=4: this process connects those shards only and
    # owns only their servers' votes and jobs. Both unset: one process, every shard.
    shard_ids: Annotated[tuple[int, ...] | None, NoDecode] = None
    shard_count: int | None = None

    # --- Spotify endpoints (tests point these at a local fake server) ---
    spotify_api_base: str = Field(
        "https://api.spotify.com/v1",
        validation_alias=AliasChoices("SPOTIFY_API_BASE", "COVER_SPOTIFY_API_BASE"),
    )
    spotify_token_url: str = Field(
        "https://accounts.spotify.com/api/token",
        validation_alias=AliasChoices("SPOTIFY_TOKEN_URL", "COVER_SPOTIFY_TOKEN_URL"),
    )
    spotify_timeout_s: float = 10.0  # per HTTP request
    spotify_max_tries: int = 4  # attempts per request on 429/5xx/timeouts, first one included
    spotify_max_wait_s: float = 20.0  # longest Retry-After we sleep through before giving up
    spotify_max_items: int = 500  # playlist items read for genres/artists (paging stops there)

    # --- linking a person's own Spotify account (bot/app/accounts.py, docs/spotify.md) ---
    spotify_authorize_url: str = Field(
        "https://accounts.spotify.com/authorize",
        validation_alias=AliasChoices("SPOTIFY_AUTHORIZE_URL", "COVER_SPOTIFY_AUTHORIZE_URL"),
    )
    # Must be listed, character for character, among the app's redirect URIs on Spotify's
    # dashboard; the bot serves its path itself.
    spotify_redirect_uri: str = Field(
        "http://127.0.0.1:8888/spotify/callback",
        validation_alias=AliasChoices("SPOTIFY_REDIRECT_URI", "COVER_SPOTIFY_REDIRECT_URI"),
    )
    # Where the callback server listens. Default: the redirect URI's own host and port for a
    # loopback http:// URI; 127.0.0.1:8888 behind a reverse proxy for an https:// one.
    callback_host: str | None = None
    callback_port: int | None = None
    link_state_ttl_s: float = 600.0  # an authorisation link is good for this long, once

    # --- storage and output ---
    db_path: Path = Path("data/playlist-cover.db")
    # A PostgreSQL server instead of the SQLite file (postgresql://user:password@host/db; needs
    # the postgres extra): several bot processes or machines share one state. A SecretStr: the
    # URL may hold a password.
    db_url: SecretStr | None = None
    # How long a write waits for another process (the CLI beside the bot) to release the
    # database before the request fails with a message.
    db_busy_timeout_s: float = 30.0
    output_dir: Path = Path("covers")
    cache_dir: Path = Path.home() / ".cache" / "playlist-cover"  # built embedded model lives here

    # --- generation ---
    default_model: str = "auto"  # a cached hub model on a GPU, else the embedded one
    # Local model folders people on Discord may pick by folder name, beside the presets
    # (COVER_DISCORD_MODEL_FOLDERS='["/models/my-finetune"]'); anything else is refused.
    discord_model_folders: tuple[Path, ...] = ()
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    allow_downloads: bool = False  # fetch hub models that are not cached yet
    black_retries: int = 2  # regenerations of an all-black (safety-checked) image
    optimizations: str = ""  # switches over the defaults, e.g. "compile=on" (models/optimize.py)
    # Where servers' community-style LoRAs live (docs/dpo.md): an administrator's
    # `/community set` names a file in this folder, never a path elsewhere on the machine.
    community_lora_dir: Path = Path("data/community-loras")

    # --- where generation runs (docs/deployment.md) ---
    # COVER_DEVICES: one queue worker per device. auto = every CUDA device, else COVER_DEVICE's
    # choice (one device); with COVER_RAY_ADDRESS set, auto means local CUDA devices only.
    # "none" = no local device (Ray workers only), or a list such as "cuda:0,cuda:1".
    devices: str = "auto"
    # COVER_RAY_ADDRESS: also run on Ray actors, one per GPU: "auto" (this node belongs to a
    # cluster), "head-host:6379", "ray://head-host:10001", or "local" (a fresh one-machine Ray).
    # Unset: no Ray, nothing imported.
    ray_address: str | None = None
    ray_workers: int = 0  # actors to start; 0 = one per GPU the cluster has
    ray_gpus_per_worker: float = 1.0  # 0 for CPU-only actors (tests, the benchmark)
    ray_cpus_per_worker: float = 1.0
    ray_torch_threads: int = 0  # torch threads in each actor (0: torch's default)
    ray_start_timeout_s: float = 120.0  # actors not ready by then are left out

    # --- queue ---
    queue_max_pending: int = 64  # jobs waiting, all users together
    queue_max_per_user: int = 2  # jobs one user may have waiting or running
    queue_max_batch: int = 8  # images merged into one pipeline call
    job_timeout_s: float = 600.0
    resume_max_tries: int = 3  # restarts that may queue one request again; then it fails

    @field_validator("optimizations")
    @classmethod
    def _known_optimizations(cls, value: str) -> str:
        from models.optimize import Optimizations

        Optimizations().replace(value)  # raises ValueError naming the bad switch
        return value

    @field_validator(
        "cooldown_s",
        "vote_close_after_s",
        "status_edit_interval_s",
        "ray_workers",
        "ray_torch_threads",
        "ray_gpus_per_worker",
        "ray_cpus_per_worker",
    )
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be 0 or more, got {value}")
        return value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_id_list(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_shard_ids(value) if value.strip() else None
        return value

    @model_validator(mode="after")
    def _shard_layout(self) -> Settings:
        if self.shard_ids is None and self.shard_count is None:
            return self
        if self.shard_count is None:
            raise ValueError("COVER_SHARD_IDS needs COVER_SHARD_COUNT (--shard-count) beside it")
        if self.shard_ids is None:  # a count alone: every shard of it in this one process
            self.shard_ids = tuple(range(self.shard_count)) if self.shard_count >= 1 else ()
        check_shards(self.shard_ids, self.shard_count)
        return self

    def shards(self) -> Shards:
        """The shards this process serves (:class:`~bot.app.shards.Shards`)."""
        if self.shard_ids is None or self.shard_count is None:
            return Shards.every()
        return Shards(self.shard_ids, self.shard_count)

    @field_validator("link_state_ttl_s", "db_busy_timeout_s")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be more than 0, got {value}")
        return value

    @field_validator("db_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        # Nothing of the URL is echoed, not even its "scheme": in a URL typed without one
        # (user:password@host) that is the part before the first colon.
        try:
            scheme = urlsplit(value.get_secret_value()).scheme
        except ValueError:  # urlsplit's own messages name no part of it, but say nothing
            raise ValueError("must be a postgresql://… URL; this one cannot be read") from None
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql://user:password@host/database URL")
        return value

    def storage_target(self) -> str | Path:
        """What :class:`~bot.app.storage.Storage` opens: ``COVER_DB_URL`` when set, else the
        SQLite file ``COVER_DB_PATH``."""
        return self.db_url.get_secret_value() if self.db_url is not None else self.db_path

    @field_validator("spotify_redirect_uri")
    @classmethod
    def _redirect_uri(cls, value: str) -> str:
        """Spotify's rule since 2025: HTTPS, or plain http only to a loopback IP literal."""
        parts = urlsplit(value)
        if parts.fragment or not parts.path.startswith("/"):
            raise ValueError(f"must be an absolute URL with a path and no #fragment, got {value!r}")
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
            if parts.port is None:
                raise ValueError(f"a loopback redirect URI needs its port, got {value!r}")
            return value
        if parts.scheme == "http" and parts.hostname == "localhost":
            raise ValueError(
                f"Spotify refuses 'localhost' in redirect URIs; use 127.0.0.1 instead, got {value!r}"
            )
        raise ValueError(
            f"must be https://… or http://127.0.0.1:PORT/… (Spotify's rule), got {value!r}"
        )

    @field_validator("queue_max_pending", "queue_max_per_user", "queue_max_batch")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    def require_spotify(self) -> tuple[str, SecretStr]:
        """The Spotify client credentials, or a :class:`MissingSetting` naming the variable."""
        if not self.spotify_client_id:
            raise MissingSetting("SPOTIFY_CLIENT_ID", "to read playlists from Spotify")
        if self.spotify_client_secret is None or not self.spotify_client_secret.get_secret_value():
            raise MissingSetting("SPOTIFY_CLIENT_SECRET", "to read playlists from Spotify")
        return self.spotify_client_id, self.spotify_client_secret

    def require_linking(self) -> tuple[str, SecretStr]:
        """The client id and token key that account linking needs, or :class:`LinkingDisabled`
        naming what the operator must set. Never echoes the key."""
        if not self.spotify_client_id:
            raise LinkingDisabled(
                "Linking Spotify accounts is switched off on this bot: its operator has not set "
                "SPOTIFY_CLIENT_ID."
            )
        if self.token_key is None or not self.token_key.get_secret_value():
            raise LinkingDisabled(
                "Linking Spotify accounts is switched off on this bot: its operator has not set "
                f"COVER_TOKEN_KEY (make one with: {GENERATE_KEY})."
            )
        return self.spotify_client_id, self.token_key

    def callback_bind(self) -> tuple[str, int, str]:
        """Host, port and path the OAuth callback server listens on (see the fields above)."""
        parts = urlsplit(self.spotify_redirect_uri)
        direct = parts.scheme == "http"  # loopback: the browser reaches the bot itself
        host = self.callback_host or (parts.hostname if direct else "127.0.0.1")
        port = self.callback_port or (parts.port if direct else 8888)
        return str(host), int(port), parts.path

    def require_discord_token(self) -> SecretStr:
        if self.discord_token is None or not self.discord_token.get_secret_value():
            raise MissingSetting("DISCORD_TOKEN", "to connect the bot to Discord")
        return self.discord_token
