""":class:`FakeSpotify`: its state, the store and scripts tests fill, its thread and event loop,
and the ``fake_spotify`` fixture. Its request handlers are in tests/fakes/spotify/routes.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.fakes.spotify.models import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEV_MODE_USER_CAP,
    FakeAccount,
    FakePlaylist,
    Grant,
    LoggedRequest,
    Reply,
    StoredImage,
    Upload,
    _AccessToken,
    _Code,
    _Script,
)
from tests.fakes.spotify.routes import SpotifyRoutes


class FakeSpotify(SpotifyRoutes):
    """The fake server; see the package docstring (tests/fakes/spotify/__init__.py).

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
        self.images: dict[str, StoredImage] = {}
        self.search_results: dict[str, list[Mapping[str, Any] | None]] = {}
        # -- a person's own account (see the package docstring) --
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

    def add_image(
        self, key: str, data: bytes, content_type: str = "image/jpeg", *, chunked: bool = False
    ) -> str:
        """Store image bytes; returns their absolute URL on this server (start it first).
        ``content_type`` is sent as given (a test may serve text as an image, or an image as
        text); ``chunked`` sends them without a Content-Length."""
        self.images[key] = StoredImage(data, content_type, chunked)
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
        app.router.add_get("/v1/playlists/{id}/images", self._playlist_images)
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


@pytest.fixture(name="fake_spotify")
def fake_spotify_fixture() -> Iterator[FakeSpotify]:
    """A running :class:`FakeSpotify`, stopped after the test."""
    with FakeSpotify() as server:
        yield server
