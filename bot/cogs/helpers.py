"""What the cogs share: the vote emoji, replies, the one translation of an error into what the
person is told, posts with their upload fallbacks, and model choices within Discord's limits.

Every slash command's and button's error ends in :func:`error_text`: a plain sentence for what
the person can fix (a :class:`~models.errors.CoverError`'s ``str()``), an incident id (and a
logged traceback) for our bugs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from bot.app.errors import CannotPost, TooLargeToPost
from bot.app.prompts import MAX_CANDIDATES
from models.errors import CoverError
from models.registry import list_models

log = logging.getLogger(__name__)

# The vote reactions, one per candidate: keycap digits 1️⃣ 2️⃣ 3️⃣ 4️⃣ (digit, VS16, U+20E3).
NUMBER_EMOJI = tuple(f"{n}\ufe0f\u20e3" for n in range(1, MAX_CANDIDATES + 1))
CLOSE_EMOJI = "✅"  # the requester closes the vote with it
NO_MENTIONS = discord.AllowedMentions.none()  # messages quote user text: never ping anyone
# An interaction token lives 15 minutes; after 14 results go out with the bot's own token.
TOKEN_LIFETIME_S = 14 * 60


def count_as_command(interaction: discord.Interaction) -> None:
    """Count a button press's task with the commands, so that shutting down lets its reply
    out (CoverBot.close waits for them)."""
    task = asyncio.current_task()
    tasks = getattr(interaction.client, "command_tasks", None)
    if task is not None and tasks is not None:
        tasks.add(task)


def error_text(error: BaseException, what: str) -> str:
    """The one translation of an error into what the person is told; ``what`` names the
    command or button in the log line of an unexpected error."""
    cause = getattr(error, "original", error)
    if isinstance(cause, CoverError):
        return str(cause)
    if isinstance(cause, app_commands.MissingPermissions):
        return "Only server administrators can use this command."
    if isinstance(cause, app_commands.CheckFailure):
        return "You can't use this command here."
    incident = uuid.uuid4().hex[:8]
    log.error("%s failed (incident %s)", what, incident, exc_info=cause)
    return f"Something went wrong on our side (incident {incident}); please try again."


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


async def post_result(
    bot: commands.Bot,
    interaction: discord.Interaction | None,
    channel_id: int,
    content: str,
    *,
    files: Sequence[tuple[Path, str]],
    smaller: Sequence[tuple[str, Sequence[tuple[Path, str]]]] = (),
    allowed_mentions: discord.AllowedMentions = NO_MENTIONS,
    view: discord.ui.View | None = None,
    reference: discord.MessageReference | None = None,
) -> discord.Message:
    """A follow-up while the interaction's token lives (``interaction`` given), else a plain
    channel message (a reply to ``reference``, when given): for work that outlived the token,
    was resumed after a restart, or announces a vote.

    ``files`` are (path, name on Discord) pairs, opened for each attempt: discord.py closes a
    message's files once it was sent, or failed to be. When Discord refuses them as over the
    server's upload limit (413, code 40005: it depends on the server's boosts), each of
    ``smaller`` is tried in turn: a line added to ``content`` saying what changed, and its
    files. If none fits, :class:`TooLargeToPost`.
    """
    attempts = [("", files), *smaller]
    for n, (note, names) in enumerate(attempts):
        text = f"{content}\n{note}" if note else content
        try:
            return await _post_once(
                bot, interaction, channel_id, text, names, allowed_mentions, view, reference
            )
        except discord.HTTPException as error:
            if error.status != 413:
                raise
            if n == len(attempts) - 1:
                raise TooLargeToPost(channel_id) from error
            log.info("Channel %s: files over the upload limit, trying smaller ones", channel_id)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _post_once(
    bot: commands.Bot,
    interaction: discord.Interaction | None,
    channel_id: int,
    content: str,
    files: Sequence[tuple[Path, str]],
    allowed_mentions: discord.AllowedMentions,
    view: discord.ui.View | None,
    reference: discord.MessageReference | None = None,
) -> discord.Message:
    def opened() -> list[discord.File]:
        return [discord.File(path, filename=name) for path, name in files]

    if interaction is not None:
        try:
            return await interaction.followup.send(
                content,
                files=opened(),
                wait=True,
                allowed_mentions=allowed_mentions,
                **({"view": view} if view is not None else {}),
            )
        except discord.HTTPException as error:
            # 401/50027: the token expired after all (its 15 minutes are counted from the
            # command, on Discord's clock); 10015: the interaction's webhook is gone.
            if error.status != 401 and error.code not in (10015, 50027):
                raise
            log.info(
                "Interaction %s can no longer follow up; posting in the channel", interaction.id
            )
    channel = bot.get_partial_messageable(channel_id)
    try:
        return await channel.send(
            content,
            files=opened(),
            allowed_mentions=allowed_mentions,
            **({"view": view} if view is not None else {}),
            **({"reference": reference} if reference is not None else {}),
        )
    except (discord.Forbidden, discord.NotFound) as error:
        raise CannotPost(channel_id, _refusal(error)) from error


def _refusal(error: discord.HTTPException) -> str:
    """What Discord's refusal means for the person who asked, in a few words."""
    if isinstance(error, discord.NotFound):
        return "the channel is gone"
    if error.code == 50001:
        return "I can no longer see the channel"
    return "I am missing a permission there"


CHOICES_LIMIT = 25  # Discord takes at most 25 autocomplete choices…
CHOICE_LIMIT = 100  # …each name and string value at most 100 characters, or none at all


def model_choices(current: str, offered: list[str] | None = None) -> list[app_commands.Choice[str]]:
    """Names (default: the registry's) containing what was typed so far, within Discord's
    limits: one choice too long and Discord refuses the whole list. A name over 100 characters
    (an operator's folder can have one) can't be a choice's value, so it is left out; it can
    still be typed in full."""
    names = [
        name
        for name in offered or list_models()
        if current.lower() in name.lower() and len(name) <= CHOICE_LIMIT
    ]
    return [app_commands.Choice(name=name, value=name) for name in names[:CHOICES_LIMIT]]
