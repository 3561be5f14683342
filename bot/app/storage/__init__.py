"""Every SQL statement of the project: requests, candidates, playlist snapshots and votes.

One SQLite file (the default) or one PostgreSQL database (``COVER_DB_URL``), its tables and
their numbered migrations in :mod:`.migrations`; every statement is written once, for both.
Callers get the frozen records of :mod:`bot.app.records`, never rows; the ``params`` JSON is
written and read there only.

    connection.py   the file or server, the lock, write transactions, failures as one sentence
    dialect.py      the few places SQLite and PostgreSQL differ (types, row locks, placeholders)
    postgres.py     the psycopg connection that stands where sqlite-utils' Database does
    requests.py     requests, candidates, playlist snapshots, community styles
    votes.py        cover posts, votes (one per person), closing, the closed votes for training
    accounts.py     linked Spotify accounts, pending authorisations, uploads
    server_settings.py  servers' own rules (/settings) and requests per person per day
    copy.py         a SQLite file's every table into PostgreSQL (``python -m bot db copy``)

Timestamps are ISO 8601 strings in UTC with milliseconds, so they sort as text. JSON columns
are TEXT holding JSON, decoded into the records on the way out.
"""

from __future__ import annotations

from bot.app.errors import StorageUnavailable
from bot.app.storage.accounts import AccountRows
from bot.app.storage.connection import BUSY_TIMEOUT_S, _reason, content_hash
from bot.app.storage.migrations import MIGRATIONS, SCHEMA_MAX_CANDIDATES
from bot.app.storage.requests import RequestRows
from bot.app.storage.server_settings import ServerSettingsRows
from bot.app.storage.votes import VoteRows

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "SCHEMA_MAX_CANDIDATES",
    "Storage",
    "StorageUnavailable",
    "_reason",
    "content_hash",
]


class Storage(RequestRows, VoteRows, AccountRows, ServerSettingsRows):
    """The project's database: ``Storage(path)`` a SQLite file, ``Storage("postgresql://…")`` a
    PostgreSQL one. Build one per process and pass it down; :meth:`close` it.

    Usable as a context manager. See :mod:`bot.app.storage.connection` for threads.
    """
