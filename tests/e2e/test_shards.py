"""Two shard processes of one bot (``run --shard-ids 0 --shard-count 2`` and ``--shard-ids 1``)
as two real bots in this process, on one PostgreSQL database (tests/postgres.py) and one fake
Discord with a server on each shard: each connects its shard only, serves only its servers'
commands, counts their votes into the shared database, keeps one cooldown per person across
both, and at its start reads back only its own servers' open votes.

The same with real processes, one killed mid-queue: tests/e2e/test_shard_kill.py."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from bot.app.shards import shard_of
from bot.client import ShardedCoverBot
from models.runner import DiffusersRunner
from tests.fakes.discord import FakeDiscord, FakeUser
from tests.fakes.harness import bot_settings, cover_post, running_bot
from tests.fakes.spotify.models import Reply

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")
CAROL = FakeUser(1003, "carol")


def servers_on_both_shards(discord: FakeDiscord) -> dict[int, tuple[int, int]]:
    """Shard → (guild, channel): the fake's first guild, and one added on the other shard."""
    first = shard_of(discord.guild_id, 2)
    return {
        first: (discord.guild_id, discord.channel_id),
        1 - first: discord.add_guild(shard=1 - first, shard_count=2),
    }


class SharedRunner:
    """One tiny pipeline for both bots of this process, one call at a time (two loading at once
    in one process would race in accelerate's process-wide empty-weights patch; two real
    processes each have their own: tests/e2e/test_shard_kill.py)."""

    def __init__(self, cache_dir: Path) -> None:
        self.inner = DiffusersRunner(device="cpu", cache_dir=cache_dir)
        self.device = self.inner.device
        self._lock = threading.Lock()

    def __call__(self, params, specs, control):
        with self._lock:
            return self.inner(params, specs, control)


def shard_settings(
    discord: FakeDiscord, spotify: Any, tmp: Path, cache_dir: Path, url: str, shard: int, **more
):
    return bot_settings(
        discord,
        spotify,
        tmp / f"shard-{shard}",
        cache_dir,
        db_url=url,
        shard_ids=(shard,),
        shard_count=2,
        **more,
    )


async def test_two_shard_processes_share_one_database_and_serve_their_own_servers(
    discord, fake_spotify, playlist_link, postgres_url, tmp_path, cache_dir, embedded_model_dir
):
    servers = servers_on_both_shards(discord)
    settings = [
        shard_settings(
            discord, fake_spotify, tmp_path, cache_dir, postgres_url, n, cooldown_s=600.0
        )
        for n in (0, 1)
    ]
    runner = SharedRunner(cache_dir)
    async with (
        running_bot(settings[0], discord, runner=runner) as zero,
        running_bot(settings[1], discord, runner=runner) as one,
    ):
        bots = [zero, one]
        assert all(isinstance(bot, ShardedCoverBot) for bot in bots)
        assert discord.connected_shards() == [(0, 2), (1, 2)]
        for n, bot in enumerate(bots):
            assert [g.id for g in bot.guilds] == [servers[n][0]]
        asked = [
            await discord.slash(
                ALICE if n == 0 else BOB,
                "cover",
                channel_id=servers[n][1],
                playlist=playlist_link,
                count=2,
            )
            for n in (0, 1)
        ]
        posts = [await cover_post(discord, interaction) for interaction in asked]
        for n, (post, interaction) in enumerate(zip(posts, asked, strict=True)):
            assert post.channel_id == servers[n][1]
            assert interaction.acked_at - interaction.sent_at < 3.0
            row = bots[n].storage.request(bots[n].votes.open_votes()[0].request_id)
            assert row.guild_id == str(servers[n][0])
        # Votes on both shards land in the one database, whichever process counted them.
        await discord.react(CAROL, posts[0].id, "2️⃣")
        await discord.react(CAROL, posts[1].id, "1️⃣")
        await discord.wait_for(
            lambda: (
                zero.storage.tally(str(posts[1].id)) == {1: 1, 2: 0}
                and one.storage.tally(str(posts[0].id)) == {1: 0, 2: 1}
            )
        )
        assert [[m.message_id for m in bot.votes.open_votes()] for bot in bots] == [
            [str(posts[0].id)],
            [str(posts[1].id)],
        ]
        # One cooldown per person across both: ALICE's request on shard 0 holds her on shard 1.
        again = await discord.slash(
            ALICE, "cover", channel_id=servers[1][1], playlist=playlist_link, count=1
        )
        await discord.wait_for(lambda: again.original and again.original.edits)
        assert "try again in" in again.original.edits[0]

    # Both stopped: people react meanwhile (Discord keeps no events for a bot that is away).
    await discord.react(ALICE, posts[0].id, "1️⃣")
    await discord.react(ALICE, posts[1].id, "2️⃣")
    before = len(discord.exchanges)
    async with running_bot(settings[1], discord, runner=runner) as one:
        await discord.wait_for(lambda: one.storage.vote_of(str(posts[1].id), str(ALICE.id)) == 2)
        read = {e.path for e in discord.exchanges[before:] if e.method == "GET"}
        assert any(str(posts[1].id) in path for path in read)
        # Shard 0's vote is shard 0's process's to read back: this one left it alone.
        assert not any(str(posts[0].id) in path for path in read)
        assert one.storage.vote_of(str(posts[0].id), str(ALICE.id)) is None
    async with running_bot(settings[0], discord, runner=runner) as zero:
        await discord.wait_for(lambda: zero.storage.vote_of(str(posts[0].id), str(ALICE.id)) == 1)


async def test_one_person_asking_on_both_shards_at_once_gets_one_request(
    discord, fake_spotify, playlist_link, postgres_url, tmp_path, cache_dir, embedded_model_dir
):
    """The cooldown holds across processes even for two requests at the same moment: while
    shard 0's process reads the playlist (held 1.5 s by Spotify), the same person's request on
    shard 1 is refused by the database's claim, not let through because no row exists yet."""
    servers = servers_on_both_shards(discord)
    settings = [
        shard_settings(
            discord, fake_spotify, tmp_path, cache_dir, postgres_url, n, cooldown_s=600.0
        )
        for n in (0, 1)
    ]
    playlist = re.search(r"playlist/(\w+)", playlist_link).group(1)
    runner = SharedRunner(cache_dir)
    async with (
        running_bot(settings[0], discord, runner=runner) as zero,
        running_bot(settings[1], discord, runner=runner),
    ):
        fake_spotify.script(f"/v1/playlists/{playlist}", Reply(200, delay_s=1.5))
        first = await discord.slash(
            ALICE, "cover", channel_id=servers[0][1], playlist=playlist_link, count=1
        )
        await discord.wait_for(lambda: fake_spotify.requests_to(f"/v1/playlists/{playlist}"))
        second = await discord.slash(
            ALICE, "cover", channel_id=servers[1][1], playlist=playlist_link, count=1
        )
        await discord.wait_for(lambda: second.original and second.original.edits)
        assert "try again in" in second.original.edits[0]
        await cover_post(discord, first)
        assert (
            len(zero.storage.unfinished_requests("discord"))
            + sum(1 for m in zero.storage.open_cover_messages())
            == 1
        )
