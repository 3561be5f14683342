"""End to end: the real discord.py bot against a local fake Discord and a fake Spotify, with the
embedded tiny diffusers pipeline and a real SQLite file.

Each test plays the people in the channel through :class:`tests.fakes.discord.FakeDiscord` and
checks what reached Discord (acknowledgements, edits, attachments, reactions) and what the bot
kept in its database.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image

from bot.app.prompts import Prompt
from bot.app.records import StoredParams
from bot.app.storage import Storage
from bot.cogs.helpers import NUMBER_EMOJI
from models.runner import DiffusersRunner
from tests.fakes.discord import FakeUser, Message
from tests.fakes.harness import bot_settings, cover_post, gated_runner, running_bot
from tests.fakes.spotify import Reply

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "playlists"
ACK_BUDGET_S = 3.0  # Discord drops an interaction not acknowledged within 3 s

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")
CAROL = FakeUser(1003, "carol")
DAVE = FakeUser(1004, "dave")
ADMIN = FakeUser(1999, "admin", admin=True)


def request_rows(bot) -> list[dict]:
    return bot.storage._rows("SELECT id, user_id, status FROM requests ORDER BY created_at")


# -- /cover ------------------------------------------------------------------------------------


async def test_cover_happy_path(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        # The synced command carries its options, autocomplete on model.
        cover_command = next(c for c in discord.commands if c["name"] == "cover")
        options = {o["name"]: o for o in cover_command["options"]}
        assert options["playlist"]["required"] and options["model"].get("autocomplete")

        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link)
        post = await cover_post(discord, interaction)
        elapsed = time.monotonic() - interaction.sent_at
        print(f"\n/cover end to end (4 candidates, tiny model): {elapsed:.2f} s")

        # Deferred ("thinking…") well inside Discord's budget, then the status was edited.
        assert interaction.response_type == 5
        assert interaction.ack_latency_s < ACK_BUDGET_S
        edits = interaction.original.edits
        assert edits[0].startswith("Making 4 cover(s) for **late night drive")
        assert any(e.startswith(("Queued", "Generating")) for e in edits[1:])

        # Four candidates and the sheet, as real images, and one number reaction each.
        names = [a.filename for a in post.attachments]
        assert names == ["cover-1.png", "cover-2.png", "cover-3.png", "cover-4.png", "sheet.png"]
        for attachment in post.attachments[:4]:
            assert Image.open(io.BytesIO(attachment.data)).size == (512, 512)
        assert discord.bot_reactions(post.id) == list(NUMBER_EMOJI)
        assert f"<@{ALICE.id}>" in post.content

        # The database has the request, its candidates and the open vote; the bot's own
        # reactions (Discord sends them back as events) were not counted.
        [row] = request_rows(bot)
        assert (row["user_id"], row["status"]) == (str(ALICE.id), "done")
        candidates = bot.storage.candidates(row["id"])
        assert [c.index for c in candidates] == [1, 2, 3, 4]
        assert all(Path(c.jpeg_path).stat().st_size <= 256 * 1024 for c in candidates)
        message = bot.storage.cover_message(str(post.id))
        assert message.status == "open" and message.candidate_count == 4
        await asyncio.sleep(0.3)  # let the bot's own reaction events arrive
        assert sum(bot.storage.tally(str(post.id)).values()) == 0
    assert discord.unknown == []


async def test_status_shows_rough_previews_when_switched_on(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(
        discord, fake_spotify, tmp_path, cache_dir, optimizations="previews_every=5"
    )
    async with running_bot(settings, discord):
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        await cover_post(discord, interaction)
        await discord.wait_for(lambda: interaction.original.content.startswith("Done in"))
        original = interaction.original
        previews = [
            (text, files)
            for text, files in zip(original.edits, original.edit_files, strict=True)
            if files
        ]
        assert [text for text, _ in previews] == [
            f"Generating: step {step}, rough preview:" for step in (5, 10, 15)
        ]
        assert all(files == ["preview.png"] for _, files in previews)
        assert original.attachments == []  # the last edit took the stale preview away


async def test_model_autocomplete_offers_the_registry(discord, tmp_path, cache_dir):
    settings = bot_settings(discord, None, tmp_path, cache_dir)
    async with running_bot(settings, discord):
        interaction = await discord.autocomplete(ALICE, "cover", "model", "sd")
        await discord.wait_for(lambda: interaction.response_type == 8)
        names = [c["value"] for c in interaction.response["choices"]]
        assert names and all("sd" in n for n in names)
        assert "sd15" in names and "embedded" not in names


async def test_model_autocomplete_stays_within_discords_limits(discord, tmp_path, cache_dir):
    """One choice over 100 characters and Discord refuses the whole answer: people saw no list
    at all because an operator's folder had a long name."""
    folders = [tmp_path / ("finetune-" + "x" * 120), tmp_path / "my-finetune"]
    settings = bot_settings(discord, None, tmp_path, cache_dir, discord_model_folders=folders)
    async with running_bot(settings, discord):
        interaction = await discord.autocomplete(ALICE, "cover", "model", "")
        await discord.wait_for(lambda: interaction.response_type == 8, timeout=10)
        choices = interaction.response["choices"]
        assert 1 <= len(choices) <= 25 and "my-finetune" in [c["value"] for c in choices]
        assert all(len(c["name"]) <= 100 and len(c["value"]) <= 100 for c in choices)
    assert discord.refused == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("album link", "album"),
        ("private playlist", "private"),
        ("rate limited", "try again in 60 s"),
        ("file on the bot's machine", "is not a Spotify playlist link"),
        ("unknown model", "`model` must be one of auto, embedded"),
    ],
)
async def test_bad_input_gets_one_clear_reply_and_queues_nothing(
    case, expected, discord, fake_spotify, tmp_path, cache_dir
):
    missing = "4Xk1pQ7mZ2nR8sT3uV5wYa"
    playlist = {
        "album link": "https://open.spotify.com/album/4aawyAB9vmqN3uQ7FjRGTy",
        "private playlist": f"https://open.spotify.com/playlist/{missing}",
        "rate limited": f"spotify:playlist:{missing}",
        "file on the bot's machine": str(EXAMPLES / "gym-hype.json"),
        "unknown model": f"https://open.spotify.com/playlist/{missing}",
    }[case]
    model = "sd99" if case == "unknown model" else None
    if case == "rate limited":
        fake_spotify.script(f"/v1/playlists/{missing}", Reply(429, retry_after=60), forever=True)
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist, model=model)
        await discord.wait_for(lambda: interaction.original and interaction.original.edits)
        assert interaction.ack_latency_s < ACK_BUDGET_S
        [reply] = interaction.original.edits
        assert expected in reply and "\n" not in reply
        await asyncio.sleep(0.2)
        assert discord.followups(interaction) == []
        assert request_rows(bot) == [] and bot.queue.pending_count == 0


async def test_cooldown_between_one_persons_requests(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, cooldown_s=600)
    async with running_bot(settings, discord) as bot:
        first = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        await cover_post(discord, first)
        again = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        other = await discord.slash(BOB, "cover", playlist=playlist_link, count=1)
        await discord.wait_for(lambda: again.original and again.original.edits)
        assert "try again in" in again.original.edits[0]
        await cover_post(discord, other)  # the cooldown is per person
        assert [r["user_id"] for r in request_rows(bot)] == [str(ALICE.id), str(BOB.id)]


# -- votes -------------------------------------------------------------------------------------


async def test_votes_move_count_after_a_restart_and_close_with_a_winner(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=3)
        post = await cover_post(discord, interaction)
        message_id = str(post.id)

        async def settled(expected: dict[int, int]) -> None:
            await discord.wait_for(lambda: bot.storage.tally(message_id) == expected)

        await discord.react(BOB, post.id, "1️⃣")
        await discord.react(CAROL, post.id, "2️⃣")
        await settled({1: 1, 2: 1, 3: 0})
        # Bob moves his vote: he reacts 2️⃣, then takes 1️⃣ back; the move must stick.
        await discord.react(BOB, post.id, "2️⃣")
        await settled({1: 0, 2: 2, 3: 0})
        await discord.unreact(BOB, post.id, "1️⃣")
        await discord.react(DAVE, post.id, "3️⃣")
        await settled({1: 0, 2: 2, 3: 1})
        await discord.unreact(DAVE, post.id, "3️⃣")  # removing the reaction removes the vote
        await settled({1: 0, 2: 2, 3: 0})
        await discord.react(DAVE, post.id, "4️⃣")  # no fourth candidate: not a vote
        await asyncio.sleep(0.2)
        assert bot.storage.vote_of(message_id, str(DAVE.id)) is None

    # A new process on the same database: the vote goes on.
    async with running_bot(settings, discord) as bot:
        await discord.react(DAVE, post.id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.tally(message_id) == {1: 1, 2: 2, 3: 0})
        await discord.react(BOB, post.id, "✅")  # only the requester closes the vote
        await asyncio.sleep(0.2)
        assert bot.storage.cover_message(message_id).status == "open"

        await discord.react(ALICE, post.id, "✅")
        announcement = await discord.wait_for(
            lambda: next((m for m in discord.channel_messages() if m.reference_id == post.id), None)
        )
        assert announcement.content.startswith("Cover 2️⃣ wins with 2 votes")
        png, jpeg = announcement.attachments
        assert (png.filename, jpeg.filename) == ("winner-2.png", "winner-2-spotify.jpg")
        assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG" and len(jpeg.data) <= 256 * 1024
        assert bot.storage.cover_message(message_id).winner == 2
        await discord.react(CAROL, post.id, "1️⃣")  # too late: the vote is closed
        await asyncio.sleep(0.2)
        assert bot.storage.tally(message_id)[1] == 1
    announcements = [m for m in discord.channel_messages() if m.reference_id == post.id]
    assert len(announcements) == 1


async def test_an_open_vote_closes_itself(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, vote_close_after_s=1.5)
    async with running_bot(settings, discord) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        post = await cover_post(discord, interaction)
        await discord.react(BOB, post.id, "2️⃣")
        announcement = await discord.wait_for(
            lambda: next(
                (m for m in discord.channel_messages() if m.reference_id == post.id), None
            ),
            timeout=30,
        )
        assert "closed by the timer" in announcement.content
        assert bot.storage.cover_message(str(post.id)).winner == 2


# -- restarts ----------------------------------------------------------------------------------


async def test_a_queued_job_survives_a_restart(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    held = gated_runner(cache_dir)
    async with running_bot(settings, discord, runner=held) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        await discord.wait_for(lambda: interaction.original and interaction.original.edits)
        assert interaction.original.edits[0].startswith("Making 2 cover(s)")
        [row] = request_rows(bot)
    # Shut down with the job held: the requester hears why, the row stays queued.
    assert held.calls == []
    assert "restarting" in interaction.original.content

    async with running_bot(settings, discord) as bot:

        def resumed_post() -> Message | None:
            return next(
                (
                    m
                    for m in discord.channel_messages()
                    if m.interaction_id is None
                    and len(m.attachments) == 3
                    and len(discord.bot_reactions(m.id)) == 2
                ),
                None,
            )

        post = await discord.wait_for(resumed_post, timeout=60)
        notices = [m.content for m in discord.channel_messages() if "restarted" in m.content]
        assert notices and f"<@{ALICE.id}>" in notices[0]
        assert [(r["id"], r["status"]) for r in request_rows(bot)] == [(row["id"], "done")]
        assert bot.storage.cover_message(str(post.id)).request_id == row["id"]


# -- /benchmark --------------------------------------------------------------------------------


async def test_benchmark_is_for_administrators(discord, tmp_path, cache_dir, embedded_model_dir):
    settings = bot_settings(
        discord, None, tmp_path, cache_dir, benchmark_requests=(1, 2), benchmark_steps=2
    )
    async with running_bot(settings, discord) as bot:
        command = next(c for c in discord.commands if c["name"] == "benchmark")
        assert int(command["default_member_permissions"]) == 8  # declared to Discord

        refused = await discord.slash(BOB, "benchmark")  # Discord would hide it; the bot checks
        await discord.wait_for(lambda: refused.response_type is not None)
        assert refused.response_type == 4 and refused.original.ephemeral
        assert "administrators" in refused.response["content"]

        allowed = await discord.slash(ADMIN, "benchmark")
        post = await discord.wait_for(
            lambda: next((m for m in discord.followups(allowed) if m.attachments), None),
            timeout=120,
        )
        assert allowed.response_type == 5
        assert "lone request" in post.content and "2 concurrent" in post.content
        chart, data = post.attachments
        assert Image.open(io.BytesIO(chart.data)).format == "PNG"
        report = json.loads(data.data)
        assert report["device"] == "cpu" and report["model"] == "embedded"
        assert all(r["images_per_s"] > 0 for r in report["results"])
        assert bot.queue.pending_count == 0
    assert discord.followups(refused) == []


# -- load --------------------------------------------------------------------------------------


async def test_thirty_requests_from_six_people_at_once(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    """Every interaction acknowledged in time; two pending per person accepted, the rest told
    why; every accepted job posted exactly once."""
    people = [FakeUser(2000 + n, f"user{n}") for n in range(6)]
    settings = bot_settings(
        discord, fake_spotify, tmp_path, cache_dir, queue_max_per_user=2, status_edit_interval_s=1.0
    )
    held = gated_runner(cache_dir)
    async with running_bot(settings, discord, runner=held) as bot:
        interactions = await asyncio.gather(
            *(
                discord.slash(person, "cover", playlist=playlist_link, count=1)
                for _ in range(5)
                for person in people
            )
        )
        assert len(interactions) == 30
        # Jobs are held in the queue until every request has had its answer.
        await discord.wait_for(
            lambda: all(i.original and i.original.edits for i in interactions), timeout=60
        )
        latencies = [i.ack_latency_s for i in interactions]
        print(f"\nacknowledgement latency over 30 interactions: max {max(latencies) * 1000:.0f} ms")
        assert max(latencies) < ACK_BUDGET_S

        accepted = [i for i in interactions if i.original.edits[0].startswith("Making")]
        refused = [i for i in interactions if i not in accepted]
        for person in people:
            assert sum(i.user is person for i in accepted) == 2
        assert all("You already have 2 cover jobs waiting" in i.original.edits[0] for i in refused)

        held.gate.set()
        posts = await asyncio.gather(*(cover_post(discord, i) for i in accepted))
        assert len({p.id for p in posts}) == 12
        rows = request_rows(bot)
        assert len(rows) == 12 and {r["status"] for r in rows} == {"done"}
        registered = bot.storage._rows("SELECT request_id FROM cover_messages")
        assert sorted(r["request_id"] for r in registered) == sorted(r["id"] for r in rows)
        assert sum(held.calls) == 12  # each image made once
        assert max(held.calls) > 1  # and people's jobs were batched together


# -- the edges ---------------------------------------------------------------------------------


async def test_work_that_outlives_the_interaction_token_is_posted_in_the_channel(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as running:
        running.get_cog("CoverCog").token_lifetime_s = 0.0  # as if 15 minutes had passed
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        post = await discord.wait_for(
            lambda: next((m for m in discord.channel_messages() if m.attachments), None)
        )
        assert post.interaction_id is None and f"<@{ALICE.id}>" in post.content
        await discord.wait_for(lambda: discord.bot_reactions(post.id) == ["1️⃣"])
        assert running.storage.cover_message(str(post.id)).status == "open"
        assert discord.followups(interaction) == []


async def test_an_unexpected_error_gives_an_incident_id_and_the_bot_carries_on(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir, caplog
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        real_start = bot.service.start
        calls = 0

        async def start_with_a_bug(request):
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("a bug of ours")
            return await real_start(request)

        bot.service.start = start_with_a_bug
        broken = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        await discord.wait_for(lambda: broken.original and broken.original.edits)
        [text] = broken.original.edits
        incident = text.split("incident ")[1][:8]
        assert "Something went wrong on our side" in text and "a bug of ours" not in text
        logged = [r for r in caplog.records if incident in r.getMessage()]
        assert logged and logged[0].exc_info is not None  # the traceback is in the log

        fine = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        await cover_post(discord, fine)


class SecondImageBlocked:
    """The real runner, except that the second image of every call comes back as a safety
    checker leaves it after every retry: black, and marked blocked."""

    def __init__(self, cache_dir: Path) -> None:
        self.runner = DiffusersRunner(device="cpu", cache_dir=cache_dir)

    def __call__(self, params, specs, control):
        import dataclasses

        images = self.runner(params, specs, control)
        if len(images) > 1:
            black = Image.new("RGB", images[1].image.size)
            images[1] = dataclasses.replace(images[1], image=black, blocked=True)
        return images


async def test_a_blacked_out_candidate_is_never_posted(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord, runner=SecondImageBlocked(cache_dir)) as bot:
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=3)
        post = await cover_post(discord, interaction)
        names = [a.filename for a in post.attachments]
        assert names == ["cover-1.png", "cover-2.png", "sheet.png"]
        for attachment in post.attachments[:2]:
            assert max(Image.open(io.BytesIO(attachment.data)).convert("L").getextrema()) > 0
        assert discord.bot_reactions(post.id) == list(NUMBER_EMOJI[:2])
        assert "1 of 3 candidates came out black" in post.content
        (row,) = bot.storage.db.query("SELECT candidate_count FROM cover_messages")
        assert row["candidate_count"] == 2


async def test_the_model_option_names_presets_only_and_never_probes_the_disk(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    """A path that exists (a real pipeline folder even), a home directory, a folder that is
    not a pipeline and a name that means nothing all get the very same reply."""
    not_a_pipeline = tmp_path / "empty-folder"
    not_a_pipeline.mkdir()
    values = ["sd99", "~", "/", str(not_a_pipeline), str(embedded_model_dir), "/no/such/dir"]
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, cooldown_s=0)
    replies = []
    async with running_bot(settings, discord) as bot:
        for value in values:
            interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, model=value)
            await discord.wait_for(lambda i=interaction: i.original and i.original.edits)
            replies.append(interaction.original.edits[-1])
        assert request_rows(bot) == [] and bot.queue.pending_count == 0
    assert len(set(replies)) == 1, replies
    assert replies[0].startswith("`model` must be one of auto, embedded")
    assert str(tmp_path) not in replies[0] and "home" not in replies[0].lower()


def test_folders_the_operator_lists_are_offered_by_name(tmp_path):
    from bot.app.request import people_model, people_models
    from bot.app.settings import Settings

    folder = tmp_path / "my-finetune"
    settings = Settings(_env_file=None, discord_model_folders=[folder])
    assert people_models(settings)[-1] == "my-finetune"
    assert people_model("my-finetune", settings) == str(folder)
    assert people_model(" SD15 ", settings) == "sd15"
    assert people_model(None, settings) == settings.default_model


async def test_a_request_resumed_too_often_fails_with_a_message(
    discord, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    """A request that every start queues again and no start finishes is given up after
    ``resume_max_tries`` restarts: marked failed, the requester told, nothing queued."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, resume_max_tries=2)
    with Storage(settings.db_path) as storage:
        request_id = storage.record_request(
            source="discord",
            user_id=str(ALICE.id),
            playlist_id="p",
            playlist_name="Night Drive",
            model="embedded",
            params=StoredParams(width=64, height=64, steps=2, guidance=1.0),
            prompts=[Prompt("x", "", "seed", 1)],
            channel_id=str(discord.channel_id),
        )
        storage.note_resume(request_id)
        storage.note_resume(request_id)  # two earlier starts already resumed it
    async with running_bot(settings, discord) as bot:
        notice = await discord.wait_for(
            lambda: next(
                (m for m in discord.channel_messages() if "Night Drive" in m.content), None
            )
        )
        assert "could not be made" in notice.content and f"<@{ALICE.id}>" in notice.content
        row = bot.storage.request(request_id)
        assert row.status == "failed" and "restarts" in row.error
        assert bot.queue.pending_count == 0
