"""Cover posts and their votes, and the closed votes training learns from."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from bot.app.records import (
    CLOSE_REASONS,
    CandidateRecord,
    ClosedVote,
    CoverMessage,
    MalformedRow,
    WinningCover,
)
from bot.app.shards import Shards
from bot.app.storage.connection import Connection, timestamp
from bot.app.storage.dialect import shard_clause
from bot.app.storage.migrations import SCHEMA_MAX_CANDIDATES

# One row per (message, user) by the UNIQUE constraint: a later vote replaces the earlier one.
_UPSERT_VOTE = """
    INSERT INTO votes (message_id, user_id, choice, voted_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (message_id, user_id) DO UPDATE SET
        choice = excluded.choice, voted_at = excluded.voted_at
"""


class VoteRows(Connection):
    """One vote per (post, person), decided by the database's unique constraint."""

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
            # ON CONFLICT, not a look first: a second process registering the same message
            # at the same moment gets this ValueError too, not the unique index's error.
            cursor = db.execute(
                """
                INSERT INTO cover_messages (message_id, channel_id, request_id,
                    candidate_count, created_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (message_id) DO NOTHING
                """,
                [message_id, channel_id, request_id, candidate_count, self._stamp()],
            )
            if cursor.rowcount == 0:
                raise ValueError(f"message {message_id} is already registered")

    def cover_message(self, message_id: str) -> CoverMessage | None:
        rows = self._rows("SELECT * FROM cover_messages WHERE message_id = ?", [message_id])
        return CoverMessage.from_row(rows[0]) if rows else None

    def cover_message_of(self, request_id: str) -> CoverMessage | None:
        """The cover post of a request (its vote), or None when it was never posted."""
        rows = self._rows(
            "SELECT * FROM cover_messages WHERE request_id = ? ORDER BY created_at DESC LIMIT 1",
            [request_id],
        )
        return CoverMessage.from_row(rows[0]) if rows else None

    def open_cover_messages(self, shards: Shards | None = None) -> list[CoverMessage]:
        """Messages still collecting votes, oldest first (for closing them after a restart);
        with ``shards``, only those of the servers on them (their request's ``guild_id``)."""
        where, params = shard_clause(self.db, "r.guild_id", shards)
        rows = self._rows(
            f"""
            SELECT m.* FROM cover_messages AS m LEFT JOIN requests AS r ON r.id = m.request_id
            WHERE m.status = 'open'{where} ORDER BY m.created_at, m.rowid
            """,
            params,
        )
        return [CoverMessage.from_row(row) for row in rows]

    def cast_vote(self, *, message_id: str, user_id: str, choice: int) -> bool:
        """Record ``user_id``'s vote; a later vote by the same user replaces the earlier one.

        Returns False, recording nothing, when the message is not a registered cover message
        or its vote is closed: both happen in a reaction handler and are not errors. Raises
        ``ValueError`` naming ``choice`` when it is not a candidate of the message.
        """
        with self._transaction() as db:
            message = self._message(db, message_id, lock=True)
            if message is None or not message.open:
                return False
            if not 1 <= choice <= message.candidate_count:
                raise ValueError(
                    f"choice must be between 1 and {message.candidate_count}, got {choice}"
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
            message = self._message(db, message_id, lock=True)
            if message is None or not message.open:
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
            counts = {choice: 0 for choice in range(1, message.candidate_count + 1)}
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
            message = self._message(db, message_id, lock=True)
            if message is None:
                raise KeyError(f"no cover message {message_id!r}")
            if winner is not None and not 1 <= winner <= message.candidate_count:
                raise ValueError(
                    f"winner must be between 1 and {message.candidate_count}, got {winner}"
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
            message = self._message(db, message_id, lock=True)
            if message is None or not message.open:
                return 0
            valid = range(1, message.candidate_count + 1)
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

    # --- training export --------------------------------------------------------------------------

    def winning_covers(self) -> list[WinningCover]:
        """Every closed vote's winning candidate with where it came from, oldest vote first."""
        rows = self._rows(
            """
            SELECT m.message_id, m.closed_at, r.id AS request_id, r.playlist_id,
                r.playlist_name, r.model, c.*
            FROM cover_messages AS m
            JOIN candidates AS c ON c.request_id = m.request_id AND c.idx = m.winner
            JOIN requests AS r ON r.id = m.request_id
            WHERE m.status = 'closed' AND m.winner IS NOT NULL
            ORDER BY m.closed_at, m.rowid
            """
        )
        return [
            WinningCover(
                row["message_id"],
                row["closed_at"],
                row["request_id"],
                row["playlist_id"],
                row["playlist_name"],
                row["model"],
                CandidateRecord.from_row(row),
            )
            for row in rows
        ]

    def closed_votes(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> tuple[list[ClosedVote], int]:
        """Every vote closed with a winner (closed before ``until``, at or after ``since``),
        oldest first, with its request, tally and candidates; and how many such votes were
        left out because their request's row is malformed (:class:`MalformedRow`). Votes
        closed because their post was deleted are left out too: nobody could finish voting."""
        sql = """
            SELECT * FROM cover_messages
            WHERE status = 'closed' AND winner IS NOT NULL
                AND coalesce(close_reason, '') != 'deleted'
        """
        params: list[Any] = []
        if since is not None:
            sql += " AND closed_at >= ?"
            params.append(timestamp(since))
        if until is not None:
            sql += " AND closed_at < ?"
            params.append(timestamp(until))
        messages = [
            CoverMessage.from_row(row)
            for row in self._rows(sql + " ORDER BY closed_at, rowid", params)
        ]
        votes, malformed = [], 0
        for message in messages:
            try:
                request = self.request(message.request_id)
            except MalformedRow:
                malformed += 1
                continue
            if request is None:
                continue
            tally = self.tally(message.message_id)
            candidates = tuple(self.candidates(message.request_id))
            votes.append(ClosedVote(message, request, tally, candidates))
        return votes, malformed
