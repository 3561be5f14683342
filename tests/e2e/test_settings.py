"""``/settings`` end to end: a server's managers ban words, set a daily limit and choose what
becomes of flagged candidates – the real bot against the fake Discord (which knows Manage
Server and a channel's NSFW mark) and the fake Spotify, the embedded pipeline, a real SQLite
file (bot/cogs/settings.py, bot/app/server_rules.py)."""

from __future__ import annotations

import dataclasses

from bot.app.server_rules import BANNED_WORD_REFUSAL
from bot.cogs.settings import NOT_A_MANAGER
from models.runner import DiffusersRunner
from tests.fakes.discord import FakeDiscord, FakeUser, Interaction, Message
from tests.fakes.harness import bot_settings, cover_post, running_bot

ALICE = FakeUser(1001, "alice")  # asks for covers
BOB = FakeUser(1002, "bob")
MIA = FakeUser(1003, "mia", manager=True)  # may manage the server, is no administrator


async def answer(discord: FakeDiscord, interaction: Interaction) -> Message:
    """The bot's first answer to ``interaction``: its original response, or (once that is
    deleted) its first follow-up."""

    def answered() -> Message | None:
        original = interaction.original
        if original is not None and not original.deleted and original.content:
            return original
        return next(iter(discord.followups(interaction)), None)

    return await discord.wait_for(answered, timeout=60)


async def settings(discord: FakeDiscord, user: FakeUser, command: str, **options) -> Message:
    reply = await answer(discord, await discord.slash(user, f"settings {command}", **options))
    assert reply.ephemeral  # only the one who asked sees settings and their refusals
    return reply


async def refused_privately(discord: FakeDiscord, interaction: Interaction) -> str:
    """The private refusal of a deferred request: its public "thinking…" deleted, the reason
    in an ephemeral follow-up."""
    reply = await answer(discord, interaction)
    assert reply.ephemeral and interaction.original.deleted
    return reply.content


def public_text(discord: FakeDiscord) -> str:
    """Everything anyone in the channel can read, case-folded."""
    return "\n".join(
        m.content.casefold() for m in discord.messages.values() if not m.ephemeral and not m.deleted
    )


def button(post: Message, action: str) -> str:
    """The custom_id of the post's first button for ``action`` (bot/cogs/controls.py)."""
    return next(b["custom_id"] for b in post.buttons() if f":{action}:" in b["custom_id"])


def request_count(bot) -> int:
    return bot.storage._rows("SELECT count(*) AS n FROM requests")[0]["n"]


async def test_managers_ban_words_and_requests_using_them_are_refused_privately(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    async with running_bot(
        bot_settings(discord, fake_spotify, tmp_path, cache_dir), discord
    ) as bot:
        [synced] = [c for c in discord.commands if c["name"] == "settings"]
        assert synced["default_member_permissions"] == str(1 << 5)  # Manage Server
        assert synced["dm_permission"] is False  # servers only

        # Not a manager: refused privately, nothing stored.
        for command, options in (("show", {}), ("banned-words add", {"word": "drive"})):
            refusal = await settings(discord, ALICE, command, **options)
            assert refusal.content == NOT_A_MANAGER
        assert bot.storage._rows("SELECT * FROM server_settings") == []

        # Mia bans the word as someone might type it to dodge a filter: it is stored plainly.
        added = await settings(discord, MIA, "banned-words add", word="Ｄ\u200bRIVE")
        assert added.content.startswith("Banned `drive`")
        shown = await settings(discord, MIA, "show")
        assert "Banned words: 1 of 50" in shown.content and "Daily limit: none" in shown.content
        assert shown.content.splitlines()[-1].startswith(f"Last changed by <@{MIA.id}> on <t:")

        # "late night drive 🌙" is refused, privately and without the word; nothing queued.
        asked = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        assert await refused_privately(discord, asked) == BANNED_WORD_REFUSAL
        assert "drive" not in public_text(discord)
        assert request_count(bot) == 0 and bot.queue.pending_count == 0

        # Allowed again, the same request goes through: the refusal cost nothing.
        removed = await settings(discord, MIA, "banned-words remove", word="drive")
        assert removed.content == "`drive` is allowed again."
        post = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        )
        assert request_count(bot) == 1

        # Words a person writes in the Remix form are checked too.
        await settings(discord, MIA, "banned-words add", word="sunset")
        opened = await discord.press(ALICE, post.id, button(post, "remix"))
        await discord.wait_for(lambda: opened.modal is not None)
        underlined = "".join(ch + "\u035f" for ch in "SUNSET")  # S͟U͟N͟S͟E͟T͟
        submitted = await discord.submit(ALICE, opened, **{"prompt-1": f"{underlined} over a city"})
        assert await refused_privately(discord, submitted) == BANNED_WORD_REFUSAL
        assert "sunset" not in public_text(discord) and request_count(bot) == 1
        # A reroll reads the playlist again: its description ("…empty highways…") is checked.
        await settings(discord, MIA, "banned-words add", word="Highways")
        reroll = await discord.press(ALICE, post.id, button(post, "reroll"))
        assert await refused_privately(discord, reroll) == BANNED_WORD_REFUSAL
        # Variations take their candidate's prompt ("late night drive playlist cover image").
        await settings(discord, MIA, "banned-words add", word="cover image")
        vary = await discord.press(BOB, post.id, button(post, "vary"))
        assert await refused_privately(discord, vary) == BANNED_WORD_REFUSAL
        assert "highways" not in public_text(discord) and request_count(bot) == 1
        listed = await settings(discord, MIA, "banned-words list")
        assert listed.content == "Banned here (3 of 50): `cover image`, `highways`, `sunset`"
    assert discord.refused == []


async def test_a_daily_limit_of_one_refuses_a_second_cover_the_same_day(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    async with running_bot(
        bot_settings(discord, fake_spotify, tmp_path, cache_dir), discord
    ) as bot:
        limit = await settings(discord, MIA, "daily-limit", limit=1)
        assert limit.content.startswith("Each person may now make 1 request a day here")
        await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        )

        again = await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        refusal = await refused_privately(discord, again)
        assert refusal.startswith("You have had your 1 request for today in this server;")
        assert refusal.endswith("Nothing was queued.")
        assert request_count(bot) == 1

        # Someone else still may; 0 lifts the limit.
        await cover_post(
            discord, await discord.slash(MIA, "cover", playlist=playlist_link, count=1)
        )
        await settings(discord, MIA, "daily-limit", limit=0)
        await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_link, count=1)
        )
        assert request_count(bot) == 3
    assert discord.refused == []


class FlagsTheFirst:
    """The tiny pipeline, with the safety checker's verdict on each call's first image: flagged
    (``blocked``) however often it is made again – as a real checker flags what it flags."""

    def __init__(self, inner: DiffusersRunner) -> None:
        self.inner, self.device = inner, inner.device

    def __call__(self, params, specs, control):
        images = self.inner(params, specs, control)
        return [dataclasses.replace(images[0], blocked=True), *images[1:]]


async def posted_files(discord: FakeDiscord, interaction: Interaction) -> list[str]:
    """The names of the files of the post that carries the candidates, once voting is open."""

    def posted() -> Message | None:
        for message in discord.followups(interaction):
            covers = [a for a in message.attachments if "cover-" in a.filename]
            if covers and len(discord.bot_reactions(message.id)) == len(covers):
                return message
        return None

    post = await discord.wait_for(posted, timeout=60)
    return sorted(a.filename for a in post.attachments)


async def test_a_flagged_candidate_is_posted_behind_a_spoiler_only_where_the_server_allows(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    runner = FlagsTheFirst(DiffusersRunner(device="cpu", cache_dir=cache_dir))
    settings_ = bot_settings(discord, fake_spotify, tmp_path, cache_dir, queue_max_batch=2)
    async with running_bot(settings_, discord, runner=runner):
        await discord.mark_nsfw()
        # The default, even in an NSFW channel: dropped, and said so.
        asked = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        assert await posted_files(discord, asked) == ["cover-1.png", "sheet.png"]

        spoiler = await settings(discord, MIA, "nsfw", policy="spoiler")
        assert spoiler.content == (
            "Flagged candidates: posted behind a spoiler in channels marked NSFW, dropped elsewhere."
        )
        asked = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        assert await posted_files(discord, asked) == [
            "SPOILER_cover-1.png",
            "SPOILER_sheet.png",  # the sheet shows it too
            "cover-2.png",
        ]
        [post] = [m for m in discord.followups(asked) if m.attachments]
        assert "flagged candidate(s) 1: shown behind a spoiler" in post.content

        # In a channel not marked NSFW the policy does not apply: dropped.
        await discord.mark_nsfw(False)
        asked = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        assert await posted_files(discord, asked) == ["cover-1.png", "sheet.png"]
    assert discord.refused == []
