"""``/queue``: where a person's covers are in the bot's queue and when they should be ready.

The answer is private (only the person sees it) and built by the core from a read-only copy
of the queue (bot/app/queue_view.py): other people's requests appear only as counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.app.queue_view import queue_view

if TYPE_CHECKING:
    from bot.client import CoverBot


class QueueCog(commands.Cog):
    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        """See where your covers are in the queue and when they should be ready."""
        # Nothing slow to defer for: the snapshot is a copy of what the queue holds in memory.
        view = queue_view(self.bot.queue.snapshot(), str(interaction.user.id))
        await interaction.response.send_message(view.text(), ephemeral=True)


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(QueueCog(bot))
