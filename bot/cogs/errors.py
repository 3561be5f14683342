"""The one place a slash command's error becomes a reply (python-discord's ``ErrorHandler``).

Button presses end in the same sentence through :func:`bot.cogs.helpers.error_text`: a plain
sentence for what the person can fix, an incident id (and a logged traceback) for our bugs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.helpers import error_text, reply

if TYPE_CHECKING:
    from bot.client import CoverBot


class ErrorsCog(commands.Cog):
    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.tree.on_error = self.on_app_command_error

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Every slash-command error ends here."""
        text = error_text(error, f"Command {_command_name(interaction)}")
        await reply(interaction, text, ephemeral=True)


def _command_name(interaction: discord.Interaction) -> str:
    return interaction.command.qualified_name if interaction.command else "?"


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(ErrorsCog(bot))
