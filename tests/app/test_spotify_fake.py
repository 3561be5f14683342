"""The fake Spotify (tests/fakes/spotify/) against Spotify's own API description.

Every test that uses the fake already fails when one of its answers does not fit the description
(tests/fakes/spotify_schema.py); these tests make sure every kind of answer is given at least
once, and that the check catches what the fake used to invent.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from PIL import Image

from tests.fakes import spotify_schema
from tests.fakes.spotify import (
    CLIENT_ID,
    CLIENT_SECRET,
    COVER_PAYLOAD_CUTOFF,
    FakeSpotify,
    Grant,
    fake_id,
    make_artist,
    make_episode_item,
    make_item,
    make_playlist,
    make_unavailable_item,
)


def call(server: FakeSpotify, path: str, token: str, method: str = "GET", body: bytes = b""):
    """(status, JSON body or None) of one request to the fake."""
    request = urllib.request.Request(
        server.base_url + path,
        data=body or None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            raw, status = answer.read(), answer.status
    except urllib.error.HTTPError as refused:
        raw, status = refused.read(), refused.code
    return status, json.loads(raw) if raw else None


def app_token(server: FakeSpotify) -> str:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    request = urllib.request.Request(
        server.token_url,
        data=b"grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())["access_token"]


def user_token(server: FakeSpotify, user: str = "fakeowner") -> str:
    account = server.account if user == server.account.id else type(server.account)(id=user)
    scopes = frozenset({"ugc-image-upload", "playlist-modify-public", "playlist-read-private"})
    return server._issue(Grant(account, server.client_id, scopes))["access_token"]


def jpeg_base64(size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 90)).save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue())


def test_every_kind_of_answer_fits_the_description(fake_spotify: FakeSpotify) -> None:
    artist = make_artist("Lumen Harbor", ["dream pop"])
    fake_spotify.add_artist(artist)
    playlist = make_playlist("mixed bag")
    items = [make_item("Song", artist), make_episode_item("Talk"), make_unavailable_item()]
    fake_spotify.add_playlist(playlist, items)
    pid, app, owner = playlist["id"], app_token(fake_spotify), user_token(fake_spotify)
    stranger = user_token(fake_spotify, "someone-else")
    answers = {
        "metadata only": call(fake_spotify, f"/v1/playlists/{pid}", app),
        "with items": call(fake_spotify, f"/v1/playlists/{pid}", owner),
        "items": call(fake_spotify, f"/v1/playlists/{pid}/items?limit=2", owner),
        "items refused": call(fake_spotify, f"/v1/playlists/{pid}/items", app),
        "items to a stranger": call(fake_spotify, f"/v1/playlists/{pid}/items", stranger),
        "limit too big": call(fake_spotify, f"/v1/playlists/{pid}/items?limit=51", owner),
        "no playlist": call(fake_spotify, f"/v1/playlists/{fake_id('x')}", app),
        "artist": call(fake_spotify, f"/v1/artists/{artist['id']}", app),
        "search": call(fake_spotify, "/v1/search?q=mixed&type=playlist", app),
        "me": call(fake_spotify, "/v1/me", owner),
        "me with an app token": call(fake_spotify, "/v1/me", app),
        "no token": call(fake_spotify, f"/v1/playlists/{pid}", "made-up"),
        "cover": call(fake_spotify, f"/v1/playlists/{pid}/images", owner, "PUT", jpeg_base64()),
    }
    fake_spotify.expire_app_tokens()
    answers["expired app token"] = call(fake_spotify, f"/v1/playlists/{pid}", app)
    fake_spotify.registered_users = {"fakeowner"}
    answers["unregistered user"] = call(fake_spotify, "/v1/me", stranger)

    assert {name: status for name, (status, _) in answers.items()} == {
        "metadata only": 200,
        "with items": 200,
        "items": 200,
        "items refused": 403,
        "items to a stranger": 403,
        "limit too big": 400,
        "no playlist": 404,
        "artist": 200,
        "search": 200,
        "me": 200,
        "me with an app token": 403,
        "no token": 401,
        "cover": 202,
        "expired app token": 401,
        "unregistered user": 403,
    }
    assert "items" not in answers["metadata only"][1]  # no stub: the field is absent
    assert [
        it["item"] and it["item"]["type"] for it in answers["with items"][1]["items"]["items"]
    ] == [
        "track",
        "episode",
        None,
    ]
    assert answers["search"][1]["playlists"]["items"][0]["items"]["total"] == 3
    assert answers["search"][1]["playlists"]["limit"] == 5  # Spotify's default
    assert answers["me"][1]["account_id"]
    assert fake_spotify.schema_problems == []


def test_cover_cutoff_is_spotifys_figure_not_ours(fake_spotify: FakeSpotify) -> None:
    playlist = make_playlist("mine")
    fake_spotify.add_playlist(playlist)
    owner = user_token(fake_spotify)
    path = f"/v1/playlists/{playlist['id']}/images"
    payload = jpeg_base64()
    # Padding after the image data is still valid base64 of a JPEG with trailing bytes.
    just_over = payload + b"A" * (COVER_PAYLOAD_CUTOFF + 4 - len(payload))
    assert COVER_PAYLOAD_CUTOFF < len(just_over) < 256 * 1024  # under 256 KiB, still refused
    assert call(fake_spotify, path, owner, "PUT", just_over)[0] == 413


@pytest.mark.parametrize(
    ("what", "body"),
    [
        # The stub the fake once sent for a refused playlist: Spotify leaves `items` out.
        ("refused stub", {**make_playlist("x"), "items": {"href": "h", "total": 1}}),
        ("invented field", {**make_playlist("x"), "mood": "sad"}),
    ],
)
def test_the_check_catches_inventions(what: str, body: dict[str, Any]) -> None:
    assert spotify_schema.problems("GET", "/playlists/{playlist_id}", 200, body), what


def test_the_check_wants_the_album_fields_spotify_requires() -> None:
    item = make_item("Song", make_artist("A"))
    page = {
        "href": "h",
        "items": [item],
        "limit": 1,
        "next": None,
        "offset": 0,
        "previous": None,
        "total": 1,
    }
    assert spotify_schema.problems("GET", "/playlists/{playlist_id}/items", 200, page) == []
    del item["item"]["album"]["release_date"]
    [problem] = spotify_schema.problems("GET", "/playlists/{playlist_id}/items", 200, page)
    assert "release_date" in problem
