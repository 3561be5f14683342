"""Votes: raw reaction events, early returns, and the database deciding "one vote per user".

Raw events because cover messages are webhook follow-ups that discord.py does not cache (and
they must keep counting after a restart). Every decision reads SQLite, never memory.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.cogs.spotify import apply_view
from bot.discord_app import CLOSE_EMOJI, NO_MENTIONS, NUMBER_EMOJI

if TYPE_CHECKING:
    from bot.discord_app import CoverBot

log = logging.getLogger(__name__)


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
        if message is None or message["status"] != "open":
            return
        emoji = str(payload.emoji)
        if emoji == CLOSE_EMOJI:
            request = self.bot.storage.request(message["request_id"])
            if request is not None and request["user_id"] == str(payload.user_id):
                await self.close_vote(message["message_id"], closed_by="the requester")
            return
        choice = _choice(emoji, message["candidate_count"])
        if choice is not None:
            self.bot.storage.cast_vote(
                message_id=message["message_id"], user_id=str(payload.user_id), choice=choice
            )

    @commands.Cog.listener()
    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        message = self.bot.storage.cover_message(str(payload.message_id))
        if message is None or message["status"] != "open":
            return
        choice = _choice(str(payload.emoji), message["candidate_count"])
        if choice is not None:
            # Only if it is still their vote: moving a vote then removing the old reaction
            # must not undo the move.
            self.bot.storage.remove_vote(
                message_id=message["message_id"], user_id=str(payload.user_id), choice=choice
            )

    async def close_vote(self, message_id: str, *, closed_by: str) -> None:
        """Close the vote, then announce the winner with its image and Spotify-ready JPEG, and,
        when the requester's linked Spotify account owns the playlist, an "Apply to Spotify"
        button (only the requester may use it; see :mod:`bot.cogs.spotify`)."""
        storage = self.bot.storage
        winner = pick_winner(storage.tally(message_id))
        if not storage.close_vote(message_id, winner=winner):
            return  # someone else closed it a moment ago and announced it
        message = storage.cover_message(message_id)
        channel = self.bot.get_partial_messageable(int(message["channel_id"]))
        reference = discord.PartialMessage(channel=channel, id=int(message_id))
        if winner is None:
            await channel.send(
                f"The vote was closed by {closed_by} with no votes; no cover was chosen.",
                reference=reference,
                allowed_mentions=NO_MENTIONS,
            )
            return
        votes = storage.tally(message_id)[winner]
        candidate = next(
            c for c in storage.candidates(message["request_id"]) if c["index"] == winner
        )
        text = (
            f"Cover {NUMBER_EMOJI[winner - 1]} wins with {votes} vote{'s' if votes != 1 else ''} "
            f"(closed by {closed_by})."
        )
        png, jpeg = Path(candidate["png_path"]), Path(candidate["jpeg_path"])
        view = discord.utils.MISSING
        if png.is_file() and jpeg.is_file():
            text += f" The JPEG ({jpeg.stat().st_size / 1024:.0f} KB) is ready for Spotify."
            files = [
                discord.File(png, filename=f"winner-{winner}.png"),
                discord.File(jpeg, filename=f"winner-{winner}-spotify.jpg"),
            ]
            request = storage.request(message["request_id"])
            owner = request and self.bot.accounts.owner_account(
                request["user_id"], request["playlist_id"]
            )
            if owner:
                text += f" <@{request['user_id']}> can make it the playlist's cover on Spotify."
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
                opened = datetime.fromisoformat(message["created_at"])
                if (now - opened).total_seconds() >= limit:
                    try:
                        await self.close_vote(message["message_id"], closed_by="the timer")
                    except Exception:  # one bad message must not stop the sweeper for all
                        log.exception("Could not close the vote on %s", message["message_id"])
            await asyncio.sleep(min(60.0, max(0.2, limit / 4)))


def _choice(emoji: str, candidate_count: int) -> int | None:
    if emoji in NUMBER_EMOJI[:candidate_count]:
        return NUMBER_EMOJI.index(emoji) + 1
    return None


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(VotesCog(bot))
