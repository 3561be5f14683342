"""The bot's requests and the fake Discord's answers, held to Discord's published API description.

Every REST exchange of a /cover run and its vote is recorded by the fake
(:attr:`tests.fakes.discord.FakeDiscord.exchanges`) and checked against the part of
discord/discord-api-spec the bot uses (tests/fakes/discord_schema.py): what the bot sends must be
a body Discord takes, and what the fake answers a body Discord could give, so the fake cannot
drift from Discord.
"""

from __future__ import annotations

import json

from tests.fakes import discord_schema
from tests.fakes.discord import FakeUser, Message
from tests.fakes.harness import bot_settings, cover_post, running_bot

ALICE = FakeUser(1001, "alice")
BOB = FakeUser(1002, "bob")


def problems(exchanges) -> list[str]:
    found: list[str] = []
    for e in exchanges:
        found += discord_schema.request_problems(e.method, e.path, e.sent)
        found += discord_schema.response_problems(e.method, e.path, e.status, e.answer, e.headers)
    return found


def test_the_kept_description_names_its_source_and_version():
    kept = json.loads(discord_schema.EXTRACT.read_text())
    assert kept["source"].startswith("https://github.com/discord/discord-api-spec/blob/")
    assert kept["version"] == "10"
    assert len(kept["operations"]) == len(discord_schema.OPERATIONS)


def test_the_check_refuses_what_discord_would_not_send_or_take():
    """The check can fail: an answer missing a message's required fields, a request body
    with a wrong type, a status the operation never answers, a missing rate-limit header."""
    path = "/channels/1/messages/2"
    good = Message(2, 1, ALICE, "hi").payload()
    headers = {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "4",
        "X-RateLimit-Reset": "1.0",
        "X-RateLimit-Reset-After": "1.0",
        "X-RateLimit-Bucket": "b",
    }
    assert discord_schema.response_problems("GET", path, 200, good, headers) == []
    no_id = {k: v for k, v in good.items() if k != "id"}
    assert any(
        "'id' is a required property" in p
        for p in discord_schema.response_problems("GET", path, 200, no_id, headers)
    )
    assert discord_schema.response_problems("GET", path, 200, good, {}) != []
    assert discord_schema.response_problems("GET", path, 302, None, headers) != []
    assert discord_schema.request_problems("POST", "/channels/1/messages", {"tts": "yes"}) != []
    assert discord_schema.request_problems("POST", "/guilds/1/bans", {}) != []


async def test_a_cover_and_its_vote_exchange_only_what_discords_description_allows(
    discord, fake_spotify, playlist_link, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        await discord.autocomplete(ALICE, "cover", "model", "")
        interaction = await discord.slash(ALICE, "cover", playlist=playlist_link, count=2)
        post = await cover_post(discord, interaction)
        await discord.wait_for(lambda: interaction.original.edits[-1].startswith("Done in"))
        await discord.react(BOB, post.id, "2️⃣")
        await discord.wait_for(lambda: bot.storage.tally(str(post.id))[2] == 1)
        await discord.react(ALICE, post.id, "✅")  # the requester closes: the winner is announced
        await discord.wait_for(
            lambda: any(m.reference_id == post.id for m in discord.channel_messages())
        )
    # The next start reads the closed vote's post back (message, reactions).
    async with running_bot(settings, discord):
        pass
    operations = {discord_schema._template(e.method, e.path) for e in discord.exchanges}
    assert {
        "PUT /applications/{application_id}/commands",
        "POST /interactions/{interaction_id}/{interaction_token}/callback",
        "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original",
        "POST /webhooks/{webhook_id}/{webhook_token}",
        "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me",
        "POST /channels/{channel_id}/messages",
    } <= operations
    assert problems(discord.exchanges) == []
