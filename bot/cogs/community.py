"""``/community set|clear``: administrators point their server at its community style.

A community style is a LoRA trained on the server's own votes (``python -m training
export-pairs`` → ``python -m training dpo`` on its pairs, or ``python -m training kto`` on the
same folder's liked and disliked candidates; docs/dpo.md) and put by the operator into
``COVER_COMMUNITY_LORA_DIR``; ``/cover community:True`` then paints with it, and the request
records that it did, so the votes on those covers say whether it helped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.app.community import set_community_style
from bot.cogs.helpers import NO_MENTIONS

if TYPE_CHECKING:
    from bot.client import CoverBot


class CommunityCog(commands.Cog):
    community = app_commands.Group(
        name="community",
        description="This server's own style, learnt from its votes (administrators)",
        guild_only=True,
        default_permissions=discord.Permissions(administrator=True),
    )

    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    @community.command(name="set")
    @app_commands.checks.has_permissions(administrator=True)  # Discord hides it; we check too
    @app_commands.describe(
        lora="File name of the LoRA (trained with DPO or KTO) in the bot's community LoRA folder",
        model="The model the LoRA was trained on (default: the bot's)",
    )
    async def set_style(
        self, interaction: discord.Interaction, lora: str, model: str | None = None
    ) -> None:
        """Use a LoRA trained on this server's votes for /cover community:True."""
        spec = set_community_style(
            self.bot.settings,
            self.bot.storage,
            str(interaction.guild_id),
            lora_name=lora,
            base_model=model,
            set_by=str(interaction.user.id),
        )
        await interaction.response.send_message(
            f"Community style set: `{lora}` on {spec.name}. Use it with `/cover community:True`.",
            allowed_mentions=NO_MENTIONS,
        )

    @community.command(name="clear")
    @app_commands.checks.has_permissions(administrator=True)
    async def clear_style(self, interaction: discord.Interaction) -> None:
        """Stop using this server's community style."""
        cleared = self.bot.storage.clear_community_style(str(interaction.guild_id))
        await interaction.response.send_message(
            "Community style cleared." if cleared else "This server has no community style.",
            allowed_mentions=NO_MENTIONS,
        )


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(CommunityCog(bot))
