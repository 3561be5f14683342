"""The database's schema, as numbered sqlite-utils migrations (``m001_initial``, ...).

A migration is applied once, in a transaction with the row that records it in
``_sqlite_migrations``, so opening the same file again is harmless (:meth:`Storage.migrate`).
A new column or table is a new function at the end; one already applied is never edited.

On PostgreSQL the same functions run, in order, through :func:`apply_postgres` (recorded in
``_migrations``): each statement is written once, in SQLite's words, and :func:`.dialect.ddl`
spells the few type words that differ PostgreSQL's way on the way to the server.

    requests            one /cover or CLI run: who, which playlist, model, params, prompts, outcome
    candidates          its images: (request_id, idx) → prompt, seed, files
    playlist_snapshots  raw Spotify JSON, one row per distinct content of a playlist
    cover_messages      a Discord message that shows a request's candidates and collects votes
    votes               one row per (message, user): the database, not memory, keeps it to one
    link_states         a pending Spotify authorisation: hashed ``state`` → Discord user (once)
    spotify_accounts    a Discord user's linked Spotify account; its tokens encrypted (bot.app.accounts)
    spotify_uploads     every attempt to put a winning cover on a playlist, and how it ended
    community_styles    a server's own LoRA (preference-tuned from its votes, docs/dpo.md)
    server_settings     a server's own rules (/settings): banned words, daily limit, NSFW policy
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.app.storage.dialect import POSTGRES, ddl, dialect_of, lock_key

MIGRATIONS = Migrations("playlist_cover")
# The same functions in order, for apply_postgres (sqlite-utils keeps its list private).
_STEPS: list[Callable[[Any], None]] = []


def _migration(fn: Callable[[Any], None]) -> Callable[[Any], None]:
    _STEPS.append(fn)
    return MIGRATIONS()(fn)


# What the table accepts (keycaps 1️⃣..🔟); the bot's own limit is bot.app.prompts'.
SCHEMA_MAX_CANDIDATES = 10


@_migration
def m001_initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,                 -- uuid4 hex
            created_at TEXT NOT NULL,
            source TEXT NOT NULL,                -- "cli" or "discord"
            user_id TEXT NOT NULL,
            guild_id TEXT,
            channel_id TEXT,
            playlist_id TEXT NOT NULL,
            playlist_name TEXT NOT NULL,
            model TEXT NOT NULL,
            params TEXT NOT NULL,                -- JSON object
            prompts TEXT NOT NULL,               -- JSON list of {text, negative, style, seed}
            status TEXT NOT NULL,                -- "queued", then "done" / "failed" / ...
            timings TEXT,                        -- JSON object of seconds
            error TEXT,
            finished_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX requests_by_user ON requests (user_id, created_at)")
    db.execute("CREATE INDEX requests_by_playlist ON requests (playlist_id, created_at)")
    db.execute(
        """
        CREATE TABLE candidates (
            request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,                -- 1-based, as the vote reactions
            prompt TEXT NOT NULL,
            negative TEXT NOT NULL,
            seed INTEGER NOT NULL,               -- the seed that made the image
            png_path TEXT,
            jpeg_path TEXT,
            black_retries INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (request_id, idx)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE playlist_snapshots (
            playlist_id TEXT NOT NULL,
            content_hash TEXT NOT NULL,          -- sha256 of the canonical JSON
            snapshot_id TEXT,                    -- Spotify's version id, when it sent one
            name TEXT,
            data TEXT NOT NULL,                  -- the playlist JSON as given
            first_fetched_at TEXT NOT NULL,
            fetched_at TEXT NOT NULL,            -- the last time this content was seen
            PRIMARY KEY (playlist_id, content_hash)
        )
        """
    )
    db.execute("CREATE INDEX snapshots_by_time ON playlist_snapshots (playlist_id, fetched_at)")
    db.execute(
        f"""
        CREATE TABLE cover_messages (
            message_id TEXT PRIMARY KEY,
            channel_id TEXT NOT NULL,
            request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
            candidate_count INTEGER NOT NULL CHECK (candidate_count BETWEEN 1 AND {SCHEMA_MAX_CANDIDATES}),
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
            winner INTEGER,
            created_at TEXT NOT NULL,
            closed_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE votes (
            message_id TEXT NOT NULL REFERENCES cover_messages (message_id) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            choice INTEGER NOT NULL,
            voted_at TEXT NOT NULL,
            UNIQUE (message_id, user_id)
        )
        """
    )


@_migration
def m002_spotify_accounts(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE link_states (
            state_hash TEXT PRIMARY KEY,         -- sha256 hex of the OAuth state
            discord_user_id TEXT NOT NULL,
            verifier BLOB NOT NULL,              -- the PKCE code verifier, encrypted
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX link_states_by_user ON link_states (discord_user_id)")
    db.execute(
        """
        CREATE TABLE spotify_accounts (
            discord_user_id TEXT PRIMARY KEY,
            spotify_user_id TEXT NOT NULL,
            display_name TEXT,
            scopes TEXT NOT NULL,                -- space-separated, as Spotify granted them
            tokens BLOB NOT NULL,                -- access and refresh token, encrypted
            expires_at TEXT NOT NULL,            -- when the access token stops working
            linked_at TEXT NOT NULL,
            refreshed_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE spotify_uploads (
            id INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL REFERENCES cover_messages (message_id) ON DELETE CASCADE,
            request_id TEXT NOT NULL,
            playlist_id TEXT NOT NULL,
            discord_user_id TEXT NOT NULL,
            spotify_user_id TEXT,
            candidate INTEGER,
            jpeg_bytes INTEGER,
            status TEXT NOT NULL CHECK (status IN ('applied', 'rate_limited', 'failed')),
            error TEXT,
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX uploads_by_message ON spotify_uploads (message_id, created_at)")


@_migration
def m003_request_resumes(db: Database) -> None:
    # How often a restart queued the request again: resuming stops after a configured number
    # (Settings.resume_max_tries), so a request that kills the bot is not remade forever.
    db.execute("ALTER TABLE requests ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0")


@_migration
def m004_close_reasons(db: Database) -> None:
    # Why a vote closed: "requester", "timer", "deleted" (the post is gone) – a vote closed
    # without a winner because its post was deleted is not the same as one nobody voted in.
    db.execute("ALTER TABLE cover_messages ADD COLUMN close_reason TEXT")


@_migration
def m005_community_styles(db: Database) -> None:
    # A server's "community style": the LoRA an administrator pointed it at (typically trained
    # by `python -m training dpo` on the server's own votes) and the base model it was trained
    # on. Requests that used it say so in their params ("community_style"), so the votes on
    # them can later tell whether it helped.
    db.execute(
        """
        CREATE TABLE community_styles (
            guild_id TEXT PRIMARY KEY,
            lora_path TEXT NOT NULL,             -- a .safetensors file or a folder holding one
            base_model TEXT NOT NULL,            -- the registry name the LoRA goes on top of
            set_by TEXT NOT NULL,                -- the Discord user (an administrator)
            set_at TEXT NOT NULL
        )
        """
    )


@_migration
def m006_spotify_account_ids(db: Database) -> None:
    # Spotify's `account_id`: the immutable id its description says to link accounts by (the
    # user `id` may change). Rows linked before have none; `spotify_user_id` stands in for it.
    db.execute("ALTER TABLE spotify_accounts ADD COLUMN spotify_account_id TEXT")


@_migration
def m007_params_community(db: Database) -> None:
    # The request option is ``community`` (bot.app.cover.CoverRequest); its stored params said
    # ``community_style``. One name from here on (bot.app.records.StoredParams reads it).
    if dialect_of(db) == POSTGRES:  # SQLite's JSON functions are jsonb operators there
        db.execute(
            """
            UPDATE requests SET params = (
                (params::jsonb - 'community_style') || jsonb_build_object('community',
                    coalesce(params::jsonb -> 'community_style' IN ('true', '1'), false))
            )::text
            WHERE jsonb_typeof(params::jsonb -> 'community_style') IS NOT NULL
            """
        )
        return
    db.execute(
        """
        UPDATE requests SET params = json_remove(
            json_set(params, '$.community',
                json(CASE WHEN json_extract(params, '$.community_style') THEN 'true'
                     ELSE 'false' END)),
            '$.community_style')
        WHERE json_type(params, '$.community_style') IS NOT NULL
        """
    )


@_migration
def m008_server_settings(db: Database) -> None:
    # A server's own rules, set by its managers with /settings (bot/app/server_rules.py). A
    # server without a row has the defaults: no banned words, no daily limit, flagged
    # candidates dropped. Daily limits are counted from `requests` (user, server, UTC day).
    db.execute(
        """
        CREATE TABLE server_settings (
            guild_id TEXT PRIMARY KEY,
            banned_words TEXT NOT NULL DEFAULT '[]',   -- JSON list of normalised words
            daily_limit INTEGER NOT NULL DEFAULT 0 CHECK (daily_limit >= 0),  -- 0: none
            nsfw TEXT NOT NULL DEFAULT 'drop' CHECK (nsfw IN ('drop', 'spoiler')),
            updated_by TEXT,                     -- the Discord user who last changed them
            updated_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX requests_by_guild_user ON requests (guild_id, user_id, created_at)")


class _InPostgresWords:
    """``db`` for a migration function on PostgreSQL: its statements through :func:`.ddl`."""

    dialect = POSTGRES

    def __init__(self, db: Any) -> None:
        self._db = db

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self._db.execute(ddl(self, sql), params)


def apply_postgres(db: Any) -> None:
    """Apply the pending migrations to a PostgreSQL database, each in a transaction with the row
    that records it. An advisory lock keeps two processes starting at once from both applying
    one (SQLite's BEGIN IMMEDIATE does it there)."""
    with db.transaction():
        lock_key(db, "migrations", MIGRATIONS.name)
        db.execute(
            """
            CREATE TABLE IF NOT EXISTS _migrations (
                migration_set TEXT NOT NULL,
                name TEXT NOT NULL,
                applied_at TEXT NOT NULL,
                PRIMARY KEY (migration_set, name)
            )
            """
        )
        done = {
            row["name"]
            for row in db.query(
                "SELECT name FROM _migrations WHERE migration_set = ?", [MIGRATIONS.name]
            )
        }
        for step in _STEPS:
            if step.__name__ in done:
                continue
            with db.transaction():  # a savepoint: the migration and its record, or neither
                step(_InPostgresWords(db))
                db.execute(
                    "INSERT INTO _migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
                    [MIGRATIONS.name, step.__name__, datetime.now(UTC).isoformat()],
                )
