"""``/queue`` end to end: the real bot against the fake Discord, with two people's covers held
in the queue (bot/cogs/queue.py, bot/app/queue_view.py)."""

from __future__ import annotations

from tests.fakes.discord import FakeDiscord, FakeUser, Interaction
from tests.fakes.harness import bot_settings, cover_post, gated_runner, running_bot

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")


async def ask_queue(discord: FakeDiscord, user: FakeUser) -> Interaction:
    asked = await discord.slash(user, "queue")
    await discord.wait_for(lambda: asked.original is not None)
    return asked


async def test_queue_shows_your_own_covers_first_and_others_only_as_counts(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    # One image per pipeline call, so that held jobs wait one behind the other.
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, queue_max_batch=1)
    held = gated_runner(cache_dir)
    async with running_bot(settings, discord, runner=held) as bot:
        command = next(c for c in discord.commands if c["name"] == "queue")
        assert command["description"].startswith("See where your covers are")

        empty = await ask_queue(discord, ALICE)
        assert empty.original.content.startswith("Nothing is waiting or running")

        # Each request reaches the queue before the next is made, so the order is known:
        # Alice's first runs (held), Bob's waits first in line, Alice's second behind it.
        covers = []
        for user, count, queued in ((ALICE, 1, (1, 0)), (BOB, 2, (1, 1)), (ALICE, 1, (1, 2))):
            covers.append(await discord.slash(user, "cover", playlist=playlist_link, count=count))
            await discord.wait_for(
                lambda q=queued: (len(bot.queue.running), bot.queue.pending_count) == q, timeout=60
            )

        mine = await ask_queue(discord, ALICE)
        assert mine.response_type == 4 and mine.original.ephemeral  # only Alice sees it
        lines = mine.original.content.splitlines()
        assert lines[0] == "**Your requests**"
        assert lines[1].startswith("• running for ") and "`embedded`, 1 candidate;" in lines[1]
        assert lines[2].startswith("• #2 in line, waiting ")
        # Nothing has finished yet: nothing to estimate from.
        assert lines[1].endswith("no estimate yet") and lines[2].endswith("no estimate yet")
        assert lines[3] == "**Everyone else:** 1 waiting, 0 running."
        assert "bob" not in mine.original.content and str(BOB.id) not in mine.original.content

        theirs = await ask_queue(discord, BOB)
        lines = theirs.original.content.splitlines()
        assert lines[1].startswith("• #1 in line") and "2 candidates" in lines[1]
        assert lines[2] == "**Everyone else:** 1 waiting, 1 running."
        assert len(lines) == 3

        # Once covers have finished, the same preset gets an estimate from their times.
        held.gate.set()
        for cover in covers:
            await cover_post(discord, cover)
        held.gate.clear()
        waiting = []
        for user, queued in ((ALICE, (1, 0)), (BOB, (1, 1))):
            waiting.append(await discord.slash(user, "cover", playlist=playlist_link, count=1))
            await discord.wait_for(
                lambda q=queued: (len(bot.queue.running), bot.queue.pending_count) == q, timeout=60
            )
        later = await ask_queue(discord, BOB)
        [line] = [x for x in later.original.content.splitlines() if x.startswith("• #1")]
        assert "; ready in about " in line
        assert bot.queue.snapshot().recent  # what it was estimated from
        held.gate.set()
        for cover in waiting:
            await cover_post(discord, cover)
    assert discord.refused == []  # every answer within what Discord takes
