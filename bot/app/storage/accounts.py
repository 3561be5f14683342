"""Linked Spotify accounts, pending authorisations and cover uploads.

Secrets never reach this module in clear: the OAuth tokens and PKCE verifiers arrive as opaque
encrypted blobs (bot.app.accounts), the ``state`` as its hash."""

from __future__ import annotations

from datetime import datetime

from bot.app.records import UPLOAD_STATUSES, LinkState, SpotifyAccount, Upload
from bot.app.storage.connection import Connection, timestamp
from bot.app.storage.dialect import lock_key


class AccountRows(Connection):
    """A person's linked Spotify account and what was uploaded with it."""

    # --- linked Spotify accounts ------------------------------------------------------------------

    def save_link_state(
        self, *, state_hash: str, discord_user_id: str, verifier: bytes, expires_at: datetime
    ) -> None:
        """Remember a pending authorisation. A person has one at a time: a newer link replaces
        theirs; expired ones of anybody are swept out on the way."""
        now = self._stamp()
        with self._transaction() as db:
            lock_key(db, "link_states", discord_user_id)  # one pending link, across processes
            db.execute("DELETE FROM link_states WHERE expires_at <= ?", [now])
            db.execute("DELETE FROM link_states WHERE discord_user_id = ?", [discord_user_id])
            db.execute(
                """
                INSERT INTO link_states (state_hash, discord_user_id, verifier, created_at,
                    expires_at)
                VALUES (?, ?, ?, ?, ?)
                """,
                [state_hash, discord_user_id, verifier, now, timestamp(expires_at)],
            )

    def take_link_state(self, state_hash: str) -> LinkState | None:
        """The pending authorisation with this state hash, deleted in the same transaction, so
        a state works once whatever happens next; None when unknown or already used. The
        caller checks ``expires_at`` (to tell an expired link from a forged one)."""
        with self._transaction() as db:
            # One statement takes and deletes: of two processes, only one gets the row.
            rows = list(
                db.query("DELETE FROM link_states WHERE state_hash = ? RETURNING *", [state_hash])
            )
        return LinkState.from_row(rows[0]) if rows else None

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
                    timestamp(expires_at),
                    now,
                    spotify_account_id,
                ],
            )

    def spotify_account(self, discord_user_id: str) -> SpotifyAccount | None:
        rows = self._rows(
            "SELECT * FROM spotify_accounts WHERE discord_user_id = ?", [discord_user_id]
        )
        return SpotifyAccount.from_row(rows[0]) if rows else None

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
                [tokens, timestamp(expires_at), scopes, self._stamp(), discord_user_id],
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
            with self._lock, self._unavailable():
                if self.postgres:
                    # PostgreSQL leaves a deleted row's bytes in the table's pages until a
                    # vacuum prunes them; prune now (a row another open transaction may still
                    # see waits for the next vacuum; the WAL and backups keep their copies).
                    self.db.execute("VACUUM spotify_accounts, link_states")
                else:
                    # secure_delete zeroed the row in the main file's pages; the WAL still
                    # holds older copies of those pages until a checkpoint: take it now.
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
        if status not in UPLOAD_STATUSES:
            raise ValueError(f"status must be applied, rate_limited or failed, got {status!r}")
        with self._transaction() as db:
            cursor = db.execute(
                """
                INSERT INTO spotify_uploads (message_id, request_id, playlist_id,
                    discord_user_id, spotify_user_id, candidate, jpeg_bytes, status, error,
                    created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                RETURNING id
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
            return int(cursor.fetchone()[0])

    def uploads(self, message_id: str) -> list[Upload]:
        """The upload attempts for a cover message, oldest first."""
        rows = self._rows(
            "SELECT * FROM spotify_uploads WHERE message_id = ? ORDER BY created_at, id",
            [message_id],
        )
        return [Upload.from_row(row) for row in rows]
