"""Moving a bot's state from its SQLite file to PostgreSQL (``python -m bot db copy``).

Every table, rows as they are: ids, timestamps, and linked accounts' tokens still encrypted (the
bytes move, the key never takes part). Idempotent: a row whose key the target already holds is
left alone (``ON CONFLICT DO NOTHING``), so a copy cut short is finished by running it again.
Verified: afterwards each table's row count and a checksum of its rows (sha256 over the sorted
rows) must be the same on both sides; a target that holds rows of its own fails that check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app.errors import StorageUnavailable
from bot.app.storage import Storage
from bot.app.storage.dialect import is_postgres_url, mask_password

# Parents before children (the foreign keys), every table migrations.py creates.
TABLES = (
    "requests",
    "candidates",
    "playlist_snapshots",
    "cover_messages",
    "votes",
    "link_states",
    "spotify_accounts",
    "spotify_uploads",
    "community_styles",
    "server_settings",
)
BATCH = 500  # rows per round trip, and how often the progress line moves


@dataclass(frozen=True)
class CopiedTable:
    name: str
    rows: int  # in the source, and (verified) in the target
    inserted: int  # new in the target this time: 0 on a second run
    checksum: str  # sha256 of the table's sorted rows, the same on both sides


def copy_database(
    source: str | Path,
    target_url: str,
    *,
    progress: Callable[[str, int, int], None] = lambda table, done, total: None,
) -> list[CopiedTable]:
    """Copy every table of the SQLite file ``source`` into the PostgreSQL database at
    ``target_url`` (migrated first). ``progress(table, rows_done, rows_total)`` is called as it
    goes. The file is migrated to the current schema first, as the bot would on start. Raises
    :class:`StorageUnavailable` for a missing file, a target that is not PostgreSQL, or one that
    does not match the source afterwards."""
    source = Path(source)
    if not source.is_file():
        raise StorageUnavailable(f"There is no SQLite database at {source} to copy.")
    if not is_postgres_url(target_url):
        raise StorageUnavailable(
            f"The target must be a postgresql://… URL, got {mask_password(target_url)!r}."
        )
    with Storage(source) as sqlite, Storage(target_url) as postgres:
        copied = [_copy_table(sqlite, postgres, table, progress) for table in TABLES]
        with postgres._lock, postgres._unavailable():
            # Rows came with their ids: the next upload's id must come after them.
            postgres.db.execute(
                "SELECT setval(pg_get_serial_sequence('spotify_uploads', 'id'), "
                "coalesce(max(id), 0) + 1, false) FROM spotify_uploads"
            )
    return copied


def _copy_table(
    sqlite: Storage, postgres: Storage, table: str, progress: Callable[[str, int, int], None]
) -> CopiedTable:
    columns = [row["name"] for row in sqlite._rows(f"PRAGMA table_info({table})")]
    names = ", ".join(columns)
    rows = [
        tuple(row.values()) for row in sqlite._rows(f"SELECT {names} FROM {table} ORDER BY rowid")
    ]
    insert = (
        f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))}) "
        "ON CONFLICT DO NOTHING"
    )
    inserted = 0
    progress(table, 0, len(rows))
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        with postgres._transaction() as db:
            inserted += db.executemany(insert, batch)
        progress(table, start + len(batch), len(rows))
    theirs = [tuple(row.values()) for row in postgres._rows(f"SELECT {names} FROM {table}")]
    ours, checksum = _checksum(rows), _checksum(theirs)
    if len(theirs) != len(rows) or ours != checksum:
        raise StorageUnavailable(
            f"The copy of {table} does not match: {len(rows)} rows in the SQLite file, "
            f"{len(theirs)} in PostgreSQL (checksums {ours[:12]} and {checksum[:12]}); does the "
            "target hold rows of its own? Copy into an empty database."
        )
    return CopiedTable(table, len(rows), inserted, checksum)


def _checksum(rows: list[tuple[Any, ...]]) -> str:
    """sha256 of the rows in a fixed order; both drivers hand back the same Python values
    (int, str, bytes, None) for the columns migrations.py creates."""
    digest = hashlib.sha256()
    for line in sorted(repr(row) for row in rows):
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()
