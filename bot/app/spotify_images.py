"""A playlist's current cover from Spotify's image CDN, bounded (for bot/app/spotify.py).

``GET /v1/playlists/{id}/images`` lists the cover as ``[{url, height, width}, …]``, largest
first (one image of unknown size for an uploaded cover, three sizes for Spotify's own 2x2
mosaic), or ``[]`` for a playlist without one. The URL points at Spotify's image CDN
(``i.scdn.co``, ``mosaic.scdn.co``, ``image-cdn-*.spotifycdn.com``).

The answer and the bytes behind it are untrusted all the same: the URL must be ``https`` on
one of Spotify's image hosts (or on the host the API itself is configured at: the local
stand-in in tests, a proxy in front of Spotify), redirects are not followed, the download has
one time limit for all of it, the declared type must be JPEG or PNG, and at most
``bot.app.look.MAX_START_BYTES`` are read whatever ``Content-Length`` claims.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests

from bot.app.errors import SpotifyUnavailable, StartImageRefused
from bot.app.look import MAX_START_BYTES, check_size, check_type

# Spotify's image CDN: covers (i.scdn.co), mosaics (mosaic.scdn.co), newer image-cdn-*.
SPOTIFY_IMAGE_DOMAINS = ("scdn.co", "spotifycdn.com")
_CHUNK = 64 * 1024


def cover_url(images: Any, playlist: str) -> str:
    """The URL of the largest image in Spotify's list (its first). Raises
    :class:`StartImageRefused` for a playlist without a cover."""
    if isinstance(images, Sequence) and not isinstance(images, str):
        for image in images:
            url = image.get("url") if isinstance(image, dict) else None
            if isinstance(url, str) and url:
                return url
    raise StartImageRefused(
        f"The playlist {playlist} has no cover on Spotify to start from; give an image "
        "attachment instead (look:attachment), or leave `look` out."
    )


def allowed_host(url: str, api_base: str) -> bool:
    """Whether ``url`` may be fetched: https on Spotify's image hosts, or any scheme on the
    API's own host and port (a stand-in or proxy the operator configured)."""
    try:
        parts, api = urlsplit(url), urlsplit(api_base)
        host, port, api_port = parts.hostname or "", parts.port, api.port
    except ValueError:  # a malformed port or bracket
        return False
    if host and host == api.hostname and port == api_port and parts.scheme in ("http", "https"):
        return True
    on_cdn = any(host == d or host.endswith("." + d) for d in SPOTIFY_IMAGE_DOMAINS)
    return parts.scheme == "https" and on_cdn


def download_cover(url: str, *, api_base: str, timeout_s: float) -> tuple[bytes, str]:
    """The bytes behind a cover URL and their declared content type, within the limits in
    the module docstring. Raises :class:`StartImageRefused` for what the image is (too
    large, not an image, not on Spotify's hosts) and :class:`SpotifyUnavailable` for a CDN
    that does not answer in time."""
    what = "The playlist's current cover"
    if not allowed_host(url, api_base):
        raise StartImageRefused(f"{what} is not on Spotify's image servers, so it was not read.")
    deadline = time.monotonic() + timeout_s
    try:
        with requests.get(url, stream=True, timeout=timeout_s, allow_redirects=False) as answer:
            if answer.status_code != 200:
                raise SpotifyUnavailable(
                    f"Spotify's image server answered HTTP {answer.status_code} for the "
                    "playlist's cover; try again later."
                )
            content_type = answer.headers.get("Content-Type")
            check_type(content_type, what)
            declared = answer.headers.get("Content-Length", "")
            if declared.isdigit():
                check_size(int(declared), what)
            data = bytearray()
            for chunk in answer.iter_content(_CHUNK):
                data += chunk
                if len(data) > MAX_START_BYTES:  # more than declared, or nothing declared
                    raise StartImageRefused(
                        f"{what} is too large (more than {MAX_START_BYTES // 1024 // 1024} MB)."
                    )
                if time.monotonic() > deadline:
                    raise requests.Timeout
    except requests.RequestException as error:
        raise SpotifyUnavailable(
            f"Spotify's image server did not send the playlist's cover within {timeout_s:g} s "
            f"({type(error).__name__}); try again later."
        ) from None
    return bytes(data), str(content_type)
