"""End to end: linking a Spotify account through the bot's own callback server, prompts from a
linked owner's playlist, and "Apply to Spotify" on a closed vote.

The real discord.py bot runs against the fake Discord, the fake Spotify plays Spotify's
accounts service and Web API (authorise page, token endpoint, /me, items, cover upload), and
the tests play the person's browser with plain HTTP: they open the authorisation link from the
bot's ephemeral reply, follow Spotify's redirect to the bot's callback server, and read the
page it answers. Real SQLite files; the embedded tiny pipeline makes the covers.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from cryptography.fernet import Fernet
from PIL import Image

from bot.app.settings import Settings
from bot.cogs.spotify import APPLY_PREFIX
from tests.fakes.discord import FakeDiscord, FakeUser, Interaction, Message
from tests.fakes.harness import bot_settings, cover_post, running_bot
from tests.fakes.spotify import (
    CLIENT_SECRET,
    FakeSpotify,
    Reply,
    make_artist,
    make_item,
    make_playlist,
)

ALICE = FakeUser(1001, "alice")  # links the Spotify account that owns the playlist
BOB = FakeUser(1002, "bob")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def link_settings(
    discord: FakeDiscord, spotify: FakeSpotify, tmp: Path, cache_dir: Path, **overrides
) -> Settings:
    """The bot's settings with linking on: a token key, and a loopback redirect URI on a free
    port, registered with the fake Spotify as an operator registers it on the dashboard."""
    redirect = f"http://127.0.0.1:{free_port()}/spotify/callback"
    spotify.register_redirect_uri(redirect)
    values = {
        "token_key": Fernet.generate_key().decode(),
        "spotify_redirect_uri": redirect,
        "spotify_authorize_url": spotify.base_url + "/authorize",
    }
    return bot_settings(discord, spotify, tmp, cache_dir, **(values | overrides))


@pytest.fixture
def own_playlist(fake_spotify: FakeSpotify) -> dict:
    """A playlist of the fake Spotify's logged-in user, whose items the app alone can't read."""
    dreamy = make_artist("Lumen Harbor", ["dream pop"])
    fake_spotify.add_artist(dreamy)
    playlist = make_playlist("sunday dishes", owner=fake_spotify.account.id)
    items = [make_item(f"Song {n}", dreamy) for n in range(3)]
    fake_spotify.add_playlist(playlist, items)
    return playlist


async def ephemeral_reply(discord: FakeDiscord, interaction: Interaction) -> Message:
    await discord.wait_for(lambda: interaction.original is not None)
    assert interaction.response_type == 4 and interaction.original.ephemeral
    return interaction.original


async def start_link(discord: FakeDiscord, user: FakeUser) -> tuple[Interaction, str]:
    """``/spotify link``: the ephemeral reply and the authorisation URL on its button."""
    interaction = await discord.slash(user, "spotify link")
    reply = await ephemeral_reply(discord, interaction)
    [button] = reply.buttons()
    assert button["style"] == 5 and button["label"] == "Authorise on Spotify"  # a link button
    return interaction, button["url"]


async def browser(url: str) -> tuple[int, str, str | None]:
    """GET ``url`` without following redirects: status, body, Location."""
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False) as r:
        return r.status, await r.text(), r.headers.get("Location")


async def consent(url: str) -> str:
    """The person allows access on Spotify's page: the callback URL Spotify redirects to."""
    status, body, location = await browser(url)
    assert status == 302, body
    return location


async def link(discord: FakeDiscord, user: FakeUser) -> str:
    """The whole link, as a person does it; returns the callback page's text."""
    interaction, url = await start_link(discord, user)
    status, page, _ = await browser(await consent(url))
    assert status == 200, page
    await discord.wait_for(lambda: interaction.original.edits)
    return page


def stored_tokens(settings: Settings, bot, user: FakeUser) -> dict:
    row = bot.storage.spotify_account(str(user.id))
    key = settings.token_key.get_secret_value().encode()
    return json.loads(Fernet(key).decrypt(row.tokens))


def database_bytes(settings: Settings) -> bytes:
    """The database file and its WAL/shared-memory companions, as bytes on disk."""
    path = settings.db_path
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def assert_absent(haystack: bytes | str, needles: Iterable[str]) -> None:
    needles = [n for n in needles if n]
    assert needles
    for needle in needles:
        probe = needle.encode() if isinstance(haystack, bytes) else needle
        assert probe not in haystack, "a secret leaked"


# -- linking -----------------------------------------------------------------------------------


async def test_link_flow_through_the_callback_server(discord, fake_spotify, tmp_path, cache_dir):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        spotify_command = next(c for c in discord.commands if c["name"] == "spotify")
        assert {o["name"] for o in spotify_command["options"]} == {"link", "status", "unlink"}

        interaction, url = await start_link(discord, ALICE)
        assert "works once, for 10 minutes" in interaction.original.content
        # What the bot asked Spotify for: PKCE with S256, our redirect URI, the five scopes.
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["code_challenge_method"] == "S256" and len(query["state"]) >= 43
        assert query["redirect_uri"] == settings.spotify_redirect_uri
        assert set(query["scope"].split()) == {
            "playlist-read-private",
            "playlist-read-collaborative",
            "ugc-image-upload",
            "playlist-modify-public",
            "playlist-modify-private",
        }

        callback = await consent(url)
        assert callback.startswith(settings.spotify_redirect_uri + "?code=")
        status, page, _ = await browser(callback)
        assert status == 200 and "linked to the Spotify account Fake Owner" in page
        assert "fake-user" not in page  # no token on the page

        # The token exchange carried the verifier of this challenge (the fake checked it).
        [exchange] = fake_spotify.token_requests
        assert exchange["grant_type"] == "authorization_code"
        account = bot.accounts.account(str(ALICE.id))
        assert account.spotify_user_id == "fakeowner" and account.can_upload

        # The ephemeral link reply now says so, and its link button is gone.
        await discord.wait_for(lambda: interaction.original.edits)
        assert interaction.original.edits[-1] == "Linked to Spotify as **Fake Owner**."
        assert interaction.original.components == []

        status_reply = await ephemeral_reply(discord, await discord.slash(ALICE, "spotify status"))
        assert "Linked to Spotify as **Fake Owner** (`fakeowner`)" in status_reply.content
        assert "upload covers" in status_reply.content
        bobs = await ephemeral_reply(discord, await discord.slash(BOB, "spotify status"))
        assert bobs.content.startswith("No Spotify account is linked")
        assert bot.accounts.account(str(BOB.id)) is None
    assert discord.unknown == []
    assert all(not m.content or "fake-user" not in m.content for m in discord.messages.values())


async def test_forged_state_is_refused(discord, fake_spotify, tmp_path, cache_dir):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        _, url = await start_link(discord, ALICE)
        callback = await consent(url)
        real = parse_qs(urlsplit(callback).query)
        forged = f"{settings.spotify_redirect_uri}?code={real['code'][0]}&state=forged-state"
        status, page, _ = await browser(forged)
        assert status == 400 and "not valid or was already used" in page
        status, page, _ = await browser(settings.spotify_redirect_uri + "?code=abc")
        assert status == 400 and "only works as Spotify's redirect" in page
        assert bot.accounts.account(str(ALICE.id)) is None
        assert fake_spotify.token_requests == []  # nothing reached Spotify's token endpoint


async def test_replayed_state_is_refused(discord, fake_spotify, tmp_path, cache_dir):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        _, url = await start_link(discord, ALICE)
        callback = await consent(url)
        assert (await browser(callback))[0] == 200
        linked = bot.storage.spotify_account(str(ALICE.id))
        status, page, _ = await browser(callback)  # the same redirect again, e.g. from history
        assert status == 400 and "not valid or was already used" in page
        assert bot.storage.spotify_account(str(ALICE.id)) == linked  # untouched
        assert len(fake_spotify.token_requests) == 1  # the replay never reached Spotify


async def test_expired_state_is_refused(discord, fake_spotify, tmp_path, cache_dir):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir, link_state_ttl_s=0.5)
    async with running_bot(settings, discord) as bot:
        _, url = await start_link(discord, ALICE)
        callback = await consent(url)
        await asyncio.sleep(0.6)
        status, page, _ = await browser(callback)
        assert status == 400 and "expired" in page
        assert bot.accounts.account(str(ALICE.id)) is None
        assert fake_spotify.token_requests == []


async def test_declining_on_spotify_shows_why_and_links_nothing(
    discord, fake_spotify, tmp_path, cache_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    fake_spotify.consent = False
    async with running_bot(settings, discord) as bot:
        _, url = await start_link(discord, ALICE)
        status, page, _ = await browser(await consent(url))
        assert status == 400 and "access_denied" in page
        assert bot.accounts.account(str(ALICE.id)) is None


async def test_unset_encryption_key_gives_a_clear_message(
    discord, fake_spotify, tmp_path, cache_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)  # no COVER_TOKEN_KEY
    async with running_bot(settings, discord) as bot:
        assert bot.get_cog("SpotifyCog")._server is None  # no callback server either
        reply = await ephemeral_reply(discord, await discord.slash(ALICE, "spotify link"))
        assert reply.content.startswith(
            "Linking Spotify accounts is switched off on this bot: its operator has not set "
            "COVER_TOKEN_KEY"
        )
        assert "\n" not in reply.content and reply.buttons() == []
        status = await ephemeral_reply(discord, await discord.slash(ALICE, "spotify status"))
        assert "COVER_TOKEN_KEY" in status.content


async def test_unlink_removes_the_tokens(discord, fake_spotify, tmp_path, cache_dir):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        await link(discord, ALICE)
        blob = bot.storage.spotify_account(str(ALICE.id)).tokens
        assert bytes(blob) in database_bytes(settings)

        reply = await ephemeral_reply(discord, await discord.slash(ALICE, "spotify unlink"))
        assert reply.content.startswith("Unlinked: the bot deleted your Spotify tokens.")
        assert bot.storage.spotify_account(str(ALICE.id)) is None
        # Gone from the file itself, not only from the table (secure_delete + checkpoint).
        assert bytes(blob) not in database_bytes(settings)
        status = await ephemeral_reply(discord, await discord.slash(ALICE, "spotify status"))
        assert status.content.startswith("No Spotify account is linked")
        again = await ephemeral_reply(discord, await discord.slash(ALICE, "spotify unlink"))
        assert again.content.startswith("No Spotify account was linked")


async def test_stored_tokens_are_not_plain_text_in_the_database_file(
    discord, fake_spotify, tmp_path, cache_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        await link(discord, ALICE)
        await start_link(discord, BOB)  # a pending link: its verifier is in the file too
        tokens = stored_tokens(settings, bot, ALICE)
        assert tokens["access_token"] in fake_spotify.user_tokens()
        verifier = fake_spotify.token_requests[0]["code_verifier"]
    on_disk = database_bytes(settings)
    assert b"spotify_accounts" in on_disk  # the right file, with the table in it
    assert_absent(on_disk, [*fake_spotify.user_tokens(), verifier])


# -- /cover with a linked account ----------------------------------------------------------------


async def test_cover_reads_the_items_of_your_own_playlist_with_your_account(
    discord, fake_spotify, own_playlist, tmp_path, cache_dir, embedded_model_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    playlist_id = own_playlist["id"]
    async with running_bot(settings, discord) as bot:
        # Not linked: metadata only, as the app alone reads it.
        bobs = await discord.slash(BOB, "cover", playlist=playlist_id, count=1, style="artist")
        await cover_post(discord, bobs)
        assert bot.storage.latest_snapshot(playlist_id)["items"].get("items") is None

        await link(discord, ALICE)
        alices = await discord.slash(ALICE, "cover", playlist=playlist_id, count=1, style="artist")
        await cover_post(discord, alices)
        snapshot = bot.storage.latest_snapshot(playlist_id)
        assert [it["item"]["name"] for it in snapshot["items"]["items"]] == [
            "Song 0",
            "Song 1",
            "Song 2",
        ]
        assert snapshot["artists"][0]["genres"] == ["dream pop"]
        rows = bot.storage._rows("SELECT user_id, prompts FROM requests ORDER BY created_at")
        prompts = {r["user_id"]: json.loads(r["prompts"])[0] for r in rows}
        assert "Lumen Harbor" in prompts[str(ALICE.id)]["text"]
        assert prompts[str(ALICE.id)]["style"] == "artist"
        assert "Lumen Harbor" not in prompts[str(BOB.id)]["text"]


# -- Apply to Spotify --------------------------------------------------------------------------


async def winner_announcement(discord: FakeDiscord, bot, requester: FakeUser, playlist_id: str):
    """/cover by ``requester``, one vote by Bob, closed by the requester: the announcement."""
    interaction = await discord.slash(requester, "cover", playlist=playlist_id, count=2)
    post = await cover_post(discord, interaction)
    await discord.react(BOB, post.id, "2️⃣")
    await discord.wait_for(lambda: bot.storage.tally(str(post.id)) == {1: 0, 2: 1})
    await discord.react(requester, post.id, "✅")
    announcement = await discord.wait_for(
        lambda: next((m for m in discord.channel_messages() if m.reference_id == post.id), None)
    )
    return post, announcement


def reports(discord: FakeDiscord, announcement: Message) -> list[Message]:
    return [m for m in discord.channel_messages() if m.reference_id == announcement.id]


async def test_apply_uploads_the_winner_and_refreshes_an_expired_token(
    discord, fake_spotify, own_playlist, tmp_path, cache_dir, embedded_model_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        fake_spotify.user_token_lifetime_s = 2  # a short-lived access token…
        await link(discord, ALICE)
        linked_at = time.monotonic()
        fake_spotify.user_token_lifetime_s = 3600
        post, announcement = await winner_announcement(discord, bot, ALICE, own_playlist["id"])
        await asyncio.sleep(max(0.0, linked_at + 2.1 - time.monotonic()))  # … now expired

        [button] = announcement.buttons()
        assert button["label"] == "Apply to Spotify"
        assert button["custom_id"] == f"{APPLY_PREFIX}{post.id}"
        assert f"<@{ALICE.id}> can make it the playlist's cover" in announcement.content

        press = await discord.press(ALICE, announcement.id, button["custom_id"])
        [report] = await discord.wait_for(lambda: reports(discord, announcement))
        assert press.response_type == 6  # acknowledged silently; the result is in the channel
        assert report.content.startswith("Cover 2 is now the cover of **sunday dishes**")

        # The upload arrived: the winner's JPEG, base64, under Spotify's 256 KB.
        [upload] = fake_spotify.uploads
        winner_jpeg = next(a for a in announcement.attachments if a.filename.endswith(".jpg"))
        assert upload.jpeg == winner_jpeg.data and upload.account_id == "fakeowner"
        assert upload.content_type == "image/jpeg" and upload.payload_bytes <= 256 * 1024
        assert Image.open(io.BytesIO(upload.jpeg)).format == "JPEG"
        assert upload.payload_bytes == len(base64.b64encode(upload.jpeg))
        # … with a refreshed token: the stored one had expired.
        grants = [r["grant_type"] for r in fake_spotify.token_requests]
        assert grants == ["authorization_code", "refresh_token"]
        [row] = bot.storage.uploads(str(post.id))
        assert (row.status, row.candidate, row.error) == ("applied", 2, None)
        assert row.jpeg_bytes == len(upload.jpeg) and row.spotify_user_id == "fakeowner"
        assert bot.storage.spotify_account(str(ALICE.id)).refreshed_at is not None

    # After a restart the same button still works (its custom_id carries the message).
    async with running_bot(settings, discord) as bot:
        await discord.press(ALICE, announcement.id, button["custom_id"])
        await discord.wait_for(lambda: len(reports(discord, announcement)) == 2)
        assert len(fake_spotify.uploads) == 2
        assert [r.status for r in bot.storage.uploads(str(post.id))] == ["applied"] * 2


async def test_another_users_press_is_refused(
    discord, fake_spotify, own_playlist, tmp_path, cache_dir, embedded_model_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        await link(discord, ALICE)
        post, announcement = await winner_announcement(discord, bot, ALICE, own_playlist["id"])
        [button] = announcement.buttons()

        press = await discord.press(BOB, announcement.id, button["custom_id"])
        refusal = await ephemeral_reply(discord, press)
        assert refusal.content == (
            "Only the person who asked for these covers can apply the winner to Spotify."
        )
        await asyncio.sleep(0.3)
        assert fake_spotify.uploads == [] and reports(discord, announcement) == []
        assert bot.storage.uploads(str(post.id)) == []  # a refused press is not an upload


async def test_no_button_when_the_requester_does_not_own_the_playlist(
    discord, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    theirs = make_playlist("not mine", owner="someone-else")
    fake_spotify.add_playlist(theirs, [])
    async with running_bot(settings, discord) as bot:
        await link(discord, ALICE)
        _, announcement = await winner_announcement(discord, bot, ALICE, theirs["id"])
        assert announcement.content.startswith("Cover 2️⃣ wins")
        assert announcement.buttons() == [] and "can make it" not in announcement.content


async def test_a_rate_limited_upload_is_reported_and_recorded(
    discord, fake_spotify, own_playlist, tmp_path, cache_dir, embedded_model_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    images = f"/v1/playlists/{own_playlist['id']}/images"
    async with running_bot(settings, discord) as bot:
        await link(discord, ALICE)
        post, announcement = await winner_announcement(discord, bot, ALICE, own_playlist["id"])
        [button] = announcement.buttons()

        fake_spotify.script(images, Reply(429, retry_after=60))
        await discord.press(ALICE, announcement.id, button["custom_id"])
        [report] = await discord.wait_for(lambda: reports(discord, announcement))
        assert report.content == (
            "The cover was not applied: Spotify is rate-limiting this bot; try again in 60 s."
        )
        [row] = bot.storage.uploads(str(post.id))
        assert row.status == "rate_limited" and "60 s" in row.error
        assert fake_spotify.uploads == []

        # Spotify refuses the scope: reported with what to do, recorded as failed.
        fake_spotify.script(images, Reply(403, body={"error": {"status": 403}}))
        await discord.press(ALICE, announcement.id, button["custom_id"])
        await discord.wait_for(lambda: len(reports(discord, announcement)) == 2)
        assert "HTTP 403" in reports(discord, announcement)[1].content
        assert "/spotify link" in reports(discord, announcement)[1].content

        # Later it goes through.
        await discord.press(ALICE, announcement.id, button["custom_id"])
        await discord.wait_for(lambda: len(reports(discord, announcement)) == 3)
        assert [r.status for r in bot.storage.uploads(str(post.id))] == [
            "rate_limited",
            "failed",
            "applied",
        ]
        assert len(fake_spotify.uploads) == 1


# -- secrets -------------------------------------------------------------------------------------


async def test_the_logs_of_the_link_flow_hold_no_secrets(
    discord, fake_spotify, own_playlist, tmp_path, cache_dir, embedded_model_dir, caplog
):
    caplog.set_level(logging.DEBUG)
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        await link(discord, ALICE)
        fake_spotify.expire_user_tokens()  # so that a 401 and a refresh happen as well
        _, announcement = await winner_announcement(discord, bot, ALICE, own_playlist["id"])
        [button] = announcement.buttons()
        await discord.press(ALICE, announcement.id, button["custom_id"])
        await discord.wait_for(lambda: reports(discord, announcement))
        await discord.slash(ALICE, "spotify unlink")
        await discord.wait_for(lambda: bot.accounts.account(str(ALICE.id)) is None)
    assert len(fake_spotify.uploads) == 1
    assert "Refreshed the Spotify token" in caplog.text  # the flow did run, and was logged
    codes = [r["code"] for r in fake_spotify.token_requests if "code" in r]
    verifiers = [r["code_verifier"] for r in fake_spotify.token_requests if "code_verifier" in r]
    states = [a["state"] for a in fake_spotify.authorizations]
    secrets = [
        CLIENT_SECRET,
        settings.token_key.get_secret_value(),
        *fake_spotify.user_tokens(),
        *codes,
        *verifiers,
        *states,
    ]
    assert len(secrets) == 2 + 4 + 1 + 1 + 1
    logged = "\n".join(
        [caplog.text, *(r.getMessage() for r in caplog.records), *map(repr, caplog.records)]
    )
    assert_absent(logged, secrets)


async def test_a_head_request_does_not_use_up_the_state(discord, fake_spotify, tmp_path, cache_dir):
    """Link prefetchers (chat apps, mail scanners) send HEAD first: it must not spend the
    one-time state, so the person's own GET still links."""
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        _, url = await start_link(discord, ALICE)
        callback = await consent(url)
        async with aiohttp.ClientSession() as session, session.head(callback) as r:
            assert r.status == 405
        assert fake_spotify.token_requests == []
        status, page, _ = await browser(callback)
        assert status == 200, page
        assert bot.storage.spotify_account(str(ALICE.id)) is not None


async def test_a_malformed_request_line_keeps_its_query_out_of_the_log(
    discord, fake_spotify, tmp_path, cache_dir, caplog
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    caplog.set_level(logging.DEBUG)
    async with running_bot(settings, discord) as bot:
        host, port, path = settings.callback_bind()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET {path}?code=SECRETCODE&state=SECRETSTATE HTTP/1.1 x\r\n\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(1000), 5)
        writer.close()
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
        assert bot.storage is not None
    assert "SECRETCODE" not in caplog.text and "SECRETSTATE" not in caplog.text
