"""Servers' own rules (``/settings``) and the count the daily limit is checked against."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from bot.app.records import NSFW_POLICIES, ServerSettings
from bot.app.storage.connection import Connection, timestamp
from bot.app.storage.dialect import for_update, lock_key


class ServerSettingsRows(Connection):
    """A server's banned words, daily limit and NSFW policy; its people's requests per day."""

    def server_settings(self, guild_id: str) -> ServerSettings:
        """The server's settings; the defaults when it never set any."""
        rows = self._rows("SELECT * FROM server_settings WHERE guild_id = ?", [guild_id])
        return ServerSettings.from_row(rows[0]) if rows else ServerSettings(guild_id)

    def change_server_settings(
        self, guild_id: str, change: Callable[[ServerSettings], ServerSettings], *, by: str
    ) -> ServerSettings:
        """Apply ``change`` to the server's current settings and store the result, in one
        transaction: two managers adding a word each at once both keep theirs. ``change``
        may raise (a full list, a bad value) to store nothing. Returns what was stored."""
        if not guild_id:
            raise ValueError("server settings need a guild_id")
        with self._transaction() as db:
            lock_key(db, "server_settings", guild_id)  # the row may not exist yet to lock
            rows = list(
                db.query(
                    "SELECT * FROM server_settings WHERE guild_id = ?" + for_update(db), [guild_id]
                )
            )
            current = ServerSettings.from_row(rows[0]) if rows else ServerSettings(guild_id)
            new = change(current)
            if new.guild_id != guild_id or new.nsfw not in NSFW_POLICIES or new.daily_limit < 0:
                raise ValueError(f"not settings for server {guild_id!r}: {new!r}")
            now = self._stamp()
            db.execute(
                """
                INSERT INTO server_settings (guild_id, banned_words, daily_limit, nsfw,
                    updated_by, updated_at)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (guild_id) DO UPDATE SET banned_words = excluded.banned_words,
                    daily_limit = excluded.daily_limit, nsfw = excluded.nsfw,
                    updated_by = excluded.updated_by, updated_at = excluded.updated_at
                """,
                [guild_id, new.banned_words_json(), new.daily_limit, new.nsfw, by, now],
            )
        return ServerSettings(
            guild_id, new.banned_words, new.daily_limit, new.nsfw, updated_by=by, updated_at=now
        )

    def requests_since(self, guild_id: str, user_id: str, since: datetime) -> int:
        """How many requests ``user_id`` had recorded in ``guild_id`` from ``since`` on, whatever
        became of them (a failed one took its turn in the queue too)."""
        rows = self._rows(
            """
            SELECT count(*) AS n FROM requests
            WHERE guild_id = ? AND user_id = ? AND created_at >= ?
            """,
            [guild_id, user_id, timestamp(since)],
        )
        return int(rows[0]["n"])
