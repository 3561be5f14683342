"""The fake Discord's gateway shards as Discord's does (tests/fakes/discord/gateway.py), seen
from a raw websocket and from discord.py's own AutoShardedClient: READY per shard with only its
guilds, each guild's events to its shard's connection only, 4010 for an invalid shard, 4011
when sharding is required, and ``GET /gateway/bot`` saying how many shards to run."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import discord as discordpy
import pytest

from bot.client import point_discord_at
from tests.fakes.discord import GUILD_MESSAGE_REACTIONS, GUILDS, FakeDiscord, FakeUser
from tests.fakes.harness import bot_settings

ALICE = FakeUser(1001, "alice")
INTENTS = GUILDS | GUILD_MESSAGE_REACTIONS


def shard_of(guild_id: int, count: int) -> int:
    return (guild_id >> 22) % count


class RawShard:
    """One gateway connection identified by hand: what it received, and how it closed."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.close_code: int | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.socket:
            if frame.type == aiohttp.WSMsgType.TEXT:
                message = json.loads(frame.data)
                if message["op"] == 0:
                    self.events.append((message["t"], message["d"]))
        self.close_code = self.socket.close_code

    def named(self, event: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == event]


async def identify(
    session: aiohttp.ClientSession, discord: FakeDiscord, shard: Any = None
) -> RawShard:
    socket = await session.ws_connect(discord.gateway_url)
    hello = await socket.receive_json()
    assert hello["op"] == 10
    data: dict[str, Any] = {"token": "t", "intents": INTENTS, "properties": {}}
    if shard is not None:
        data["shard"] = shard
    await socket.send_json({"op": 2, "d": data})
    return RawShard(socket)


async def test_each_shard_gets_its_own_guilds_and_only_their_events(discord):
    other = 1 - shard_of(discord.guild_id, 2)
    guild, channel = discord.add_guild(shard=other, shard_count=2)
    first, first_channel = discord.add_guild(shard=1 - other, shard_count=2)
    async with aiohttp.ClientSession() as session:
        shards = [await identify(session, discord, [n, 2]) for n in range(2)]
        await discord.wait_for(lambda: sum(len(s.named("GUILD_CREATE")) for s in shards) == 3)
        assert discord.connected_shards() == [(0, 2), (1, 2)]
        for n, shard in enumerate(shards):
            (ready,) = shard.named("READY")
            assert ready["shard"] == [n, 2]
            listed = {int(g["id"]) for g in ready["guilds"]}
            assert listed == {g for g in (discord.guild_id, guild, first) if shard_of(g, 2) == n}
            assert {int(g["id"]) for g in shard.named("GUILD_CREATE")} == listed
        await discord.slash(ALICE, "cover", channel_id=channel, playlist="x")
        await discord.slash(ALICE, "cover", channel_id=first_channel, playlist="y")
        await discord.slash(ALICE, "cover", playlist="z")  # the first guild's channel
        await discord.wait_for(lambda: sum(len(s.named("INTERACTION_CREATE")) for s in shards) == 3)
        for n, shard in enumerate(shards):
            for event in shard.named("INTERACTION_CREATE"):
                assert shard_of(int(event["guild_id"]), 2) == n
                assert discord.channel_guild[int(event["channel_id"])] == int(event["guild_id"])
        counts = [len(s.named("INTERACTION_CREATE")) for s in shards]
        assert counts[other] == 1 and counts[1 - other] == 2


@pytest.mark.parametrize("shard", [[2, 2], [0, 0], [-1, 2], [0], "0,1", [0.0, 2]])
async def test_an_invalid_shard_is_closed_4010(discord, shard):
    async with aiohttp.ClientSession() as session:
        raw = await identify(session, discord, shard)
        await asyncio.wait_for(raw._reader, 10)
    assert raw.close_code == 4010 and raw.events == []
    assert discord.identified == 0


async def test_a_bot_that_needs_sharding_is_closed_4011_until_it_shards(discord):
    discord.max_guilds_per_shard = 1
    discord.add_guild(shard=1 - shard_of(discord.guild_id, 2), shard_count=2)
    async with aiohttp.ClientSession() as session:
        raw = await identify(session, discord)  # unsharded: 2 guilds on one connection
        await asyncio.wait_for(raw._reader, 10)
        assert raw.close_code == 4011
        async with session.get(f"{discord.api_base}/gateway/bot") as answer:
            advice = await answer.json()
        assert advice["shards"] == 2
        assert advice["url"] == discord.gateway_url
        assert advice["session_start_limit"]["max_concurrency"] == 1
        assert advice["session_start_limit"]["remaining"] == 1000
        sharded = [await identify(session, discord, [n, 2]) for n in range(2)]
        await discord.wait_for(lambda: all(s.named("READY") for s in sharded))
    assert discord.identified == 2


async def test_discord_py_shards_as_gateway_bot_advises(discord, tmp_path, cache_dir):
    """discord.py's AutoShardedClient without a shard count asks ``GET /gateway/bot`` and runs
    that many shards, one connection each; each guild lands in its shard's cache."""
    discord.max_guilds_per_shard = 1
    guild, _ = discord.add_guild(shard=1 - shard_of(discord.guild_id, 2), shard_count=2)
    point_discord_at(bot_settings(discord, None, tmp_path, cache_dir))

    class Client(discordpy.AutoShardedClient):
        async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False):
            pass  # max_concurrency is the fake's business; no 5 s wait between the two

    client = Client(intents=discordpy.Intents.default())
    task = asyncio.create_task(client.start("fake-token"))
    try:
        await discord.wait_for(lambda: task.done() or discord.identified == 2, timeout=30)
        async with asyncio.timeout(30):
            await client.wait_until_ready()
        assert client.shard_count == 2
        assert discord.connected_shards() == [(0, 2), (1, 2)]
        for guild_id in (discord.guild_id, guild):
            cached = client.get_guild(guild_id)
            assert cached is not None and cached.shard_id == shard_of(guild_id, 2)
        assert "GET /gateway/bot: 200" in [
            f"{e.method} {e.path}: {e.status}" for e in discord.exchanges
        ]
    finally:
        await client.close()
        await asyncio.wait_for(task, 10)


async def test_run_says_to_shard_when_discord_requires_it(
    discord, tmp_path, cache_dir, monkeypatch, capsys
):
    """An unsharded bot in too many servers: Discord closes its connection with 4011, and
    ``python -m bot run`` says so in one line, with the shard count Discord advises."""
    from bot.__main__ import main

    discord.max_guilds_per_shard = 1
    discord.add_guild(shard=1 - shard_of(discord.guild_id, 2), shard_count=2)
    monkeypatch.chdir(tmp_path)  # no .env
    for name, value in {
        "DISCORD_TOKEN": "fake-discord-token-do-not-print",
        "COVER_DISCORD_API_BASE": discord.api_base,
        "COVER_DISCORD_GATEWAY_URL": discord.gateway_url,
        "COVER_DB_PATH": str(tmp_path / "bot.db"),
        "COVER_OUTPUT_DIR": str(tmp_path / "covers"),
        "COVER_CACHE_DIR": str(cache_dir),
        "COVER_DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("COVER_SHARD_IDS", "COVER_SHARD_COUNT", "COVER_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    assert await asyncio.wait_for(asyncio.to_thread(main, ["run"]), 120) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Discord requires sharding"), err
    assert "--shard-count 2 (what Discord advises now)" in err
    assert "Traceback" not in err and "do-not-print" not in err
    assert discord.refused[-1] == "IDENTIFY shard [0, 1]: 4011"
