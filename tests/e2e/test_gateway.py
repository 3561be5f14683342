"""End to end: the bot's gateway connection started, moved and lost the way Discord does it.

The real discord.py bot runs against :class:`tests.fakes.discord.FakeDiscord`: READY lists the
guild as unavailable and GUILD_CREATE fills discord.py's cache; only the events of the intents
the bot asked for arrive; op 7 makes it reconnect and resume, with what happened in between
replayed; a connection whose heartbeat is late is closed, and one that goes quiet is noticed by
the bot; a purge arrives as one MESSAGE_DELETE_BULK.
"""

from __future__ import annotations

import asyncio
import logging
import time

import discord as discordpy
import pytest
from discord.ext import commands

from bot.client import point_discord_at
from tests.fakes.discord import (
    GUILD_MESSAGE_REACTIONS,
    GUILD_MESSAGES,
    GUILDS,
    MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    FakeUser,
)
from tests.fakes.harness import bot_settings, cover_post, running_bot

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def watch_messages(bot: discordpy.Client) -> list[discordpy.Message]:
    """The messages the bot is told of (on_message), in order."""
    seen: list[discordpy.Message] = []

    async def on_message(message: discordpy.Message) -> None:
        seen.append(message)

    if isinstance(bot, commands.Bot):
        bot.add_listener(on_message)
    else:
        bot.event(on_message)
    return seen


async def test_the_guild_arrives_after_ready_and_fills_the_cache(
    discord, tmp_path, cache_dir, caplog
):
    settings = bot_settings(discord, None, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        assert discord.sent[:2] == ["READY", "GUILD_CREATE"]
        guild = bot.get_guild(discord.guild_id)
        assert guild is not None and not guild.unavailable
        channel = bot.get_channel(discord.channel_id)
        assert channel is not None and channel.name == "covers" and channel.guild == guild
        # Only the bot's own member comes without the GUILD_MEMBERS intent, with its role.
        assert guild.me is not None and guild.me.id == discord.bot_user.id
        assert channel.permissions_for(guild.me).attach_files
        assert guild.member_count == len(discord.users)
    assert tracebacks(caplog) == []


async def test_only_the_events_of_the_intents_asked_for_arrive(
    discord, tmp_path, cache_dir, caplog
):
    settings = bot_settings(discord, None, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        asked = discord.intents
        assert asked & (GUILDS | GUILD_MESSAGES | GUILD_MESSAGE_REACTIONS) == (
            GUILDS | GUILD_MESSAGES | GUILD_MESSAGE_REACTIONS
        )
        assert asked & PRIVILEGED_INTENTS == 0  # bot/client.py asks for none of them
        seen = watch_messages(bot)
        await discord.go_online(BOB)  # presences need GUILD_PRESENCES: not sent
        await discord.say(BOB, "what a playlist")  # content needs MESSAGE_CONTENT: withheld
        mention = await discord.say(BOB, f"<@{discord.bot_user.id}>")
        await discord.wait_for(lambda: len(seen) == 2, timeout=10)
        assert seen[0].content == ""
        assert seen[1].content == mention.content  # one that mentions the bot keeps it
        assert "PRESENCE_UPDATE" not in discord.sent
    assert tracebacks(caplog) == []


async def test_a_message_that_mentions_the_bot_is_not_taken_for_a_command(
    discord, tmp_path, cache_dir, caplog
):
    # Messages that mention the bot carry their content even without MESSAGE_CONTENT; the bot's
    # mention is its command prefix, but it has no prefix commands to find.
    settings = bot_settings(discord, None, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        seen = watch_messages(bot)
        await discord.say(BOB, f"<@{discord.bot_user.id}> hi, can you make me a cover?")
        await discord.wait_for(lambda: len(seen) == 1, timeout=10)
        await asyncio.sleep(0.2)  # what the bot does with it runs after the listeners
    assert tracebacks(caplog) == []


async def test_privileged_intents_must_be_switched_on(discord, tmp_path, cache_dir):
    """A client asking for MESSAGE_CONTENT where the application has not got it is closed with
    4014, which discord.py reports as PrivilegedIntentsRequired."""
    point_discord_at(bot_settings(discord, None, tmp_path, cache_dir))
    intents = discordpy.Intents.default()
    intents.message_content = True
    client = discordpy.Client(intents=intents)
    try:
        with pytest.raises(discordpy.PrivilegedIntentsRequired):
            async with asyncio.timeout(30):
                await client.start("fake-discord-token-do-not-print")
    finally:
        await client.close()
    assert discord.identified == 0

    discord.privileged_intents = MESSAGE_CONTENT  # switched on in the developer portal
    client = discordpy.Client(intents=intents)
    task = asyncio.create_task(client.start("fake-discord-token-do-not-print"))
    try:
        await discord.wait_for(lambda: task.done() or discord.connected, timeout=30)
        async with asyncio.timeout(30):
            await client.wait_until_ready()
        assert discord.intents is not None and discord.intents & MESSAGE_CONTENT
        seen = watch_messages(client)
        await discord.say(BOB, "what a playlist")
        await discord.wait_for(lambda: seen, timeout=10)
        assert seen[0].content == "what a playlist"
    finally:
        await client.close()
        await task


async def test_a_reconnect_request_resumes_and_replays_the_votes_of_the_gap(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        )
        async with discord.reconnecting():  # op 7: the bot drops the connection and comes back
            await discord.wait_for(lambda: not discord.connected, timeout=10)
            await discord.react(BOB, post.id, "2️⃣")  # cast while it is away
            assert bot.storage.tally(str(post.id)) == {1: 0, 2: 0}
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 0, 2: 1})
        assert (discord.resumed, discord.identified) == (1, 1)  # resumed, not a new READY
        await discord.react(ALICE, post.id, "1️⃣")  # and live events count again
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 1, 2: 1})
    assert tracebacks(caplog) == []


async def test_a_missed_heartbeat_closes_the_connection_and_the_bot_starts_anew(
    discord, tmp_path, cache_dir, caplog
):
    discord.heartbeat_interval_s, discord.heartbeat_grace_s = 0.5, 1.0
    settings = bot_settings(discord, None, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        await asyncio.sleep(1.5)  # heartbeats on time: the connection stays
        assert (discord.timed_out, discord.identified) == (0, 1)
        time.sleep(3.0)  # a bot that blocks its event loop misses its heartbeats
        await discord.wait_for(lambda: discord.timed_out == 1, timeout=10)
        # 4009 Session timed out: the resume is refused and the bot identifies again.
        await discord.wait_for(lambda: discord.identified == 2 and discord.connected, timeout=30)
        assert discord.resumed == 0
        seen = watch_messages(bot)
        await discord.say(BOB, "still there?")
        await discord.wait_for(lambda: seen, timeout=10)
    assert tracebacks(caplog) == []


async def test_a_connection_that_goes_quiet_is_dropped_by_the_bot_and_resumed(
    discord, tmp_path, cache_dir, caplog
):
    discord.heartbeat_interval_s = 0.5
    settings = bot_settings(discord, None, tmp_path, cache_dir)
    async with running_bot(settings, discord, heartbeat_timeout=2.0) as bot:
        seen = watch_messages(bot)
        async with discord.unresponsive():  # no heartbeat ACKs, no events: a zombie
            sent = await discord.say(BOB, "said while the line was dead")
            await discord.wait_for(lambda: discord.resumed == 1, timeout=15)
        await discord.wait_for(lambda: seen, timeout=10)
        assert [m.id for m in seen] == [sent.id]  # replayed on the resume, once
        assert discord.identified == 1
    assert tracebacks(caplog) == []


async def test_a_purge_closes_the_vote_of_a_cover_post_it_takes(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        chatter = await discord.say(BOB, "spam")
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        )
        await discord.react(BOB, post.id, "2️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(post.id))[2] == 1)
        await discord.delete_messages(chatter.id, post.id)
        row = await discord.wait_for(
            lambda: (r := bot.storage.cover_message(str(post.id))).status == "closed" and r
        )
        assert (row.winner, row.close_reason) == (None, "deleted")
        assert "MESSAGE_DELETE_BULK" in discord.sent and "MESSAGE_DELETE" not in discord.sent
    assert tracebacks(caplog) == []
