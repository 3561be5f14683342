"""The whole loop through the real bot and the fake Discord: people vote on /cover posts, the
votes become pairs (export-pairs), DPO – or KTO, on the same folder's liked and disliked
candidates – trains a LoRA on them, an administrator makes it the server's community style,
and /cover community:True paints with it and says so when it wins."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from bot.cogs.helpers import NUMBER_EMOJI
from tests.fakes.discord import FakeUser
from tests.fakes.harness import bot_settings, cover_post, running_bot

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")
CAROL = FakeUser(1003, "carol")
DAVE = FakeUser(1004, "dave")
ADMIN = FakeUser(1999, "admin", admin=True)


async def _announcement(discord, post):
    return await discord.wait_for(
        lambda: next((m for m in discord.channel_messages() if m.reference_id == post.id), None)
    )


async def _reply(discord, interaction) -> str:
    """The answer: the response's text, or the first edit of a deferred ("thinking…") one."""

    def answered() -> str | None:
        if interaction.original is None:
            return None
        if interaction.original.edits:
            return interaction.original.edits[0]
        return (interaction.response or {}).get("content")

    return await discord.wait_for(answered)


@pytest.mark.parametrize("objective", ["dpo", "kto"])
async def test_votes_become_a_community_lora_that_cover_uses(
    objective, discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    from training.dpo import DPOConfig, train_dpo
    from training.export import export_pairs

    loras = tmp_path / "loras"
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir, community_lora_dir=loras)
    async with running_bot(settings, discord) as bot:
        # 1. A vote as people cast it: 2️⃣ twice, 1️⃣ once; the requester closes it.
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=3)
        )
        for user, emoji in ((BOB, "2️⃣"), (CAROL, "2️⃣"), (DAVE, "1️⃣")):
            await discord.react(user, post.id, emoji)
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 1, 2: 2, 3: 0})
        await discord.react(ALICE, post.id, "✅")
        first = await _announcement(discord, post)
        assert first.content.startswith("Cover 2️⃣ wins") and "community style" not in first.content

        # No style yet: one sentence, nothing queued.
        refused = await discord.slash(ALICE, "cover", playlist=playlist_link, community=True)
        assert "no community style yet" in await _reply(discord, refused)

    # 2. The bot's database → pairs → DPO or KTO → a LoRA in the community folder. KTO reads
    # the same folder as likes and dislikes: both candidates with votes liked, the third not.
    pairs = export_pairs(settings.db_path, tmp_path / "pairs")
    assert (pairs.pairs, pairs.votes) == (2, 1)
    run = train_dpo(
        DPOConfig(
            objective=objective,
            data=str(tmp_path / "pairs"),
            out=str(tmp_path / objective),
            cache_dir=str(cache_dir),
            resolution=32,
            train_batch_size=2,
            max_train_steps=3,
            checkpointing_steps=0,
            seed=0,
            learning_rate=1e-2,
            lora_rank=2,
            beta=500.0,
        )
    )
    if objective == "kto":
        assert (run.report["liked"], run.report["disliked"]) == (2, 1)
    assert run.report["objective"] == f"diffusion-{objective}"
    loras.mkdir()
    shutil.copyfile(run.output, loras / "our-server.safetensors")

    async with running_bot(settings, discord) as bot:
        # 3. Only an administrator sets it, and only by a name in the folder.
        denied = await discord.slash(BOB, "community set", lora="our-server.safetensors")
        assert "administrators" in await _reply(discord, denied)
        probing = await discord.slash(ADMIN, "community set", lora="../bot.db")
        assert "must be the name of a file in the bot's community LoRA folder" in (
            await _reply(discord, probing)
        )
        allowed = await discord.slash(ADMIN, "community set", lora="our-server.safetensors")
        assert (await _reply(discord, allowed)).startswith(
            "Community style set: `our-server.safetensors` on embedded"
        )
        assert bot.storage.community_style(str(discord.guild_id)).set_by == str(ADMIN.id)

        # 4. /cover community:True paints with it, records it, and the winner says so.
        interaction = await discord.slash(
            ALICE, "cover", playlist=playlist_link, count=2, community=True
        )
        post = await cover_post(discord, interaction)
        request = bot.storage.request(bot.storage.cover_message(str(post.id)).request_id)
        assert request.params.community is True
        assert request.params.lora == str((loras / "our-server.safetensors").resolve())
        assert discord.bot_reactions(post.id) == list(NUMBER_EMOJI[:2])
        await discord.react(BOB, post.id, "1️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 1, 2: 0})
        await discord.react(ALICE, post.id, "✅")
        won = await _announcement(discord, post)
        assert "Made with this server's community style." in won.content

        # The next export can tell votes on community covers apart.
        await asyncio.sleep(0.1)
        later = export_pairs(settings.db_path, tmp_path / "pairs-2")
        assert later.pairs == 3
        cleared = await discord.slash(ADMIN, "community clear")
        assert await _reply(discord, cleared) == "Community style cleared."
        assert bot.storage.community_style(str(discord.guild_id)) is None
    assert discord.unknown == []
