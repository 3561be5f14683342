"""The fake Spotify's figures and records: its client credentials, Spotify's limits, a
scripted :class:`Reply`, the stored playlists, accounts, grants, tokens and uploads, and
Spotify's error body.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-do-not-print"
# Spotify's own figures (the API description, tests/fakes/spotify_openapi.json; docs/facts.md).
DEFAULT_LIMIT = 20  # /playlists/{id}/items: limit default 20, minimum 1, maximum 50
MAX_LIMIT = 50
SEARCH_DEFAULT_LIMIT = 5  # /search: limit default 5, minimum 1, maximum 10 (since 2026)
SEARCH_MAX_LIMIT = 10
SEARCH_MAX_OFFSET = 1000  # /search: offset maximum 1000
EMBEDDED_ITEMS = 100  # items Spotify puts inside the playlist object's own page
# The cover upload's "maximum payload size is 256 KB", read as 256,000 bytes of base64: a
# 191 KB JPEG (≥ 254,668 bytes once encoded, whichever "KB" its reporter meant) was refused with
# a 413 (spotipy issue #633), so the real cut-off is no higher than that.
COVER_PAYLOAD_CUTOFF = 256_000
DEV_MODE_USER_CAP = 5  # development mode: at most 5 users (Spotify, February 2026)
# Spotify's answer (2026 wording) to a user a development-mode app's owner has not added.
NOT_REGISTERED = (
    "The user is not registered for this application. Please check your settings on "
    "https://developer.spotify.com/dashboard."
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``body`` defaults to Spotify's error shape for the status."""

    status: int
    retry_after: float | str | None = None  # sent as the Retry-After header when given
    body: Mapping[str, Any] | None = None
    delay_s: float = 0.0  # wait before answering, to make a client time out


PASS = Reply(200)  # in a script: serve this request normally


class LoggedRequest(NamedTuple):
    method: str
    path: str
    query: dict[str, str]


@dataclass
class FakePlaylist:
    """A stored playlist: the metadata object (without items) and its items, kept apart."""

    meta: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeAccount:
    """A Spotify user who can log in at ``/authorize``."""

    id: str = "fakeowner"  # make_playlist's default owner
    display_name: str = "Fake Owner"
    account_id: str = ""  # the immutable one Spotify says to link by; made from `id` if empty

    def __post_init__(self) -> None:
        if not self.account_id:
            self.account_id = "acct" + hashlib.sha256(self.id.encode()).hexdigest()[:12]


@dataclass
class Grant:
    """What a person allowed one client: behind each code, access token and refresh token."""

    account: FakeAccount
    client_id: str
    scopes: frozenset[str]


@dataclass
class _Code:
    grant: Grant
    redirect_uri: str
    challenge: str
    used: bool = False


@dataclass
class _AccessToken:
    grant: Grant
    expires_at: float  # time.monotonic()


class StoredImage(NamedTuple):
    """Bytes served at ``/images/{key}``, the stand-in for Spotify's image CDN."""

    data: bytes
    content_type: str
    chunked: bool = False  # True: sent without a Content-Length


class Upload(NamedTuple):
    """A cover that arrived through ``PUT /v1/playlists/{id}/images``."""

    playlist_id: str
    account_id: str
    content_type: str
    payload_bytes: int  # the base64 body's length
    jpeg: bytes  # decoded


@dataclass
class _Script:
    replies: deque[Reply]
    forever: Reply | None = None


_STATUS_MESSAGES = {
    400: "Bad request",
    401: "Invalid access token",
    403: "Forbidden",
    404: "Resource not found",
    429: "API rate limit exceeded",
    500: "Server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Spotify's Web API error object."""
    return {
        "error": {"status": status, "message": message or _STATUS_MESSAGES.get(status, "Error")}
    }


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # Spotify sends "application/json; charset=utf-8", which is what aiohttp writes too.
    return web.json_response(data, status=status, headers=dict(headers or {}))
