"""Votes: raw reaction events, early returns, and the database deciding "one vote per user".

The rules (what counts, who may close, who wins, what is announced) are
:class:`bot.app.votes.VoteService`'s; this cog turns reaction events into its calls and its
answers into messages.

Raw events because cover messages are webhook follow-ups that discord.py does not cache (and
they must keep counting after a restart). Every decision reads SQLite, never memory.

Discord does not replay reactions added or taken back while the bot was disconnected, so at
every READY (the start, and a reconnection that could not resume) each open vote is read back
from its message and the database reconciled with what people see (:meth:`VotesCog.reconcile`).
Reading back asks for both kinds of reaction: Discord lists super reactions only when asked
(``type=1``), and a super-reaction vote (or a requester's super-✅) counts like any other. A
person may show both kinds of the same number: taking one back leaves the vote standing.
Closing a vote reads its post back first, under the same lock: Discord is the source of truth,
and a ✅ may arrive before the reconciliation after a reconnection has reached that post.
Stopping the bot while it reads is quiet: the votes stay open for the next start.
A post deleted by someone closes its vote without a winner; a vote whose announcement can't
be posted (channel gone, permissions lost) is still closed and recorded, with one log line; an
announcement whose files are over the server's upload limit goes out with smaller ones, or
with none and a sentence saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import discord
from discord.ext import commands

from bot.app.errors import CannotPost
from bot.app.records import CoverMessage
from bot.app.votes import Announcement
from bot.cogs.helpers import CLOSE_EMOJI, NO_MENTIONS, NUMBER_EMOJI, post_result
from bot.cogs.spotify import apply_view

if TYPE_CHECKING:
    from bot.client import CoverBot

log = logging.getLogger(__name__)


class VotesCog(commands.Cog):
    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot
        self.votes = bot.votes
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
        message = self.votes.open_vote(str(payload.message_id))
        if message is None:
            return
        emoji = str(payload.emoji)
        if emoji == CLOSE_EMOJI:
            if self.votes.may_close(message, str(payload.user_id)):
                await self.close_vote(message.message_id, reason="requester")
            return
        choice = _choice(emoji, message.candidate_count)
        if choice is not None:
            async with self._lock:
                self.votes.cast(message, str(payload.user_id), choice)

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        message = self.votes.open_vote(str(payload.message_id))
        if message is None:
            return
        choice = _choice(str(payload.emoji), message.candidate_count)
        user_id = str(payload.user_id)
        if choice is not None:
            async with self._lock:
                if not self.votes.is_vote(message, user_id, choice):
                    return  # an old reaction of a vote that moved on: nothing to take back
                still_shown = await self._other_kind_shown(message, payload)
                self.votes.withdraw(message, user_id, choice, still_shown=still_shown)

    async def _other_kind_shown(
        self, message: CoverMessage, payload: discord.RawReactionActionEvent
    ) -> bool:
        """Whether the person still shows the removed emoji as the other kind of reaction (a
        normal one beside the super one taken back, or the other way round). Discord's event
        says which kind went (``burst``), not what is left, so the post is read back; if it
        can't be read, the vote goes, as it would with one kind."""
        other = discord.ReactionType.normal if payload.burst else discord.ReactionType.burst
        try:
            post = await self.bot.get_partial_messageable(int(message.channel_id)).fetch_message(
                int(message.message_id)
            )
            for reaction in post.reactions:
                if str(reaction.emoji) != str(payload.emoji):
                    continue
                count = reaction.normal_count if payload.burst else reaction.burst_count
                if count:
                    async for user in reaction.users(type=other):
                        if user.id == payload.user_id:
                            return True
        except _UNREADABLE as error:
            if isinstance(error, RuntimeError) and not self.bot.is_closed():
                raise  # not a stop: a bug
            log.info("Could not read %s back after a removal: %s", message.message_id, _why(error))
        return False

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted(payload.message_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        for message_id in payload.message_ids:  # a moderator's purge
            await self._deleted(message_id)

    async def _deleted(self, message_id: int) -> None:
        if self.votes.deleted(str(message_id)):
            log.info("Cover post %s was deleted; its vote closed without a winner", message_id)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """READY comes at the start and after a reconnection that could not resume; reactions
        changed in between never arrive as events, so read every open vote back."""
        await self._read_back_open_votes()

    @commands.Cog.listener()
    async def on_shard_ready(self, shard_id: int) -> None:
        """One shard of several in this process identified again (a new READY for it only):
        discord.py then says ``shard_ready``, not ``ready``, so read back that shard's votes.
        At the start every shard says it before ``ready``, which reads them all."""
        if self.bot.is_ready():
            await self._read_back_open_votes(shard_id)

    async def _read_back_open_votes(self, shard_id: int | None = None) -> None:
        for message in self.votes.open_votes(shard_id):
            if self.bot.is_closed():
                return  # stopping: the rest are read back at the next start
            await self.reconcile(message)

    async def reconcile(self, message: CoverMessage) -> None:
        """Match one open vote's database rows to its reactions on Discord (see
        :meth:`bot.app.votes.VoteService.reconcile` for the rule); a requester's ✅ added
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
        requester = self.votes.requester(message)
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
        changed = self.votes.reconcile(message, ballots)
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

    async def close_vote(self, message_id: str, *, reason: str) -> None:
        """Close the vote, then announce the winner with its image and Spotify-ready JPEG, and,
        when the requester's linked Spotify account owns the playlist, an "Apply to Spotify"
        button (only the requester may use it; see :mod:`bot.cogs.spotify`).

        The outcome is recorded before anything is sent: a channel that is gone or a
        permission the bot lost costs the announcement (one log line), never the result.
        """
        async with self._lock:
            message = self.votes.open_vote(message_id)
            if message is None:
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
            outcome = self.votes.close(message_id, reason=reason)
            if outcome is None:
                return
        try:
            await self._announce(outcome)
        except (discord.NotFound, discord.Forbidden, CannotPost) as error:
            log.warning(
                "The vote on %s closed (winner: %s) but could not be announced: %s",
                message_id,
                outcome.winner or "none",
                _why(error),
            )

    async def _announce(self, outcome: Announcement) -> None:
        message = outcome.message
        channel_id = int(message.channel_id)
        # A reply that still goes out (without the link to the post) if the post was deleted:
        # Discord refuses a reply to a missing message otherwise (400, code 50035).
        reference = discord.MessageReference(
            message_id=int(message.message_id), channel_id=channel_id, fail_if_not_exists=False
        )
        if outcome.winner is None:
            await self.bot.get_partial_messageable(channel_id).send(
                f"The vote was closed by {outcome.closed_by} with no votes; no cover was chosen.",
                reference=reference,
                allowed_mentions=NO_MENTIONS,
            )
            return
        winner, votes = outcome.winner, outcome.votes
        text = (
            f"Cover {NUMBER_EMOJI[winner - 1]} wins with {votes} vote{'s' if votes != 1 else ''} "
            f"(closed by {outcome.closed_by})."
        )
        if outcome.community:
            text += " Made with this server's community style."
        if outcome.png is None or outcome.jpeg is None:  # the choice is still recorded
            log.warning("Winning cover files of %s are gone", message.message_id)
            text += " Its image files are no longer on the bot's disk."
            await self.bot.get_partial_messageable(channel_id).send(
                text, reference=reference, allowed_mentions=NO_MENTIONS
            )
            return
        text += f" The JPEG ({outcome.jpeg.stat().st_size / 1024:.0f} KB) is ready for Spotify."
        view = None
        if outcome.apply_for is not None:
            text += f" <@{outcome.apply_for}> can make it the playlist's cover on Spotify."
            view = apply_view(int(message.message_id))
        png = (outcome.png, f"winner-{winner}.png")
        jpeg = (outcome.jpeg, f"winner-{winner}-spotify.jpg")
        # A server whose upload limit refuses both files gets the JPEG alone, then none.
        limit = "(This server's upload limit refused"
        smaller = [
            (f"{limit} the PNG: the Spotify JPEG only.)", [jpeg]),
            (f"{limit} the images: they stay on the bot's disk.)", []),
        ]
        await post_result(
            self.bot,
            None,
            channel_id,
            text,
            files=[png, jpeg],
            smaller=smaller,
            view=view,
            reference=reference,
        )

    async def _close_expired_votes(self) -> None:
        """Close votes older than ``vote_close_after_s``, also those left open by a restart."""
        limit = self.votes.close_after_s
        await self.bot.wait_until_ready()
        while True:
            for message in self.votes.expired():
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
