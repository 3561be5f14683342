"""``/settings``: a server's managers keep it safe – banned words, a daily limit per person, and
what becomes of a candidate the model's safety checker flagged. The rules and their limits are
the core's (bot/app/server_rules.py); this cog checks who may change them and says what it did.

Everything here is answered privately (only the manager sees it). Only people who may manage
the server (Manage Server, or administrators) may use it: Discord hides the group from others
(``default_permissions``) and the bot refuses them itself too, as Discord's setting can be
changed per server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.app.errors import NotAllowed
from bot.app.records import NSFW_POLICIES, ServerSettings, moment
from bot.app.server_rules import (
    MAX_BANNED_WORDS,
    MAX_DAILY_LIMIT,
    MAX_WORD_LENGTH,
    add_banned_word,
    remove_banned_word,
    set_daily_limit,
    set_nsfw_policy,
)
from bot.cogs.helpers import NO_MENTIONS

if TYPE_CHECKING:
    from bot.client import CoverBot

NOT_A_MANAGER = "Only people who may manage this server can see or change its /settings."


class NotAManager(NotAllowed, app_commands.CheckFailure):
    """Refused by the cog's check: a CheckFailure so discord.py hands it to the error handler,
    a CoverError so the person is told this sentence (bot/cogs/helpers.py error_text)."""


class SettingsCog(commands.Cog):
    settings = app_commands.Group(
        name="settings",
        description="Keep this server safe: banned words, a daily limit, flagged covers",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )
    banned_words = app_commands.Group(
        name="banned-words", description="Words a request may not use here", parent=settings
    )

    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        """Every command of the group: managers only (Discord's own setting may be changed)."""
        permissions = interaction.permissions
        if interaction.guild_id is None or not (
            permissions.manage_guild or permissions.administrator
        ):
            raise NotAManager(NOT_A_MANAGER)
        return True

    @settings.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """See this server's settings."""
        current = self.bot.storage.server_settings(str(interaction.guild_id))
        await _answer(interaction, describe(current))

    @banned_words.command(name="add")
    @app_commands.describe(word=f"A word (or words) to refuse, up to {MAX_WORD_LENGTH} characters")
    async def add_word(
        self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD_LENGTH]
    ) -> None:
        """Refuse requests whose playlist or prompts use this word."""
        stored, added = add_banned_word(
            self.bot.storage, str(interaction.guild_id), word, by=str(interaction.user.id)
        )
        await _answer(
            interaction,
            f"Banned `{stored}`: requests using it are refused, privately."
            if added
            else f"`{stored}` was banned already.",
        )

    @banned_words.command(name="remove")
    @app_commands.describe(word="A banned word to allow again")
    async def remove_word(
        self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD_LENGTH]
    ) -> None:
        """Allow a banned word again."""
        stored, removed = remove_banned_word(
            self.bot.storage, str(interaction.guild_id), word, by=str(interaction.user.id)
        )
        await _answer(
            interaction,
            f"`{stored}` is allowed again." if removed else f"`{stored}` was not banned.",
        )

    @banned_words.command(name="list")
    async def list_words(self, interaction: discord.Interaction) -> None:
        """See the words this server refuses."""
        words = self.bot.storage.server_settings(str(interaction.guild_id)).banned_words
        if not words:
            await _answer(interaction, "This server bans no words.")
            return
        listed = ", ".join(f"`{w}`" for w in words)
        await _answer(interaction, f"Banned here ({len(words)} of {MAX_BANNED_WORDS}): {listed}")

    @settings.command(name="daily-limit")
    @app_commands.describe(limit="Requests per person per day (UTC) in this server; 0: no limit")
    async def daily_limit(
        self, interaction: discord.Interaction, limit: app_commands.Range[int, 0, MAX_DAILY_LIMIT]
    ) -> None:
        """Limit how many covers each person may ask for per day."""
        set_daily_limit(
            self.bot.storage, str(interaction.guild_id), limit, by=str(interaction.user.id)
        )
        await _answer(
            interaction,
            f"Each person may now make {limit} request{'s' if limit != 1 else ''} a day here "
            "(rerolls, variations and remixes count; the day is UTC's)."
            if limit
            else "No daily limit here any more.",
        )

    @settings.command(name="nsfw")
    @app_commands.describe(policy="What to do with a candidate the safety checker flagged")
    @app_commands.choices(
        policy=[
            app_commands.Choice(name="drop it (the default)", value="drop"),
            app_commands.Choice(name="post it behind a spoiler in NSFW channels", value="spoiler"),
        ]
    )
    async def nsfw(self, interaction: discord.Interaction, policy: str) -> None:
        """Choose what happens to a cover the model's safety checker flagged."""
        current = set_nsfw_policy(
            self.bot.storage, str(interaction.guild_id), policy, by=str(interaction.user.id)
        )
        await _answer(interaction, "Flagged candidates: " + _nsfw_words(current) + ".")


def describe(current: ServerSettings) -> str:
    """``/settings show``'s answer."""
    count = len(current.banned_words)
    lines = [
        "**This server's settings**",
        f"• Banned words: {count} of {MAX_BANNED_WORDS}"
        + (" (`/settings banned-words list` shows them)" if count else ""),
        "• Daily limit: "
        + (
            f"{current.daily_limit} request{'s' if current.daily_limit != 1 else ''} per person "
            "per day (UTC)"
            if current.daily_limit
            else "none"
        ),
        f"• Flagged candidates: {_nsfw_words(current)}",
    ]
    if current.updated_by:
        # Discord shows <t:…:f> in each reader's own time zone.
        when = int(moment(current.updated_at).timestamp()) if current.updated_at else None
        lines.append(
            f"Last changed by <@{current.updated_by}>" + (f" on <t:{when}:f>." if when else ".")
        )
    return "\n".join(lines)


def _nsfw_words(current: ServerSettings) -> str:
    assert current.nsfw in NSFW_POLICIES
    if current.nsfw == "spoiler":
        return "posted behind a spoiler in channels marked NSFW, dropped elsewhere"
    return "dropped"


async def _answer(interaction: discord.Interaction, text: str) -> None:
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(SettingsCog(bot))
