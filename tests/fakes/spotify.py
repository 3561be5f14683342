"""A small local Spotify Web API, for tests that run the real spotipy (or anything else) against it.

It serves what :mod:`bot.app.spotify` reads, shaped like Spotify's answers as of 2026 (see
``docs/facts.md``)::

    POST /api/token                   client credentials (HTTP Basic), 400 invalid_client otherwise;
                                      the app token expires after ``server.app_token_lifetime_s``
                                      (or at once with ``server.expire_app_tokens()``)
    GET  /v1/playlists/{id}           playlist metadata; its ``items`` page (the first items) only
                                      for a token that may read them, else no ``items`` field
    GET  /v1/playlists/{id}/items     paged items ``{"item": track or episode, ...}``, ``limit``
                                      1–50 (default 20), absolute ``next`` URLs; 403 to a token
                                      that may not read them
    GET  /v1/artists/{id}             full artist objects, genres included
    GET  /v1/search?type=playlist     playlists whose name contains ``q`` (case-insensitive), paged
                                      with ``limit`` 1–10, default 5 (Spotify's figures since
                                      2026) and absolute ``next`` URLs; ``server.search_results[q]``
                                      (a list that may hold ``None``, as Spotify's does) overrides
                                      matching

Who may read a playlist's items is decided by the token, as in February 2026's development mode:
a user token of the owner or of one of ``server.collaborators[playlist_id]``. App tokens and
other people get metadata only – unless ``server.extended_quota`` is True (an app Spotify granted
extended quota: every token reads every playlist's items).
    GET  /images/{key}                image bytes stored with ``server.add_image`` (no token, like
                                      Spotify's image CDN)

A person's own account (authorisation code with PKCE, as :mod:`bot.app.spotify` uses it)::

    GET  /authorize                   the login-and-consent page, played by ``server.account``:
                                      302 to the redirect URI with ``code`` and ``state`` (or
                                      ``error=access_denied`` when ``server.consent`` is False);
                                      400 for an unknown client or unregistered redirect URI
    POST /api/token                   ``authorization_code`` (checks the verifier against the
                                      challenge and the redirect URI; a code works once) and
                                      ``refresh_token`` (rotates: the old refresh token dies)
    GET  /v1/me                       the token's user (``account_id`` and ``id``); 403 with
                                      Spotify's development-mode message for a user who is not in
                                      ``server.registered_users`` (when that is not None), as is
                                      every other call with that user's token
    GET  /v1/playlists/{id}/items     also served to a user token of the owner or a collaborator
    PUT  /v1/playlists/{id}/images    base64 JPEG, 413 above ``COVER_PAYLOAD_CUTOFF`` (Spotify's
                                      "256 KB", read as the reported refusals allow; docs/facts.md),
                                      owner's token with ugc-image-upload and playlist-modify-*;
                                      kept in ``server.uploads``; 202

Every answer under ``/v1`` is checked against Spotify's API description
(:mod:`tests.fakes.spotify_schema`); what does not fit is kept in ``server.schema_problems`` and
fails the test when the server stops.

Every ``/v1`` call needs a bearer token that ``/api/token`` handed out (a user's expires after
``server.user_token_lifetime_s``, or at once with ``server.expire_user_tokens()``). Failures are scripted per
path: ``server.script("/v1/playlists/ID", [Reply(429, retry_after=1), 200])`` answers the next
request with a 429 and the one after normally (``200`` or ``PASS`` means "serve normally");
``server.script(path, Reply(500), forever=True)`` fails every request. ``server.requests`` logs
every request as ``(method, path, query)``.

The server runs on 127.0.0.1 at a random port, in a thread with its own event loop, so that both
synchronous clients (spotipy) and async tests can use it. Use the ``fake_spotify`` fixture (import
``fake_spotify_fixture`` into a test module or a conftest), or ``with FakeSpotify() as server:``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import io
import itertools
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlencode

import pytest
from aiohttp import web
from PIL import Image

from tests.fakes import spotify_schema

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


class FakeSpotify:
    """The fake server; see the module docstring.

    Fill the store and scripts from the test thread; requests are served on the server thread.
    """

    def __init__(self, *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.playlists: dict[str, FakePlaylist] = {}
        self.artists: dict[str, dict[str, Any]] = {}
        self.requests: list[LoggedRequest] = []
        self.tokens_issued: list[str] = []  # every app token, valid or not (for leak checks)
        self.app_token_lifetime_s = 3600.0
        self._app_tokens: dict[str, float] = {}  # token → expiry (time.monotonic())
        self.extended_quota = False  # True: every token reads every playlist's items
        self.collaborators: dict[str, set[str]] = {}  # playlist id → user ids besides its owner
        self.registered_users: set[str] | None = None  # development mode's list; None: anyone
        self.schema_problems: list[str] = []
        self.images: dict[str, tuple[bytes, str]] = {}
        self.search_results: dict[str, list[Mapping[str, Any] | None]] = {}
        # -- a person's own account (see the module docstring) --
        self.account = FakeAccount()  # who is logged in at /authorize
        self.consent = True  # False: the person presses "Cancel" on the consent page
        self.granted_scopes: set[str] | None = None  # None: every scope asked for
        self.redirect_uris: set[str] = set()  # as registered on the app's dashboard
        self.user_token_lifetime_s = 3600.0
        self.authorizations: list[dict[str, str]] = []  # the query of every /authorize
        self.token_requests: list[dict[str, str]] = []  # every user-flow form to /api/token
        self.uploads: list[Upload] = []
        self.access_tokens: dict[str, _AccessToken] = {}
        self.refresh_tokens: dict[str, Grant] = {}  # the ones still valid
        self._codes: dict[str, _Code] = {}
        self._all_user_tokens: list[str] = []
        self._scripts: dict[str, _Script] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- addresses -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    @property
    def token_url(self) -> str:
        return self.base_url + "/api/token"

    # -- the store -----------------------------------------------------------------------------

    def add_playlist(
        self,
        playlist: Mapping[str, Any],
        items: Iterable[Mapping[str, Any]] = (),
        *,
        collaborators: Iterable[str] = (),
    ) -> FakePlaylist:
        """Store a playlist object (its own ``items``/``tracks`` page is ignored) and its items;
        ``collaborators`` are user ids who may read them besides the owner."""
        meta = {k: copy.deepcopy(v) for k, v in playlist.items() if k not in ("items", "tracks")}
        stored = FakePlaylist(meta, [copy.deepcopy(dict(it)) for it in items])
        self.playlists[str(meta["id"])] = stored
        self.collaborators[str(meta["id"])] = set(collaborators)
        return stored

    def add_artist(self, artist: Mapping[str, Any]) -> None:
        self.artists[str(artist["id"])] = copy.deepcopy(dict(artist))

    def add_snapshot(self, snapshot: Mapping[str, Any] | str | Path) -> FakePlaylist:
        """Store a snapshot (``examples/playlists/*.json`` shape): the playlist, its items if the
        page lists them, and its ``artists``. Who may read the items is the token's matter."""
        if not isinstance(snapshot, Mapping):
            snapshot = json.loads(Path(snapshot).read_text(encoding="utf-8"))
        page = snapshot.get("items") or snapshot.get("tracks") or {}
        items = page.get("items") if isinstance(page, Mapping) else None
        for artist in snapshot.get("artists") or ():
            self.add_artist(artist)
        playlist = {k: v for k, v in snapshot.items() if k != "artists"}
        return self.add_playlist(playlist, items or ())

    def register_redirect_uri(self, uri: str) -> None:
        """Add a redirect URI to the app's settings, as on Spotify's dashboard."""
        self.redirect_uris.add(uri)

    def register_user(self, user_id: str) -> None:
        """Add a user to a development-mode app's list (Dashboard → User Management); Spotify
        takes at most :data:`DEV_MODE_USER_CAP`."""
        registered = self.registered_users if self.registered_users is not None else set()
        if user_id not in registered and len(registered) >= DEV_MODE_USER_CAP:
            raise ValueError(f"a development-mode app takes at most {DEV_MODE_USER_CAP} users")
        self.registered_users = registered | {user_id}

    def expire_app_tokens(self) -> None:
        """Every app (client-credentials) token handed out so far stops working."""
        with self._lock:
            self._app_tokens = dict.fromkeys(self._app_tokens, 0.0)

    def expire_user_tokens(self) -> None:
        """Every user access token handed out so far stops working (refresh tokens still do)."""
        with self._lock:
            for token in self.access_tokens.values():
                token.expires_at = 0.0

    def revoke_user_tokens(self) -> None:
        """The person removed the app on their account page: every user token dies."""
        with self._lock:
            self.access_tokens.clear()
            self.refresh_tokens.clear()

    def user_tokens(self) -> list[str]:
        """Every access and refresh token handed to a user, valid or not (for leak checks)."""
        return [*self._all_user_tokens]

    def add_image(self, key: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Store image bytes; returns their absolute URL on this server (start it first)."""
        self.images[key] = (data, content_type)
        return f"{self.base_url}/images/{key}"

    # -- scripted failures and the log ---------------------------------------------------------

    def script(
        self, path: str, replies: Reply | int | Sequence[Reply | int], *, forever: bool = False
    ) -> None:
        """Answer the next requests to ``path`` with ``replies`` in order, then normally again.

        ``forever=True`` repeats the last reply for every later request. An int is a bare
        status; 200 serves the request normally.
        """
        if isinstance(replies, Reply | int):
            replies = [replies]
        queue = deque(Reply(r) if isinstance(r, int) else r for r in replies)
        if not queue:
            raise ValueError("script() needs at least one reply")
        with self._lock:
            self._scripts[path] = _Script(queue, queue[-1] if forever else None)

    def requests_to(self, path: str) -> list[LoggedRequest]:
        return [r for r in list(self.requests) if r.path == path]

    def _scripted(self, path: str) -> Reply | None:
        with self._lock:
            script = self._scripts.get(path)
            if script is None:
                return None
            if script.replies:
                return script.replies.popleft()
            if script.forever is not None:
                return script.forever
            del self._scripts[path]
            return None

    # -- running -------------------------------------------------------------------------------

    def start(self) -> FakeSpotify:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-spotify", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Spotify server did not start within 10 s")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeSpotify:
        return self.start()

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.stop()
        if exc_type is None and self.schema_problems:
            problems = "\n  ".join(self.schema_problems[:10])
            raise AssertionError(
                f"the fake's answers do not fit Spotify's description:\n  {problems}"
            )

    async def _start_site(self) -> None:
        app = web.Application(middlewares=[self._log_and_script])
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/api/token", self._token)
        app.router.add_get("/v1/me", self._me)
        app.router.add_get("/v1/me/", self._me)  # Spotify answers both; spotipy asks for "me/"
        app.router.add_get("/v1/playlists/{id}", self._playlist)
        app.router.add_get("/v1/playlists/{id}/items", self._items)
        app.router.add_put("/v1/playlists/{id}/images", self._cover_upload)
        app.router.add_get("/v1/artists/{id}", self._artist)
        app.router.add_get("/v1/search", self._search)
        app.router.add_get("/images/{key}", self._image)
        # Short shutdown: a handler stalled by a scripted delay must not hold the test up.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # -- handlers ------------------------------------------------------------------------------

    @web.middleware
    async def _log_and_script(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(LoggedRequest(request.method, request.path, dict(request.query)))
        reply = self._scripted(request.path)
        if reply is not None and reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply is not None and reply.status != 200:
            return self._scripted_response(request.path, reply)
        if not request.path.startswith("/v1/"):
            return await handler(request)
        if not self._authorized(request):
            token = self._bearer(request)
            if token in self.access_tokens or token in self._app_tokens:
                response = _json(error_body(401, "The access token expired"), 401)
            else:
                response = _json(error_body(401, "No token provided or invalid token"), 401)
        elif not self._registered(request):
            response = _json(error_body(403, NOT_REGISTERED), 403)
        else:
            response = await handler(request)
        self._check_answer(request, response)
        return response

    def _check_answer(self, request: web.Request, response: web.StreamResponse) -> None:
        """Hold the answer against the API description (tests/fakes/spotify_schema.py)."""
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        path = template.removeprefix("/v1").rstrip("/")
        if path.startswith("/playlists/"):
            path = path.replace("{id}", "{playlist_id}")
        body = None
        if isinstance(response, web.Response) and response.body is not None:
            body = json.loads(response.body)
        try:
            found = spotify_schema.problems(request.method, path, response.status, body)
        except KeyError:
            found = [f"{request.method} {path}: not in the description"]
        self.schema_problems += found

    def _scripted_response(self, path: str, reply: Reply) -> web.Response:
        headers = {}
        if reply.retry_after is not None:
            retry_after = reply.retry_after
            headers["Retry-After"] = (
                f"{retry_after:g}" if isinstance(retry_after, float | int) else retry_after
            )
        body = reply.body
        if body is None and path == "/api/token":
            body = {"error": "invalid_client", "error_description": "Invalid client"}
        return _json(body if body is not None else error_body(reply.status), reply.status, headers)

    @staticmethod
    def _bearer(request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token if scheme == "Bearer" else None

    def _authorized(self, request: web.Request) -> bool:
        return self._app_token(request) or self._grant(request) is not None

    def _app_token(self, request: web.Request) -> bool:
        """Whether the request carries a valid app (client-credentials) token."""
        expires_at = self._app_tokens.get(self._bearer(request) or "")
        return expires_at is not None and expires_at > time.monotonic()

    def _registered(self, request: web.Request) -> bool:
        """False for a user token of someone a development-mode app does not list."""
        grant = self._grant(request)
        return (
            grant is None
            or self.registered_users is None
            or grant.account.id in self.registered_users
        )

    def _may_read_items(self, request: web.Request, stored: FakePlaylist) -> bool:
        """Spotify 2026: the owner's or a collaborator's user token; anyone with extended quota."""
        if self.extended_quota:
            return True
        grant = self._grant(request)
        if grant is None:
            return False
        playlist_id = str(stored.meta["id"])
        return grant.account.id == stored.meta["owner"]["id"] or grant.account.id in (
            self.collaborators.get(playlist_id, ())
        )

    def _grant(self, request: web.Request) -> Grant | None:
        """The person behind a valid user access token, else None (an app token, or none)."""
        token = self.access_tokens.get(self._bearer(request) or "")
        if token is None or token.expires_at <= time.monotonic():
            return None
        return token.grant

    # -- the user flow ---------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.authorizations.append(query)
        # Spotify shows its own error page, without redirecting, for these two.
        if query.get("client_id") != self.client_id:
            return web.Response(status=400, text="INVALID_CLIENT: Invalid client")
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return web.Response(status=400, text="INVALID_CLIENT: Invalid redirect URI")
        back: dict[str, str] = {}
        if query.get("response_type") != "code":
            back["error"] = "unsupported_response_type"
        elif query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            back["error"] = "invalid_request"
        elif not self.consent:
            back["error"] = "access_denied"
        else:
            asked = frozenset(query.get("scope", "").split())
            granted = asked if self.granted_scopes is None else asked & self.granted_scopes
            code = "fake-code-" + secrets.token_urlsafe(16)
            self._codes[code] = _Code(
                Grant(self.account, self.client_id, granted),
                redirect_uri,
                query["code_challenge"],
            )
            back["code"] = code
        if "state" in query:
            back["state"] = query["state"]
        raise web.HTTPFound(f"{redirect_uri}?{urlencode(back)}")

    def _issue(self, grant: Grant) -> dict[str, Any]:
        access = "fake-user-access-" + secrets.token_hex(12)
        refresh = "fake-user-refresh-" + secrets.token_hex(12)
        with self._lock:
            expires = time.monotonic() + self.user_token_lifetime_s
            self.access_tokens[access] = _AccessToken(grant, expires)
            self.refresh_tokens[refresh] = grant
            self._all_user_tokens += [access, refresh]
        return {
            "access_token": access,
            "token_type": "Bearer",
            "scope": " ".join(sorted(grant.scopes)),
            "expires_in": int(self.user_token_lifetime_s),
            "refresh_token": refresh,
        }

    def _user_token(self, form: Mapping[str, Any]) -> web.Response:
        self.token_requests.append({k: str(v) for k, v in form.items()})

        def refused(description: str) -> web.Response:
            return _json({"error": "invalid_grant", "error_description": description}, 400)

        if form.get("client_id") != self.client_id:
            return _json({"error": "invalid_client", "error_description": "Invalid client"}, 400)
        if form.get("grant_type") == "refresh_token":
            with self._lock:
                grant = self.refresh_tokens.pop(str(form.get("refresh_token")), None)
            if grant is None:
                return refused("Invalid refresh token")
            return _json(self._issue(grant))  # a new refresh token: the old one is spent
        code = self._codes.get(str(form.get("code")))
        if code is None or code.used:
            return refused("Invalid authorization code")
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            return refused("Invalid redirect URI")
        verifier = str(form.get("code_verifier") or "")
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.challenge:
            return refused("code_verifier was incorrect")
        return _json(self._issue(code.grant))

    async def _me(self, request: web.Request) -> web.Response:
        grant = self._grant(request)
        if grant is None:
            return _json(error_body(403, "This request requires user authentication"), 403)
        account = grant.account
        return _json(
            {
                "account_id": account.account_id,
                "display_name": account.display_name,
                "external_urls": {"spotify": f"https://open.spotify.com/user/{account.id}"},
                "href": f"https://api.spotify.com/v1/users/{account.id}",
                "id": account.id,
                "images": [],
                "type": "user",
                "uri": f"spotify:user:{account.id}",
            }
        )

    async def _cover_upload(self, request: web.Request) -> web.Response:
        grant = self._grant(request)
        stored = self.playlists.get(request.match_info["id"])
        if stored is None:
            return _json(error_body(404), 404)
        if grant is None or grant.account.id != stored.meta["owner"]["id"]:
            return _json(error_body(403, "Forbidden"), 403)
        modify = (
            "playlist-modify-public" if stored.meta.get("public") else "playlist-modify-private"
        )
        if not {"ugc-image-upload", modify} <= grant.scopes:
            return _json(error_body(403, "Insufficient client scope"), 403)
        if request.content_type != "image/jpeg":
            return _json(error_body(400, "Content-Type must be image/jpeg"), 400)
        payload = await request.read()
        if len(payload) > COVER_PAYLOAD_CUTOFF:
            return _json(error_body(413, "Maximum payload size is 256 KB"), 413)
        try:
            jpeg = base64.b64decode(payload, validate=True)
            if Image.open(io.BytesIO(jpeg)).format != "JPEG":
                raise ValueError("not a JPEG")
        except (binascii.Error, ValueError, OSError):
            return _json(error_body(400, "Image must be a base64-encoded JPEG"), 400)
        self.uploads.append(
            Upload(stored.meta["id"], grant.account.id, request.content_type, len(payload), jpeg)
        )
        url = self.add_image(f"cover-{stored.meta['id']}-{len(self.uploads)}", jpeg)
        stored.meta["images"] = [{"url": url, "height": None, "width": None}]
        return web.Response(status=202)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") in ("authorization_code", "refresh_token"):
            return self._user_token(form)
        if form.get("grant_type") != "client_credentials":
            return _json(
                {"error": "unsupported_grant_type", "error_description": "grant_type missing"}, 400
            )
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return _json({"error": "invalid_client", "error_description": "Invalid client"}, 401)
        expected = f"{self.client_id}:{self.client_secret}".encode()
        if base64.b64decode(encoded or "", validate=False) != expected:
            return _json(
                {"error": "invalid_client", "error_description": "Invalid client secret"}, 400
            )
        token = "fake-token-" + secrets.token_hex(8)
        with self._lock:
            self.tokens_issued.append(token)
            self._app_tokens[token] = time.monotonic() + self.app_token_lifetime_s
        lifetime = max(0, round(self.app_token_lifetime_s))
        return _json({"access_token": token, "token_type": "Bearer", "expires_in": lifetime})

    async def _playlist(self, request: web.Request) -> web.Response:
        stored = self.playlists.get(request.match_info["id"])
        if stored is None:
            return _json(error_body(404), 404)
        body = copy.deepcopy(stored.meta)
        href = f"{self.api_base}/playlists/{stored.meta['id']}/items"
        if self._may_read_items(request, stored):  # else no `items` at all, as Spotify does
            body["items"] = self._page(stored, href, 0, EMBEDDED_ITEMS)
        return _json(body)

    async def _items(self, request: web.Request) -> web.Response:
        stored = self.playlists.get(request.match_info["id"])
        if stored is None:
            return _json(error_body(404), 404)
        if not self._may_read_items(request, stored):
            return _json(error_body(403, "Forbidden"), 403)
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            return _json(error_body(400, "Invalid limit or offset"), 400)
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            return _json(error_body(400, f"Invalid limit {limit} or offset {offset}"), 400)
        href = f"{self.api_base}/playlists/{stored.meta['id']}/items"
        return _json(self._page(stored, href, offset, limit))

    def _page(self, stored: FakePlaylist, href: str, offset: int, limit: int) -> dict[str, Any]:
        total = len(stored.items)
        end = min(offset + limit, total)

        def url(at: int) -> str:
            return f"{href}?offset={at}&limit={limit}"

        return {
            "href": url(offset),
            "items": copy.deepcopy(stored.items[offset:end]),
            "limit": limit,
            "next": url(end) if end < total else None,
            "offset": offset,
            "previous": url(max(0, offset - limit)) if offset > 0 else None,
            "total": total,
        }

    async def _artist(self, request: web.Request) -> web.Response:
        artist = self.artists.get(request.match_info["id"])
        if artist is None:
            return _json(error_body(404), 404)
        return _json(artist)

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        if not query or "playlist" not in request.query.get("type", "").split(","):
            return _json(error_body(400, "Missing q or unsupported type"), 400)
        try:
            limit = int(request.query.get("limit", SEARCH_DEFAULT_LIMIT))
            offset = int(request.query.get("offset", 0))
        except ValueError:
            return _json(error_body(400, "Invalid limit or offset"), 400)
        if not 1 <= limit <= SEARCH_MAX_LIMIT or not 0 <= offset <= SEARCH_MAX_OFFSET:
            return _json(error_body(400, f"Invalid limit {limit} or offset {offset}"), 400)
        if query in self.search_results:
            found = list(self.search_results[query])
        else:
            found = [
                p.meta for p in self.playlists.values() if query.lower() in p.meta["name"].lower()
            ]
        total = min(len(found), SEARCH_MAX_OFFSET)
        end = min(offset + limit, total)

        def url(at: int) -> str:
            return f"{self.api_base}/search?q={query}&type=playlist&offset={at}&limit={limit}"

        page = {
            "href": url(offset),
            "items": [None if p is None else self._search_item(p) for p in found[offset:end]],
            "limit": limit,
            "next": url(end) if end < total else None,
            "offset": offset,
            "previous": url(max(0, offset - limit)) if offset > 0 else None,
            "total": total,
        }
        return _json({"playlists": page})

    def _search_item(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """A simplified playlist object: metadata and a link to its items."""
        item = {k: copy.deepcopy(v) for k, v in meta.items() if k not in ("followers", "items")}
        stored = self.playlists.get(str(meta["id"]))
        total = len(stored.items) if stored is not None else 0
        item["items"] = {"href": f"{self.api_base}/playlists/{meta['id']}/items", "total": total}
        return item

    async def _image(self, request: web.Request) -> web.Response:
        stored = self.images.get(request.match_info["key"])
        if stored is None:
            return web.Response(status=404, text="Not found")
        return web.Response(body=stored[0], content_type=stored[1])


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


@pytest.fixture(name="fake_spotify")
def fake_spotify_fixture() -> Iterator[FakeSpotify]:
    """A running :class:`FakeSpotify`, stopped after the test."""
    with FakeSpotify() as server:
        yield server
