"""The vote rules: what counts as a vote, who may close one, who wins, and what is announced.

A cover post collects one vote per person (the database's unique row decides it, not memory).
The Discord face (bot/cogs/votes.py) turns reaction events into calls here and the answers
into messages; training (training/export.py, training/dpo_miniature.py) uses the same winner
rule, :func:`pick_winner`.

    cast / withdraw         a reaction added or taken back (the number → a candidate)
    reconcile               what the post shows on Discord now → the stored votes
    close                   most votes wins (:func:`pick_winner`), recorded once, then announced
    deleted                 a deleted post closes without a winner, and nothing is announced
    expired                 open votes past ``vote_close_after_s``, for the timer to close
    announcement            what the winner's announcement says and shows
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.app.records import CoverMessage, moment
from bot.app.shards import Shards
from bot.app.storage import Storage

if TYPE_CHECKING:
    from bot.app.accounts import SpotifyAccounts

# Who closed a vote, as the announcement says it (a deleted post has no announcement).
CLOSED_BY = {"requester": "the requester", "timer": "the timer"}


def pick_winner(tally: Mapping[int, int]) -> int | None:
    """Most votes wins; a tie goes to the lower number; no votes at all, no winner."""
    best = max(tally.values(), default=0)
    if best == 0:
        return None
    return min(choice for choice, votes in tally.items() if votes == best)


@dataclass(frozen=True)
class Announcement:
    """What the end of a vote tells the channel: the winner (None: nobody voted), its votes,
    who closed it, and the winner's files while they are still on the bot's disk."""

    message: CoverMessage
    winner: int | None
    votes: int
    closed_by: str
    community: bool = False  # made with the server's community style
    png: Path | None = None  # None: the files are gone (someone cleaned the output folder)
    jpeg: Path | None = None
    apply_for: str | None = None  # the requester, when their linked account owns the playlist


class VoteService:
    """The vote rules over :class:`~bot.app.storage.Storage`. ``accounts`` (linked Spotify
    accounts) decides whether an announcement offers "Apply to Spotify". ``shards``: the
    servers whose votes this process reads back and closes on its timer (bot/app/shards.py);
    other processes own the rest."""

    def __init__(
        self,
        storage: Storage,
        *,
        close_after_s: float,
        accounts: SpotifyAccounts | None = None,
        shards: Shards | None = None,
    ) -> None:
        self.storage = storage
        self.close_after_s = close_after_s
        self.accounts = accounts
        self.shards = shards or Shards.every()

    def open_vote(self, message_id: str) -> CoverMessage | None:
        """The cover post ``message_id`` while it collects votes; None for any other message."""
        message = self.storage.cover_message(message_id)
        return message if message is not None and message.open else None

    def requester(self, message: CoverMessage) -> str | None:
        """The user id of the person who asked for the covers of ``message``."""
        request = self.storage.request(message.request_id)
        return request.user_id if request is not None else None

    def may_close(self, message: CoverMessage, user_id: str) -> bool:
        """Only the requester closes a vote by hand."""
        return self.requester(message) == user_id

    def cast(self, message: CoverMessage, user_id: str, choice: int) -> bool:
        """A reaction on candidate ``choice``: it becomes the person's vote (replacing theirs)."""
        return self.storage.cast_vote(message_id=message.message_id, user_id=user_id, choice=choice)

    def is_vote(self, message: CoverMessage, user_id: str, choice: int) -> bool:
        """Whether the person's vote on ``message`` is ``choice`` now."""
        return self.storage.vote_of(message.message_id, user_id) == choice

    def withdraw(
        self, message: CoverMessage, user_id: str, choice: int, *, still_shown: bool
    ) -> bool:
        """A reaction on ``choice`` taken back. The vote goes only while it is still on
        ``choice`` (moving a vote, then removing the old reaction, must not undo the move) and
        nothing of that number is left shown by the person (``still_shown``: the other kind of
        reaction – a super reaction beside a normal one – still stands). Returns whether a vote
        was removed."""
        if still_shown:
            return False
        return self.storage.remove_vote(
            message_id=message.message_id, user_id=user_id, choice=choice
        )

    def reconcile(self, message: CoverMessage, ballots: Mapping[str, Collection[int]]) -> int:
        """Make the stored votes match what Discord shows (the rule:
        :meth:`bot.app.storage.votes.VoteRows.reconcile_votes`); how many changed."""
        return self.storage.reconcile_votes(message.message_id, ballots)

    def deleted(self, message_id: str) -> bool:
        """The post is gone: nobody can vote on it any more, so its vote closes without a
        winner, recorded as deleted. True when this call closed it."""
        if self.storage.cover_message(message_id) is None:
            return False  # not a cover post
        return self.storage.close_vote(message_id, winner=None, reason="deleted")

    def close(self, message_id: str, *, reason: str) -> Announcement | None:
        """Close the vote with the winner the stored votes give, and say what to announce;
        None when it was already closed (whoever closed it announced it)."""
        winner = pick_winner(self.storage.tally(message_id))
        if not self.storage.close_vote(message_id, winner=winner, reason=reason):
            return None
        return self.announcement(message_id, winner, reason)

    def announcement(self, message_id: str, winner: int | None, reason: str) -> Announcement:
        message = self.storage.cover_message(message_id)
        if message is None:
            raise KeyError(f"no cover message {message_id!r}")
        closed_by = CLOSED_BY.get(reason, reason)
        if winner is None:
            return Announcement(message, None, 0, closed_by)
        votes = self.storage.tally(message_id).get(winner, 0)
        request = self.storage.request(message.request_id)
        candidate = self.storage.candidate(message.request_id, winner)
        community = request is not None and request.params.community
        png = Path(candidate.png_path) if candidate and candidate.png_path else None
        jpeg = Path(candidate.jpeg_path) if candidate and candidate.jpeg_path else None
        if png is None or jpeg is None or not png.is_file() or not jpeg.is_file():
            return Announcement(message, winner, votes, closed_by, community)
        apply_for = None
        accounts = self.accounts
        if request and accounts and accounts.owner_account(request.user_id, request.playlist_id):
            apply_for = request.user_id
        return Announcement(message, winner, votes, closed_by, community, png, jpeg, apply_for)

    def expired(self, now: datetime | None = None) -> list[CoverMessage]:
        """Open votes of this process's servers older than ``close_after_s`` (also those a
        restart left open)."""
        now = now or datetime.now(UTC)
        return [
            message
            for message in self.storage.open_cover_messages(self.shards)
            if (now - moment(message.created_at)).total_seconds() >= self.close_after_s
        ]

    def open_votes(self, shard_id: int | None = None) -> list[CoverMessage]:
        """Every vote of this process's servers still open, oldest first (read back from
        Discord at each connection); with ``shard_id``, that one shard's only."""
        shards = self.shards if shard_id is None else Shards((shard_id,), self.shards.count)
        return self.storage.open_cover_messages(shards)
