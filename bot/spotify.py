"""Read a Spotify playlist into :class:`~bot.playlist.PlaylistFacts`: the one module that talks
to Spotify.

spotipy is synchronous, so :meth:`SpotifyReader.aread_playlist` runs it in a worker thread.
Three requests (or kinds of request) make one reading::

    GET playlists/{id}          metadata: name, description, images, owner      (must work)
    GET playlists/{id}/items    the tracks, paged; 403/404 means "metadata only"  (bonus)
    GET artists/{id}            genres of the most frequent artists              (bonus)

Since February 2026 Spotify gives items only for playlists the app's user owns or collaborates
on, and batch ``/artists`` is gone (see ``shared/NOTES.md``), hence the bonus rows.

Retries are ours, not spotipy's: spotipy's urllib3 retries drop ``Retry-After`` from the final
error and honour it for up to six hours, which would park a worker thread for that long. Our
session does no retries at all; :func:`retry_delay` decides, per failure, whether to wait and
how long, within ``settings.spotify_max_tries`` and ``settings.spotify_max_wait_s``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.exceptions import SpotifyException, SpotifyOauthError

from bot.errors import (
    EditorialPlaylist,
    PlaylistNotFound,
    SpotifyAuthError,
    SpotifyRateLimited,
    SpotifyUnavailable,
)
from bot.links import parse_playlist_ref
from bot.playlist import PlaylistFacts, facts_from_spotify
from bot.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

ITEMS_PAGE_LIMIT = 50  # the most items Spotify returns per page of /items
GENRE_ARTISTS = 5  # artists looked up one by one for genres (no batch endpoint since 2026)
EDITORIAL_PREFIX = "37i9dQZF1"  # ids of Spotify's own editorial/algorithmic playlists
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # 429 reason since Jul 2026: waiting 30 s will not help


# -- the retry policy (pure: no I/O, unit-testable) -------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    max_tries: int = 4  # attempts per request, the first one included
    max_wait_s: float = 20.0  # longest Retry-After we sleep through
    backoff_s: float = 0.5  # first wait after a 5xx/timeout; doubles each time

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_tries=max(1, settings.spotify_max_tries), max_wait_s=settings.spotify_max_wait_s
        )


@dataclass(frozen=True)
class Failure:
    """A failed request worth retrying: rate-limited (429) or unavailable (5xx, network)."""

    kind: Literal["rate_limited", "unavailable"]
    detail: str  # for messages: "HTTP 503", "timeout", ...
    retry_after: float | None = None  # seconds, from the Retry-After header of a 429
    final: bool = False  # retrying cannot help (quota exhausted)


def retry_delay(failure: Failure, attempt: int, policy: RetryPolicy) -> float:
    """Seconds to sleep before try ``attempt + 1`` after ``failure`` on try ``attempt`` (from 1).

    Raises the error to show instead when we should stop: :class:`SpotifyRateLimited` at once when
    Spotify asks for a longer wait than ``policy.max_wait_s`` (or the quota is gone), and when the
    tries run out; :class:`SpotifyUnavailable` when the tries run out on 5xx/network failures.
    """
    backoff = policy.backoff_s * 2 ** (attempt - 1)  # 0.5 s, 1 s, 2 s, ...
    if failure.kind == "rate_limited":
        # A 429 without Retry-After should not happen; wait like a 5xx then.
        wait = backoff if failure.retry_after is None else max(0.0, failure.retry_after)
        if failure.final or wait > policy.max_wait_s or attempt >= policy.max_tries:
            raise SpotifyRateLimited(wait)
        return wait
    if attempt >= policy.max_tries:
        raise SpotifyUnavailable(
            f"Spotify did not answer properly ({failure.detail}) after {attempt} "
            f"{'try' if attempt == 1 else 'tries'}; try again in a few minutes."
        )
    return backoff


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """The ``Retry-After`` header in seconds (a number or an HTTP date); None if unusable."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def classify(exc: BaseException) -> Failure | None:
    """The retryable :class:`Failure` that ``exc`` stands for, or None if retrying won't help.

    Token endpoint errors that are not retryable raise :class:`SpotifyAuthError` here.
    """
    if isinstance(exc, SpotifyOauthError):
        return _token_failure(exc)
    if isinstance(exc, SpotifyException):
        return status_failure(exc.http_status, exc.headers or {}, exc.reason)
    if isinstance(exc, requests.Timeout):
        return Failure("unavailable", "timeout")
    if isinstance(exc, requests.ConnectionError):
        return Failure("unavailable", "connection failed")
    return None


def status_failure(status: int, headers: Mapping[str, str], reason: str | None) -> Failure | None:
    """The retryable :class:`Failure` an HTTP status stands for (429, 5xx), else None. Shared
    with :mod:`bot.spotify_user`, whose requests are not spotipy's."""
    if status == 429:
        return Failure(
            "rate_limited",
            "HTTP 429",
            retry_after=parse_retry_after(headers.get("Retry-After")),
            final=reason == QUOTA_EXCEEDED,
        )
    if status >= 500:
        return Failure("unavailable", f"HTTP {status}")
    return None


def _token_failure(exc: SpotifyOauthError) -> Failure:
    # spotipy raises SpotifyOauthError inside its `except HTTPError`, so the HTTP answer of the
    # token endpoint is the exception's context; a 429/5xx there is Spotify's trouble, not ours.
    cause = exc.__context__
    response = getattr(cause, "response", None) if isinstance(cause, requests.HTTPError) else None
    if response is not None:
        failure = status_failure(response.status_code, response.headers, None)
        if failure is not None:
            return failure
    # Only the short OAuth error code goes into the message: never anything that could hold
    # the credentials themselves.
    code = exc.error if isinstance(exc.error, str) and exc.error.isidentifier() else "refused"
    raise SpotifyAuthError(
        f"Spotify refused the client credentials ({code}): check SPOTIFY_CLIENT_ID and "
        "SPOTIFY_CLIENT_SECRET."
    ) from None


def is_editorial(playlist_id: str) -> bool:
    """Spotify's own editorial/algorithmic playlists (closed to third-party apps since Nov 2024)
    all have ids starting with the same prefix; a 404 for one of them means "closed", not "gone"."""
    return playlist_id.startswith(EDITORIAL_PREFIX)


# -- the reader --------------------------------------------------------------------------------


class SpotifyReader:
    """Reads playlists with the app's client credentials. Blocking; one per process is enough.

    ``sleep`` is injected so tests can record waits instead of sleeping.
    """

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        client_id, client_secret = settings.require_spotify()
        self.settings = settings
        self.policy = RetryPolicy.from_settings(settings)
        self._sleep = sleep
        _tame_spotipy_logs()

        # A plain session: requests' default adapter does no retries, so a 429 reaches us with
        # its headers (spotipy's own session would retry it and drop Retry-After).
        session = requests.Session()
        auth = spotipy.SpotifyClientCredentials(
            client_id,
            client_secret.get_secret_value(),
            requests_session=session,
            requests_timeout=settings.spotify_timeout_s,
            cache_handler=MemoryCacheHandler(),  # the default writes ./.cache
        )
        auth.OAUTH_TOKEN_URL = settings.spotify_token_url
        self._sp = spotipy.Spotify(
            auth_manager=auth,
            requests_session=session,
            requests_timeout=settings.spotify_timeout_s,
        )  # given a session, spotipy mounts none of its retrying adapters
        self._sp.prefix = settings.spotify_api_base.rstrip("/") + "/"

    async def aread_playlist(self, playlist_id: str) -> PlaylistFacts:
        """:meth:`read_playlist` off the event loop."""
        return await asyncio.to_thread(self.read_playlist, playlist_id)

    def read_playlist(self, playlist_id: str) -> PlaylistFacts:
        """Read a playlist's metadata, and its items and artist genres where Spotify allows.

        Accepts an id or anything :func:`bot.links.parse_playlist_ref` does. Raises
        :class:`PlaylistNotFound`, :class:`EditorialPlaylist`, :class:`SpotifyRateLimited`,
        :class:`SpotifyAuthError` or :class:`SpotifyUnavailable`.
        """
        return _facts(self.snapshot(playlist_id))

    def add_items(self, snapshot: Mapping[str, Any], items: list[dict[str, Any]]) -> PlaylistFacts:
        """The facts of a playlist read as metadata only, now that another client read its items
        (the owner's own token, :mod:`bot.accounts`): the items go into the snapshot and their
        artists' genres are read with the app's credentials, as :meth:`snapshot` does."""
        playlist = {k: v for k, v in snapshot.items() if k != "artists"}
        return _facts(self._with_items(playlist, items))

    def snapshot(self, playlist_id: str) -> dict[str, Any]:
        """The playlist JSON with its ``items`` page filled in (no ``items`` list when Spotify
        refused them) and ``artists`` added: the snapshot shape of :mod:`bot.playlist`."""
        playlist_id = parse_playlist_ref(playlist_id)
        # 1. metadata: the one request that must succeed
        playlist = dict(self._read_metadata(playlist_id))
        # 2. items: only for playlists the app may read (Spotify 2026); None otherwise
        return self._with_items(playlist, self._read_items(playlist_id))

    def _with_items(
        self, playlist: dict[str, Any], items: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        page = playlist.get("items") or playlist.get("tracks")
        page = dict(page) if isinstance(page, Mapping) else {}
        page.pop("items", None)  # the metadata's own first page; ours replaces it, or none
        if items is not None:
            page.update(items=items, limit=len(items), offset=0, next=None, previous=None)
            page.setdefault("total", len(items))
        playlist.pop("tracks", None)
        playlist["items"] = page
        # 3. genres of the most frequent artists, one request each
        playlist["artists"] = self._read_artists(items or [])
        return playlist

    # -- the three kinds of request ---------------------------------------------------------

    def _read_metadata(self, playlist_id: str) -> Mapping[str, Any]:
        try:
            playlist = self._call(self._sp.playlist, playlist_id)
        except SpotifyException as exc:
            if exc.http_status in (400, 401, 403, 404):  # 401/403: private to its owner
                if is_editorial(playlist_id):
                    raise EditorialPlaylist(playlist_id) from None
                raise PlaylistNotFound(playlist_id) from None
            raise SpotifyUnavailable(
                f"Spotify answered HTTP {exc.http_status} for playlist {playlist_id}; "
                "try again later."
            ) from None
        if not isinstance(playlist, Mapping) or not isinstance(playlist.get("id"), str):
            raise SpotifyUnavailable(f"Spotify sent no playlist object for {playlist_id}.")
        return playlist

    def _read_items(self, playlist_id: str) -> list[dict[str, Any]] | None:
        limit = max(0, self.settings.spotify_max_items)
        if limit == 0:
            return None
        items: list[dict[str, Any]] = []
        try:
            page = self._call(
                self._sp.playlist_items, playlist_id, limit=min(ITEMS_PAGE_LIMIT, limit)
            )
            while isinstance(page, Mapping):
                items.extend(it for it in page.get("items") or () if isinstance(it, dict))
                if len(items) >= limit or not page.get("next"):
                    break
                page = self._call(self._sp.next, page)
        except SpotifyException as exc:
            if exc.http_status in (403, 404):  # not the app user's playlist: metadata only
                log.info(
                    "Spotify refused the items of playlist %s (HTTP %s)",
                    playlist_id,
                    exc.http_status,
                )
                return None
            raise SpotifyUnavailable(
                f"Spotify answered HTTP {exc.http_status} for the items of playlist "
                f"{playlist_id}; try again later."
            ) from None
        return items[:limit]

    def _read_artists(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        counts: Counter[str] = Counter()
        for it in items:
            track = it.get("item") or it.get("track")
            if isinstance(track, Mapping):
                counts.update(
                    str(a["id"])
                    for a in track.get("artists") or ()
                    if isinstance(a, Mapping) and a.get("id")
                )
        artists = []
        for artist_id, _ in counts.most_common(GENRE_ARTISTS):
            try:
                artist = self._call(self._sp.artist, artist_id)
            except SpotifyException as exc:  # one unknown artist: skip it
                log.info("No genres for artist %s (HTTP %s)", artist_id, exc.http_status)
                continue
            except (SpotifyRateLimited, SpotifyUnavailable, SpotifyAuthError) as exc:
                # Genres are a bonus: keep what we have rather than fail the whole reading.
                log.warning("Skipping artist genres: %s", exc)
                break
            if isinstance(artist, Mapping) and artist.get("id"):
                artists.append(dict(artist))
        return artists

    # -- the retry loop ---------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried per :func:`retry_delay`. Non-retryable
        :class:`SpotifyException` (404, 403, ...) pass through for the caller to interpret."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except (SpotifyException, SpotifyOauthError, requests.RequestException) as exc:
                failure = classify(exc)
                if failure is None:
                    if isinstance(exc, requests.RequestException):
                        raise SpotifyUnavailable(
                            f"Could not talk to Spotify ({type(exc).__name__}); try again later."
                        ) from None
                    raise
            delay = retry_delay(failure, attempt, self.policy)
            log.info("Spotify %s; retrying in %.1f s (try %d)", failure.detail, delay, attempt + 1)
            self._sleep(delay)


def _facts(snapshot: Mapping[str, Any]) -> PlaylistFacts:
    page = snapshot.get("items")
    items = page.get("items") if isinstance(page, Mapping) else None
    return facts_from_spotify(snapshot, items, snapshot.get("artists") or ())


class _TameSpotipyLogs(logging.Filter):
    """Two fixes to spotipy's logging, applied to its own loggers.

    - Its debug lines print request headers: Basic (client id:secret) and Bearer. Dropped.
    - It logs every HTTP error at ERROR, including the 403 that most playlists now answer on
      ``/items`` and the 429s we retry. We report every outcome ourselves, so those go to DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Authorization" in message:
            return False
        if record.levelno == logging.ERROR and message.startswith("HTTP Error for"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_LOG_FILTER = _TameSpotipyLogs()


def _tame_spotipy_logs() -> None:
    for name in ("spotipy.oauth2", "spotipy.client"):
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)
