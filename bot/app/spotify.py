"""Spotify: every call the project makes to it, in one module, through spotipy.

With the app's own credentials (client credentials; :class:`SpotifyReader`, the collector)::

    GET  v1/playlists/{id}               metadata: name, description, images, owner   (must work)
    GET  v1/playlists/{id}/items         the tracks, paged; 403/404 means "metadata only" (bonus)
    GET  v1/artists/{id}                 genres of the most frequent artists            (bonus)
    GET  v1/search?type=playlist         playlists for ``python -m training collect``
    GET  v1/playlists/{id}/images        the current cover's URL, then its bytes from the CDN
                                         (bot/app/spotify_images.py; ``look:current``)

With a person's own token (authorisation code with PKCE; :class:`SpotifyUserClient`)::

    GET  accounts/authorize              the person's browser, with our state and PKCE challenge
    POST accounts/api/token              code + verifier → tokens; refresh_token → new tokens
    GET  v1/me                           who linked: Spotify user id and display name
    GET  v1/playlists/{id}/items         items of a playlist the person owns or collaborates on
    PUT  v1/playlists/{id}/images        a base64 JPEG (≤ MAX_UPLOAD_PAYLOAD) as the playlist's cover

Since February 2026 Spotify gives items only for playlists the app's user owns or collaborates
on, and batch ``/artists`` is gone (docs/spotify.md), hence the bonus rows and the person's own
token for their playlists.

One retry policy and one error mapping for all of it (bot/app/spotify_retry.py): its
:func:`~bot.app.spotify_retry.retry_delay` decides, per failure, whether to wait and how long,
within ``settings.spotify_max_tries`` and ``settings.spotify_max_wait_s``. spotipy's own retries are off: its urllib3 retries drop
``Retry-After`` from the final error and honour it for up to six hours, which would park a
worker thread for that long. spotipy is synchronous; the async callers run it in a thread.

Linking uses PKCE (bot/app/spotify_oauth.py holds the scopes, the verifier and the grant). Spotify rotates refresh tokens in this flow: each refresh may answer
a new one, and the old one stops working (callers store the new one). Tokens appear in no
message, log line or repr: :class:`TokenGrant` hides them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.exceptions import SpotifyException, SpotifyOauthError

from bot.app.errors import (
    AppInDevelopmentMode,
    EditorialPlaylist,
    LinkFailed,
    NotLinked,
    PlaylistNotFound,
    SpotifyAuthError,
    SpotifyRateLimited,
    SpotifyUnavailable,
    UploadRefused,
)
from bot.app.links import parse_playlist_ref
from bot.app.playlist import PlaylistFacts, facts_from_spotify
from bot.app.settings import Settings
from bot.app.spotify_images import cover_url, download_cover
from bot.app.spotify_oauth import SCOPES, TokenGrant, challenge_for
from bot.app.spotify_retry import RetryPolicy, classify, oauth_code, retry_delay, tame_spotipy_logs
from models.postprocess import SPOTIFY_JPEG_LIMIT

log = logging.getLogger(__name__)

T = TypeVar("T")

# Spotify's own figures (its API description; docs/facts.md, "Limits we rely on").
ITEMS_PAGE_LIMIT = 50  # /playlists/{id}/items: limit 1–50 (default 20)
SEARCH_PAGE_LIMIT = 10  # /search: limit 1–10 since 2026 (default 5); we ask for the most
GENRE_ARTISTS = 5  # artists looked up one by one for genres (no batch endpoint since 2026)
EDITORIAL_PREFIX = "37i9dQZF1"  # ids of Spotify's own editorial/algorithmic playlists

# The base64 body of a cover upload: Spotify's "256 KB" with a margin below the reported 413s
# (models/postprocess.py, docs/facts.md); the JPEGs we make are sized under it.
MAX_UPLOAD_PAYLOAD = SPOTIFY_JPEG_LIMIT
NOT_REGISTERED = (
    "Spotify refused your account to this bot (HTTP 403). The bot's Spotify app is in "
    "development mode, which serves only the accounts its owner added, at most 5; linking "
    "again will not help. Ask the bot's operator to add your Spotify account's e-mail under "
    "User Management in the Spotify developer dashboard (or to ask Spotify for extended quota), "
    "then run /spotify link again."
)
_JPEG_MAGIC = b"\xff\xd8\xff"
_NO_STATUS = 0  # spotipy retries on a status list; this one no HTTP answer carries


def is_editorial(playlist_id: str) -> bool:
    """Spotify's own editorial/algorithmic playlists (closed to third-party apps since Nov 2024)
    all have ids starting with the same prefix; a 404 for one of them means "closed", not "gone"."""
    return playlist_id.startswith(EDITORIAL_PREFIX)


class AccessTokenRejected(Exception):
    """The API answered 401 to a user token: expired or revoked. Refresh, then try once more."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


# -- the one client ----------------------------------------------------------------------------


class SpotifyAPI:
    """Every request to Spotify, blocking, through spotipy, with :func:`retry_delay` around each.

    ``credentials`` (client id and secret) are needed for the app-token calls only; linking
    needs just the client id. ``sleep`` is injected so tests record waits instead of sleeping.
    """

    def __init__(
        self,
        *,
        api_base: str,
        token_url: str,
        timeout_s: float,
        policy: RetryPolicy,
        credentials: tuple[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_base = api_base.rstrip("/") + "/"
        self.token_url = token_url
        self.timeout_s = timeout_s
        self.policy = policy
        self._sleep = sleep
        tame_spotipy_logs()
        self._app: spotipy.Spotify | None = None
        if credentials is not None:
            auth = spotipy.SpotifyClientCredentials(
                *credentials,
                requests_timeout=timeout_s,
                cache_handler=MemoryCacheHandler(),  # the default writes ./.cache
            )
            auth.OAUTH_TOKEN_URL = token_url
            self._app = self._client(auth_manager=auth)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        app_token: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SpotifyAPI:
        credentials = None
        if app_token:
            client_id, client_secret = settings.require_spotify()
            credentials = (client_id, client_secret.get_secret_value())
        return cls(
            api_base=settings.spotify_api_base,
            token_url=settings.spotify_token_url,
            timeout_s=settings.spotify_timeout_s,
            policy=RetryPolicy.from_settings(settings),
            credentials=credentials,
            sleep=sleep,
        )

    def _client(self, **auth: Any) -> spotipy.Spotify:
        # spotipy's session with its retries off: the status list names no real status, and
        # total=0 makes a network error surface at once. Our loop (call) does the retrying.
        client = spotipy.Spotify(
            **auth,
            requests_timeout=self.timeout_s,
            retries=0,
            status_retries=0,
            status_forcelist=(_NO_STATUS,),
        )
        client.prefix = self.api_base
        return client

    def app(self) -> spotipy.Spotify:
        """spotipy with the app's credentials."""
        if self._app is None:
            raise SpotifyAuthError(
                "This Spotify client has no app credentials: set SPOTIFY_CLIENT_ID and "
                "SPOTIFY_CLIENT_SECRET."
            )
        return self._app

    def user(self, access_token: str) -> spotipy.Spotify:
        """spotipy with a person's access token."""
        return self._client(auth=access_token)

    def pkce(self, client_id: str, redirect_uri: str) -> spotipy.SpotifyPKCE:
        """spotipy's PKCE token requests for linking (the authorisation URL is ours)."""
        auth = spotipy.SpotifyPKCE(
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=list(SCOPES),
            requests_timeout=self.timeout_s,
            open_browser=False,
            cache_handler=MemoryCacheHandler(),
        )
        auth.OAUTH_TOKEN_URL = self.token_url
        return auth

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried per :func:`retry_delay`. What retrying cannot help
        passes through: :class:`SpotifyException` (404, 403, …) and :class:`SpotifyOauthError`
        (a refused code) for the caller to interpret, a network failure as
        :class:`SpotifyUnavailable`."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except (SpotifyException, SpotifyOauthError, OSError) as exc:
                failure = classify(exc)
                if failure is None:
                    if isinstance(exc, OSError):
                        raise SpotifyUnavailable(
                            f"Could not talk to Spotify ({type(exc).__name__}); try again later."
                        ) from None
                    raise
            delay = retry_delay(failure, attempt, self.policy)
            log.info("Spotify %s; retrying in %.1f s (try %d)", failure.detail, delay, attempt + 1)
            self._sleep(delay)

    def app_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """:meth:`call` for a call made with the app's credentials: the token endpoint refusing
        them is :class:`SpotifyAuthError`. A 401 means the app token expired or was revoked
        before spotipy thought it would: a new one is fetched and the call made once more; a
        second 401 is :class:`SpotifyAuthError` too."""
        for renewed in (False, True):
            try:
                return self.call(fn, *args, **kwargs)
            except SpotifyOauthError as exc:
                # Only the short OAuth error code goes into the message: never anything that
                # could hold the credentials themselves.
                raise SpotifyAuthError(
                    f"Spotify refused the client credentials ({oauth_code(exc)}): check "
                    "SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET."
                ) from None
            except SpotifyException as exc:
                if exc.http_status != 401:
                    raise
                if renewed:
                    raise SpotifyAuthError(
                        "Spotify rejects the app's access token even when it is new (HTTP 401); "
                        "check SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET."
                    ) from None
            log.info("Spotify rejected the app's access token; fetching a new one")
            self._forget_app_token()
        raise AssertionError("unreachable")  # the loop returns or raises

    def _forget_app_token(self) -> None:
        auth = self.app().auth_manager
        if isinstance(auth.cache_handler, MemoryCacheHandler):
            auth.cache_handler.token_info = None

    def items(self, client: spotipy.Spotify, playlist_id: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` items of a playlist, following ``next``. Raises SpotifyException
        (403/404 when Spotify refuses the items to this token)."""
        items: list[dict[str, Any]] = []
        call = self.app_call if client is self._app else self.call
        page = call(client.playlist_items, playlist_id, limit=min(ITEMS_PAGE_LIMIT, limit))
        while isinstance(page, Mapping):
            items.extend(it for it in page.get("items") or () if isinstance(it, dict))
            if len(items) >= limit or not page.get("next"):
                break
            page = call(client.next, page)
        return items[:limit]

    def search_playlists(self, query: str, offset: int) -> dict[str, Any]:
        """One page of a playlist search (the collector's), with the app's credentials."""
        try:
            answer = self.app_call(
                self.app().search, query, limit=SEARCH_PAGE_LIMIT, offset=offset, type="playlist"
            )
        except SpotifyException as exc:
            raise SpotifyUnavailable(
                f"Spotify answered HTTP {exc.http_status} to the search {query!r}."
            ) from None
        playlists = answer.get("playlists") if isinstance(answer, Mapping) else None
        return dict(playlists) if isinstance(playlists, Mapping) else {}


# -- the reader --------------------------------------------------------------------------------


class SpotifyReader:
    """Reads playlists with the app's client credentials. Blocking; one per process is enough.

    ``sleep`` is injected so tests can record waits instead of sleeping.
    """

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.api = SpotifyAPI.from_settings(settings, sleep=sleep)
        self._sp = self.api.app()
        self.policy = self.api.policy

    async def aread_playlist(self, playlist_id: str) -> PlaylistFacts:
        """:meth:`read_playlist` off the event loop."""
        return await asyncio.to_thread(self.read_playlist, playlist_id)

    def read_playlist(self, playlist_id: str) -> PlaylistFacts:
        """Read a playlist's metadata, and its items and artist genres where Spotify allows.

        Accepts an id or anything :func:`bot.app.links.parse_playlist_ref` does. Raises
        :class:`PlaylistNotFound`, :class:`EditorialPlaylist`, :class:`SpotifyRateLimited`,
        :class:`SpotifyAuthError` or :class:`SpotifyUnavailable`.
        """
        return _facts(self.snapshot(playlist_id))

    def add_items(self, snapshot: Mapping[str, Any], items: list[dict[str, Any]]) -> PlaylistFacts:
        """The facts of a playlist read as metadata only, now that another client read its items
        (the owner's own token, :mod:`bot.app.accounts`): the items go into the snapshot and their
        artists' genres are read with the app's credentials, as :meth:`snapshot` does."""
        playlist = {k: v for k, v in snapshot.items() if k != "artists"}
        return _facts(self._with_items(playlist, items))

    def snapshot(self, playlist_id: str) -> dict[str, Any]:
        """The playlist JSON with its ``items`` page filled in (no ``items`` list when Spotify
        refused them) and ``artists`` added: the snapshot shape of :mod:`bot.app.playlist`."""
        playlist_id = parse_playlist_ref(playlist_id)
        # 1. metadata: the one request that must succeed
        playlist = dict(self._read_metadata(playlist_id))
        # 2. items: only for playlists the app may read (Spotify 2026); None otherwise
        return self._with_items(playlist, self._read_items(playlist_id))

    def current_cover(self, playlist_id: str) -> tuple[bytes, str]:
        """The bytes and declared type of the playlist's cover, bounded and checked as
        bot/app/spotify_images.py says; :class:`StartImageRefused` when it has none."""
        try:
            images = self._call(self._sp.playlist_cover_image, playlist_id)
        except SpotifyException as exc:
            raise SpotifyUnavailable(
                f"Spotify answered HTTP {exc.http_status} for the cover of playlist "
                f"{playlist_id}; try again later."
            ) from None
        url = cover_url(images, playlist_id)
        return download_cover(url, api_base=self.api.api_base, timeout_s=self.api.timeout_s)

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
            if exc.http_status in (400, 403, 404):  # 403: private to its owner
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
        try:
            return self.api.items(self._sp, playlist_id, limit)
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

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.api.app_call(fn, *args, **kwargs)


def _facts(snapshot: Mapping[str, Any]) -> PlaylistFacts:
    page = snapshot.get("items")
    items = page.get("items") if isinstance(page, Mapping) else None
    return facts_from_spotify(snapshot, items, snapshot.get("artists") or ())


# -- a person's own account --------------------------------------------------------------------


class SpotifyUserClient:
    """Calls made for one person with their token, awaitable (each runs spotipy in a thread).

    ``now`` is injected so tests can move time; ``sleep`` records the waits between retries.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.settings = settings
        self.api = SpotifyAPI.from_settings(settings, app_token=False, sleep=sleep)
        self._now = now

    async def close(self) -> None:
        """Nothing is held between calls; kept so owners can close what they were given."""

    # -- the token endpoint ----------------------------------------------------------------

    async def exchange_code(self, *, client_id: str, code: str, verifier: str) -> TokenGrant:
        """Trade the authorisation code for tokens. Raises :class:`LinkFailed` when Spotify
        refuses the code (expired, used, wrong verifier or redirect URI)."""
        auth = self.api.pkce(client_id, self.settings.spotify_redirect_uri)
        auth.code_verifier = verifier
        auth.code_challenge = challenge_for(verifier)

        def exchange() -> Mapping[str, Any] | None:
            auth.get_access_token(code=code, check_cache=False)
            return auth.cache_handler.get_cached_token()

        try:
            body = await asyncio.to_thread(self.api.call, exchange)
        except SpotifyOauthError as exc:
            raise LinkFailed(
                f"Spotify refused the authorisation ({oauth_code(exc)}); "
                "run /spotify link in Discord again."
            ) from None
        return self._grant(body, previous_refresh=None)

    async def refresh(self, *, client_id: str, refresh_token: str) -> TokenGrant:
        """New tokens from a refresh token. Raises :class:`NotLinked` when Spotify refuses it
        (the person removed the app's access, or the token was already used)."""
        auth = self.api.pkce(client_id, self.settings.spotify_redirect_uri)
        try:
            body = await asyncio.to_thread(self.api.call, auth.refresh_access_token, refresh_token)
        except SpotifyOauthError as exc:
            raise NotLinked(
                f"Spotify no longer accepts your linked account ({oauth_code(exc)}); "
                "link it again with /spotify link."
            ) from None
        return self._grant(body, previous_refresh=refresh_token)

    def _grant(self, body: Any, *, previous_refresh: str | None) -> TokenGrant:
        if not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str):
            raise SpotifyUnavailable("Spotify's token endpoint sent no access token.")
        refresh = body.get("refresh_token") or previous_refresh
        if not isinstance(refresh, str):
            raise SpotifyUnavailable("Spotify's token endpoint sent no refresh token.")
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return TokenGrant(
            access_token=body["access_token"],
            refresh_token=refresh,
            expires_at=self._now() + timedelta(seconds=max(0.0, lifetime)),
            scopes=frozenset(str(body.get("scope") or "").split()),
        )

    # -- the Web API with the person's token -----------------------------------------------

    async def _user_call(self, access_token: str, what: str, method: str, *args: Any) -> Any:
        """``spotipy.<method>(*args)`` with the person's token. A 401 raises
        :class:`AccessTokenRejected`; other refusals pass through as SpotifyException."""
        client = self.api.user(access_token)
        try:
            return await asyncio.to_thread(self.api.call, getattr(client, method), *args)
        except SpotifyException as exc:
            if exc.http_status == 401:
                raise AccessTokenRejected(what) from None
            raise

    async def me(self, access_token: str) -> dict[str, Any]:
        """The linked person's profile: at least ``id``; ``display_name`` when they have one."""
        try:
            body = await self._user_call(access_token, "your profile", "me")
        except SpotifyException as exc:
            if exc.http_status == 403:
                # Spotify's description of a 403: "re-authenticating the user won't help". For
                # /me it is a development-mode app's list of users (at most 5) without them.
                raise LinkFailed(NOT_REGISTERED) from None
            raise LinkFailed(
                f"Spotify did not tell who you are (HTTP {exc.http_status}); "
                "run /spotify link again."
            ) from None
        if not isinstance(body, Mapping) or not isinstance(body.get("id"), str):
            raise LinkFailed("Spotify did not tell who you are; run /spotify link again.")
        profile = dict(body)
        if not isinstance(profile.get("account_id"), str):
            profile.pop("account_id", None)  # answers from before 2026 have none
        return profile

    async def playlist_items(
        self, access_token: str, playlist_id: str, *, limit: int
    ) -> list[dict[str, Any]] | None:
        """Up to ``limit`` items, following ``next``; None when Spotify refuses them to this
        person too (403/404: neither owner nor collaborator)."""
        client = self.api.user(access_token)
        try:
            return await asyncio.to_thread(self.api.items, client, playlist_id, max(1, limit))
        except SpotifyException as exc:
            if exc.http_status == 401:
                raise AccessTokenRejected("the playlist's items") from None
            if exc.http_status in (403, 404):
                return None
            raise SpotifyUnavailable(
                f"Spotify answered HTTP {exc.http_status} for the items of playlist {playlist_id}."
            ) from None

    async def upload_cover(self, access_token: str, playlist_id: str, jpeg: bytes) -> None:
        """Make ``jpeg`` the playlist's cover. Spotify takes it base64-encoded (at most
        :data:`MAX_UPLOAD_PAYLOAD` bytes then),
        with ``ugc-image-upload`` and ``playlist-modify-*``, from the owner only; it answers
        202 and applies the image a little later."""
        if not jpeg.startswith(_JPEG_MAGIC):
            raise UploadRefused("The winning cover's file is not a JPEG; it was not uploaded.")
        payload = base64.b64encode(jpeg)
        if len(payload) > MAX_UPLOAD_PAYLOAD:
            raise UploadRefused(
                f"The winning cover is {len(payload):,} bytes once encoded; Spotify takes "
                f"at most {MAX_UPLOAD_PAYLOAD:,}."
            )
        try:
            await self._user_call(
                access_token,
                "the cover upload",
                "playlist_upload_cover_image",
                playlist_id,
                payload.decode("ascii"),
            )
        except SpotifyException as exc:
            if exc.http_status == 403 and "not registered" in _api_error(exc).lower():
                raise AppInDevelopmentMode() from None  # Spotify's words: tests/fakes/spotify
            if exc.http_status == 403:
                raise UploadRefused(
                    "Spotify refused the cover (HTTP 403): your linked account does not own "
                    "this playlist or did not allow image uploads; link again with "
                    "/spotify link."
                ) from None
            if exc.http_status == 404:
                raise PlaylistNotFound(playlist_id) from None
            raise UploadRefused(
                f"Spotify refused the cover (HTTP {exc.http_status}: {_api_error(exc)})."
            ) from None


def _api_error(exc: SpotifyException) -> str:
    # spotipy's message is "<url>:\n <Spotify's message>"; the URL part says nothing new.
    message = str(exc.msg or "").split("\n", 1)[-1].strip()
    return message[:200] if message and message != "None" else "no reason given"
