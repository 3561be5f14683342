"""The Discord face: the bot object, where it connects, and the one place errors become replies.

The generation side (queue, service, storage) is built by the caller and handed in, so tests
run the real bot against a local fake Discord with a tiny pipeline, and ``python -m bot run``
runs it against Discord.
"""

from __future__ import annotations

import logging
import uuid

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.cover import CoverService
from bot.settings import Settings
from bot.storage import Storage
from models.errors import CoverError
from models.queue import GenerationQueue

log = logging.getLogger(__name__)

NUMBER_EMOJI = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")  # vote reactions, one per candidate
CLOSE_EMOJI = "✅"  # the requester closes the vote with it
NO_MENTIONS = discord.AllowedMentions.none()  # messages quote user text: never ping anyone


def point_discord_at(settings: Settings) -> None:
    """Send REST calls and the gateway connection where the settings say.

    discord.py reads both from class attributes at each request (see ../shared/NOTES.md), so
    this is process-wide: one bot per process.
    """
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class CoverBot(commands.Bot):
    """A bot with the cover and vote cogs, sharing one generation queue."""

    def __init__(
        self, settings: Settings, queue: GenerationQueue, storage: Storage, service: CoverService
    ) -> None:
        intents = discord.Intents.default()
        intents.members = False  # would trigger member chunking; votes need only raw events
        intents.message_content = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            help_command=None,
        )
        self.settings = settings
        self.queue = queue
        self.storage = storage
        self.service = service
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        await self.queue.start()
        from bot.cogs.cover import CoverCog
        from bot.cogs.votes import VotesCog

        await self.add_cog(CoverCog(self))
        await self.add_cog(VotesCog(self))
        guild = self.settings.discord_guild_id
        if guild is not None:
            target = discord.Object(id=guild)
            self.tree.copy_global_to(guild=target)
            await self.tree.sync(guild=target)
        else:
            await self.tree.sync()

    async def close(self) -> None:
        await super().close()
        await self.queue.close(drain=False, timeout_s=30)

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Every slash-command error ends here: a plain sentence for what users can fix, an
        incident id (and a logged traceback) for our bugs."""
        cause = getattr(error, "original", error)
        if isinstance(cause, CoverError):
            text = str(cause)
        elif isinstance(cause, app_commands.MissingPermissions):
            text = "Only server administrators can use this command."
        elif isinstance(cause, app_commands.CheckFailure):
            text = "You can't use this command here."
        else:
            incident = uuid.uuid4().hex[:8]
            log.error(
                "Command %s failed (incident %s)",
                _command_name(interaction),
                incident,
                exc_info=cause,
            )
            text = f"Something went wrong on our side (incident {incident}); please try again."
        await reply(interaction, text, ephemeral=True)


async def reply(interaction: discord.Interaction, text: str, *, ephemeral: bool = False) -> None:
    """Answer an interaction whether or not it was already acknowledged."""
    try:
        if interaction.response.is_done():
            # A deferred command shows "thinking…": replace that with the answer.
            await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(
                text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS
            )
    except discord.HTTPException:
        log.warning("Could not reply to interaction %s", interaction.id, exc_info=True)


def _command_name(interaction: discord.Interaction) -> str:
    return interaction.command.qualified_name if interaction.command else "?"
