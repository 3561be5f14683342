"""What we know about one playlist, read from Spotify or from a snapshot file.

The snapshot format is Spotify's own playlist response (``GET /v1/playlists/{id}``), optionally
with its ``items`` (or legacy ``tracks``) page filled in, plus one key Spotify does not send:
``artists``, a list of full artist objects (with ``genres``) as ``GET /v1/artists/{id}`` returns
them. That is exactly what :mod:`bot.app.spotify` stores when it snapshots a playlist.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.app.errors import SnapshotError


@dataclass(frozen=True)
class TrackFacts:
    name: str
    artists: tuple[str, ...]
    artist_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlaylistFacts:
    id: str
    name: str
    description: str  # plain text: tags stripped, entities decoded, links removed
    owner_id: str = ""
    owner_name: str = ""
    image_url: str | None = None
    total_items: int | None = None  # as Spotify reports it, even when items were not readable
    tracks: tuple[TrackFacts, ...] = ()
    top_artists: tuple[str, ...] = ()  # most frequent first
    top_genres: tuple[str, ...] = ()  # most frequent first, weighted by tracks
    items_readable: bool = False  # False: Spotify gave metadata only (see docs/facts.md, Feb 2026)
    source: str = "spotify"  # "spotify" or "snapshot:<path>"
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


_TAG = re.compile(r"<[^>]+>")
_URL = re.compile(r"https?://\S+|www\.\S+")
_SPACE = re.compile(r"\s+")


def clean_description(text: str | None) -> str:
    """Spotify descriptions are HTML-escaped and may hold ``<a href>`` links: make plain text."""
    if not text:
        return ""
    text = html.unescape(_TAG.sub(" ", html.unescape(text)))
    text = _URL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def _item_track(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # Since Feb 2026 items carry "item"; older responses (and extended-quota apps) carry "track".
    track = item.get("item") or item.get("track")
    return track if isinstance(track, Mapping) else None


def facts_from_spotify(
    playlist: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]] | None,
    artists: Iterable[Mapping[str, Any]] = (),
    *,
    source: str = "spotify",
) -> PlaylistFacts:
    """Build :class:`PlaylistFacts` from Spotify JSON.

    ``items`` is None when Spotify refused them (metadata only); an empty list means the
    playlist is empty. ``artists`` are full artist objects, used for genres.
    """
    if not isinstance(playlist, Mapping) or not isinstance(playlist.get("id"), str):
        raise SnapshotError("the playlist JSON has no 'id' string")
    owner = playlist.get("owner") or {}
    images = playlist.get("images") or []
    page = playlist.get("items") or playlist.get("tracks") or {}
    total = page.get("total") if isinstance(page, Mapping) else None

    tracks: list[TrackFacts] = []
    for item in items or ():
        track = _item_track(item)
        if track is None or not track.get("name"):
            continue  # removed tracks (`item: null`) and local files without metadata
        if track.get("type", "track") != "track":
            continue  # podcast episodes: talk, not music; their show is no artist to paint
        track_artists = [a for a in track.get("artists") or [] if isinstance(a, Mapping)]
        tracks.append(
            TrackFacts(
                name=str(track["name"]),
                artists=tuple(str(a.get("name", "")) for a in track_artists if a.get("name")),
                artist_ids=tuple(str(a["id"]) for a in track_artists if a.get("id")),
            )
        )

    artist_count = Counter(name for t in tracks for name in t.artists)
    genres_by_artist = {
        str(a["id"]): [str(g) for g in a.get("genres") or []] for a in artists if a.get("id")
    }
    genre_count: Counter[str] = Counter()
    for t in tracks:
        for artist_id in t.artist_ids:
            genre_count.update(genres_by_artist.get(artist_id, ()))

    return PlaylistFacts(
        id=playlist["id"],
        name=str(playlist.get("name") or "").strip(),
        description=clean_description(playlist.get("description")),
        owner_id=str(owner.get("id") or ""),
        owner_name=str(owner.get("display_name") or owner.get("id") or ""),
        image_url=(images[0].get("url") if images and isinstance(images[0], Mapping) else None),
        total_items=total if isinstance(total, int) else None,
        tracks=tuple(tracks),
        top_artists=tuple(name for name, _ in artist_count.most_common()),
        top_genres=tuple(name for name, _ in genre_count.most_common()),
        items_readable=items is not None,
        source=source,
        raw=dict(playlist),
    )


# -- the snapshot file's shape --------------------------------------------------------------
# Only the fields facts_from_spotify reads are typed; everything else Spotify sends is kept as
# it is (extra="allow"). A wrong type anywhere is named by its path (owner, items.items.3.item)
# in one line, instead of surfacing later as an AttributeError deep in the prompt builder.


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Owner(_Loose):
    id: str | None = None
    display_name: str | None = None


class _Image(_Loose):
    url: str | None = None


class _Artist(_Loose):
    id: str | None = None
    name: str | None = None
    genres: list[str] | None = None


class _Track(_Loose):
    name: str | None = None
    artists: list[_Artist] | None = None


class _Item(_Loose):
    item: _Track | None = None
    track: _Track | None = None


class _Page(_Loose):
    total: int | None = None
    items: list[_Item] | None = None


class _Snapshot(_Loose):
    id: str
    name: str
    description: str | None = None
    owner: _Owner | None = None
    images: list[_Image] | None = None
    items: _Page | None = None
    tracks: _Page | None = None
    artists: list[_Artist] | None = None


_WANTED = {
    "model_type": "an object",
    "dict_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "int_parsing": "a whole number",
}
_JSON_TYPES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def _check_snapshot(data: Any, path: Path) -> None:
    """Raise :class:`SnapshotError` naming the first field of ``data`` that has a wrong type."""
    if not isinstance(data, dict):
        raise SnapshotError(f"{path} is not a Spotify playlist object (needs 'id' and 'name').")
    try:
        _Snapshot.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "the top level"
        got = _JSON_TYPES.get(type(first.get("input")), "something else")
        wanted = _WANTED.get(first["type"])
        if first["type"] == "missing":
            what = "is missing"
        elif wanted:
            what = f"must be {wanted}, not {got}"
        else:
            what = f"is wrong ({first['msg'].lower()})"
        raise SnapshotError(f"{path} is not a valid playlist snapshot: '{field}' {what}.") from None
    if not data["name"].strip():
        raise SnapshotError(f"{path} is not a valid playlist snapshot: 'name' is empty.")


def load_snapshot(path: str | Path) -> PlaylistFacts:
    """Read a playlist snapshot file (see the module docstring for its shape)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"No playlist snapshot at {path}.{_examples_hint()}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"Could not read the playlist snapshot {path}: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    except RecursionError:  # json gives up on very deep nesting with this, not a decode error
        raise SnapshotError(f"{path} nests its JSON too deeply to be a playlist.") from None
    _check_snapshot(data, path)
    page = data.get("items") or data.get("tracks")
    items = page.get("items") if isinstance(page, dict) else None
    return facts_from_spotify(data, items, data.get("artists") or (), source=f"snapshot:{path}")


def _examples_hint() -> str:
    """For a mistyped path: the example snapshots that ship with the project, if present."""
    folder = Path(__file__).resolve().parents[2] / "examples" / "playlists"
    names = sorted(p.name for p in folder.glob("*.json"))
    if not names:
        return ""
    return f" The examples are {', '.join(names)} in {folder}."
