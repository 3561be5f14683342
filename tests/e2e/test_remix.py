"""Remix end to end: the requester edits a post's prompts in a Discord form (a modal) and gets a
reroll made with them – the real bot against the fake Discord (which holds the form to
Discord's limits) and the fake Spotify, the embedded pipeline, a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.app.remix import WRITTEN
from tests.fakes import discord_schema
from tests.fakes.discord import FakeDiscord, FakeUser, Interaction, Message
from tests.fakes.harness import bot_settings, cover_post, running_bot

ALICE = FakeUser(1001, "alice")  # asks for the covers
BOB = FakeUser(1002, "bob")


def remix_button(post: Message) -> str:
    [custom_id] = [
        b["custom_id"] for b in post.buttons() if b["custom_id"].startswith("cover:remix:")
    ]
    return custom_id


async def open_remix(discord: FakeDiscord, user: FakeUser, post: Message) -> Interaction:
    pressed = await discord.press(user, post.id, remix_button(post))
    await discord.wait_for(lambda: pressed.response_type is not None)
    return pressed


async def private_answer(discord: FakeDiscord, interaction: Interaction) -> str:
    await discord.wait_for(
        lambda: interaction.original is not None and interaction.original.content
    )
    assert interaction.original.ephemeral
    return interaction.original.content


def requests(bot) -> list:
    return [
        bot.storage.request(r["id"])
        for r in bot.storage._rows("SELECT id FROM requests ORDER BY created_at")
    ]


async def test_the_requester_remixes_the_prompt_and_others_may_not(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        )
        [first] = requests(bot)
        assert "✏️ Remix" in [b["label"] for b in post.buttons()]

        # Bob may not: refused privately, no form, nothing queued.
        refused = await open_remix(discord, BOB, post)
        assert refused.modal is None
        assert await private_answer(discord, refused) == (
            "Only the person who asked for these covers can remix them."
        )

        # Alice gets the form, prefilled with the prompt and negative prompt used.
        opened = await open_remix(discord, ALICE, post)
        modal = opened.modal
        assert modal is not None and modal["title"] == "Remix: edit the prompts"
        inputs = {
            row["components"][0]["custom_id"]: row["components"][0] for row in modal["components"]
        }
        assert list(inputs) == ["prompt-1", "negative"]  # the two candidates share one prompt
        assert inputs["prompt-1"]["value"] == first.prompts[0].text
        assert inputs["negative"]["value"] == first.prompts[0].negative
        assert inputs["prompt-1"]["max_length"] == 4000
        # The form is a body Discord's own description takes.
        [sent] = [
            e for e in discord.exchanges if isinstance(e.sent, dict) and e.sent.get("type") == 9
        ]
        assert discord_schema.request_problems("POST", sent.path, sent.sent) == []

        # Discord's client sends no more than the form allows.
        with pytest.raises(ValueError, match="takes 0-4000 characters, not 4001"):
            await discord.submit(ALICE, opened, **{"prompt-1": "x" * 4001})
        assert len(requests(bot)) == 1

        submitted = await discord.submit(
            ALICE, opened, **{"prompt-1": "neon 🌃 city at night", "negative": "text, letters"}
        )
        remixed = await cover_post(discord, submitted)
        assert submitted.response_type == 5  # "thinking…", then the usual status and post
        assert submitted.original.edits[0].startswith("Making 2 cover(s) for **late night drive")
        first, second = requests(bot)
        assert second.user_id == str(ALICE.id) and second.model == first.model
        assert [(p.text, p.negative, p.style) for p in second.prompts] == [
            ("neon city at night", "text, letters", WRITTEN)
        ] * 2
        candidates = bot.storage.candidates(second.id)
        assert {c.seed for c in candidates}.isdisjoint(p.seed for p in first.prompts)
        # The files say what made them.
        parameters = Image.open(Path(candidates[0].png_path)).text["parameters"]
        assert parameters.startswith("neon city at night\nNegative prompt: text, letters")

        # A reroll of the remix keeps the written prompt.
        reroll = await discord.press(
            ALICE,
            remixed.id,
            next(
                b["custom_id"]
                for b in remixed.buttons()
                if b["custom_id"].startswith("cover:reroll:")
            ),
        )
        await cover_post(discord, reroll)
        assert [p.text for p in requests(bot)[2].prompts] == ["neon city at night"] * 2

        # A prompt with nothing left once cleaned is refused privately; nothing is queued.
        again = await open_remix(discord, ALICE, post)
        empty = await discord.submit(ALICE, again, **{"prompt-1": "🎵🎵🎵"})
        assert (await private_answer(discord, empty)).startswith("The prompt has no words left")
        assert len(requests(bot)) == 3
