"""Every SQL statement of the project: requests, candidates, playlist snapshots and votes.

One SQLite file, schema changes as numbered sqlite-utils migrations (``m001_initial``, ...):
a migration is applied once, in a transaction with the row that records it in
``_sqlite_migrations``, so opening the same file again is harmless.

    requests            one /cover or CLI run: who, which playlist, model, params, prompts, outcome
    candidates          its images: (request_id, idx) → prompt, seed, files
    playlist_snapshots  raw Spotify JSON, one row per distinct content of a playlist
    cover_messages      a Discord message that shows a request's candidates and collects votes
    votes               one row per (message, user): the database, not memory, keeps it to one
    link_states         a pending Spotify authorisation: hashed ``state`` → Discord user (once)
    spotify_accounts    a Discord user's linked Spotify account; its tokens encrypted (bot.app.accounts)
    spotify_uploads     every attempt to put a winning cover on a playlist, and how it ended
    community_styles    a server's own LoRA (preference-tuned from its votes, docs/dpo.md)

Threads: a plain ``sqlite_utils.Database(path)`` is bound to the thread that opened it (STYLE
§9). :class:`Storage` opens its connection with ``check_same_thread=False`` and serialises every
call through one lock instead, so the bot may call it from the event loop (every call is short)
and a worker thread or ``asyncio.to_thread`` may call it too.

Timestamps are ISO 8601 strings in UTC with milliseconds, so they sort as text. JSON columns
are TEXT holding JSON, decoded on the way out. Secrets never reach this module in clear: the
OAuth tokens and PKCE verifiers arrive as opaque encrypted blobs, the ``state`` as its hash.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from bot.app.errors import StorageUnavailable

MIGRATIONS = Migrations("playlist_cover")
# What the table accepts (keycaps 1️⃣..🔟); the bot's own limit is bot.app.prompts'.
SCHEMA_MAX_CANDIDATES = 10
_INT64 = (-(2**63), 2**63 - 1)  # SQLite INTEGER range
BUSY_TIMEOUT_S = 30.0  # a write waits this long for another process's transaction to end

_REQUEST_JSON_COLUMNS = ("params", "prompts", "timings")
# One row per (message, user) by the UNIQUE constraint: a later vote replaces the earlier one.
_UPSERT_VOTE = """
    INSERT INTO votes (message_id, user_id, choice, voted_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (message_id, user_id) DO UPDATE SET
        choice = excluded.choice, voted_at = excluded.voted_at
"""


@MIGRATIONS()
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


@MIGRATIONS()
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


@MIGRATIONS()
def m003_request_resumes(db: Database) -> None:
    # How often a restart queued the request again: resuming stops after a configured number
    # (Settings.resume_max_tries), so a request that kills the bot is not remade forever.
    db.execute("ALTER TABLE requests ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0")


@MIGRATIONS()
def m004_close_reasons(db: Database) -> None:
    # Why a vote closed: "requester", "timer", "deleted" (the post is gone) – a vote closed
    # without a winner because its post was deleted is not the same as one nobody voted in.
    db.execute("ALTER TABLE cover_messages ADD COLUMN close_reason TEXT")


@MIGRATIONS()
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


@MIGRATIONS()
def m006_spotify_account_ids(db: Database) -> None:
    # Spotify's `account_id`: the immutable id its description says to link accounts by (the
    # user `id` may change). Rows linked before have none; `spotify_user_id` stands in for it.
    db.execute("ALTER TABLE spotify_accounts ADD COLUMN spotify_account_id TEXT")


CLOSE_REASONS = ("requester", "timer", "deleted")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _decode_request(row: dict[str, Any]) -> dict[str, Any]:
    """A requests row with its JSON columns as Python objects."""
    for column in _REQUEST_JSON_COLUMNS:
        if row[column] is not None:
            row[column] = json.loads(row[column])
    return row


def content_hash(playlist: Mapping[str, Any]) -> str:
    """sha256 of the playlist JSON with sorted keys, ignoring our own ``fetched_at`` key."""
    content = {k: v for k, v in playlist.items() if k != "fetched_at"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Storage:
    """The project's SQLite database. Build one per process and pass it down; :meth:`close` it.

    Usable as a context manager. See the module docstring for threads and formats.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        now: Callable[[], datetime] = _utc_now,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = Path(path)
        self._now = now  # injectable clock: tests need distinct, ordered timestamps
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        try:
            self._open()
        except (OSError, sqlite3.Error) as exc:
            # A corrupt file, a folder we can't create, a file we can't write: the operator's
            # to fix, so one sentence naming the file, not a traceback (tests/e2e/test_cli.py).
            raise StorageUnavailable(
                f"The database {self.path} can't be used ({_reason(exc)}); "
                "check the file or point COVER_DB_PATH elsewhere."
            ) from None

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # timeout: how long a write waits for another process's write lock (busy timeout).
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=self.busy_timeout_s)
        self.db = Database(conn, execute_plugins=False)
        # Foreign keys are off by default in SQLite and can't be switched inside a transaction;
        # WAL lets readers (a second process, the sqlite3 shell) work while the bot writes.
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.enable_wal()
        # In WAL mode NORMAL loses at most the last commits on power loss, never consistency,
        # and spares an fsync per vote.
        self.db.execute("PRAGMA synchronous = NORMAL")
        # Deleted rows are overwritten with zeros rather than left in free pages: unlinking a
        # Spotify account must take its (encrypted) tokens out of the file, not just the index.
        self.db.execute("PRAGMA secure_delete = ON")
        self.migrate()

    # --- lifecycle --------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Apply pending migrations; those already recorded are skipped."""
        with self._lock:
            MIGRATIONS.apply(self.db)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        """A write transaction that holds SQLite's write lock from its first statement.

        sqlite-utils' ``atomic()`` opens with a plain (deferred) ``BEGIN``: a transaction that
        reads first takes the write lock only at its first write, and in WAL mode SQLite
        refuses that upgrade at once ("database is locked", no busy wait) when another process
        wrote in between – the CLI and the bot share one file by default. ``BEGIN IMMEDIATE``
        takes the lock up front, waiting on the busy timeout; ``atomic()`` inside it then only
        adds a savepoint. tests/app/test_storage_concurrency.py runs two processes against it.
        """
        with self._lock, self._unavailable():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                with self.db.atomic():
                    yield self.db
            except BaseException:
                self.db.rollback()
                raise
            self.db.commit()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock, self._unavailable():
            return list(self.db.query(sql, params))

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """SQLite failing under us (another program holding the lock past the busy timeout, the
        file damaged or its disk full) becomes one sentence for the person who asked. Errors
        that are our own bugs (constraint violations, bad SQL) stay what they are.

        No path in the message: people on Discord read it (the operator finds the path in
        COVER_DB_PATH).
        """
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                why = (
                    f"another program has held its lock for over {self.busy_timeout_s:g} s; "
                    "try again when it is done"
                )
            else:
                why = f"SQLite says: {exc}; the operator should check the file (COVER_DB_PATH)"
            raise StorageUnavailable(
                f"The bot's database can't be used right now: {why}."
            ) from None

    def _stamp(self) -> str:
        return _timestamp(self._now())

    # --- requests and candidates ------------------------------------------------------------------

    def record_request(
        self,
        *,
        source: str,
        user_id: str,
        playlist_id: str,
        playlist_name: str,
        model: str,
        params: Mapping[str, Any],
        prompts: Sequence[Mapping[str, Any]],
        guild_id: str | None = None,
        channel_id: str | None = None,
    ) -> str:
        """Record a request as ``queued`` and return its id (a uuid4 hex string)."""
        request_id = uuid.uuid4().hex
        with self._transaction() as db:
            db.execute(
                """
                INSERT INTO requests (id, created_at, source, user_id, guild_id, channel_id,
                    playlist_id, playlist_name, model, params, prompts, status)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued')
                """,
                [
                    request_id,
                    self._stamp(),
                    source,
                    user_id,
                    guild_id,
                    channel_id,
                    playlist_id,
                    playlist_name,
                    model,
                    _dumps(dict(params)),
                    _dumps([dict(p) for p in prompts]),
                ],
            )
        return request_id

    def finish_request(
        self,
        request_id: str,
        *,
        status: str,
        timings: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        """Set the outcome (``done``, ``failed``, ``cancelled``...) and the time it ended."""
        with self._transaction() as db:
            cursor = db.execute(
                """
                UPDATE requests SET status = ?, timings = ?, error = ?, finished_at = ?
                WHERE id = ?
                """,
                [status, _dumps(dict(timings)), error, self._stamp(), request_id],
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no request {request_id!r}")

    def add_candidates(self, request_id: str, candidates: Sequence[Mapping[str, Any]]) -> None:
        """Store a request's images. Each: index, prompt, negative, seed, png_path, jpeg_path,
        black_retries. Adding an index again replaces that candidate."""
        rows = [self._candidate_row(request_id, c) for c in candidates]
        with self._transaction() as db:
            if not self._exists(db, "requests", "id", request_id):
                raise KeyError(f"no request {request_id!r}")
            for row in rows:
                db.execute(
                    """
                    INSERT INTO candidates (request_id, idx, prompt, negative, seed,
                        png_path, jpeg_path, black_retries)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (request_id, idx) DO UPDATE SET
                        prompt = excluded.prompt, negative = excluded.negative,
                        seed = excluded.seed, png_path = excluded.png_path,
                        jpeg_path = excluded.jpeg_path, black_retries = excluded.black_retries
                    """,
                    row,
                )

    @staticmethod
    def _candidate_row(request_id: str, c: Mapping[str, Any]) -> list[Any]:
        index, seed = int(c["index"]), int(c["seed"])
        if index < 1:
            raise ValueError(f"candidate index must be at least 1, got {index}")
        if not _INT64[0] <= seed <= _INT64[1]:
            raise ValueError(f"candidate seed must fit in a signed 64-bit integer, got {seed}")
        return [
            request_id,
            index,
            str(c["prompt"]),
            str(c.get("negative") or ""),
            seed,
            None if c.get("png_path") is None else str(c["png_path"]),
            None if c.get("jpeg_path") is None else str(c["jpeg_path"]),
            int(c.get("black_retries") or 0),
        ]

    def request(self, request_id: str) -> dict[str, Any] | None:
        """The request row with ``params``, ``prompts`` and ``timings`` decoded, or None."""
        rows = self._rows("SELECT * FROM requests WHERE id = ?", [request_id])
        if not rows:
            return None
        return _decode_request(rows[0])

    def unfinished_requests(self, source: str) -> list[dict[str, Any]]:
        """Requests from ``source`` still ``queued`` (a restart interrupted them), oldest first."""
        rows = self._rows(
            "SELECT * FROM requests WHERE source = ? AND status = 'queued' ORDER BY created_at",
            [source],
        )
        return [_decode_request(row) for row in rows]

    def note_resume(self, request_id: str) -> int:
        """Count one more resumption of a request after a restart; returns the new count."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE requests SET resumes = resumes + 1 WHERE id = ?", [request_id]
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no request {request_id!r}")
            return db.execute("SELECT resumes FROM requests WHERE id = ?", [request_id]).fetchone()[
                0
            ]

    def last_request_at(self, user_id: str, source: str) -> datetime | None:
        """When ``user_id`` last had a request accepted from ``source`` (None: never)."""
        rows = self._rows(
            "SELECT max(created_at) AS at FROM requests WHERE user_id = ? AND source = ?",
            [user_id, source],
        )
        return datetime.fromisoformat(rows[0]["at"]) if rows and rows[0]["at"] else None

    def candidates(self, request_id: str) -> list[dict[str, Any]]:
        """A request's candidates in order, each with ``index`` (1-based) like its input."""
        return self._rows(
            """
            SELECT request_id, idx AS "index", prompt, negative, seed, png_path, jpeg_path,
                black_retries
            FROM candidates WHERE request_id = ? ORDER BY idx
            """,
            [request_id],
        )

    # --- playlist snapshots -----------------------------------------------------------------------

    def save_snapshot(self, playlist: Mapping[str, Any]) -> None:
        """Keep a playlist's raw JSON (the :mod:`bot.app.playlist` snapshot shape).

        Idempotent: the same content is stored once per playlist (keyed by a hash of the JSON,
        which covers Spotify's ``snapshot_id``); saving it again only moves its ``fetched_at``.
        """
        playlist_id = playlist.get("id")
        if not isinstance(playlist_id, str) or not playlist_id:
            raise ValueError("a playlist snapshot needs an 'id' string")
        data = {k: v for k, v in playlist.items() if k != "fetched_at"}
        now = self._stamp()
        snapshot_id = playlist.get("snapshot_id")
        with self._transaction() as db:
            db.execute(
                """
                INSERT INTO playlist_snapshots (playlist_id, content_hash, snapshot_id, name,
                    data, first_fetched_at, fetched_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (playlist_id, content_hash) DO UPDATE SET
                    fetched_at = excluded.fetched_at
                """,
                [
                    playlist_id,
                    content_hash(data),
                    snapshot_id if isinstance(snapshot_id, str) else None,
                    str(playlist.get("name") or ""),
                    _dumps(data),
                    now,
                    now,
                ],
            )

    def latest_snapshot(self, playlist_id: str) -> dict[str, Any] | None:
        """The most recently fetched JSON of a playlist, with ``fetched_at`` added, or None.

        The result is again in the snapshot shape, so it can be written to a file and read
        back with :func:`bot.app.playlist.load_snapshot`.
        """
        rows = self._rows(
            """
            SELECT data, fetched_at FROM playlist_snapshots WHERE playlist_id = ?
            ORDER BY fetched_at DESC, rowid DESC LIMIT 1
            """,
            [playlist_id],
        )
        if not rows:
            return None
        return {**json.loads(rows[0]["data"]), "fetched_at": rows[0]["fetched_at"]}

    # --- votes ------------------------------------------------------------------------------------

    def register_cover_message(
        self, *, message_id: str, channel_id: str, request_id: str, candidate_count: int
    ) -> None:
        """Open voting on a message that shows ``candidate_count`` candidates of a request."""
        if not 1 <= candidate_count <= SCHEMA_MAX_CANDIDATES:
            raise ValueError(
                f"candidate_count must be between 1 and {SCHEMA_MAX_CANDIDATES}, got {candidate_count}"
            )
        with self._transaction() as db:
            if not self._exists(db, "requests", "id", request_id):
                raise KeyError(f"no request {request_id!r}")
            if self._exists(db, "cover_messages", "message_id", message_id):
                raise ValueError(f"message {message_id} is already registered")
            db.execute(
                """
                INSERT INTO cover_messages (message_id, channel_id, request_id,
                    candidate_count, created_at)
                VALUES (?, ?, ?, ?, ?)
                """,
                [message_id, channel_id, request_id, candidate_count, self._stamp()],
            )

    def cover_message(self, message_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM cover_messages WHERE message_id = ?", [message_id])
        return rows[0] if rows else None

    def cover_message_of(self, request_id: str) -> dict[str, Any] | None:
        """The cover post of a request (its vote), or None when it was never posted."""
        rows = self._rows(
            "SELECT * FROM cover_messages WHERE request_id = ? ORDER BY created_at DESC LIMIT 1",
            [request_id],
        )
        return rows[0] if rows else None

    def open_cover_messages(self) -> list[dict[str, Any]]:
        """Messages still collecting votes, oldest first (for closing them after a restart)."""
        return self._rows(
            "SELECT * FROM cover_messages WHERE status = 'open' ORDER BY created_at, rowid"
        )

    def cast_vote(self, *, message_id: str, user_id: str, choice: int) -> bool:
        """Record ``user_id``'s vote; a later vote by the same user replaces the earlier one.

        Returns False, recording nothing, when the message is not a registered cover message
        or its vote is closed: both happen in a reaction handler and are not errors. Raises
        ``ValueError`` naming ``choice`` when it is not a candidate of the message.
        """
        with self._transaction() as db:
            message = self._message(db, message_id)
            if message is None or message["status"] != "open":
                return False
            if not 1 <= choice <= message["candidate_count"]:
                raise ValueError(
                    f"choice must be between 1 and {message['candidate_count']}, got {choice}"
                )
            db.execute(_UPSERT_VOTE, [message_id, user_id, choice, self._stamp()])
        return True

    def remove_vote(self, *, message_id: str, user_id: str, choice: int | None = None) -> bool:
        """Withdraw a vote; with ``choice``, only if it is still the user's vote.

        Returns whether a vote was removed. Removing the reaction of a vote the user already
        replaced (their 1️⃣ after they moved to 2️⃣) must not cancel the newer vote. Votes of a
        closed message are kept as they were when it closed.
        """
        with self._transaction() as db:
            message = self._message(db, message_id)
            if message is None or message["status"] != "open":
                return False
            sql = "DELETE FROM votes WHERE message_id = ? AND user_id = ?"
            params: list[Any] = [message_id, user_id]
            if choice is not None:
                sql += " AND choice = ?"
                params.append(choice)
            return db.execute(sql, params).rowcount > 0

    def vote_of(self, message_id: str, user_id: str) -> int | None:
        """The user's current choice on a message, or None."""
        rows = self._rows(
            "SELECT choice FROM votes WHERE message_id = ? AND user_id = ?", [message_id, user_id]
        )
        return rows[0]["choice"] if rows else None

    def tally(self, message_id: str) -> dict[int, int]:
        """Votes per choice, every choice 1..candidate_count present (0 when nobody chose it);
        empty for a message that is not registered."""
        with self._lock, self._unavailable():
            message = self._message(self.db, message_id)
            if message is None:
                return {}
            counts = {choice: 0 for choice in range(1, message["candidate_count"] + 1)}
            for row in self.db.query(
                "SELECT choice, COUNT(*) AS n FROM votes WHERE message_id = ? GROUP BY choice",
                [message_id],
            ):
                counts[row["choice"]] = row["n"]
            return counts

    def close_vote(self, message_id: str, *, winner: int | None, reason: str | None = None) -> bool:
        """Close voting and record the winner (None: no winner, e.g. nobody voted) and why it
        closed (one of :data:`CLOSE_REASONS`, or None where unknown).

        Closing is final: closing an already closed message changes nothing and returns False,
        so exactly one caller (the one that gets True) announces the winner.
        """
        if reason is not None and reason not in CLOSE_REASONS:
            raise ValueError(f"reason must be one of {CLOSE_REASONS}, got {reason!r}")
        with self._transaction() as db:
            message = self._message(db, message_id)
            if message is None:
                raise KeyError(f"no cover message {message_id!r}")
            if winner is not None and not 1 <= winner <= message["candidate_count"]:
                raise ValueError(
                    f"winner must be between 1 and {message['candidate_count']}, got {winner}"
                )
            cursor = db.execute(
                """
                UPDATE cover_messages SET status = 'closed', winner = ?, closed_at = ?,
                    close_reason = ?
                WHERE message_id = ? AND status = 'open'
                """,
                [winner, self._stamp(), reason, message_id],
            )
            return cursor.rowcount == 1

    def reconcile_votes(self, message_id: str, ballots: Mapping[str, Collection[int]]) -> int:
        """Make the votes of an open message match its reactions as Discord shows them now.

        ``ballots`` maps each person to the candidate numbers they have a reaction on (the
        bot's own reactions left out). Reactions added or removed while the bot was offline
        never arrive as events, so at each (re)connection the message is read and reconciled:

        - a person with no number reaction left has no vote (they took it back);
        - a vote that is still among their reactions stays (a person may show several: the
          vote is the last one the bot saw, as when it was online);
        - otherwise their vote becomes their lowest-numbered reaction (Discord does not say
          which came last).

        Numbers outside the message's candidates are ignored. Returns how many votes changed;
        a closed or unknown message changes nothing.
        """
        changed = 0
        with self._transaction() as db:
            message = self._message(db, message_id)
            if message is None or message["status"] != "open":
                return 0
            valid = range(1, message["candidate_count"] + 1)
            current = {
                row["user_id"]: row["choice"]
                for row in db.query(
                    "SELECT user_id, choice FROM votes WHERE message_id = ?", [message_id]
                )
            }
            for user_id, choices in ballots.items():
                shown = sorted({c for c in choices if c in valid})
                if not shown or current.get(user_id) in shown:
                    continue
                db.execute(_UPSERT_VOTE, [message_id, user_id, shown[0], self._stamp()])
                changed += 1
            for user_id in current:
                if not any(c in valid for c in ballots.get(user_id, ())):
                    db.execute(
                        "DELETE FROM votes WHERE message_id = ? AND user_id = ?",
                        [message_id, user_id],
                    )
                    changed += 1
        return changed

    # --- linked Spotify accounts ------------------------------------------------------------------

    def save_link_state(
        self, *, state_hash: str, discord_user_id: str, verifier: bytes, expires_at: datetime
    ) -> None:
        """Remember a pending authorisation. A person has one at a time: a newer link replaces
        theirs; expired ones of anybody are swept out on the way."""
        now = self._stamp()
        with self._transaction() as db:
            db.execute("DELETE FROM link_states WHERE expires_at <= ?", [now])
            db.execute("DELETE FROM link_states WHERE discord_user_id = ?", [discord_user_id])
            db.execute(
                """
                INSERT INTO link_states (state_hash, discord_user_id, verifier, created_at,
                    expires_at)
                VALUES (?, ?, ?, ?, ?)
                """,
                [state_hash, discord_user_id, verifier, now, _timestamp(expires_at)],
            )

    def take_link_state(self, state_hash: str) -> dict[str, Any] | None:
        """The pending authorisation with this state hash, deleted in the same transaction, so
        a state works once whatever happens next; None when unknown or already used. The
        caller checks ``expires_at`` (to tell an expired link from a forged one)."""
        with self._transaction() as db:
            rows = list(db.query("SELECT * FROM link_states WHERE state_hash = ?", [state_hash]))
            if not rows:
                return None
            db.execute("DELETE FROM link_states WHERE state_hash = ?", [state_hash])
        return rows[0]

    def save_spotify_account(
        self,
        *,
        discord_user_id: str,
        spotify_user_id: str,
        display_name: str | None,
        scopes: str,
        tokens: bytes,
        expires_at: datetime,
        spotify_account_id: str | None = None,
    ) -> None:
        """Link (or link again: the row is replaced) a Discord user's Spotify account."""
        now = self._stamp()
        with self._transaction() as db:
            db.execute(
                """
                INSERT INTO spotify_accounts (discord_user_id, spotify_user_id, display_name,
                    scopes, tokens, expires_at, linked_at, refreshed_at, spotify_account_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)
                ON CONFLICT (discord_user_id) DO UPDATE SET
                    spotify_user_id = excluded.spotify_user_id,
                    spotify_account_id = excluded.spotify_account_id,
                    display_name = excluded.display_name, scopes = excluded.scopes,
                    tokens = excluded.tokens, expires_at = excluded.expires_at,
                    linked_at = excluded.linked_at, refreshed_at = NULL
                """,
                [
                    discord_user_id,
                    spotify_user_id,
                    display_name,
                    scopes,
                    tokens,
                    _timestamp(expires_at),
                    now,
                    spotify_account_id,
                ],
            )

    def spotify_account(self, discord_user_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT * FROM spotify_accounts WHERE discord_user_id = ?", [discord_user_id]
        )
        return rows[0] if rows else None

    def update_spotify_tokens(
        self, discord_user_id: str, *, tokens: bytes, expires_at: datetime, scopes: str
    ) -> bool:
        """Store refreshed tokens; False when the account was unlinked meanwhile."""
        with self._transaction() as db:
            cursor = db.execute(
                """
                UPDATE spotify_accounts SET tokens = ?, expires_at = ?, scopes = ?,
                    refreshed_at = ?
                WHERE discord_user_id = ?
                """,
                [tokens, _timestamp(expires_at), scopes, self._stamp(), discord_user_id],
            )
            return cursor.rowcount == 1

    def delete_spotify_account(self, discord_user_id: str) -> bool:
        """Forget the account and its tokens (and any pending link); False if none was linked."""
        with self._transaction() as db:
            db.execute("DELETE FROM link_states WHERE discord_user_id = ?", [discord_user_id])
            cursor = db.execute(
                "DELETE FROM spotify_accounts WHERE discord_user_id = ?", [discord_user_id]
            )
            deleted = cursor.rowcount == 1
        if deleted:
            # secure_delete zeroed the row in the main file's pages; the WAL still holds older
            # copies of those pages until a checkpoint, so take it now and empty the WAL.
            with self._lock:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def record_upload(
        self,
        *,
        message_id: str,
        request_id: str,
        playlist_id: str,
        discord_user_id: str,
        spotify_user_id: str | None,
        candidate: int | None,
        jpeg_bytes: int | None,
        status: str,
        error: str | None = None,
    ) -> int:
        """Record one attempt to apply a cover to a playlist; returns its row id."""
        if status not in ("applied", "rate_limited", "failed"):
            raise ValueError(f"status must be applied, rate_limited or failed, got {status!r}")
        with self._transaction() as db:
            cursor = db.execute(
                """
                INSERT INTO spotify_uploads (message_id, request_id, playlist_id,
                    discord_user_id, spotify_user_id, candidate, jpeg_bytes, status, error,
                    created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    message_id,
                    request_id,
                    playlist_id,
                    discord_user_id,
                    spotify_user_id,
                    candidate,
                    jpeg_bytes,
                    status,
                    error,
                    self._stamp(),
                ],
            )
            return int(cursor.lastrowid)

    def uploads(self, message_id: str) -> list[dict[str, Any]]:
        """The upload attempts for a cover message, oldest first."""
        return self._rows(
            "SELECT * FROM spotify_uploads WHERE message_id = ? ORDER BY created_at, id",
            [message_id],
        )

    # --- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _message(db: Database, message_id: str) -> dict[str, Any] | None:
        rows = list(db.query("SELECT * FROM cover_messages WHERE message_id = ?", [message_id]))
        return rows[0] if rows else None

    @staticmethod
    def _exists(db: Database, table: str, column: str, value: str) -> bool:
        # table and column are our own literals, never user input
        sql = f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1"
        return db.execute(sql, [value]).fetchone() is not None

    # --- training export --------------------------------------------------------------------------

    def winning_covers(self) -> list[dict[str, Any]]:
        """Every closed vote's winning candidate with the prompt that made it, oldest vote first:
        ``message_id``, ``closed_at``, ``request_id``, ``playlist_id``, ``playlist_name``,
        ``model``, ``index``, ``prompt``, ``seed``, ``png_path``, ``jpeg_path``."""
        return self._rows(
            """
            SELECT m.message_id, m.closed_at, r.id AS request_id, r.playlist_id,
                r.playlist_name, r.model, c.idx AS "index", c.prompt, c.seed, c.png_path,
                c.jpeg_path
            FROM cover_messages AS m
            JOIN candidates AS c ON c.request_id = m.request_id AND c.idx = m.winner
            JOIN requests AS r ON r.id = m.request_id
            WHERE m.status = 'closed' AND m.winner IS NOT NULL
            ORDER BY m.closed_at, m.rowid
            """
        )

    def closed_votes(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Every vote closed with a winner (closed before ``until``, at or after ``since``),
        oldest first, each with its request's ``params`` decoded, its ``tally`` (choice → votes,
        every candidate present) and its ``candidates`` (as :meth:`candidates`). Votes closed
        because their post was deleted are left out: nobody could finish voting on them."""
        sql = """
            SELECT m.message_id, m.closed_at, m.winner, m.candidate_count, m.close_reason,
                r.id AS request_id, r.guild_id, r.playlist_id, r.playlist_name, r.model, r.params
            FROM cover_messages AS m JOIN requests AS r ON r.id = m.request_id
            WHERE m.status = 'closed' AND m.winner IS NOT NULL
                AND coalesce(m.close_reason, '') != 'deleted'
        """
        params: list[Any] = []
        if since is not None:
            sql += " AND m.closed_at >= ?"
            params.append(_timestamp(since))
        if until is not None:
            sql += " AND m.closed_at < ?"
            params.append(_timestamp(until))
        rows = self._rows(sql + " ORDER BY m.closed_at, m.rowid", params)
        for row in rows:
            row["params"] = json.loads(row["params"])
            row["tally"] = self.tally(row["message_id"])
            row["candidates"] = self.candidates(row["request_id"])
        return rows

    # --- community styles -------------------------------------------------------------------------

    def set_community_style(
        self, guild_id: str, *, lora_path: str, base_model: str, set_by: str
    ) -> None:
        """Point a server at its LoRA (replacing the one it had)."""
        if not guild_id or not lora_path or not base_model:
            raise ValueError("a community style needs a guild_id, a lora_path and a base_model")
        with self._transaction() as db:
            db.execute(
                """
                INSERT INTO community_styles (guild_id, lora_path, base_model, set_by, set_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (guild_id) DO UPDATE SET lora_path = excluded.lora_path,
                    base_model = excluded.base_model, set_by = excluded.set_by,
                    set_at = excluded.set_at
                """,
                [guild_id, lora_path, base_model, set_by, self._stamp()],
            )

    def community_style(self, guild_id: str) -> dict[str, Any] | None:
        """The server's community style row, or None when it has none."""
        rows = self._rows("SELECT * FROM community_styles WHERE guild_id = ?", [guild_id])
        return rows[0] if rows else None

    def clear_community_style(self, guild_id: str) -> bool:
        """Forget the server's community style; False when it had none."""
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM community_styles WHERE guild_id = ?", [guild_id])
            return cursor.rowcount == 1
