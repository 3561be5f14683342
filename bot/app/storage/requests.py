"""Requests, their candidates, playlist snapshots and community styles."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.app.prompts import Prompt
from bot.app.records import (
    CandidateRecord,
    CommunityStyle,
    RequestRecord,
    StoredParams,
    prompts_json,
)
from bot.app.shards import Shards
from bot.app.storage.connection import Connection, content_hash, dumps
from bot.app.storage.dialect import shard_clause

_INT64 = (-(2**63), 2**63 - 1)  # SQLite INTEGER range


class RequestRows(Connection):
    """What was asked for and what was made."""

    # --- requests and candidates ------------------------------------------------------------------

    def record_request(
        self,
        *,
        source: str,
        user_id: str,
        playlist_id: str,
        playlist_name: str,
        model: str,
        params: StoredParams,
        prompts: Sequence[Prompt],
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
                    params.to_json(),
                    prompts_json(list(prompts)),
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
                [status, dumps(dict(timings)), error, self._stamp(), request_id],
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no request {request_id!r}")

    def add_candidates(self, request_id: str, candidates: Sequence[CandidateRecord]) -> None:
        """Store a request's images (their ``request_id`` is ``request_id``'s). Adding an index
        again replaces that candidate."""
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
    def _candidate_row(request_id: str, c: CandidateRecord) -> list[Any]:
        index, seed = int(c.index), int(c.seed)
        if index < 1:
            raise ValueError(f"candidate index must be at least 1, got {index}")
        if not _INT64[0] <= seed <= _INT64[1]:
            raise ValueError(f"candidate seed must fit in a signed 64-bit integer, got {seed}")
        return [
            request_id,
            index,
            str(c.prompt),
            str(c.negative or ""),
            seed,
            None if c.png_path is None else str(c.png_path),
            None if c.jpeg_path is None else str(c.jpeg_path),
            int(c.black_retries or 0),
        ]

    def request(self, request_id: str) -> RequestRecord | None:
        rows = self._rows("SELECT * FROM requests WHERE id = ?", [request_id])
        return RequestRecord.from_row(rows[0]) if rows else None

    def unfinished_requests(self, source: str, shards: Shards | None = None) -> list[RequestRecord]:
        """Requests from ``source`` still ``queued`` (a restart interrupted them), oldest first;
        with ``shards``, only those of the servers on them (no server: shard 0)."""
        where, params = shard_clause(self.db, "guild_id", shards)
        rows = self._rows(
            f"SELECT * FROM requests WHERE source = ? AND status = 'queued'{where} "
            "ORDER BY created_at, rowid",
            [source, *params],
        )
        return [RequestRecord.from_row(row) for row in rows]

    def note_resume(self, request_id: str, *, seen: int | None = None) -> int | None:
        """Count one more resumption of a request after a restart; returns the new count.

        With ``seen`` (the count the caller read with the row) it is a claim: the count moves
        only from ``seen`` and only while the request is still queued, in one conditional
        UPDATE, so when two processes resume the same row at once the database lets exactly
        one through; the other gets None and leaves the request alone.
        """
        sql = "UPDATE requests SET resumes = resumes + 1 WHERE id = ?"
        params: list[Any] = [request_id]
        if seen is not None:
            sql += " AND status = 'queued' AND resumes = ?"
            params.append(seen)
        with self._transaction() as db:
            if db.execute(sql, params).rowcount == 0:
                if seen is not None and self._exists(db, "requests", "id", request_id):
                    return None
                raise KeyError(f"no request {request_id!r}")
            row = db.execute("SELECT resumes FROM requests WHERE id = ?", [request_id]).fetchone()
            return row[0]

    def last_request_at(self, user_id: str, source: str) -> datetime | None:
        """When ``user_id`` last had a request accepted from ``source`` (None: never)."""
        rows = self._rows(
            "SELECT max(created_at) AS at FROM requests WHERE user_id = ? AND source = ?",
            [user_id, source],
        )
        return datetime.fromisoformat(rows[0]["at"]) if rows and rows[0]["at"] else None

    def candidates(self, request_id: str) -> list[CandidateRecord]:
        """A request's candidates in order of their (1-based) index."""
        rows = self._rows(
            "SELECT * FROM candidates WHERE request_id = ? ORDER BY idx", [request_id]
        )
        return [CandidateRecord.from_row(row) for row in rows]

    def candidate(self, request_id: str, index: int) -> CandidateRecord | None:
        rows = self._rows(
            "SELECT * FROM candidates WHERE request_id = ? AND idx = ?", [request_id, index]
        )
        return CandidateRecord.from_row(rows[0]) if rows else None

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
                    dumps(data),
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

    def community_style(self, guild_id: str) -> CommunityStyle | None:
        """The server's community style, or None when it has none."""
        rows = self._rows("SELECT * FROM community_styles WHERE guild_id = ?", [guild_id])
        return CommunityStyle.from_row(rows[0]) if rows else None

    def clear_community_style(self, guild_id: str) -> bool:
        """Forget the server's community style; False when it had none."""
        with self._transaction() as db:
            cursor = db.execute("DELETE FROM community_styles WHERE guild_id = ?", [guild_id])
            return cursor.rowcount == 1
