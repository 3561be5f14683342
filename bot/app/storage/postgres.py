"""PostgreSQL under :class:`~bot.app.storage.Storage`, when ``COVER_DB_URL`` names a server.

:class:`PostgresDatabase` answers the few calls the table groups make of sqlite-utils'
``Database`` – ``execute`` (a cursor with ``rowcount`` and ``fetchone``), ``query`` (rows as
dicts), ``table_names``, ``close`` – so ``requests.py``, ``votes.py`` and ``accounts.py`` hold
one SQL text for both engines. Their statements use SQLite's ``?`` placeholders;
:func:`to_pyformat` turns them into psycopg's ``%s`` (so a statement must not hold a ``?`` or a
``%`` of its own inside a string literal – none does).

psycopg 3 (not asyncpg): storage is called synchronously today, from the event loop (every call
is short) and from worker threads, through one lock (bot/app/storage/connection.py); psycopg's
synchronous connection drops in there, where asyncpg would make every caller async.

One connection per :class:`Storage`, in autocommit mode: a read is one statement; a write runs
in an explicit transaction (``conn.transaction()``). A connection the server dropped (a restart,
a failover) is opened again on the next call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from bot.app.errors import StorageUnavailable
from bot.app.storage.dialect import POSTGRES, mask_password, to_pyformat

CONNECT_TIMEOUT_S = 10


class PostgresDatabase:
    """One psycopg connection that speaks like the part of ``sqlite_utils.Database`` we use."""

    dialect = POSTGRES

    def __init__(self, url: str, *, lock_timeout_s: float) -> None:
        self.url = url
        self.lock_timeout_s = lock_timeout_s
        self._closed_by_us = False
        self._conn = self._connect()

    def _connect(self) -> psycopg.Connection:
        # lock_timeout: a write waits this long for another process's row or advisory lock,
        # as SQLite's busy timeout; then the server raises LockNotAvailable.
        # Added to the URL's own ``options`` (a search_path, say), which a keyword would replace.
        options = conninfo_to_dict(self.url).get("options") or ""
        options += f" -c lock_timeout={int(self.lock_timeout_s * 1000)} -c timezone=UTC"
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=options.strip(),
        )

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn.closed and not self._closed_by_us:
            self._conn = self._connect()  # the server dropped us: a restart, a failover
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor:
        return self.conn.execute(to_pyformat(sql), list(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per row in one round trip; returns the rows it changed."""
        with self.conn.cursor() as cursor:
            cursor.executemany(to_pyformat(sql), rows)
            return cursor.rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        cursor = self.conn.cursor(row_factory=dict_row)
        yield from cursor.execute(to_pyformat(sql), list(params))

    def table_names(self) -> list[str]:
        rows = self.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() ORDER BY table_name"
        )
        return [row[0] for row in rows]

    @contextmanager
    def transaction(self) -> Iterator[PostgresDatabase]:
        with self.conn.transaction():
            yield self

    def unavailable(self) -> Any:
        return unavailable(self.lock_timeout_s)

    def close(self) -> None:
        self._closed_by_us = True
        self._conn.close()


def open_database(url: str, *, lock_timeout_s: float) -> PostgresDatabase:
    """Connect, or raise :class:`StorageUnavailable` naming the server (never its password)."""
    try:
        return PostgresDatabase(url, lock_timeout_s=lock_timeout_s)
    except psycopg.Error as exc:
        raise StorageUnavailable(
            f"The database {mask_password(url)} can't be used ({_first_line(exc)}); "
            "check the server or point COVER_DB_URL elsewhere."
        ) from None


@contextmanager
def unavailable(lock_timeout_s: float) -> Iterator[None]:
    """The server failing under us (gone, restarting, a lock held past ``lock_timeout``)
    becomes one sentence; our own bugs (constraint violations, bad SQL) stay what they are."""
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise StorageUnavailable(
            "The bot's database can't be used right now: another program has held its lock "
            f"for over {lock_timeout_s:g} s; try again when it is done."
        ) from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise StorageUnavailable(
            f"The bot's database can't be used right now: PostgreSQL says: {_first_line(exc)}; "
            "the operator should check the server (COVER_DB_URL)."
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
