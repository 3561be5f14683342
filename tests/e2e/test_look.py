"""``/cover … look:current`` and the Development Mode fallback of "Apply to Spotify", end to end.

The real bot against the fake Discord and the fake Spotify (which serves the playlist's cover
list at ``/v1/playlists/{id}/images`` and the image bytes from its own ``/images/…``, the CDN's
stand-in), the embedded pipeline, a real SQLite file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bot.__main__ import main
from bot.app.look import LOOK_STRENGTH
from bot.app.request import request_again
from bot.app.storage import Storage
from bot.cogs.spotify import HOW_TO_SET_BY_HAND
from models.registry import resolve_model
from tests.e2e.test_account_linking import (
    ALICE,
    BOB,
    link,
    link_settings,
    reports,
    winner_announcement,
)
from tests.e2e.test_account_linking import own_playlist as own_playlist  # the fixture
from tests.fakes.discord import Attachment, FakeDiscord, Interaction
from tests.fakes.harness import bot_settings, cover_post, running_bot
from tests.fakes.spotify import FakeSpotify, Reply, make_playlist


def two_tone(size: int = 640, fmt: str = "JPEG") -> bytes:
    """A cover with a layout a model would not make by chance: orange left, blue right."""
    image = Image.new("RGB", (size, size), (240, 120, 20))
    image.paste((20, 60, 200), (size // 2, 0, size, size))
    out = io.BytesIO()
    image.save(out, format=fmt, quality=90)
    return out.getvalue()


def with_cover(spotify: FakeSpotify, name: str, data: bytes | None, **served) -> str:
    """A playlist whose cover (if any) the fake serves from its image CDN; its id."""
    playlist = make_playlist(name)
    if data is None:
        playlist["images"] = []
    else:
        url = spotify.add_image(f"cover-{playlist['id']}", data, **served)
        playlist["images"] = [{"url": url, "height": None, "width": None}]
    spotify.add_playlist(playlist, [])
    return playlist["id"]


def pixels(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return np.asarray(image.resize((64, 64), Image.Resampling.BOX), dtype=np.float64)


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


async def private_refusal(discord: FakeDiscord, interaction: Interaction) -> str:
    """The refusal only the requester sees: the public "thinking" reply deleted, then an
    ephemeral follow-up."""
    [message] = await discord.wait_for(lambda: discord.followups(interaction) or None)
    assert message.ephemeral and interaction.original.deleted
    return message.content


async def test_look_current_starts_from_the_playlists_cover(
    discord, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    start = two_tone()
    playlist_id = with_cover(fake_spotify, "orange and blue", start)
    async with running_bot(settings, discord) as bot:
        looked = await discord.slash(
            ALICE, "cover", playlist=playlist_id, count=2, look="current", strength=0.3
        )
        post = await cover_post(discord, looked)
        plain = await cover_post(
            discord, await discord.slash(ALICE, "cover", playlist=playlist_id, count=2)
        )

        # Read through the one Spotify module: the list, then the bytes from the CDN.
        assert len(fake_spotify.requests_to(f"/v1/playlists/{playlist_id}/images")) == 1
        assert len(fake_spotify.requests_to(f"/images/cover-{playlist_id}")) == 1
        # The details button says what the covers started from.
        details = [
            b["custom_id"] for b in post.buttons() if b["custom_id"].split(":")[1] == "details"
        ]
        pressed = await discord.press(BOB, post.id, details[0])
        await discord.wait_for(lambda: pressed.response is not None)
        assert "from the playlist's cover at strength 0.3" in pressed.response["content"]
        # Recorded: the look, the strength asked for, the picture as saved.
        first, second = bot.storage._rows("SELECT id FROM requests ORDER BY created_at")
        record = bot.storage.request(first["id"])
        assert (record.params.look, record.params.strength) == ("current", 0.3)
        saved = Path(record.params.start_image)
        native = resolve_model("embedded").native_size
        assert saved.is_file() and Image.open(saved).size == (native, native)
        assert bot.storage.request(second["id"]).params.look is None
        # The PNGs say they were made image-to-image.
        png = bot.storage.candidates(record.id)[0].png_path
        assert "Denoising strength: 0.3" in Image.open(png).text["parameters"]

        # Measurably closer to the playlist's cover than covers made from noise.
        source = pixels(start)
        covers = [a for a in post.attachments if a.filename.startswith("cover-")]
        others = [a for a in plain.attachments if a.filename.startswith("cover-")]
        near = [rms(pixels(a.data), source) for a in covers]
        far = [rms(pixels(a.data), source) for a in others]
        print(f"\nRMS to the playlist's cover: look:current {near}, from noise {far}")
        assert max(near) < 0.8 * min(far)

        # Without `strength`: the documented default.
        again = await discord.slash(ALICE, "cover", playlist=playlist_id, count=1, look="current")
        await cover_post(discord, again)
        *_, third = bot.storage._rows("SELECT id FROM requests ORDER BY created_at")
        assert bot.storage.request(third["id"]).params.strength == LOOK_STRENGTH == 0.6
    assert discord.unknown == [] and fake_spotify.schema_problems == []


async def test_look_current_refusals_are_private_and_queue_nothing(
    discord, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    bare = with_cover(fake_spotify, "no cover yet", None)
    huge = with_cover(fake_spotify, "huge", b"\xff\xd8\xff" + bytes(6 * 1024 * 1024))
    sneaky = with_cover(fake_spotify, "sneaky", two_tone() + bytes(6 * 1024 * 1024), chunked=True)
    html = with_cover(fake_spotify, "html", b"<html>hi</html>", content_type="text/html")
    fake = with_cover(fake_spotify, "fake jpeg", b"GIF89a" + bytes(100))
    expected = {
        bare: f"The playlist {bare} has no cover on Spotify to start from; give an image "
        "attachment instead (look:attachment), or leave `look` out.",
        huge: "The playlist's current cover is too large (6.0 MB; at most 5 MB).",
        sneaky: "The playlist's current cover is too large (more than 5 MB).",
        html: "The playlist's current cover is not a JPEG or PNG image (it came as text/html).",
        fake: "The playlist's current cover is not a JPEG or PNG image.",
    }
    async with running_bot(settings, discord) as bot:
        for playlist_id, sentence in expected.items():
            asked = await discord.slash(BOB, "cover", playlist=playlist_id, look="current")
            assert await private_refusal(discord, asked) == sentence
        assert bot.storage._rows("SELECT id FROM requests") == []
        assert bot.queue.pending_count == 0 and bot.queue.running == ()
        assert not (tmp_path / "covers" / "start-images").exists()
    assert discord.unknown == [] and fake_spotify.schema_problems == []


async def test_development_mode_refusal_offers_the_jpeg_to_set_by_hand(
    discord, fake_spotify, own_playlist, tmp_path, cache_dir, embedded_model_dir
):
    settings = link_settings(discord, fake_spotify, tmp_path, cache_dir)
    async with running_bot(settings, discord) as bot:
        await link(discord, ALICE)
        post, announcement = await winner_announcement(discord, bot, ALICE, own_playlist["id"])
        [button] = announcement.buttons()
        # The app's owner lists other people only now (or the app went back to Development
        # Mode): Spotify answers 403 "not registered" to Alice's token.
        fake_spotify.register_user("someone-else")

        await discord.press(ALICE, announcement.id, button["custom_id"])
        [report] = await discord.wait_for(lambda: reports(discord, announcement))
        assert report.content == (
            "Spotify refused the upload because the bot's Spotify app is in Development Mode "
            "and your Spotify account is not one of the (at most 5) accounts its owner added. "
            + HOW_TO_SET_BY_HAND
        )
        [jpeg] = report.attachments
        winner = bot.storage.candidate(bot.storage.cover_message(str(post.id)).request_id, 2)
        assert jpeg.filename == "cover-2.jpg"
        assert jpeg.data == Path(winner.jpeg_path).read_bytes()  # the upload-ready JPEG
        assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"
        assert fake_spotify.uploads == []
        [row] = bot.storage.uploads(str(post.id))
        assert row.status == "failed" and "Development Mode" in row.error

        # Any other 403 keeps today's message, without a file.
        fake_spotify.registered_users = None
        fake_spotify.script(f"/v1/playlists/{own_playlist['id']}/images", Reply(403))
        await discord.press(ALICE, announcement.id, button["custom_id"])
        await discord.wait_for(lambda: len(reports(discord, announcement)) == 2)
        other = reports(discord, announcement)[1]
        assert "HTTP 403" in other.content and other.attachments == []


# -- the command line --------------------------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def spotify_env(monkeypatch, spotify: FakeSpotify) -> None:
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", spotify.client_id)
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", spotify.client_secret)
    monkeypatch.setenv("SPOTIFY_API_BASE", spotify.api_base)
    monkeypatch.setenv("SPOTIFY_TOKEN_URL", spotify.token_url)


def cli_request(cli_env: Path, out: str):
    manifest = json.loads((Path(out.split()[0]).parent / "cover.json").read_text())
    storage = Storage(cli_env / "data" / "covers.db")
    try:
        return storage.request(manifest["request_id"])
    finally:
        storage.close()


def test_cli_from_current_cover_and_from_image(cli_env, capsys, fake_spotify, monkeypatch):
    spotify_env(monkeypatch, fake_spotify)
    start = two_tone(300)
    playlist_id = with_cover(fake_spotify, "orange and blue", start)
    argv = ["cover", playlist_id, "--count", "1", "--seed", "5"]

    code, out, err = run_cli([*argv, "--from-current-cover"], capsys)
    assert code == 0, err
    record = cli_request(cli_env, out)
    assert (record.params.look, record.params.strength) == ("current", LOOK_STRENGTH)
    png = Path(out.split()[0])
    assert f"Denoising strength: {LOOK_STRENGTH:g}" in Image.open(png).text["parameters"]

    picture = cli_env / "mine.png"
    picture.write_bytes(two_tone(200, "PNG"))
    code, out, err = run_cli([*argv, "--from-image", str(picture), "--strength", "0.3"], capsys)
    assert code == 0, err
    record = cli_request(cli_env, out)
    assert (record.params.look, record.params.strength) == ("attachment", 0.3)
    assert rms(pixels(Path(out.split()[0]).read_bytes()), pixels(start)) < 60

    # Refusals are one line, before any work.
    bare = with_cover(fake_spotify, "bare", None)
    text = cli_env / "notes.png"
    text.write_text("not a picture")
    for args, expected in [
        (["cover", bare, "--from-current-cover"], f"The playlist {bare} has no cover"),
        (["cover", playlist_id, "--from-image", str(text)], "is not a JPEG or PNG image"),
        (["cover", playlist_id, "--from-image", "/dev/zero"], "zero is not a regular file"),
        (["cover", playlist_id, "--from-current-cover", "--strength", "0"], "`strength`"),
    ]:
        code, out, err = run_cli(args, capsys)
        lines = err.strip().splitlines()
        assert code == 1 and out == "" and len(lines) == 1, err
        assert lines[0].startswith("error: ") and expected in lines[0], lines


async def test_a_reroll_and_a_restart_start_from_the_same_picture(
    discord, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    """A reroll of covers that kept the look starts from the picture saved the first time,
    even when the playlist's cover changed since; so does a request resumed after a restart."""
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    playlist_id = with_cover(fake_spotify, "orange and blue", two_tone())
    async with running_bot(settings, discord) as bot:
        first = await discord.slash(ALICE, "cover", playlist=playlist_id, count=1, look="current")
        post = await cover_post(discord, first)
        [row] = bot.storage._rows("SELECT id FROM requests")
        original = bot.storage.request(row["id"])

        fake_spotify.images.clear()  # the cover is gone from the CDN now
        stored = bot.storage.request(original.id)
        again = request_again(stored, user_id=str(ALICE.id), settings=settings)
        assert (again.look, again.start_image) == ("current", original.params.start_image)
        assert again.strength == LOOK_STRENGTH
        resumed = bot.service.resume(stored)  # as after a restart: no Spotify call at all
        assert resumed.request.start_image == original.params.start_image
        [spec] = resumed._plan.job.images
        assert spec.init_image == Path(original.params.start_image).read_bytes()
        assert resumed._plan.job.params.strength == LOOK_STRENGTH
        reroll = [
            b["custom_id"] for b in post.buttons() if b["custom_id"].split(":")[1] == "reroll"
        ]
        rerolled = await cover_post(discord, await discord.press(ALICE, post.id, reroll[0]))
        assert rerolled.attachments
        assert len(fake_spotify.requests_to(f"/v1/playlists/{playlist_id}/images")) == 1


async def test_an_attached_image_is_checked_then_painted_from(
    discord, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    playlist_id = with_cover(fake_spotify, "orange and blue", None)  # no cover of its own
    start = two_tone(256, "PNG")
    async with running_bot(settings, discord) as bot:
        mine = Attachment("mine.png", start, "image/png")
        asked = await discord.slash(
            ALICE, "cover", playlist=playlist_id, count=1, image=mine, strength=0.3
        )
        post = await cover_post(discord, asked)
        [row] = bot.storage._rows("SELECT id FROM requests")
        assert bot.storage.request(row["id"]).params.look == "attachment"
        [cover] = [a for a in post.attachments if a.filename.startswith("cover-")]
        assert rms(pixels(cover.data), pixels(start)) < 60
        assert fake_spotify.requests_to(f"/v1/playlists/{playlist_id}/images") == []

        # What Discord says of a file is checked before the reply is deferred: privately.
        for attached, sentence in [
            (
                Attachment("notes.txt", b"hello", "text/plain"),
                "The attached image is not a JPEG or PNG image (it came as text/plain).",
            ),
            (
                Attachment("big.png", start, "image/png", claimed_size=9 * 1024 * 1024),
                "The attached image is too large (9.0 MB; at most 5 MB).",
            ),
        ]:
            refused = await discord.slash(BOB, "cover", playlist=playlist_id, image=attached)
            await discord.wait_for(lambda: refused.response is not None)  # noqa: B023
            assert refused.response_type == 4 and refused.response["flags"] & 64
            assert refused.response["content"] == sentence
        # … and what the bytes are, once read: Discord's claims came from the uploader.
        for attached, sentence in [
            (
                Attachment("page.png", b"<html>" + bytes(100), "image/png"),
                "The attached image is not a JPEG or PNG image.",
            ),
            (
                Attachment("lie.png", start + bytes(6 * 1024 * 1024), "image/png", claimed_size=10),
                "The attached image is too large (6.0 MB; at most 5 MB).",
            ),
        ]:
            refused = await discord.slash(BOB, "cover", playlist=playlist_id, image=attached)
            assert await private_refusal(discord, refused) == sentence
        assert len(bot.storage._rows("SELECT id FROM requests")) == 1
    assert discord.unknown == []


async def test_look_current_with_the_community_style(
    discord, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    from tests.models.test_pipeline import make_lora

    settings = bot_settings(discord, fake_spotify, tmp_path, cache_dir)
    lora = make_lora(embedded_model_dir, tmp_path / "lora")
    playlist_id = with_cover(fake_spotify, "orange and blue", two_tone())
    async with running_bot(settings, discord) as bot:
        bot.storage.set_community_style(
            str(discord.guild_id), lora_path=str(lora), base_model="embedded", set_by="admin"
        )
        asked = await discord.slash(
            ALICE, "cover", playlist=playlist_id, count=1, look="current", community=True
        )
        await cover_post(discord, asked)
        [row] = bot.storage._rows("SELECT id FROM requests")
        params = bot.storage.request(row["id"]).params
        assert (params.community, params.lora, params.look) == (True, str(lora), "current")
        assert params.strength == LOOK_STRENGTH
