"""The Discord face: the bot object, where it connects, and the one place errors become replies.

The generation side (queue, service, storage) is built by the caller and handed in, so tests
run the real bot against a local fake Discord with a tiny pipeline, and ``python -m bot run``
runs it against Discord.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.app.accounts import SpotifyAccounts
from bot.app.cover import CoverService
from bot.app.errors import CannotPost, TooLargeToPost
from bot.app.prompts import MAX_CANDIDATES
from bot.app.runners import build_runners
from bot.app.settings import Settings
from bot.app.storage import Storage
from models.errors import CoverError
from models.jobs import Runner
from models.queue import GenerationQueue
from models.registry import list_models

log = logging.getLogger(__name__)

# The vote reactions, one per candidate: keycap digits 1️⃣ 2️⃣ 3️⃣ 4️⃣ (digit, VS16, U+20E3).
NUMBER_EMOJI = tuple(f"{n}\ufe0f\u20e3" for n in range(1, MAX_CANDIDATES + 1))
CLOSE_EMOJI = "✅"  # the requester closes the vote with it
NO_MENTIONS = discord.AllowedMentions.none()  # messages quote user text: never ping anyone
# An interaction token lives 15 minutes; after 14 results go out with the bot's own token.
TOKEN_LIFETIME_S = 14 * 60
WARM_UP_PRIORITY = 2  # after people (0) and /benchmark (1)


COGS = (
    "bot.cogs.cover",
    "bot.cogs.controls",
    "bot.cogs.votes",
    "bot.cogs.benchmark",
    "bot.cogs.spotify",
    "bot.cogs.community",
    "bot.cogs.queue",
)


def build_bot(
    settings: Settings, *, runner: Runner | Sequence[Runner] | None = None, **options: Any
) -> CoverBot:
    """The bot with its queue, storage and cover service, pointed where ``settings`` say.

    ``runner`` defaults to what the settings describe: diffusers on every local device
    (``COVER_DEVICES``) and on Ray workers (``COVER_RAY_ADDRESS``), released when the bot
    closes; tests may pass their own runner or runners.
    """
    release: Callable[[], None] | None = None
    if runner is None:
        runner, release = build_runners(settings)
    queue = GenerationQueue(
        runner,
        max_pending=settings.queue_max_pending,
        max_per_user=settings.queue_max_per_user,
        max_batch=settings.queue_max_batch,
        job_timeout_s=settings.job_timeout_s,
    )
    storage = Storage(settings.db_path, busy_timeout_s=settings.db_busy_timeout_s)
    accounts = SpotifyAccounts(settings, storage)
    service = CoverService(settings, queue, storage, accounts=accounts)
    point_discord_at(settings)
    return CoverBot(
        settings, queue, storage, service, accounts=accounts, release=release, **options
    )


def point_discord_at(settings: Settings) -> None:
    """Send REST calls and the gateway connection where the settings say.

    discord.py reads both from class attributes at each request (see docs/facts.md), so
    this is process-wide: one bot per process.
    """
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class _Tree(app_commands.CommandTree):
    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        # Remember the task running each command (and, after it, its error handler) so that
        # shutting down can let their last replies out before the HTTP session closes.
        task = asyncio.current_task()
        if task is not None:
            self.client.command_tasks.add(task)
        return True


class CoverBot(commands.Bot):
    """A bot with the cover, vote, benchmark and Spotify cogs, sharing one generation queue.

    ``options`` go to :class:`discord.ext.commands.Bot` (tests shorten ``guild_ready_timeout``).
    """

    def __init__(
        self,
        settings: Settings,
        queue: GenerationQueue,
        storage: Storage,
        service: CoverService,
        *,
        accounts: SpotifyAccounts,
        release: Callable[[], None] | None = None,
        **options: Any,
    ) -> None:
        intents = discord.Intents.default()
        intents.members = False  # would trigger member chunking; votes need only raw events
        intents.message_content = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            help_command=None,
            tree_cls=_Tree,
            **options,
        )
        self.command_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.settings = settings
        self.queue = queue
        self.storage = storage
        self.service = service
        self.accounts = accounts
        self._release = release  # stops the runners' Ray actors, if any (bot/app/cover.py)
        # What /benchmark and the log report: every worker's device.
        self.device = ", ".join(
            str(getattr(runner, "name", None) or getattr(runner, "device", settings.device))
            for runner in queue.runners
        )
        self.tree.on_error = self.on_app_command_error

    async def setup_hook(self) -> None:
        await self.queue.start()
        for extension in COGS:
            await self.load_extension(extension)
        guild = self.settings.discord_guild_id
        if guild is not None:
            target = discord.Object(id=guild)
            self.tree.copy_global_to(guild=target)
            await self.tree.sync(guild=target)
        else:
            await self.tree.sync()
        self._warming = asyncio.create_task(self.service.warm_up(WARM_UP_PRIORITY))

    async def on_ready(self) -> None:
        log.info(
            "Connected as %s (id %s); generating on %s with %r",
            self.user,
            self.user.id if self.user else "?",
            self.device,
            self.settings.default_model,
        )

    async def close(self) -> None:
        # The queue first, while Discord is still reachable: jobs it ends stay "queued" in the
        # database and the next start resumes them (see CoverCog.resume_unfinished).
        await self.queue.close(drain=False, timeout_s=30)
        if self._release is not None:
            release, self._release = self._release, None
            await asyncio.to_thread(release)  # ray.kill/shutdown block for a moment
        running = [
            t for t in self.command_tasks if not t.done() and t is not asyncio.current_task()
        ]
        if running:  # their replies ("restarting…") still need Discord
            await asyncio.wait(running, timeout=5)
        await super().close()  # unloads the cogs: the Spotify callback server stops there
        await self.accounts.close()
        self.storage.close()

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Every slash-command error ends here (button presses too, through
        :func:`error_text`): a plain sentence for what users can fix, an incident id (and a
        logged traceback) for our bugs."""
        text = error_text(error, f"Command {_command_name(interaction)}")
        await reply(interaction, text, ephemeral=True)


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
) -> discord.Message:
    """A follow-up while the interaction's token lives (``interaction`` given), else a plain
    channel message: for work that outlived the token, or was resumed after a restart.

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
                bot, interaction, channel_id, text, names, allowed_mentions, view
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


def _command_name(interaction: discord.Interaction) -> str:
    return interaction.command.qualified_name if interaction.command else "?"
