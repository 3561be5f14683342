"""Test data shaped like Spotify's answers: ids, artists, tracks, episodes, unavailable items
and playlists (``make_*``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

# -- builders for test data ----------------------------------------------------------------------

_ids = itertools.count()
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def fake_id(prefix: str = "") -> str:
    """A fresh 22-character base62 id, starting with ``prefix``."""
    n, digits = next(_ids), []
    for _ in range(22 - len(prefix)):
        n, digit = divmod(n, 62)
        digits.append(_BASE62[digit])
    return prefix + "".join(reversed(digits))


def make_artist(name: str, genres: Sequence[str] = (), artist_id: str | None = None) -> dict:
    artist_id = artist_id or fake_id("ar")
    return {
        "external_urls": {"spotify": f"https://open.spotify.com/artist/{artist_id}"},
        "followers": {"href": None, "total": 1200},
        "genres": list(genres),
        "href": f"https://api.spotify.com/v1/artists/{artist_id}",
        "id": artist_id,
        "images": [],
        "name": name,
        "popularity": 31,
        "type": "artist",
        "uri": f"spotify:artist:{artist_id}",
    }


def make_item(name: str, *artists: Mapping[str, Any], album: str = "Single") -> dict:
    """A playlist item as Spotify sends it since 2026 (``item``, not ``track``): a full track
    object, its album with every field the API description requires."""
    track_id, album_id = fake_id("tr"), fake_id("al")
    simple = [
        {k: a[k] for k in ("external_urls", "href", "id", "name", "type", "uri")} for a in artists
    ]
    return _item(
        {
            "album": {
                "album_type": "single",
                "artists": simple,
                "available_markets": ["DE", "US"],
                "external_urls": {"spotify": f"https://open.spotify.com/album/{album_id}"},
                "href": f"https://api.spotify.com/v1/albums/{album_id}",
                "id": album_id,
                "images": [],
                "name": album,
                "release_date": "2025-10-03",
                "release_date_precision": "day",
                "total_tracks": 1,
                "type": "album",
                "uri": f"spotify:album:{album_id}",
            },
            "artists": simple,
            "disc_number": 1,
            "duration_ms": 201000,
            "explicit": False,
            "external_urls": {"spotify": f"https://open.spotify.com/track/{track_id}"},
            "href": f"https://api.spotify.com/v1/tracks/{track_id}",
            "id": track_id,
            "is_local": False,
            "name": name,
            "popularity": 40,
            "track_number": 1,
            "type": "track",
            "uri": f"spotify:track:{track_id}",
        }
    )


def make_episode_item(name: str, show: str = "A Podcast") -> dict:
    """A podcast episode in a playlist: ``item`` is an episode object (``type: "episode"``, no
    ``artists``; its show says who made it)."""
    episode_id, show_id = fake_id("ep"), fake_id("sh")
    return _item(
        {
            "audio_preview_url": None,
            "description": "An episode.",
            "duration_ms": 1800000,
            "explicit": False,
            "external_urls": {"spotify": f"https://open.spotify.com/episode/{episode_id}"},
            "href": f"https://api.spotify.com/v1/episodes/{episode_id}",
            "html_description": "<p>An episode.</p>",
            "id": episode_id,
            "images": [],
            "is_externally_hosted": False,
            "is_playable": True,
            "languages": ["en"],
            "name": name,
            "release_date": "2026-01-15",
            "release_date_precision": "day",
            "show": {
                "available_markets": ["DE", "US"],
                "copyrights": [],
                "description": "A show.",
                "explicit": False,
                "external_urls": {"spotify": f"https://open.spotify.com/show/{show_id}"},
                "href": f"https://api.spotify.com/v1/shows/{show_id}",
                "html_description": "<p>A show.</p>",
                "id": show_id,
                "images": [],
                "is_externally_hosted": False,
                "languages": ["en"],
                "media_type": "audio",
                "name": show,
                "publisher": show,
                "total_episodes": 10,
                "type": "show",
                "uri": f"spotify:show:{show_id}",
            },
            "type": "episode",
            "uri": f"spotify:episode:{episode_id}",
        }
    )


def make_unavailable_item() -> dict:
    """An item whose track went away: Spotify sends ``item: null``."""
    return _item(None)


def _item(item: Mapping[str, Any] | None) -> dict:
    return {
        "added_at": "2026-03-01T20:15:00Z",
        "added_by": {
            "external_urls": {"spotify": "https://open.spotify.com/user/fakeowner"},
            "href": "https://api.spotify.com/v1/users/fakeowner",
            "id": "fakeowner",
            "type": "user",
            "uri": "spotify:user:fakeowner",
        },
        "is_local": False,
        "item": item,
    }


def make_playlist(
    name: str, description: str = "", *, playlist_id: str | None = None, owner: str = "fakeowner"
) -> dict:
    playlist_id = playlist_id or fake_id("pl")
    return {
        "collaborative": False,
        "description": description,
        "external_urls": {"spotify": f"https://open.spotify.com/playlist/{playlist_id}"},
        "followers": {"href": None, "total": 7},
        "href": f"https://api.spotify.com/v1/playlists/{playlist_id}",
        "id": playlist_id,
        "images": [{"height": 640, "url": f"https://i.scdn.co/image/{playlist_id}", "width": 640}],
        "name": name,
        "owner": {
            "display_name": owner.title(),
            "external_urls": {"spotify": f"https://open.spotify.com/user/{owner}"},
            "id": owner,
            "type": "user",
            "uri": f"spotify:user:{owner}",
        },
        "public": True,
        "snapshot_id": "AAAAAbcdEfGhIjKlMnOpQrStUvWxYz01",
        "type": "playlist",
        "uri": f"spotify:playlist:{playlist_id}",
    }
