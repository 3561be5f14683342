"""``/cover``: validate → defer → submit → follow up (discord.py ``examples/app_commands``)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cover import MAX_CANDIDATES, CoverRequest, CoverResult
from bot.discord_app import NO_MENTIONS, NUMBER_EMOJI
from bot.prompts import STYLES
from models.queue import Failed, Finished, JobHandle, Progress, Queued, Started
from models.registry import list_models

if TYPE_CHECKING:
    from bot.discord_app import CoverBot

log = logging.getLogger(__name__)

# The interaction token lives 15 minutes; after 14 we post with the bot's own token instead.
TOKEN_LIFETIME_S = 14 * 60


class CoverCog(commands.Cog):
    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    @app_commands.command(name="cover")
    @app_commands.describe(
        playlist="Spotify playlist link, spotify: URI or id",
        model="Which model paints the covers (default: the bot's)",
        count="How many candidates to vote on, 1-4",
        style="How the prompts are written ('seed' is the paper's '<title> playlist cover image')",
        title="Set the playlist's title onto the covers",
    )
    @app_commands.choices(style=[app_commands.Choice(name=s, value=s) for s in STYLES])
    async def cover(
        self,
        interaction: discord.Interaction,
        playlist: str,
        model: str | None = None,
        count: app_commands.Range[int, 1, MAX_CANDIDATES] = MAX_CANDIDATES,
        style: str = "seed",
        title: bool = False,
    ) -> None:
        """Make candidate covers for a Spotify playlist and vote on them."""
        started = time.monotonic()
        await interaction.response.defer(thinking=True)  # before anything slow: 3 s budget
        service = self.bot.service
        request = CoverRequest(
            playlist=playlist,
            user_id=str(interaction.user.id),
            source="discord",
            model=model,
            count=count,
            style=style,
            title_overlay=title,
            guild_id=str(interaction.guild_id) if interaction.guild_id else None,
            channel_id=str(interaction.channel_id),
        )
        prepared = await service.prepare(request)  # bad link, private playlist, rate limit…
        request_id, handle = service.submit(prepared)  # queue full, your own limit…
        await interaction.edit_original_response(
            content=f"Making {count} cover(s) for **{discord.utils.escape_markdown(prepared.facts.name)}**…",
            allowed_mentions=NO_MENTIONS,
        )
        status = asyncio.create_task(self._show_status(interaction, handle, started))
        try:
            cover = await service.finish(prepared, request_id, handle)
        finally:
            status.cancel()
        await self._post(interaction, cover, started)

    @cover.autocomplete("model")
    async def _model_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = [name for name in list_models() if current.lower() in name.lower()]
        return [app_commands.Choice(name=name, value=name) for name in names[:25]]

    async def _show_status(
        self, interaction: discord.Interaction, handle: JobHandle, started: float
    ) -> None:
        """Edit the deferred reply as the job moves, at most once per ``status_edit_interval_s``
        for progress (Discord rate-limits edits), always for a change of state."""
        interval = self.bot.settings.status_edit_interval_s
        last_edit = 0.0
        async for event in handle.events():
            if isinstance(event, Finished | Failed):
                return
            now = time.monotonic()
            if isinstance(event, Queued):
                text = f"Queued: position {event.position}."
            elif isinstance(event, Started):
                text = "Generating…"
            elif isinstance(event, Progress) and now - last_edit >= interval:
                text = f"Generating: step {event.step}/{event.total}."
            else:
                continue
            if now - started > TOKEN_LIFETIME_S:
                return  # the token is about to expire; the result is posted in the channel
            try:
                await interaction.edit_original_response(content=text)
                last_edit = now
            except discord.HTTPException:
                log.info("Could not edit the status of %s", handle.id[:8], exc_info=True)

    async def _post(
        self, interaction: discord.Interaction, cover: CoverResult, started: float
    ) -> None:
        """Post the candidates with the sheet, add one number reaction each, open the vote."""
        files = [
            discord.File(c.png_path, filename=f"cover-{c.index}.png") for c in cover.candidates
        ]
        files.append(discord.File(cover.sheet_path, filename="sheet.png"))
        numbers = " ".join(NUMBER_EMOJI[: len(cover.candidates)])
        content = (
            f"<@{interaction.user.id}>: covers for **{discord.utils.escape_markdown(cover.facts.name)}**. "
            f"Vote with {numbers}; the requester closes the vote with ✅."
        )
        mentions = discord.AllowedMentions(users=[interaction.user], everyone=False, roles=False)
        if time.monotonic() - started < TOKEN_LIFETIME_S:
            message = await interaction.followup.send(
                content, files=files, wait=True, allowed_mentions=mentions
            )
        else:
            channel = self.bot.get_partial_messageable(interaction.channel_id)
            message = await channel.send(content, files=files, allowed_mentions=mentions)
        self.bot.storage.register_cover_message(
            message_id=str(message.id),
            channel_id=str(interaction.channel_id),
            request_id=cover.request_id,
            candidate_count=len(cover.candidates),
        )
        for emoji in NUMBER_EMOJI[: len(cover.candidates)]:
            await message.add_reaction(emoji)


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(CoverCog(bot))
