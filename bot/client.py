"""The Discord face: the bot object and where it connects.

The application (queue, services, storage) is built by :func:`bot.app.wiring.build_app` and
handed in, so tests run the real bot against a local fake Discord with a tiny pipeline, and
``python -m bot run`` runs it against Discord. Everything the bot does is in its cogs, loaded
by name (:data:`COGS`): errors become replies in one of them (:mod:`bot.cogs.errors`), and what
they share is in :mod:`bot.cogs.helpers`. This module imports none of them, so the cogs may
name :class:`CoverBot` for their types.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.app.settings import Settings
from bot.app.wiring import App, build_app
from models.jobs import Runner

log = logging.getLogger(__name__)

WARM_UP_PRIORITY = 2  # after people (0) and /benchmark (1)


COGS = (
    "bot.cogs.errors",
    "bot.cogs.cover",
    "bot.cogs.controls",
    "bot.cogs.votes",
    "bot.cogs.benchmark",
    "bot.cogs.spotify",
    "bot.cogs.community",
    "bot.cogs.settings",
    "bot.cogs.queue",
)


def build_bot(
    settings: Settings, *, runner: Runner | Sequence[Runner] | None = None, **options: Any
) -> CoverBot:
    """The bot with the application :func:`~bot.app.wiring.build_app` wires from ``settings``,
    pointed where they say. ``runner`` defaults to what the settings describe (released when
    the bot closes); tests may pass their own runner or runners.

    With a shard layout (``COVER_SHARD_IDS``/``COVER_SHARD_COUNT``, ``run --shard-ids``) it is
    a :class:`ShardedCoverBot` connecting those shards only; without one, one connection for
    every server, as a bot below Discord's sharding threshold needs."""
    app = build_app(settings, runner=runner)
    point_discord_at(settings)
    if settings.shard_count is None:
        return CoverBot(app, **options)
    shards = settings.shards()
    return ShardedCoverBot(app, shard_ids=list(shards.ids), shard_count=shards.count, **options)


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
        app: App,
        **options: Any,
    ) -> None:
        if app.accounts is None:
            raise ValueError("the bot needs linked accounts: build its app with linked_accounts")
        intents = discord.Intents.default()
        intents.members = False  # would trigger member chunking; votes need only raw events
        intents.message_content = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),  # never ping anyone by default
            help_command=None,
            tree_cls=_Tree,
            **options,
        )
        self.command_tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        # The parts the cogs use, by name: bot.settings, bot.storage, bot.service, bot.votes…
        self.app = app
        self.settings = app.settings
        self.queue = app.queue
        self.storage = app.storage
        self.service = app.service
        self.votes = app.votes
        self.accounts = app.accounts
        self._released = False
        # What /benchmark and the log report: every worker's device.
        self.device = ", ".join(
            str(getattr(runner, "name", None) or getattr(runner, "device", app.settings.device))
            for runner in app.queue.runners
        )

    async def on_message(self, message: discord.Message) -> None:
        """Nothing: the bot has slash commands only. commands.Bot's default would read a message
        starting with a mention ("@bot hi") as the prefix command "hi" and log its
        CommandNotFound at ERROR (tests/e2e/test_gateway.py)."""

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
            "Connected as %s (id %s), %s; generating on %s with %r",
            self.user,
            self.user.id if self.user else "?",
            self.settings.shards().describe(),
            self.device,
            self.settings.default_model,
        )

    async def close(self) -> None:
        # The queue first, while Discord is still reachable: jobs it ends stay "queued" in the
        # database and the next start resumes them (see CoverCog.resume_unfinished).
        await self.queue.close(drain=False, timeout_s=30)
        if not self._released:
            self._released = True
            await asyncio.to_thread(self.app.release)  # ray.kill/shutdown block for a moment
        running = [
            t for t in self.command_tasks if not t.done() and t is not asyncio.current_task()
        ]
        if running:  # their replies ("restarting…") still need Discord
            await asyncio.wait(running, timeout=5)
        await super().close()  # unloads the cogs: the Spotify callback server stops there
        await self.accounts.close()
        self.storage.close()


class ShardedCoverBot(CoverBot, commands.AutoShardedBot):
    """The same bot as one of several shard processes (docs/deployment.md): discord.py's
    AutoShardedBot opens one gateway connection per shard in ``shard_ids`` (of
    ``shard_count``), and Discord sends each only its servers' events. The votes, jobs and
    cooldowns of every process meet in the shared database; what this process reads back,
    resumes and closes is only its own servers' (bot/app/shards.py)."""
