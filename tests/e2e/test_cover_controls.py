"""The buttons under a cover post (bot/cogs/controls.py), end to end: the real bot against the
fake Discord and Spotify, the embedded pipeline, a real SQLite file.

Each control is pressed by someone who may and someone who may not; variations are measured
against the candidate they came from, rerolls too; the buttons survive a restart.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from bot.cogs.helpers import NUMBER_EMOJI
from models.registry import resolve_model
from tests.fakes.discord import FakeDiscord, FakeUser, Interaction, Message
from tests.fakes.harness import bot_settings, cover_post, running_bot

ALICE = FakeUser(1001, "alice")  # asks for the covers
BOB = FakeUser(1002, "bob")  # someone else in the channel
MODERATOR = FakeUser(1999, "moderator", admin=True)


def control(post: Message, action: str, n: int | None = None) -> str:
    """The custom_id of one button on a cover post."""
    wanted = [
        b["custom_id"]
        for b in post.buttons()
        if b["custom_id"].split(":")[1] == action
        and (n is None or b["custom_id"].endswith(f":{n}"))
    ]
    assert len(wanted) == 1, (action, n, post.buttons())
    return wanted[0]


async def press(discord: FakeDiscord, user: FakeUser, post: Message, action: str, n=None):
    return await discord.press(user, post.id, control(post, action, n))


async def private_answer(discord: FakeDiscord, interaction: Interaction) -> str:
    """The text of an answer only the presser sees."""
    await discord.wait_for(lambda: interaction.response is not None)
    assert interaction.response_type == 4 and interaction.response["flags"] & 64
    return interaction.response["content"]


def pixels(attachment) -> np.ndarray:
    """An attachment as an RGB array at the embedded model's own 64 px."""
    image = Image.open(io.BytesIO(attachment.data)).convert("RGB")
    return np.asarray(image.resize((64, 64), Image.Resampling.BOX), dtype=np.float64)


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def covers(post: Message) -> list:
    return [a for a in post.attachments if a.filename.startswith("cover-")]


async def test_each_control_for_the_right_and_the_wrong_person(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        first = await discord.slash(ALICE, "cover", playlist=playlist_link)
        post = await cover_post(discord, first)
        labels = [b["label"] for b in post.buttons()]
        assert labels == ["🔁 Reroll", "✏️ Remix", "ℹ️ Details", "🗑️ Delete", "V1", "V2", "V3", "V4"]
        [request] = bot.storage._rows("SELECT id FROM requests")
        asked = bot.storage.candidates(request["id"])

        # Details: anyone, privately, per candidate.
        details = await private_answer(discord, await press(discord, BOB, post, "details"))
        native = resolve_model("embedded").native_size
        assert "Model **embedded**" in details and "20 steps" in details
        assert f"{native}×{native} px (posted at 512×512)" in details
        for candidate in asked:
            assert f"{NUMBER_EMOJI[candidate.index - 1]} seed {candidate.seed}:" in details
            assert candidate.prompt in details
        assert "Negative prompt: `blurry" in details and "made in" in details

        # Reroll: the requester only. Bob is refused privately and nothing is queued.
        refused = await private_answer(discord, await press(discord, BOB, post, "reroll"))
        assert refused == "Only the person who asked for these covers can reroll them."
        assert len(bot.storage._rows("SELECT id FROM requests")) == 1
        reroll = await press(discord, ALICE, post, "reroll")
        rerolled = await cover_post(discord, reroll)
        assert reroll.original.edits[0].startswith("Making 4 cover(s) for **late night drive")
        second = bot.storage.cover_message(str(rerolled.id))
        again = bot.storage.candidates(second.request_id)
        assert [c.prompt for c in again] == [c.prompt for c in asked]  # same options
        assert {c.seed for c in again}.isdisjoint(c.seed for c in asked)  # new seeds

        # Variations of 2: anyone; image-to-image from candidate 2, with its prompt.
        vary = await press(discord, BOB, post, "vary", 2)
        varied = await cover_post(discord, vary)
        assert vary.original.edits[0].startswith("Making 4 variation(s) for **late night drive")
        third = bot.storage.request(bot.storage.cover_message(str(varied.id)).request_id)
        assert third.user_id == str(BOB.id) and third.params.strength == 0.4
        source = pixels(covers(post)[1])
        from_source = [rms(pixels(a), source) for a in covers(varied)]
        from_reroll = [rms(pixels(a), source) for a in covers(rerolled)]
        print(f"\nRMS to candidate 2: variations {from_source}, reroll {from_reroll}")
        # Measurably closer to the source than a reroll of the same prompt is.
        assert np.mean(from_source) < 0.8 * np.mean(from_reroll)
        assert max(from_source) < np.mean(from_reroll)
        # The variations' files say what they are.
        [png] = [Path(c.png_path) for c in bot.storage.candidates(third.id)][:1]
        assert "Denoising strength: 0.4" in Image.open(png).text["parameters"]

        # Delete: Bob may not; Alice may. The vote closes without a winner.
        refused = await private_answer(discord, await press(discord, BOB, post, "delete"))
        assert refused.startswith("Only the person who asked for these covers, or someone")
        assert not post.deleted
        done = await private_answer(discord, await press(discord, ALICE, post, "delete"))
        assert done == "Deleted; the vote closed without a winner."
        await discord.wait_for(lambda: post.deleted)
        vote = bot.storage.cover_message(str(post.id))
        assert (vote.status, vote.winner, vote.close_reason) == ("closed", None, "deleted")
    assert discord.unknown == []


async def test_a_moderator_may_delete_anyones_post(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        )
        assert [b["label"] for b in post.buttons()][-1] == "V1"  # one V per candidate
        await private_answer(discord, await press(discord, MODERATOR, post, "delete"))
        await discord.wait_for(lambda: post.deleted)
        assert bot.storage.cover_message(str(post.id)).close_reason == "deleted"


async def test_rerolls_count_against_the_cooldown(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, cooldown_s=600.0)
    async with running_bot(settings, discord) as bot:
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        )
        reroll = await press(discord, ALICE, post, "reroll")
        await discord.wait_for(lambda: reroll.original and reroll.original.edits)
        assert "You asked for covers a moment ago; try again in" in reroll.original.edits[-1]
        assert len(bot.storage._rows("SELECT id FROM requests")) == 1


async def test_the_buttons_work_after_a_restart_and_say_when_files_are_gone(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        )
        [request] = bot.storage._rows("SELECT id FROM requests")
    async with running_bot(settings, discord) as bot:  # a new process: nothing in memory
        details = await private_answer(discord, await press(discord, BOB, post, "details"))
        assert "Model **embedded**" in details
        varied = await cover_post(discord, await press(discord, BOB, post, "vary", 1))
        assert len(covers(varied)) == 2

        for candidate in bot.storage.candidates(request["id"]):
            Path(candidate.png_path).unlink()
        gone = await private_answer(discord, await press(discord, BOB, post, "vary", 2))
        assert gone.startswith("The files of these covers are gone from the bot")
        assert "candidate-2.png" in gone and str(tmp_path) not in gone


async def test_discord_refuses_bad_components(discord):
    """The fake checks components as Discord does, so a bot that sends too many buttons or a
    long custom_id fails here as it would there."""
    import aiohttp

    url = f"{discord.api_base}/channels/{discord.channel_id}/messages"
    headers = {"Authorization": "Bot x"}
    six = [{"type": 2, "style": 2, "label": str(n), "custom_id": f"b{n}"} for n in range(6)]
    long_id = [{"type": 2, "style": 2, "label": "x", "custom_id": "x" * 101}]
    twice = [{"type": 2, "style": 2, "label": "x", "custom_id": "same"}] * 2
    async with aiohttp.ClientSession() as session:
        for buttons in (six, long_id, twice):
            body = {"content": "hi", "components": [{"type": 1, "components": buttons}]}
            async with session.post(url, json=body, headers=headers) as answer:
                assert answer.status == 400 and (await answer.json())["code"] == 50035
        fine = {"content": "hi", "components": [{"type": 1, "components": six[:5]}]}
        async with session.post(url, json=fine, headers=headers) as answer:
            assert answer.status == 200
