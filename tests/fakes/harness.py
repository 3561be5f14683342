"""Start the real bot (discord.py, the queue, SQLite, a tiny real pipeline) against the fakes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.app.settings import Settings
from bot.client import CoverBot, build_bot
from models.jobs import Runner
from models.runner import DiffusersRunner
from tests.fakes.discord import FakeDiscord, Interaction, Message
from tests.fakes.spotify import CLIENT_ID, CLIENT_SECRET, FakeSpotify


def bot_settings(
    discord: FakeDiscord, spotify: FakeSpotify | None, tmp: Path, cache_dir: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "discord_token": "fake-discord-token-do-not-print",
        "discord_api_base": discord.api_base,
        "discord_gateway_url": discord.gateway_url,
        "db_path": tmp / "bot.db",
        "output_dir": tmp / "covers",
        "cache_dir": cache_dir,
        "device": "cpu",
        "status_edit_interval_s": 0.0,
        "cooldown_s": 0.0,
        "spotify_max_wait_s": 2.0,
    }
    if spotify is not None:
        values |= {
            "spotify_client_id": CLIENT_ID,
            "spotify_client_secret": CLIENT_SECRET,
            "spotify_api_base": spotify.api_base,
            "spotify_token_url": spotify.token_url,
        }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_bot(
    settings: Settings, discord: FakeDiscord, *, runner: Runner | None = None, **options: Any
) -> AsyncIterator[CoverBot]:
    """The bot logged in, commands synced, gateway READY and its guild cached; closed (queue
    first) on exit. ``options`` go to discord.py's client (``heartbeat_timeout``, ``intents``)."""
    sessions = discord.identified
    bot = build_bot(settings, runner=runner, **({"guild_ready_timeout": 0.05} | options))
    task = asyncio.create_task(bot.start(settings.require_discord_token().get_secret_value()))
    try:
        await discord.wait_for(lambda: task.done() or discord.identified > sessions, timeout=60)
        if task.done():
            task.result()  # login failed: raise why
        async with asyncio.timeout(30):
            await bot.wait_until_ready()
        yield bot
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def cover_post(discord: FakeDiscord, interaction: Interaction) -> Message:
    """The follow-up carrying the candidates, once the bot has added its vote reactions."""

    def posted() -> Message | None:
        for message in discord.followups(interaction):
            if message.attachments and len(discord.bot_reactions(message.id)) == sum(
                a.filename.startswith("cover-") for a in message.attachments
            ):
                return message
        return None

    return await discord.wait_for(posted, timeout=60)


class GatedRunner:
    """The real tiny pipeline behind a gate the test opens, so jobs can be held in the queue.

    While closed it reports step 0 now and then, which is where the queue interrupts a run
    when it shuts down.
    """

    def __init__(self, inner: DiffusersRunner) -> None:
        self.inner = inner
        self.device = inner.device
        self.gate = threading.Event()
        self.calls: list[int] = []  # images per pipeline call, in order

    def __call__(self, params, specs, control):
        while not self.gate.wait(0.05):
            control.step(0, params.steps)
        self.calls.append(len(specs))
        return self.inner(params, specs, control)


def gated_runner(cache_dir: Path) -> GatedRunner:
    return GatedRunner(DiffusersRunner(device="cpu", cache_dir=cache_dir))
