"""``/benchmark``: administrators measure generation on the bot's own hardware.

It goes through the bot's own queue at low priority, so people's ``/cover`` jobs keep going
first and the numbers are what the bot really delivers (batching included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.helpers import TOKEN_LIFETIME_S, model_choices, post_result
from models.jobs import GenerationParams
from models.registry import resolve_model
from modeltools.benchmark import Workload, run_queue_benchmark, write_report

if TYPE_CHECKING:
    from bot.client import CoverBot

log = logging.getLogger(__name__)

BENCHMARK_PRIORITY = 1  # users' jobs are priority 0: they always go first


class BenchmarkCog(commands.Cog):
    def __init__(self, bot: CoverBot) -> None:
        self.bot = bot
        self._lock = asyncio.Lock()  # one benchmark at a time: two would measure each other

    @app_commands.command(name="benchmark")
    @app_commands.guild_only()
    @app_commands.default_permissions(administrator=True)  # hidden from others by Discord…
    @app_commands.checks.has_permissions(administrator=True)  # …and refused by the bot itself
    @app_commands.describe(model="Which model to measure (default: the bot's)")
    async def benchmark(self, interaction: discord.Interaction, model: str | None = None) -> None:
        """Measure image generation on this bot's hardware (administrators only)."""
        if self._lock.locked():
            await interaction.response.send_message(
                "A benchmark is already running; its results will be posted here.", ephemeral=True
            )
            return
        started = time.monotonic()
        await interaction.response.defer(thinking=True)
        async with self._lock:
            settings = self.bot.settings
            spec = resolve_model(model or settings.default_model)
            params = GenerationParams(
                model=spec.name,
                width=spec.native_size,
                height=spec.native_size,
                steps=settings.benchmark_steps or spec.steps,
                guidance=spec.guidance,
            )
            workloads = [Workload.concurrent(n) for n in settings.benchmark_requests]
            heading = (
                f"Benchmarking **{spec.name}** on `{self.bot.device}` "
                f"({', '.join(w.name for w in workloads)}); people's covers go first."
            )
            await interaction.edit_original_response(content=heading)
            edits: list[asyncio.Task[object]] = []

            def show(stage: str) -> None:
                edits.append(
                    asyncio.create_task(
                        interaction.edit_original_response(content=f"{heading}\nNow: {stage}.")
                    )
                )

            report = await run_queue_benchmark(
                self.bot.queue,
                params,
                device=self.bot.device,
                workloads=workloads,
                priority=BENCHMARK_PRIORITY,
                progress=show,
                stages=True,  # one more cover, stage by stage: the table shows where time goes
            )
            await asyncio.gather(*edits, return_exceptions=True)  # a failed edit is no matter
            json_path, chart_path = await asyncio.to_thread(
                write_report, report, settings.output_dir / "benchmarks"
            )
        log.info("Benchmark by %s written to %s", interaction.user.id, json_path)
        content = f"```\n{report.table()}\n```"
        files = [(chart_path, "benchmark.png"), (json_path, "benchmark.json")]
        late = time.monotonic() - started >= TOKEN_LIFETIME_S
        await post_result(
            self.bot, None if late else interaction, interaction.channel_id, content, files=files
        )

    @benchmark.autocomplete("model")
    async def _model_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return model_choices(current)


async def setup(bot: CoverBot) -> None:
    await bot.add_cog(BenchmarkCog(bot))
