"""The start picture of ``look`` (bot/app/look.py) and the bounded fetch of a playlist's cover
(bot/app/spotify_images.py): properties over any bytes, URL and Spotify answer, and the real
spotipy and requests against the fake Spotify for the ways a CDN fails."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.app.errors import SpotifyUnavailable, StartImageRefused
from bot.app.look import (
    MAX_START_BYTES,
    START_TYPES,
    check_type,
    save_start,
    sniff_type,
    start_png,
)
from bot.app.records import MalformedRow, StoredParams
from bot.app.spotify_images import allowed_host, cover_url, download_cover
from tests.app.test_spotify_reads import make_reader
from tests.fakes.spotify import (
    Reply,
    fake_spotify_fixture,  # noqa: F401  (provides the `fake_spotify` fixture)
    make_playlist,
)
from tests.properties import examples


def encoded(size: tuple[int, int] = (40, 30), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "orange").save(out, format=fmt)
    return out.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``x``height`` with (almost) no pixel data: the shape
    of a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


VALID = [encoded(), encoded(fmt="JPEG"), encoded((300, 90), "PNG", "RGBA"), encoded(mode="P")]


def mangled(data: bytes, cut: int, at: int, byte: int) -> bytes:
    """A valid image truncated and with one byte changed: what a broken upload looks like."""
    data = bytearray(data[: max(1, cut)])
    data[at % len(data)] = byte
    return bytes(data)


any_bytes = st.binary(max_size=4096) | st.builds(
    mangled,
    st.sampled_from(VALID),
    st.integers(0, 2000),
    st.integers(0, 4000),
    st.integers(0, 255),
)


@settings(max_examples=examples(300), deadline=None)
@given(data=any_bytes, size=st.sampled_from([64, 128]))
@example(data=png_declaring(50_000, 50_000), size=64)
@example(data=encoded(fmt="GIF"), size=64)
@example(data=encoded(fmt="BMP"), size=64)
@example(data=b"", size=64)
def test_any_bytes_give_a_square_start_image_or_one_refusal(data, size):
    try:
        png = start_png(data, size, "The attached image")
    except StartImageRefused as refused:
        text = str(refused)
        assert text.startswith("The attached image") and text.endswith(".")
        return
    with Image.open(io.BytesIO(png)) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (size, size), "RGB")


@settings(max_examples=examples(200), deadline=None)
@given(content_type=st.none() | st.text(max_size=60) | st.sampled_from(START_TYPES))
def test_any_declared_type_is_taken_or_refused_by_name(content_type):
    try:
        check_type(content_type, "The attached image")
    except StartImageRefused as refused:
        assert str(refused).startswith("The attached image is not a JPEG or PNG image (it came as")
    else:
        assert content_type.split(";")[0].strip().lower() in START_TYPES


def test_the_specific_refusals():
    with pytest.raises(
        StartImageRefused, match=r"^The cover declares more pixels than this reads\.$"
    ):
        start_png(png_declaring(50_000, 50_000), 64, "The cover")
    with pytest.raises(StartImageRefused, match=r"^The cover is not a JPEG or PNG image\.$"):
        start_png(encoded(fmt="GIF"), 64, "The cover")
    with pytest.raises(StartImageRefused, match=r"too large \(5\.0 MB; at most 5 MB\)"):
        start_png(VALID[0] + bytes(MAX_START_BYTES), 64, "The cover")
    with pytest.raises(StartImageRefused, match="is not a readable image"):
        start_png(VALID[0][:60], 64, "The cover")
    check_type("image/png; charset=binary", "The cover")  # parameters do not matter
    with pytest.raises(StartImageRefused, match=r"\(it came as text/html1here\)\.$"):
        check_type("text/html<@&1> **here**", "The cover")  # shown without markup
    assert sniff_type(VALID[0]) == "image/png" and sniff_type(VALID[1]) == "image/jpeg"
    assert sniff_type(encoded(fmt="GIF")) is None


def test_a_wide_picture_is_cropped_to_its_centre(tmp_path):
    picture = Image.new("RGB", (300, 100), "red")
    picture.paste((0, 0, 255), (100, 0, 200, 100))  # blue in the middle third
    out = io.BytesIO()
    picture.save(out, format="PNG")
    png = start_png(out.getvalue(), 64, "The cover")
    assert Image.open(io.BytesIO(png)).getpixel((32, 32)) == (0, 0, 255)
    assert Image.open(io.BytesIO(png)).getpixel((1, 1)) == (0, 0, 255)
    saved = save_start(png, tmp_path / "start")
    assert save_start(png, tmp_path / "start") == saved and saved.read_bytes() == png


# -- the cover's URL and host ------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=examples(200), deadline=None)
@given(images=json_values | st.lists(st.fixed_dictionaries({"url": json_values}), max_size=3))
def test_any_answer_gives_a_url_or_says_there_is_no_cover(images):
    try:
        url = cover_url(images, "PL")
    except StartImageRefused as refused:
        assert str(refused).startswith("The playlist PL has no cover on Spotify")
    else:
        assert isinstance(url, str) and url


@settings(max_examples=examples(300), deadline=None)
@given(
    url=st.text(max_size=80)
    | st.builds("{}://{}{}".format, st.text(max_size=6), st.text(max_size=20), st.text(max_size=10))
)
@example(url="https://[::1")
@example(url="https://i.scdn.co:99999/x")
def test_any_url_is_allowed_or_not_without_an_error(url):
    assert allowed_host(url, "http://127.0.0.1:8080/v1") in (True, False)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://i.scdn.co/image/ab67", True),
        ("https://mosaic.scdn.co/640/ab67", True),
        ("https://image-cdn-ak.spotifycdn.com/image/ab67", True),
        ("http://i.scdn.co/image/ab67", False),  # not https
        ("https://i.scdn.co.evil.example/image", False),
        ("https://evilscdn.co/image", False),
        ("https://169.254.169.254/latest/meta-data", False),  # the cloud's metadata service
        ("file:///etc/passwd", False),
        ("http://127.0.0.1:8080/images/x", True),  # the configured API's own host and port
        ("http://127.0.0.1:8081/images/x", False),
    ],
)
def test_only_spotifys_image_hosts(url, allowed):
    assert allowed_host(url, "http://127.0.0.1:8080/v1") is allowed


# -- the real fetch against the fake Spotify ---------------------------------------------------


def test_current_cover_reads_the_list_and_the_bytes(fake_spotify):
    playlist = make_playlist("cover")
    url = fake_spotify.add_image("c1", VALID[1])
    playlist["images"] = [{"url": url, "height": None, "width": None}]
    fake_spotify.add_playlist(playlist)
    assert make_reader(fake_spotify).current_cover(playlist["id"]) == (VALID[1], "image/jpeg")


def test_the_cdn_failing_is_unavailable_not_a_crash(fake_spotify):
    reader = make_reader(fake_spotify, spotify_timeout_s=0.5)
    api = fake_spotify.api_base
    with pytest.raises(SpotifyUnavailable, match="HTTP 404"):
        download_cover(fake_spotify.base_url + "/images/none", api_base=api, timeout_s=1)
    fake_spotify.add_image("slow", VALID[0], "image/png")
    fake_spotify.script("/images/slow", Reply(200, delay_s=2))
    with pytest.raises(SpotifyUnavailable, match=r"within 0\.5 s \((ReadTimeout|Timeout)\)"):
        download_cover(fake_spotify.base_url + "/images/slow", api_base=api, timeout_s=0.5)
    with pytest.raises(StartImageRefused, match="not on Spotify's image servers"):
        download_cover("https://example.org/cover.jpg", api_base=api, timeout_s=1)
    # Spotify itself refusing the list: said, not raised as spotipy's own error.
    playlist = make_playlist("refused")
    fake_spotify.add_playlist(playlist)
    fake_spotify.script(f"/v1/playlists/{playlist['id']}/images", Reply(404))
    with pytest.raises(SpotifyUnavailable, match="HTTP 404 for the cover"):
        reader.current_cover(playlist["id"])


def test_the_look_is_stored_typed_and_read_back():
    stored = StoredParams(
        width=64,
        height=64,
        steps=4,
        guidance=1.0,
        strength=0.6,
        look="current",
        start_image="covers/start-images/start-0123.png",
    )
    assert StoredParams.from_json(stored.to_json()) == stored
    plain = StoredParams(width=64, height=64, steps=4, guidance=1.0)
    assert "look" not in plain.to_json() and StoredParams.from_json(plain.to_json()) == plain
    with pytest.raises(MalformedRow, match="look must be text"):
        StoredParams.from_json(stored.to_json().replace('"current"', "[1]"))
