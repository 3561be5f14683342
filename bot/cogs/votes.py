"""Votes: raw reaction events, early returns, and the database deciding "one vote per user".

Raw events because cover messages are webhook follow-ups that discord.py does not cache (and
they must keep counting after a restart). Every decision reads SQLite, never memory.

Discord does not replay reactions added or taken back while the bot was disconnected, so at
every READY (the start, and a reconnection that could not resume) each open vote is read back
from its message and the database reconciled with what people see (:meth:`VotesCog.reconcile`).
Reading back asks for both kinds of reaction: Discord lists super reactions only when asked
(``type=1``), and a super-reaction vote (or a requester's super-✅) counts like any other.
Closing a vote reads its post back first, under the same lock: Discord is the source of truth,
and a ✅ may arrive before the reconciliation after a reconnection has reached that post.
Stopping the bot while it reads is quiet: the votes stay open for the next start.
A post deleted by someone closes its vote without a winner; a vote whose announcement can't
be posted (channel gone, permissions lost) is still closed and recorded, with one log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import discord
from discord.ext import commands

from bot.app.records import CoverMessage
from bot.client import CLOSE_EMOJI, NO_MENTIONS, NUMBER_EMOJI
from bot.cogs.spotify import apply_view

if TYPE_CHECKING:
    from bot.client import CoverBot

log = logging.getLogger(__name__)
_CLOSED_BY = {"requester": "the requester", "timer": "the timer"}  # for the announcement


def pick_winner(tally: dict[int, int]) -> int | None:
    """Most votes wins; a tie goes to the lower number; no votes at all, no winner."""
    best = max(tally.values(), default=0)
    if best == 0:
        return None
    return min(choice for choice, votes in tally.items() if votes == best)


class VotesCog(commands.Cog):
    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot
        self._sweeper: asyncio.Task[None] | None = None
        # Reaction events wait while a message is being reconciled, so an event that comes
        # in while its message is read is applied after, not overwritten by an older reading.
        self._lock = asyncio.Lock()

    async def cog_load(self) -> None:
        self._sweeper = asyncio.create_task(self._close_expired_votes())

    async def cog_unload(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.bot.user is None or payload.user_id == self.bot.user.id:
            return  # the bot's own 1️⃣–4️⃣ are ballots' labels, not votes
        message = self.bot.storage.cover_message(str(payload.message_id))
        if message is None or not message.open:
            return
        emoji = str(payload.emoji)
        if emoji == CLOSE_EMOJI:
            if self._requester(message) == str(payload.user_id):
                await self.close_vote(message.message_id, reason="requester")
            return
        choice = _choice(emoji, message.candidate_count)
        if choice is not None:
            async with self._lock:
                self.bot.storage.cast_vote(
                    message_id=message.message_id, user_id=str(payload.user_id), choice=choice
                )

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        message = self.bot.storage.cover_message(str(payload.message_id))
        if message is None or not message.open:
            return
        choice = _choice(str(payload.emoji), message.candidate_count)
        if choice is not None:
            # Only if it is still their vote: moving a vote then removing the old reaction
            # must not undo the move.
            async with self._lock:
                self.bot.storage.remove_vote(
                    message_id=message.message_id, user_id=str(payload.user_id), choice=choice
                )

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:  # a moderator's purge
            await self._deleted(message_id)

    async def _deleted(self, message_id: int) -> None:
        """A cover post was deleted: nobody can vote on it any more, so its vote closes
        without a winner, recorded as deleted; there is no post left to announce under."""
        storage = self.bot.storage
        if storage.cover_message(str(message_id)) is None:
            return  # not a cover post
        if storage.close_vote(str(message_id), winner=None, reason="deleted"):
            log.info("Cover post %s was deleted; its vote closed without a winner", message_id)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """READY comes at the start and after a reconnection that could not resume; reactions
        changed in between never arrive as events, so read every open vote back."""
        for message in self.bot.storage.open_cover_messages():
            if self.bot.is_closed():
                return  # stopping: the rest are read back at the next start
            await self.reconcile(message)

    async def reconcile(self, message: CoverMessage) -> None:
        """Match one open vote's database rows to its reactions on Discord (see
        :meth:`bot.app.storage.Storage.reconcile_votes` for the rule); a requester's ✅ added
        meanwhile closes it, and a post deleted meanwhile closes it without a winner."""
        async with self._lock:
            try:
                close = await self._read_back(message)
            except discord.NotFound:  # the post, or its whole channel, was deleted
                await self._deleted(int(message.message_id))
                return
            except _UNREADABLE as error:  # one unreadable vote must not stop the rest
                if self._quiet_stop(error):
                    return
                if isinstance(error, RuntimeError):
                    raise  # not a stop: a bug
                log.warning(
                    "Could not read the vote on %s back from Discord: %s",
                    message.message_id,
                    _why(error),
                )
                return
        if close:
            await self.close_vote(message.message_id, reason="requester")

    async def _read_back(self, message: CoverMessage) -> bool:
        """Store what one vote's reactions on Discord say (hold :attr:`_lock`); whether the
        requester's ✅ is among them. Raises what reading the post raises."""
        channel = self.bot.get_partial_messageable(int(message.channel_id))
        post = await channel.fetch_message(int(message.message_id))
        ballots: dict[str, set[int]] = {}
        close = False
        requester = self._requester(message)
        for reaction in post.reactions:
            emoji = str(reaction.emoji)
            choice = _choice(emoji, message.candidate_count)
            if choice is None and emoji != CLOSE_EMOJI:
                continue
            async for user in _reactors(reaction):
                if self.bot.user is not None and user.id == self.bot.user.id:
                    continue
                if choice is not None:
                    ballots.setdefault(str(user.id), set()).add(choice)
                elif str(user.id) == requester:
                    close = True
        changed = self.bot.storage.reconcile_votes(message.message_id, ballots)
        if changed:
            log.info(
                "Vote on %s: %d vote(s) changed while the bot was away, now counted",
                message.message_id,
                changed,
            )
        return close

    def _quiet_stop(self, error: BaseException) -> bool:
        """Whether ``error`` is the HTTP session closing under a read because the bot is being
        stopped ("Session is closed", "Connector is closed"): expected then, logged at INFO;
        the votes stay open and are read back at the next start."""
        if not self.bot.is_closed() or isinstance(error, discord.HTTPException):
            return False
        log.info("Stopped while reading votes back (%s)", type(error).__name__)
        return True

    def _requester(self, message: CoverMessage) -> str | None:
        """The user id of the person who asked for the covers of a cover message."""
        request = self.bot.storage.request(message.request_id)
        return request.user_id if request is not None else None

    async def close_vote(self, message_id: str, *, reason: str) -> None:
        """Close the vote, then announce the winner with its image and Spotify-ready JPEG, and,
        when the requester's linked Spotify account owns the playlist, an "Apply to Spotify"
        button (only the requester may use it; see :mod:`bot.cogs.spotify`).

        The outcome is recorded before anything is sent: a channel that is gone or a
        permission the bot lost costs the announcement (one log line), never the result.
        """
        storage = self.bot.storage
        async with self._lock:
            message = storage.cover_message(message_id)
            if message is None or not message.open:
                return  # someone else closed it a moment ago and announced it
            # Discord's reactions, not our tally, are the truth, and a close is final: votes
            # cast while the bot was away (not read back yet after a reconnection) must count.
            try:
                await self._read_back(message)
            except (discord.NotFound, discord.Forbidden):
                pass  # gone or hidden for good: nothing newer can be read; the stored votes decide
            except _UNREADABLE as error:
                if self._quiet_stop(error):
                    return
                if isinstance(error, RuntimeError):
                    raise  # not a stop: a bug
                log.warning(
                    "The vote on %s stays open: its post could not be read back (%s); the "
                    "timer closes it once Discord answers",
                    message_id,
                    _why(error),
                )
                return
            winner = pick_winner(storage.tally(message_id))
            if not storage.close_vote(message_id, winner=winner, reason=reason):
                return
        try:
            await self._announce(message_id, winner, _CLOSED_BY[reason])
        except (discord.NotFound, discord.Forbidden) as error:
            log.warning(
                "The vote on %s closed (winner: %s) but could not be announced: %s",
                message_id,
                winner or "none",
                _why(error),
            )

    async def _announce(self, message_id: str, winner: int | None, closed_by: str) -> None:
        storage = self.bot.storage
        message = storage.cover_message(message_id)
        channel = self.bot.get_partial_messageable(int(message.channel_id))
        # A reply that still goes out (without the link to the post) if the post was deleted:
        # Discord refuses a reply to a missing message otherwise (400, code 50035).
        reference = discord.MessageReference(
            message_id=int(message_id), channel_id=channel.id, fail_if_not_exists=False
        )
        if winner is None:
            await channel.send(
                f"The vote was closed by {closed_by} with no votes; no cover was chosen.",
                reference=reference,
                allowed_mentions=NO_MENTIONS,
            )
            return
        votes = storage.tally(message_id)[winner]
        candidate = storage.candidate(message.request_id, winner)
        text = (
            f"Cover {NUMBER_EMOJI[winner - 1]} wins with {votes} vote{'s' if votes != 1 else ''} "
            f"(closed by {closed_by})."
        )
        request = storage.request(message.request_id)
        if request and request.params.community:
            text += " Made with this server's community style."
        png, jpeg = Path(candidate.png_path or ""), Path(candidate.jpeg_path or "")
        view = discord.utils.MISSING
        if png.is_file() and jpeg.is_file():
            text += f" The JPEG ({jpeg.stat().st_size / 1024:.0f} KB) is ready for Spotify."
            files = [
                discord.File(png, filename=f"winner-{winner}.png"),
                discord.File(jpeg, filename=f"winner-{winner}-spotify.jpg"),
            ]
            owner = request and self.bot.accounts.owner_account(
                request.user_id, request.playlist_id
            )
            if owner:
                text += f" <@{request.user_id}> can make it the playlist's cover on Spotify."
                view = apply_view(int(message_id))
        else:  # someone cleaned the output folder; the choice is still recorded
            log.warning("Winning cover files of %s are gone: %s", message_id, png.parent)
            text += " Its image files are no longer on the bot's disk."
            files = []
        await channel.send(
            text, files=files, view=view, reference=reference, allowed_mentions=NO_MENTIONS
        )

    async def _close_expired_votes(self) -> None:
        """Close votes older than ``vote_close_after_s``, also those left open by a restart."""
        limit = self.bot.settings.vote_close_after_s
        await self.bot.wait_until_ready()
        while True:
            now = datetime.now(UTC)
            for message in self.bot.storage.open_cover_messages():
                opened = datetime.fromisoformat(message.created_at)
                if (now - opened).total_seconds() >= limit:
                    try:
                        await self.close_vote(message.message_id, reason="timer")
                    except Exception:  # one bad message must not stop the sweeper for all
                        log.exception("Could not close the vote on %s", message.message_id)
            await asyncio.sleep(min(60.0, max(0.2, limit / 4)))


# What reading a post back can raise besides a refusal: a 5xx, a dropped connection, or the
# HTTP session closed under the read by a stop (aiohttp raises RuntimeError for that).
_UNREADABLE = (discord.HTTPException, aiohttp.ClientError, OSError, RuntimeError)


async def _reactors(reaction: discord.Reaction) -> AsyncIterator[discord.abc.Snowflake]:
    """Everyone who reacted with ``reaction``, normally or with a super reaction: Discord lists
    only normal reactors unless asked for super ones (``type=1``), and a super-reaction vote
    counts like any other. Pages of 100, as Discord serves them; a kind nobody used is not
    asked for. Someone who used both kinds comes twice."""
    kinds = (
        (discord.ReactionType.normal, reaction.normal_count),
        (discord.ReactionType.burst, reaction.burst_count),
    )
    for kind, count in kinds:
        if count:
            async for user in reaction.users(type=kind):
                yield user


def _why(error: BaseException) -> str:
    """Discord's own words for a refusal, for a one-line log entry."""
    if not isinstance(error, discord.HTTPException):
        return f"{type(error).__name__}: {error}"
    return f"{error.status} {error.text or type(error).__name__} (code {error.code})"


def _choice(emoji: str, candidate_count: int) -> int | None:
    if emoji in NUMBER_EMOJI[:candidate_count]:
        return NUMBER_EMOJI.index(emoji) + 1
    return None


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(VotesCog(bot))
