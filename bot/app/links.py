"""Turn whatever a person pastes into a Spotify playlist id.

People paste playlist links in many shapes, and spotipy's own parser both refuses good ones
(``/intl-pt-br/``, ``www.``, ``<url>`` as Discord wraps links, ``spotify:user:x:playlist:ID``)
and accepts garbage (``"xxxxx"``), so we parse them here. A playlist id is exactly 22 base62
characters; anything else is refused with a message that says what the text was instead
(an album link, a look-alike host, an id of the wrong length, ...).

Share links from the mobile apps are short links (``spotify.link/…``) that only reveal the
playlist by redirecting. :func:`resolve_short_link` follows them hop by hop, only over HTTPS
and only on Spotify's own hosts, and stops at the first redirect that names a Spotify item,
without fetching that page.

    resolve_playlist_ref(text)              what callers use
    ├── parse_playlist_ref(text)            offline: links, URIs, bare ids
    └── resolve_short_link(url)             network: spotify.link/… → open.spotify.com/playlist/ID
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import string
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl

from bot.app.errors import InvalidPlaylistLink

PLAYLIST_ID_LENGTH = 22

# Hosts whose pages are Spotify items (playlists, albums, ...); "www." is stripped before the test.
CONTENT_HOSTS = frozenset({"open.spotify.com", "play.spotify.com"})
# Hosts a short link may pass through. spotify.link redirects to spotify.app.link (Branch, the
# link service Spotify uses) which redirects to open.spotify.com; open.spotify.com/s/… is a newer
# short form reported in 2026. Never add loopback hosts here: tests pass their own set.
SPOTIFY_HOSTS = frozenset({"spotify.link", "spotify.app.link", "open.spotify.com"})

_BASE62 = frozenset(string.ascii_letters + string.digits)
_INTL_PREFIX = re.compile(
    r"intl-[a-z]{2}(?:-[a-z]{2,4})?", re.IGNORECASE
)  # /intl-de/, /intl-pt-br/
_MAX_INPUT = 2000  # longer text is not a link someone pasted; refuse it before any work
_QUOTE_CHARS = 60
_WRAPPERS = " <>`'\"|"  # Discord's <url> (no embed), `code`, quotes, ||spoilers||
_TRAILING_PUNCTUATION = ".,;"  # "here is my playlist: <link>." – ids never end in these
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEAD_STATUSES = frozenset({404, 410})
_MAX_PAGE_BYTES = 64 * 1024
_USER_AGENT = "playlist-cover/0.1 (+short link resolver)"

# What other Spotify items are called in messages; the key is the path word or URI word.
_ITEM_LABELS = {
    "album": "album",
    "track": "track (song)",
    "artist": "artist",
    "episode": "podcast episode",
    "show": "podcast show",
    "user": "user profile",
    "audiobook": "audiobook",
    "chapter": "audiobook chapter",
    "collection": "library (Liked Songs)",
}

# A Spotify item named anywhere in an HTML page, as a web link (slashes maybe JSON-escaped) or URI.
_ITEM_IN_PAGE = re.compile(
    r"open\.spotify\.com\\?/(?:intl-[a-z-]{2,8}\\?/)?(?:embed\\?/)?([a-z]+)\\?/([A-Za-z0-9]{22})"
    r"|spotify:([a-z]+):([A-Za-z0-9]{22})",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Item:
    """What a link or URI points at: ``kind`` is "playlist", "album", ..., or "" for no item."""

    kind: str
    ident: str = ""


# --------------------------------------------------------------------------------------------
# Parsing (offline)
# --------------------------------------------------------------------------------------------


def parse_playlist_ref(text: str) -> str:
    """Return the 22-character playlist id in ``text``, or raise :class:`InvalidPlaylistLink`.

    Accepts open.spotify.com / play.spotify.com links (any scheme or none, ``www.``,
    ``/intl-xx/``, ``/embed/``, ``/user/x/playlist/``, query strings, fragments, trailing
    slashes, wrapped in ``<>``), ``spotify:playlist:ID`` and ``spotify:user:x:playlist:ID``
    URIs, and bare ids. Short links are refused here: use :func:`resolve_playlist_ref`.
    """
    candidate = _candidate(text)
    shown = _quote(candidate)
    if candidate.lower().startswith("spotify:"):
        return _playlist_id(_item_of_segments(candidate.split(":")[1:]), shown)
    if not any(mark in candidate for mark in "/:."):
        return _checked_id(candidate, shown)
    url = _as_url(candidate)
    if url is None or url.scheme not in ("http", "https"):
        raise InvalidPlaylistLink(f"{shown} is not a Spotify playlist link, URI or id.")
    host = _host(url)
    if _is_short_url(url, SPOTIFY_HOSTS):
        raise InvalidPlaylistLink(
            f"{shown} is a Spotify short link; it has to be followed to find the playlist."
        )
    if host not in CONTENT_HOSTS:
        raise InvalidPlaylistLink(_wrong_host_message(shown, host))
    return _playlist_id(_item_of_path(url.path), shown)


def is_short_link(text: str, *, allowed_hosts: frozenset[str] = SPOTIFY_HOSTS) -> bool:
    """True for a short link to follow: spotify.link/…, spotify.app.link/…, open.spotify.com/s/….

    More precisely: a link on one of ``allowed_hosts`` that is not an item page of
    open.spotify.com. Never raises; text that is not a link at all is simply not a short link.
    """
    try:
        url = _as_url(_candidate(text))
    except InvalidPlaylistLink:
        return False
    return url is not None and _is_short_url(url, allowed_hosts)


def _candidate(text: str) -> str:
    """The one link-like token of ``text``, unwrapped; raises when there is none or several."""
    if text is None or not text.strip():
        raise InvalidPlaylistLink(
            "No playlist given: paste a Spotify playlist link, a spotify:playlist: URI "
            f"or a {PLAYLIST_ID_LENGTH}-character playlist id."
        )
    if len(text) > _MAX_INPUT:
        raise InvalidPlaylistLink(
            f"{_quote(text)} is too long ({len(text)} characters) to be a playlist link."
        )
    tokens = [_unwrap(token) for token in text.split()]
    tokens = [token for token in tokens if token]
    if len(tokens) == 1:
        return tokens[0]
    # A sentence around the link ("my playlist: https://…") is fine as long as there is one link.
    links = [token for token in tokens if _looks_like_link(token)]
    if len(links) == 1:
        return links[0]
    if not links:
        raise InvalidPlaylistLink(f"{_quote(text)} is not a Spotify playlist link, URI or id.")
    raise InvalidPlaylistLink(
        f"{_quote(text)} holds {len(links)} links; paste just the playlist's link."
    )


def _unwrap(token: str) -> str:
    token = token.strip(_WRAPPERS)
    return token.rstrip(_TRAILING_PUNCTUATION).strip(_WRAPPERS)


def _looks_like_link(token: str) -> bool:
    lowered = token.lower()
    return "spotify" in lowered or "://" in lowered or lowered.startswith("www.")


def _as_url(candidate: str) -> yarl.URL | None:
    """``candidate`` as an absolute URL (``https://`` added when it has no scheme), or None."""
    if candidate.startswith("//"):
        candidate = "https:" + candidate
    elif "://" not in candidate:
        candidate = "https://" + candidate
    try:
        url = yarl.URL(candidate)
    except ValueError:  # also UnicodeError: hosts that IDNA cannot encode
        return None
    return url if url.is_absolute() and url.raw_host else None


def _host(url: yarl.URL) -> str:
    """Lower-case host as sent on the wire, no trailing dot; www.open.spotify.com counts as
    open.spotify.com.

    The raw (ASCII, punycode) host, never ``url.host``: yarl decodes ``xn--…`` labels lazily
    there and raises ``UnicodeError`` for ones IDNA rejects (``xn--a.com``), which escaped
    every caller (tests/app/test_playlist_links.py). The raw form is also what a look-alike host really
    is, so messages show that."""
    host = (url.raw_host or "").lower().rstrip(".")
    if host.startswith("www.") and host.removeprefix("www.") in CONTENT_HOSTS:
        host = host.removeprefix("www.")
    return host


def _is_spotify_domain(host: str) -> bool:
    return host == "spotify.com" or host.endswith(".spotify.com")


def _is_short_url(url: yarl.URL, allowed_hosts: frozenset[str]) -> bool:
    host = _host(url)
    if host in CONTENT_HOSTS:
        # open.spotify.com hosts item pages too: only its /s/ paths are short links.
        return host in allowed_hosts and _item_of_path(url.path).kind == "s"
    return host in {allowed.lower() for allowed in allowed_hosts}


def _wrong_host_message(shown: str, host: str) -> str:
    if _is_spotify_domain(host):
        return (
            f"{shown} is not a playlist link: playlists are on open.spotify.com, not {_clip(host)}."
        )
    return f"{shown} is not a Spotify link: its host is {_clip(host)}, not open.spotify.com."


def _item_of_path(path: str) -> _Item:
    return _item_of_segments(path.split("/"))


def _item_of_segments(segments: list[str]) -> _Item:
    """What a link path (split on "/") or a URI (split on ":", scheme dropped) points at."""
    parts = [part for part in segments if part]
    if parts and _INTL_PREFIX.fullmatch(parts[0]):
        parts = parts[1:]
    if parts and parts[0].lower() == "embed":
        parts = parts[1:]
    # Old links and URIs name the owner first: /user/<name>/playlist/<id>.
    if len(parts) >= 4 and parts[0].lower() == "user" and parts[2].lower() == "playlist":
        parts = parts[2:]
    if not parts or len(parts) > 2:
        return _Item("")
    return _Item(parts[0].lower(), parts[1] if len(parts) == 2 else "")


def _playlist_id(item: _Item, shown: str) -> str:
    if item.kind == "playlist":
        if not item.ident:
            raise InvalidPlaylistLink(f"{shown} has no playlist id after 'playlist'.")
        return _checked_id(item.ident, shown)
    if item.kind in _ITEM_LABELS:
        raise InvalidPlaylistLink(
            f"{shown} is a Spotify {_ITEM_LABELS[item.kind]} link, not a playlist."
        )
    raise InvalidPlaylistLink(f"{shown} does not point to a Spotify playlist.")


def _checked_id(ident: str, shown: str) -> str:
    bad = next((char for char in ident if char not in _BASE62), None)
    if bad is not None:
        raise InvalidPlaylistLink(
            f"{shown} is not a playlist id: ids are {PLAYLIST_ID_LENGTH} letters and digits, "
            f"without {bad!r}."
        )
    if len(ident) != PLAYLIST_ID_LENGTH:
        raise InvalidPlaylistLink(
            f"{shown} is not a playlist id: ids are {PLAYLIST_ID_LENGTH} letters and digits, "
            f"this one has {len(ident)}."
        )
    return ident


def _clip(text: str) -> str:
    """``text`` on one line, cut to about 60 characters: messages never echo huge input."""
    text = " ".join(text.split())
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"


def _quote(text: str) -> str:
    return f'"{_clip(text)}"'


# --------------------------------------------------------------------------------------------
# Short links (network)
# --------------------------------------------------------------------------------------------


async def resolve_playlist_ref(
    text: str, *, session: aiohttp.ClientSession | None = None, **short_link_kwargs: Any
) -> str:
    """The playlist id in ``text``, following it first when it is a short link.

    ``short_link_kwargs`` go to :func:`resolve_short_link` (``allowed_hosts``, ``max_hops``,
    ``timeout_s``); a link on one of ``allowed_hosts`` counts as a short link.
    """
    allowed_hosts = short_link_kwargs.get("allowed_hosts", SPOTIFY_HOSTS)
    if is_short_link(text, allowed_hosts=allowed_hosts):
        return await resolve_short_link(text, session=session, **short_link_kwargs)
    return parse_playlist_ref(text)


async def resolve_short_link(
    url: str,
    *,
    session: aiohttp.ClientSession | None = None,
    allowed_hosts: frozenset[str] = SPOTIFY_HOSTS,
    max_hops: int = 5,
    timeout_s: float = 5.0,
) -> str:
    """Follow a short link's redirects and return the playlist id it leads to.

    Each hop is one request with redirects off; its ``Location`` (relative ones resolved) is
    checked before anything else is fetched. It stops at the first Location that names a
    Spotify item (open.spotify.com/…/ID or spotify:…:ID) without fetching it. Every hop must be
    HTTPS on one of ``allowed_hosts``; plain HTTP is allowed only for loopback hosts listed
    there explicitly (tests). ``timeout_s`` bounds the whole walk, not each hop. When a hop
    answers 200, the first 64 KiB of its page are searched for the one item it redirects to by
    script, as Branch's redirect pages do for some clients.

    Raises :class:`InvalidPlaylistLink` when the link leads off Spotify's hosts, to something
    other than a playlist, to a dead end (404), in a loop, through more than ``max_hops``
    requests, or does not answer in time.
    """
    candidate = _candidate(url)
    shown = _quote(candidate)
    allowed = frozenset(host.lower().rstrip(".") for host in allowed_hosts)
    start = _as_url(candidate)
    if start is None:
        raise InvalidPlaylistLink(f"{shown} is not a link.")
    if _item_of_url(start) is None and _host(start) not in allowed:
        raise InvalidPlaylistLink(
            f"{shown} is not a Spotify short link: its host is {_clip(_host(start))}."
        )
    if start.scheme == "http" and not _is_loopback(_host(start)):
        start = start.with_scheme("https")  # a typed "http://spotify.link/…" is meant as https
    try:
        async with asyncio.timeout(timeout_s):
            if session is not None:
                return await _follow(start, session, allowed, max_hops, shown)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as own:
                return await _follow(start, own, allowed, max_hops, shown)
    except TimeoutError:  # our deadline, or aiohttp's own socket timeouts
        raise InvalidPlaylistLink(
            f"The short link {shown} did not answer within {timeout_s:g} s; "
            "paste the full open.spotify.com link instead."
        ) from None
    except aiohttp.ClientError as error:
        raise InvalidPlaylistLink(
            f"The short link {shown} could not be followed ({type(error).__name__}); "
            "paste the full open.spotify.com link instead."
        ) from error


async def _follow(
    start: yarl.URL,
    session: aiohttp.ClientSession,
    allowed: frozenset[str],
    max_hops: int,
    shown: str,
) -> str:
    """The redirect walk of :func:`resolve_short_link`: one request per hop, checked first."""
    url = start
    seen: set[yarl.URL] = set()
    for _ in range(max_hops):
        # 1. A link that names an item is the answer; its page is never fetched.
        item = _item_of_url(url)
        if item is not None:
            return _short_link_playlist_id(item, url, shown)
        # 2. Anything else is fetched only on Spotify's hosts, over HTTPS.
        _check_hop(url, allowed, shown)
        if url in seen:
            raise InvalidPlaylistLink(f"The short link {shown} redirects in a loop.")
        seen.add(url)
        # 3. One request; a redirect gives the next URL, a page may name the item itself.
        async with session.get(
            url, allow_redirects=False, headers={"User-Agent": _USER_AGENT}
        ) as response:
            if response.status in _REDIRECT_STATUSES:
                url = _next_url(url, response.headers.get("Location"), shown)
                continue
            if response.status == 200:
                item = _item_in_page(await _read_head(response, _MAX_PAGE_BYTES), shown)
                return _short_link_playlist_id(item, url, shown)
            if response.status in _DEAD_STATUSES:
                raise InvalidPlaylistLink(
                    f"The short link {shown} is dead (Spotify answered {response.status}); "
                    "open it in Spotify and copy the playlist's full link."
                )
            raise InvalidPlaylistLink(
                f"The short link {shown} could not be followed: "
                f"Spotify's link service answered HTTP {response.status}."
            )
    item = _item_of_url(url)  # the last hop's Location may still name the item
    if item is not None:
        return _short_link_playlist_id(item, url, shown)
    raise InvalidPlaylistLink(
        f"The short link {shown} took more than {max_hops} redirects; it was not followed further."
    )


def _item_of_url(url: yarl.URL) -> _Item | None:
    """The item a URL names if it is a Spotify item link or URI, else None (keep following)."""
    if url.scheme == "spotify":
        return _item_of_segments(url.path.split(":"))
    if url.scheme in ("http", "https") and _host(url) in CONTENT_HOSTS:
        item = _item_of_path(url.path)
        return None if item.kind == "s" else item
    return None


def _check_hop(url: yarl.URL, allowed: frozenset[str], shown: str) -> None:
    host = _host(url)
    if host not in allowed:
        raise InvalidPlaylistLink(
            f"The short link {shown} redirects off Spotify's hosts (to {_clip(host or str(url))}); "
            "it was not followed."
        )
    loopback = _is_loopback(host)
    if url.scheme == "https" and (url.is_default_port() or loopback):
        return
    if url.scheme == "http" and loopback:
        return
    raise InvalidPlaylistLink(
        f"The short link {shown} redirects to {_quote(str(url))}, which is not plain HTTPS; "
        "it was not followed."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _next_url(current: yarl.URL, location: str | None, shown: str) -> yarl.URL:
    if not location:
        raise InvalidPlaylistLink(f"The short link {shown} redirects without saying where.")
    try:
        return current.join(yarl.URL(location))
    except ValueError:
        raise InvalidPlaylistLink(
            f"The short link {shown} redirects to a malformed address {_quote(location)}."
        ) from None


async def _read_head(response: aiohttp.ClientResponse, limit: int) -> str:
    """At most ``limit`` bytes of the body, decoded leniently; the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _item_in_page(page: str, shown: str) -> _Item:
    found = {
        _Item((match[1] or match[3]).lower(), match[2] or match[4])
        for match in _ITEM_IN_PAGE.finditer(page)
    }
    if len(found) == 1:
        return found.pop()
    if not found:
        raise InvalidPlaylistLink(f"The short link {shown} does not lead to a Spotify playlist.")
    raise InvalidPlaylistLink(
        f"The short link {shown} leads to a page naming {len(found)} Spotify items, "
        "so its playlist is unclear; paste the full open.spotify.com link instead."
    )


def _short_link_playlist_id(item: _Item, url: yarl.URL, shown: str) -> str:
    if item.kind in _ITEM_LABELS:
        raise InvalidPlaylistLink(
            f"The short link {shown} leads to a Spotify {_ITEM_LABELS[item.kind]}, not a playlist."
        )
    if item.kind != "playlist":
        raise InvalidPlaylistLink(
            f"The short link {shown} leads to {_quote(str(url))}, not to a Spotify playlist."
        )
    return _playlist_id(item, _quote(str(url)))
