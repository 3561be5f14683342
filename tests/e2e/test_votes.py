"""The vote rule apart from Discord, then what it does against the fake Discord (the rest of the
end-to-end vote flow is in test_discord.py and test_discord_faults.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.app.votes import pick_winner
from bot.cogs.votes import _choice
from tests.fakes.discord import FakeDiscord, FakeUser, Message
from tests.fakes.harness import bot_settings, cover_post, running_bot


@pytest.mark.parametrize(
    ("tally", "winner"),
    [
        ({1: 0, 2: 3, 3: 1, 4: 0}, 2),
        ({1: 2, 2: 2, 3: 0, 4: 0}, 1),  # a tie goes to the lower number
        ({1: 0, 2: 0, 3: 4, 4: 4}, 3),
        ({1: 0, 2: 0}, None),  # nobody voted
        ({}, None),
    ],
)
def test_pick_winner(tally, winner):
    assert pick_winner(tally) == winner


def test_only_the_offered_numbers_count():
    assert _choice("2️⃣", 4) == 2
    assert _choice("4️⃣", 3) is None  # three candidates: 4️⃣ is not a ballot
    assert _choice("👍", 4) is None
    assert _choice("✅", 4) is None


# -- against the fake Discord -------------------------------------------------------------------

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")
CAROL = FakeUser(1003, "carol")


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def announcement(discord: FakeDiscord, post: Message) -> Message | None:
    """The message announcing the outcome of ``post``'s vote (it replies to the post)."""
    return next((m for m in discord.channel_messages() if m.reference_id == post.id), None)


@pytest.mark.parametrize("taken_back", ["super", "normal"])
async def test_taking_back_one_of_two_kinds_of_the_same_number_keeps_the_vote(
    discord,
    fake_spotify,
    playlist_link,
    tmp_path,
    cache_dir,
    embedded_model_dir,
    caplog,
    taken_back,
):
    """A person who shows 2️⃣ both as a normal and as a super reaction still shows 2️⃣ after
    taking one of them back: their vote stands until both are gone."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        )
        await discord.react(BOB, post.id, "2️⃣")
        await discord.react(BOB, post.id, "2️⃣", super_=True)
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 0, 2: 1})
        first, last = (True, False) if taken_back == "super" else (False, True)
        await discord.unreact(BOB, post.id, "2️⃣", super_=first)
        # A vote after it, to wait on: votes are handled in turn, under the cog's lock.
        await discord.react(CAROL, post.id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.vote_of(str(post.id), str(CAROL.id)) == 1)
        assert bot.storage.vote_of(str(post.id), str(BOB.id)) == 2
        await discord.unreact(BOB, post.id, "2️⃣", super_=last)
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 1, 2: 0})
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(
    ("limit", "files", "note"),
    [
        ("the JPEG fits", ["winner-2-spotify.jpg"], "refused the PNG: the Spotify JPEG only"),
        ("nothing fits", [], "refused the images: they stay on the bot's disk"),
    ],
)
async def test_a_winner_over_the_servers_upload_limit_is_announced_smaller(
    discord,
    fake_spotify,
    playlist_link,
    tmp_path,
    cache_dir,
    embedded_model_dir,
    caplog,
    limit,
    files,
    note,
):
    """The announcement carries the winner's PNG and JPEG; a server whose upload limit
    refuses them (413) gets the JPEG alone, or no file and a sentence: never no announcement."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        post = await cover_post(discord, interaction)
        await discord.react(BOB, post.id, "2️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(post.id))[2] == 1)
        message = bot.storage.cover_message(str(post.id))
        winner = bot.storage.candidate(message.request_id, 2)
        jpeg, png = Path(winner.jpeg_path).stat().st_size, Path(winner.png_path).stat().st_size
        assert jpeg < png
        # Lowered after the post went up (a boost ran out): per file, as Discord counts.
        discord.upload_limit = jpeg if limit == "the JPEG fits" else 1000
        await discord.react(ALICE, post.id, "✅")
        result = await discord.wait_for(lambda: announcement(discord, post), timeout=30)
        assert result.content.startswith("Cover 2️⃣ wins with 1 vote (closed by the requester)")
        assert note in result.content
        assert [a.filename for a in result.attachments] == files
        assert bot.storage.cover_message(str(post.id)).winner == 2
    assert tracebacks(caplog) == []
