"""The connection every part of :class:`~bot.app.storage.Storage` shares: one SQLite file (or
one PostgreSQL server: :mod:`.postgres`), one lock, write transactions that take the database's
write lock up front, and the database's failures turned into
:class:`~bot.app.errors.StorageUnavailable`.

Threads: a plain ``sqlite_utils.Database(path)`` is bound to the thread that opened it (STYLE
§9). The connection is opened with ``check_same_thread=False`` and every call is serialised
through one lock instead, so the bot may call it from the event loop (every call is short) and
a worker thread or ``asyncio.to_thread`` may call it too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bot.app.errors import StorageUnavailable
from bot.app.records import CoverMessage
from bot.app.storage.dialect import for_update, is_postgres_url, mask_password
from bot.app.storage.migrations import MIGRATIONS, apply_postgres

BUSY_TIMEOUT_S = 30.0  # a write waits this long for another process's transaction to end


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def timestamp(moment: datetime) -> str:
    """How a moment is stored: ISO 8601 in UTC with milliseconds, so it sorts as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def content_hash(playlist: Mapping[str, Any]) -> str:
    """sha256 of the playlist JSON with sorted keys, ignoring our own ``fetched_at`` key."""
    content = {k: v for k, v in playlist.items() if k != "fetched_at"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Connection:
    """The open database; the table groups (``requests``, ``votes``, ``accounts``) build on it."""

    def __init__(
        self,
        path: str | Path,
        *,
        now: Callable[[], datetime] = _utc_now,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        """``path``: the SQLite file, or a ``postgresql://`` URL (``COVER_DB_URL``)."""
        self._now = now  # injectable clock: tests need distinct, ordered timestamps
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self.postgres = is_postgres_url(path)
        if self.postgres:
            self.path: Path | None = None
            # never the password: the URL ends up in messages
            self.url: str | None = mask_password(str(path))
            self._open_postgres(str(path))
            return
        self.path, self.url = Path(path), None
        try:
            self._open()
        except (OSError, sqlite3.Error) as exc:
            # A corrupt file, a folder we can't create, a file we can't write: the operator's
            # to fix, so one sentence naming the file, not a traceback (tests/e2e/test_cli.py).
            raise StorageUnavailable(
                f"The database {self.path} can't be used ({_reason(exc)}); "
                "check the file or point COVER_DB_PATH elsewhere."
            ) from None

    def _open_postgres(self, url: str) -> None:
        try:
            from bot.app.storage import postgres  # psycopg: the optional postgres extra
        except ImportError as exc:
            raise StorageUnavailable(
                f"COVER_DB_URL names PostgreSQL, which needs psycopg ({exc}): "
                "pip install 'playlist-cover[postgres]'"
            ) from None
        self.db: Any = postgres.open_database(url, lock_timeout_s=self.busy_timeout_s)
        try:
            self.migrate()
        except StorageUnavailable:
            self.db.close()
            raise

    def _open(self) -> None:
        assert self.path is not None
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
            if self.postgres:
                with self._unavailable():
                    apply_postgres(self.db)
            else:
                MIGRATIONS.apply(self.db)  # __init__ names the file when this fails

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> Connection:
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

        PostgreSQL has no lock on the whole database: a transaction there locks the rows it
        reads ``FOR UPDATE`` (:func:`.dialect.for_update`: the cover post whose votes change)
        or a key (:func:`.dialect.lock_key`), and its writes' rows, until it ends.
        """
        if self.postgres:
            with self._lock, self._unavailable(), self.db.transaction():
                yield self.db
            return
        with self._lock, self._unavailable():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                with self.db.atomic():
                    yield self.db
            except BaseException:
                self.db.rollback()
                raise
            self.db.commit()

    @contextmanager
    def claim(self, namespace: str, key: str) -> Iterator[bool]:
        """Hold ``key`` against every other process while the block runs; yields whether it
        was free (False: another process holds it now – the caller refuses, it never waits).

        On PostgreSQL a session-level advisory lock, taken with ``pg_try_advisory_lock`` and
        released at the block's end (or with the connection, if the process dies). A SQLite
        file has one writer machine; there the block always gets the key, and a process keeps
        its own claims apart in memory (``CoverService._claim``).
        """
        if not self.postgres:
            yield True
            return
        name = [f"{namespace}:{key}"]
        with self._lock, self._unavailable():
            row = self.db.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(?, 0))", name
            ).fetchone()
        try:
            yield bool(row[0])
        finally:
            if row[0]:
                with self._lock, self._unavailable():
                    self.db.execute("SELECT pg_advisory_unlock(hashtextextended(?, 0))", name)

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
        if self.postgres:
            with self.db.unavailable():
                yield
            return
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
        return timestamp(self._now())

    # --- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _message(db: Database, message_id: str, *, lock: bool = False) -> CoverMessage | None:
        """The cover post; with ``lock``, held until the transaction ends (its votes change)."""
        sql = "SELECT * FROM cover_messages WHERE message_id = ?" + (for_update(db) if lock else "")
        rows = list(db.query(sql, [message_id]))
        return CoverMessage.from_row(rows[0]) if rows else None

    @staticmethod
    def _exists(db: Database, table: str, column: str, value: str) -> bool:
        # table and column are our own literals, never user input
        sql = f"SELECT 1 FROM {table} WHERE {column} = ? LIMIT 1"
        return db.execute(sql, [value]).fetchone() is not None
