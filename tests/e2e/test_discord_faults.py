"""End to end under Discord's failure modes: votes cast while the bot was away, deleted posts and
channels, permissions taken away, rate limits and an interaction token that ran out.

The real discord.py bot runs against :class:`tests.fakes.discord.FakeDiscord`, which fails the
way Discord does (its docstring lists how); each test checks both what people see and what the
database recorded, and that nothing was logged as a traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import aiohttp
import pytest

from bot.app.settings import Settings
from bot.app.storage import Storage
from tests.fakes import discord_schema
from tests.fakes.discord import (
    ADD_REACTIONS,
    SEND_MESSAGES,
    FakeDiscord,
    FakeUser,
    Interaction,
    Message,
    snowflake,
)
from tests.fakes.harness import bot_settings, cover_post, gated_runner, running_bot

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")
CAROL = FakeUser(1003, "carol")
DAVE = FakeUser(1004, "dave")
CROWD = [FakeUser(5000 + n, f"fan{n}") for n in range(130)]  # more than one page of reactors


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def ask(discord: FakeDiscord, user: FakeUser, link: str, **options) -> Message:
    """``user`` runs ``/cover`` on ``link``; the post once its vote reactions are on."""
    return await cover_post(discord, await discord.slash(user, "cover", playlist=link, **options))


def announcement(discord: FakeDiscord, post: Message) -> Message | None:
    """The message announcing the outcome of ``post``'s vote (it replies to the post)."""
    return next((m for m in discord.channel_messages() if m.reference_id == post.id), None)


# -- votes while the bot is away ---------------------------------------------------------------


async def test_votes_cast_while_the_bot_was_offline_count_at_the_next_start(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        first = await ask(discord, ALICE, playlist_link, count=3)
        second = await ask(discord, BOB, playlist_link, count=2)
        await discord.react(BOB, first.id, "1️⃣")
        await discord.react(CAROL, first.id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(first.id)) == {1: 2, 2: 0, 3: 0})

    # No bot is connected: Discord keeps these as the messages' state and sends no events.
    await discord.unreact(CAROL, first.id, "1️⃣")  # she takes her vote back
    await discord.unreact(BOB, first.id, "1️⃣")  # he moves his to 3️⃣
    await discord.react(BOB, first.id, "3️⃣")
    await discord.react(DAVE, first.id, "2️⃣")  # two numbers at once: the lower one counts
    await discord.react(DAVE, first.id, "3️⃣")
    for fan in CROWD:  # 130 people: the bot must read past Discord's first page of 100
        await discord.react(fan, first.id, "2️⃣")
    await discord.react(CAROL, second.id, "2️⃣")
    await discord.react(BOB, second.id, "✅")  # the requester of the second post closes it

    async with running_bot(settings, discord) as bot:
        closed = await discord.wait_for(lambda: announcement(discord, second), timeout=30)
        assert closed.content.startswith("Cover 2️⃣ wins with 1 vote (closed by the requester)")
        await discord.wait_for(
            lambda: bot.storage.tally(str(first.id)) == {1: 0, 2: 1 + len(CROWD), 3: 1}
        )
        assert bot.storage.vote_of(str(first.id), str(CAROL.id)) is None
        assert bot.storage.vote_of(str(first.id), str(DAVE.id)) == 2
        await discord.react(ALICE, first.id, "✅")
        result = await discord.wait_for(lambda: announcement(discord, first))
        assert result.content.startswith(f"Cover 2️⃣ wins with {1 + len(CROWD)} votes")
    assert tracebacks(caplog) == []


async def test_a_reconnection_that_cannot_resume_reads_the_votes_back(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await ask(discord, ALICE, playlist_link, count=2)
        await discord.react(BOB, post.id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 1, 2: 0})
        sessions = discord.identified
        async with discord.offline(resumable=False):  # a long outage: the session is gone
            await discord.unreact(BOB, post.id, "1️⃣")
            await discord.react(BOB, post.id, "2️⃣")
            await discord.react(CAROL, post.id, "2️⃣")
            assert bot.storage.tally(str(post.id)) == {1: 1, 2: 0}  # nothing arrived
        await discord.wait_for(lambda: discord.identified > sessions, timeout=30)
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 0, 2: 2}, timeout=30)
        await discord.react(DAVE, post.id, "1️⃣")  # and live events count again
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 1, 2: 2})
    assert tracebacks(caplog) == []


async def test_a_vote_closed_while_votes_are_read_back_counts_the_votes_cast_while_away(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """After a reconnection the bot reads its open votes back one by one. A ✅ on a post it has
    not read back yet closed the vote on the old counts: the votes cast while the bot was away
    never counted, for the announcement or for DPO, and closing is final (issue 31)."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        first = await ask(discord, ALICE, playlist_link, count=2)
        second = await ask(discord, BOB, playlist_link, count=2)
        await discord.react(CAROL, second.id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(second.id)) == {1: 1, 2: 0})
        async with discord.slow_reads(first.id):  # read back first, and slowly
            async with discord.offline(resumable=False):
                await discord.unreact(CAROL, second.id, "1️⃣")
                await discord.react(CAROL, second.id, "2️⃣")
                await discord.react(DAVE, second.id, "2️⃣")
            await discord.wait_for(lambda: discord.held_reads_waiting, timeout=30)
            await discord.react(BOB, second.id, "✅")  # live, while the first is being read
            await asyncio.sleep(1.0)  # time enough for the old code to close and announce
        result = await discord.wait_for(lambda: announcement(discord, second), timeout=30)
        assert result.content.startswith("Cover 2️⃣ wins with 2 votes (closed by the requester)")
        row = bot.storage.cover_message(str(second.id))
        assert (row.winner, row.close_reason) == (2, "requester")
    assert tracebacks(caplog) == []


async def test_stopping_while_votes_are_read_back_is_quiet(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """The operator stops the bot while it is still reading its votes back: no
    ``RuntimeError: Session is closed`` at ERROR, and the vote stays open for the next start."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await ask(discord, ALICE, playlist_link, count=2)
        async with discord.slow_reads(post.id):
            async with discord.offline(resumable=False):
                await discord.react(CAROL, post.id, "2️⃣")
            await discord.wait_for(lambda: discord.held_reads_waiting, timeout=30)
            await bot.close()
    with Storage(settings.db_path) as storage:
        assert storage.cover_message(str(post.id)).status == "open"
    assert tracebacks(caplog) == []


async def test_super_reaction_votes_count_and_a_requesters_super_check_closes(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """Discord lists only normal reactors unless asked for ``type=1``: reading votes back
    (at READY, and before every close) deleted the super-reaction votes the live events had
    counted, and a requester's super-✅ made while the bot was away never closed."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        live = await ask(discord, ALICE, playlist_link, count=2)
        away = await ask(discord, BOB, playlist_link, count=2)
        await discord.react(BOB, live.id, "2️⃣", super_=True)
        await discord.react(DAVE, live.id, "2️⃣", super_=True)
        await discord.react(CAROL, live.id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(live.id)) == {1: 1, 2: 2})
        async with aiohttp.ClientSession() as http:  # the fake lists them as Discord does
            users = f"{discord.api_base}/channels/{discord.channel_id}/messages/{live.id}"
            users += "/reactions/2️⃣"
            async with http.get(users) as normal, http.get(users, params={"type": 1}) as burst:
                assert [u["id"] for u in await normal.json()] == [str(discord.bot_user.id)]
                assert [u["id"] for u in await burst.json()] == [str(BOB.id), str(DAVE.id)]
        await discord.react(ALICE, live.id, "✅", super_=True)
        result = await discord.wait_for(lambda: announcement(discord, live), timeout=30)
        assert result.content.startswith("Cover 2️⃣ wins with 2 votes (closed by the requester)")

        await discord.react(CAROL, away.id, "1️⃣", super_=True)
        await discord.wait_for(lambda: bot.storage.tally(str(away.id)) == {1: 1, 2: 0})
        async with discord.offline(resumable=False):
            await discord.react(DAVE, away.id, "2️⃣", super_=True)
            await discord.react(ALICE, away.id, "2️⃣")
            await discord.react(BOB, away.id, "✅", super_=True)
        result = await discord.wait_for(lambda: announcement(discord, away), timeout=30)
        assert result.content.startswith("Cover 2️⃣ wins with 2 votes (closed by the requester)")
        assert bot.storage.vote_of(str(away.id), str(CAROL.id)) == 1
    assert tracebacks(caplog) == []


# -- deleted posts and channels, lost permissions ----------------------------------------------


async def test_a_deleted_cover_post_closes_its_vote_without_a_winner(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        live = await ask(discord, ALICE, playlist_link, count=2)
        away = await ask(discord, BOB, playlist_link, count=2)
        await discord.react(BOB, live.id, "2️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(live.id))[2] == 1)
        await discord.delete_message(live.id)  # while the bot watches
        row = await discord.wait_for(
            lambda: (r := bot.storage.cover_message(str(live.id))).status == "closed" and r
        )
        assert (row.winner, row.close_reason) == (None, "deleted")
    await discord.delete_message(away.id)  # while it is away
    async with running_bot(settings, discord) as bot:
        row = await discord.wait_for(
            lambda: (r := bot.storage.cover_message(str(away.id))).status == "closed" and r
        )
        assert (row.winner, row.close_reason) == (None, "deleted")
    assert announcement(discord, live) is None and announcement(discord, away) is None
    assert tracebacks(caplog) == []


async def test_the_winner_is_announced_even_when_the_post_is_gone(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """A vote the timer closes after its post went away unseen (deleted while the bot was busy
    elsewhere) is announced without the reply link Discord would refuse (400, code 50035)."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await ask(discord, ALICE, playlist_link, count=2)
        await discord.react(BOB, post.id, "2️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(post.id))[2] == 1)
        await discord.delete_message(post.id, event=False)  # an event the bot missed
        await bot.get_cog("VotesCog").close_vote(str(post.id), reason="timer")
        text = next(m.content for m in discord.channel_messages() if m.content.startswith("Cover"))
        assert text.startswith("Cover 2️⃣ wins with 1 vote (closed by the timer)")
        row = bot.storage.cover_message(str(post.id))
        assert (row.winner, row.close_reason) == (2, "timer")
    assert tracebacks(caplog) == []


@pytest.mark.parametrize("loss", ["channel deleted", "send permission revoked"])
async def test_a_vote_closes_and_is_recorded_when_it_cannot_be_announced(
    loss, discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, vote_close_after_s=4)
    async with running_bot(settings, discord) as bot:
        asked = [
            await discord.slash(user, "cover", playlist=playlist_link, count=2)
            for user in (ALICE, BOB)
        ]
        posts = [await cover_post(discord, interaction) for interaction in asked]
        await discord.react(CAROL, posts[0].id, "2️⃣")
        await discord.react(CAROL, posts[1].id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(posts[1].id))[1] == 1)
        if loss == "channel deleted":
            discord.delete_channel()
        else:
            discord.revoke(SEND_MESSAGES)

        # The timer closes both: the first failure must not stop the sweeper for the second.
        def closed() -> list[dict] | None:
            rows = [bot.storage.cover_message(str(p.id)) for p in posts]
            return rows if all(r.status == "closed" for r in rows) else None

        rows = await discord.wait_for(closed, timeout=30)
        assert [(r.winner, r.close_reason) for r in rows] == [(2, "timer"), (1, "timer")]

        # The outcome is stored before the announcement is tried, so the last vote's refusal
        # can still be in flight here: wait for both lines before the bot stops.
        def warnings() -> list[str]:
            return [
                r.getMessage() for r in caplog.records if "could not be announced" in r.getMessage()
            ]

        await discord.wait_for(lambda: len(warnings()) >= 2, timeout=30)
    assert all(announcement(discord, p) is None for p in posts)
    assert len(warnings()) == 2
    assert tracebacks(caplog) == []


async def test_covers_still_go_up_when_the_bot_may_not_react(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    discord.revoke(ADD_REACTIONS)
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        post = await discord.wait_for(
            lambda: next((m for m in discord.followups(interaction) if m.attachments), None)
        )
        await discord.wait_for(lambda: bot.storage.cover_message(str(post.id)) is not None)
        await discord.react(BOB, post.id, "2️⃣")  # people can still add the numbers themselves
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 0, 2: 1})
        assert discord.bot_reactions(post.id) == []
    assert any("No permission to add the vote reactions" in r.getMessage() for r in caplog.records)
    assert tracebacks(caplog) == []


async def test_a_late_post_into_a_channel_the_bot_lost_says_why(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        bot.get_cog("CoverCog").token_lifetime_s = 0.0  # the result goes out as a channel post
        discord.revoke(SEND_MESSAGES)
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        reply = await discord.wait_for(
            lambda: (
                interaction.original
                and next((e for e in interaction.original.edits if "can't post them" in e), None)
            )
        )
        assert reply.startswith("The covers were made, but I can't post them in <#")
        assert "missing a permission" in reply
    assert tracebacks(caplog) == []


async def test_covers_over_the_servers_upload_limit_go_up_smaller(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """A server's upload limit refused the PNGs (413): the covers were made, then never
    posted (an incident). Now the Spotify JPEGs go up instead, with a line saying why."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    discord.upload_limit = 64 * 1024  # the tiny model's PNGs are ~100 KB, its JPEGs ~30 KB
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        post = await discord.wait_for(
            lambda: next((m for m in discord.followups(interaction) if m.attachments), None),
            timeout=60,
        )
        assert [a.filename for a in post.attachments] == ["cover-1.jpg", "cover-2.jpg"]
        assert "upload limit" in post.content
        assert any(": 413 40005" in r for r in discord.refused)
        await discord.wait_for(lambda: discord.bot_reactions(post.id) == ["1️⃣", "2️⃣"])
        assert bot.storage.cover_message(str(post.id)).status == "open"
    assert tracebacks(caplog) == []


async def test_covers_that_fit_no_upload_limit_say_so(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    discord.upload_limit = 1000  # nothing fits
    async with running_bot(settings, discord):
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        reply = await discord.wait_for(
            lambda: (
                interaction.original
                and next((e for e in interaction.original.edits if "upload limit" in e), None)
            ),
            timeout=60,
        )
        assert reply.startswith("The covers were made, but")
        assert discord.followups(interaction) == []
    assert tracebacks(caplog) == []


# -- rate limits and the interaction token -----------------------------------------------------


async def test_reactions_wait_out_discords_rate_limit(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    discord.reaction_interval_s = 0.25  # Discord's limit for reactions on one channel
    async with running_bot(settings, discord):
        post = await ask(discord, ALICE, playlist_link)
        assert discord.bot_reactions(post.id) == ["1️⃣", "2️⃣", "3️⃣", "4️⃣"]
    assert discord.rate_limited >= 1  # at least one 429 was served, and waited out
    assert tracebacks(caplog) == []


async def test_status_edits_and_the_post_keep_within_the_webhook_rate_limit(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """Every answer carries X-RateLimit-* headers and the interaction's webhook takes 3
    requests a second: the status edits at the bot's own pace (the default setting) stay
    within it, and the covers still go up with their vote."""
    interval = Settings.model_fields["status_edit_interval_s"].default
    settings = bot_settings(
        discord, fake_spotify, tmp_path, cache_dir, status_edit_interval_s=interval
    )
    discord.webhook_rate = (3, 1.0)
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        post = await cover_post(discord, interaction)
        assert bot.storage.cover_message(str(post.id)).status == "open"
        await discord.wait_for(lambda: interaction.original.edits[-1].startswith("Done in"))
    assert [r for r in discord.refused if ": 429" not in r] == []
    assert tracebacks(caplog) == []


async def test_status_edits_with_no_interval_send_only_the_latest_and_the_post_lands(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """With ``status_edit_interval_s`` at 0 a job reports faster than Discord takes edits (the
    webhook here takes 2 a second): one edit at a time, the latest state wins, an unchanged
    status is not sent again – so the edits stay within the limit (discord.py waits on the
    headers; no 429), none repeats the one before, and the covers and the final edit land
    soon after the job ends."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, status_edit_interval_s=0)
    discord.webhook_rate = (2, 1.0)
    held = gated_runner(cache_dir)
    async with running_bot(settings, discord, runner=held):
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        await discord.wait_for(lambda: interaction.original and interaction.original.edits)
        await asyncio.sleep(2.0)  # held at step 0: some 40 reports of the same step
        edits_while_held = len(interaction.original.edits)
        held.gate.set()
        opened = time.monotonic()
        post = await cover_post(discord, interaction)
        posted_after = time.monotonic() - opened
        await discord.wait_for(lambda: interaction.original.edits[-1].startswith("Done in"))
    edits = interaction.original.edits
    print(f"\nedits {len(edits)} (held: {edits_while_held}), post {posted_after:.2f} s after")
    assert edits_while_held <= 3  # "Making…", "Generating…", step 0 – not once per report
    assert all(a != b for a, b in itertools.pairwise(edits))
    # The edits learn the webhook's bucket from its headers and wait on it. Only a route's first
    # request (the covers' follow-up shares the bucket unannounced) or a vote reaction may meet a
    # 429 it could not foresee, and discord.py waits that out.
    edit_429s = [r for r in discord.refused if r.startswith("PATCH /webhooks/") and ": 429" in r]
    assert edit_429s == [] and post.attachments
    assert [r for r in discord.refused if ": 429" not in r] == []
    assert tracebacks(caplog) == []


async def test_status_edits_wait_out_429s_the_headers_did_not_announce(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    """A shared limit on the webhook (2 requests a second) that only its 429s reveal, and
    status edits at every step: discord.py waits each 429 out and retries, nothing is lost –
    the covers go up with their vote and the final edit lands."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, status_edit_interval_s=0)
    discord.webhook_rate, discord.webhook_limit_shared = (2, 1.0), True
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        post = await cover_post(discord, interaction)
        assert bot.storage.cover_message(str(post.id)).status == "open"
        await discord.wait_for(lambda: interaction.original.edits[-1].startswith("Done in"))
    assert discord.rate_limited >= 1  # 429s were served, and waited out
    assert [r for r in discord.refused if ": 429" not in r] == []
    assert tracebacks(caplog) == []


async def test_a_token_that_expired_on_discords_clock_falls_back_to_the_channel(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    held = gated_runner(cache_dir)
    async with running_bot(settings, discord, runner=held) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        await discord.wait_for(lambda: interaction.original and interaction.original.edits)
        # The bot's own clock says the token has minutes left; Discord's says it is gone.
        discord.age(interaction, 15 * 60 + 1)
        held.gate.set()
        post = await discord.wait_for(
            lambda: next((m for m in discord.channel_messages() if m.attachments), None)
        )
        assert post.interaction_id is None and f"<@{ALICE.id}>" in post.content
        assert [a.filename for a in post.attachments] == ["cover-1.png", "cover-2.png", "sheet.png"]
        assert all(a.data for a in post.attachments)  # the files were opened anew, not empty
        await discord.wait_for(lambda: discord.bot_reactions(post.id) == ["1️⃣", "2️⃣"])
        assert bot.storage.cover_message(str(post.id)).status == "open"
    assert tracebacks(caplog) == []


# -- the fake itself answers as Discord does ---------------------------------------------------


async def test_the_fake_refuses_what_discord_refuses(discord, fake_spotify, tmp_path, cache_dir):
    """Checked with plain HTTP, so each refusal is the fake's and not the bot's doing."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord):
        interaction = await discord.slash(ALICE, "help-none")  # no such command: never acked
        channel = f"{discord.api_base}/channels/{discord.channel_id}/messages"
        async with aiohttp.ClientSession() as http:
            discord.age(interaction, 3.5)
            async with http.post(
                f"{discord.api_base}/interactions/{interaction.id}/{interaction.token}/callback",
                json={"type": 5},
            ) as late:
                assert (late.status, (await late.json())["code"]) == (404, 10062)
            async with http.post(
                channel, json={"content": "hi", "message_reference": {"message_id": "1"}}
            ) as unknown:
                body = await unknown.json()
                assert (unknown.status, body["code"]) == (400, 50035)
                assert "message_reference" in body["errors"]
            reference = {"message_id": "1", "fail_if_not_exists": False}
            async with http.post(
                channel, json={"content": "hi", "message_reference": reference}
            ) as lenient:
                assert lenient.status == 200 and "message_reference" not in await lenient.json()
            discord.age(interaction, 15 * 60)
            async with http.post(
                f"{discord.api_base}/webhooks/{discord.application_id}/{interaction.token}",
                json={"content": "late"},
            ) as expired:
                assert (expired.status, (await expired.json())["code"]) == (401, 50027)


async def test_the_fake_refuses_bodies_discord_refuses(discord, fake_spotify, tmp_path, cache_dir):
    """Discord's published limits, each refusal with Discord's status and code."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord):
        api, app = discord.api_base, discord.application_id
        channel = f"{api}/channels/{discord.channel_id}/messages"
        # Interactions the bot never saw, so only the test answers them.
        unanswered = Interaction(snowflake(), "token-a", ALICE, "cover", {}, time.monotonic())
        typed = Interaction(snowflake(), "token-b", ALICE, "cover", {}, time.monotonic(), kind=4)
        discord.interactions |= {unanswered.id: unanswered, typed.id: typed}
        hooked = f"{api}/webhooks/{app}/{unanswered.token}"

        def files(*sizes: int) -> aiohttp.FormData:
            form = aiohttp.FormData()
            form.add_field("payload_json", '{"content": "covers"}')
            for n, size in enumerate(sizes):
                form.add_field(f"files[{n}]", b"\0" * size, filename=f"cover-{n}.png")
            return form

        async with aiohttp.ClientSession() as http:

            async def answer(method: str, url: str, **kwargs) -> tuple[int, int]:
                async with http.request(method, url, **kwargs) as response:
                    return response.status, (await response.json())["code"]

            async def callback(interaction, body) -> tuple[int, int]:
                url = f"{api}/interactions/{interaction.id}/{interaction.token}/callback"
                return await answer("POST", url, json=body)

            assert await answer("POST", channel, json={"content": "x" * 2001}) == (400, 50035)
            assert await answer("POST", channel, json={"content": ""}) == (400, 50006)
            assert await answer("POST", channel, json={"embeds": [{}] * 11}) == (400, 50035)
            assert await answer("POST", channel, data=files(*[1] * 11)) == (400, 50035)
            discord.upload_limit = 1000  # a server's upload limit, per file
            assert await answer("POST", channel, data=files(10, 1001)) == (413, 40005)
            assert await answer("POST", hooked, json={"content": "early"}) == (404, 10015)
            assert await callback(unanswered, {"type": 6}) == (400, 50035)
            too_many = [{"name": f"m{n}", "value": f"m{n}"} for n in range(26)]
            too_long = [{"name": "m" * 101, "value": "m"}]
            for choices in (too_many, too_long):
                assert await callback(typed, {"type": 8, "data": {"choices": choices}}) == (
                    400,
                    50035,
                )
            assert typed.acked_at is None and unanswered.acked_at is None
            async with http.post(channel, json={"content": "hi"}) as made:
                message_id = (await made.json())["id"]
            emoji = f"{channel}/{message_id}/reactions/hello/@me"
            assert await answer("PUT", emoji) == (400, 10014)
            commands = f"{api}/applications/{app}/commands"
            for bad in (
                {"name": "Cover Art", "description": "spaces and capitals"},
                {"name": "cover", "description": "d" * 101},
                {"name": "cover", "description": "d", "options": [{"name": "o"}] * 26},
            ):
                assert await answer("PUT", commands, json=[bad]) == (400, 50035)
            discord.reaction_interval_s = 60.0
            one, two = (f"{channel}/{message_id}/reactions/{e}/@me" for e in ("1️⃣", "2️⃣"))
            async with http.put(one), http.put(two) as limited:
                assert limited.status == 429
    assert "cover" in [c["name"] for c in discord.commands]  # refused syncs changed nothing
    # Every refusal is worded as Discord's description has it (tests/fakes/discord_schema.py).
    refusals = [e for e in discord.exchanges if e.status >= 400]
    assert len(refusals) >= 14
    assert [
        p
        for e in refusals
        for p in discord_schema.response_problems(e.method, e.path, e.status, e.answer, e.headers)
    ] == []
