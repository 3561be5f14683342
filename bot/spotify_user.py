"""Spotify with a person's own account: the authorisation code flow with PKCE and the calls made
with their token. The one module that sends a user's token anywhere.

    GET  accounts/authorize              the person's browser, with our state and PKCE challenge
    POST accounts/api/token              code + verifier → tokens; refresh_token → new tokens
    GET  v1/me                           who linked: Spotify user id and display name
    GET  v1/playlists/{id}/items         items of a playlist the person owns or collaborates on
    PUT  v1/playlists/{id}/images        a base64 JPEG (≤ 256 KB payload) as the playlist's cover

PKCE (RFC 7636) rather than the secret-based code flow: the token requests carry the client id
and the verifier, never the client secret, so a leaked code is useless without the verifier
that only the bot holds. Spotify rotates refresh tokens in this flow: each refresh may answer
a new refresh token, and the old one stops working (callers must store the new one).

The client is async (aiohttp) because the bot calls it from its event loop. Its failures are
classified by :func:`bot.spotify.status_failure` and waited out per :func:`bot.spotify.retry_delay`
like the app's own reads. A 401 on an API call raises :class:`AccessTokenRejected`, which is not
a user error: :mod:`bot.accounts` refreshes the token once and tries again.

Tokens appear in no message, log line or repr: :class:`TokenGrant` hides them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.errors import (
    LinkFailed,
    NotLinked,
    PlaylistNotFound,
    SpotifyRateLimited,
    SpotifyUnavailable,
    UploadRefused,
)
from bot.settings import Settings
from bot.spotify import ITEMS_PAGE_LIMIT, Failure, RetryPolicy, retry_delay, status_failure

log = logging.getLogger(__name__)

# What linking asks for, and why (README "Link your Spotify account"):
#   playlist-read-private, playlist-read-collaborative  – read the items of your own playlists
#   ugc-image-upload + playlist-modify-public/-private  – PUT /playlists/{id}/images needs all
SCOPES = (
    "playlist-read-private",
    "playlist-read-collaborative",
    "ugc-image-upload",
    "playlist-modify-public",
    "playlist-modify-private",
)
UPLOAD_SCOPES = frozenset({"ugc-image-upload", "playlist-modify-public", "playlist-modify-private"})
MAX_UPLOAD_PAYLOAD = 256 * 1024  # Spotify's cap on the base64 body of a cover upload
VERIFIER_BYTES = 64  # → 86 base64url characters; RFC 7636 allows 43-128
_JPEG_MAGIC = b"\xff\xd8\xff"


# -- PKCE (pure) -------------------------------------------------------------------------------


def new_verifier() -> str:
    """A fresh code verifier: 86 characters of [A-Za-z0-9_-], from 512 random bits."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def challenge_for(verifier: str) -> str:
    """The S256 code challenge: base64url(sha256(verifier)) without padding (RFC 7636 §4.2)."""
    if not 43 <= len(verifier) <= 128:
        raise ValueError(f"verifier must be 43 to 128 characters, got {len(verifier)}")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable OAuth ``state`` (256 bits)."""
    return secrets.token_urlsafe(32)


def authorize_url(settings: Settings, *, client_id: str, state: str, challenge: str) -> str:
    """Where to send the person's browser to ask for :data:`SCOPES`."""
    query = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": settings.spotify_redirect_uri,
        "scope": " ".join(SCOPES),
        "state": state,
        "code_challenge_method": "S256",
        "code_challenge": challenge,
    }
    return f"{settings.spotify_authorize_url}?{urlencode(query)}"


# -- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """What the token endpoint answered. The tokens stay out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    scopes: frozenset[str]


class AccessTokenRejected(Exception):
    """The API answered 401 to a user token: expired or revoked. Refresh, then try once more."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


# -- the client --------------------------------------------------------------------------------


class SpotifyUserClient:
    """Calls made for one person with their token. One per bot; :meth:`close` it.

    ``sleep`` and ``now`` are injected so tests can record waits and move time.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.settings = settings
        self.policy = RetryPolicy.from_settings(settings)
        self._sleep = sleep
        self._now = now
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the loop that is running then.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.spotify_timeout_s)
            )
        return self._session

    # -- the token endpoint ----------------------------------------------------------------

    async def exchange_code(self, *, client_id: str, code: str, verifier: str) -> TokenGrant:
        """Trade the authorisation code for tokens. Raises :class:`LinkFailed` when Spotify
        refuses the code (expired, used, wrong verifier or redirect URI)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.spotify_redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        }
        status, body = await self._token_request(form)
        if status != 200:
            raise LinkFailed(
                f"Spotify refused the authorisation ({_oauth_error(body)}); "
                "run /spotify link in Discord again."
            )
        return self._grant(body, previous_refresh=None)

    async def refresh(self, *, client_id: str, refresh_token: str) -> TokenGrant:
        """New tokens from a refresh token. Raises :class:`NotLinked` when Spotify refuses it
        (the person removed the app's access, or the token was already used)."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
        }
        status, body = await self._token_request(form)
        if status != 200:
            raise NotLinked(
                f"Spotify no longer accepts your linked account ({_oauth_error(body)}); "
                "link it again with /spotify link."
            )
        return self._grant(body, previous_refresh=refresh_token)

    async def _token_request(self, form: Mapping[str, str]) -> tuple[int, Any]:
        return await self._request(
            "POST", self.settings.spotify_token_url, what="the token endpoint", data=dict(form)
        )

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

    async def me(self, access_token: str) -> dict[str, Any]:
        """The linked person's profile: at least ``id``; ``display_name`` when they have one."""
        status, body = await self._api("GET", "/me", access_token, what="your profile")
        if status != 200 or not isinstance(body, Mapping) or not isinstance(body.get("id"), str):
            raise LinkFailed(
                f"Spotify did not tell who you are (HTTP {status}); run /spotify link again."
            )
        return dict(body)

    async def playlist_items(
        self, access_token: str, playlist_id: str, *, limit: int
    ) -> list[dict[str, Any]] | None:
        """Up to ``limit`` items, following ``next``; None when Spotify refuses them to this
        person too (403/404: neither owner nor collaborator)."""
        items: list[dict[str, Any]] = []
        url: str | None = (
            f"{self._api_base()}/playlists/{playlist_id}/items"
            f"?{urlencode({'limit': min(ITEMS_PAGE_LIMIT, max(1, limit))})}"
        )
        while url and len(items) < limit:
            status, page = await self._api("GET", url, access_token, what="the playlist's items")
            if status in (403, 404):
                return None
            if status != 200 or not isinstance(page, Mapping):
                raise SpotifyUnavailable(
                    f"Spotify answered HTTP {status} for the items of playlist {playlist_id}."
                )
            items.extend(it for it in page.get("items") or () if isinstance(it, dict))
            next_url = page.get("next")
            url = next_url if isinstance(next_url, str) else None
        return items[:limit]

    async def upload_cover(self, access_token: str, playlist_id: str, jpeg: bytes) -> None:
        """Make ``jpeg`` the playlist's cover. Spotify takes it base64-encoded, 256 KB at most,
        with ``ugc-image-upload`` and ``playlist-modify-*``, from the owner only; it answers
        202 and applies the image a little later."""
        if not jpeg.startswith(_JPEG_MAGIC):
            raise UploadRefused("The winning cover's file is not a JPEG; it was not uploaded.")
        payload = base64.b64encode(jpeg)
        if len(payload) > MAX_UPLOAD_PAYLOAD:
            raise UploadRefused(
                f"The winning cover is {len(payload) / 1024:.0f} KB once encoded; Spotify takes "
                f"at most {MAX_UPLOAD_PAYLOAD // 1024} KB."
            )
        status, body = await self._api(
            "PUT",
            f"/playlists/{playlist_id}/images",
            access_token,
            what="the cover upload",
            data=payload,
            headers={"Content-Type": "image/jpeg"},
        )
        if status in (200, 201, 202, 204):
            return
        if status == 403:
            raise UploadRefused(
                "Spotify refused the cover (HTTP 403): your linked account does not own this "
                "playlist or did not allow image uploads; link again with /spotify link."
            )
        if status == 404:
            raise PlaylistNotFound(playlist_id)
        raise UploadRefused(f"Spotify refused the cover (HTTP {status}: {_api_error(body)}).")

    def _api_base(self) -> str:
        return self.settings.spotify_api_base.rstrip("/")

    async def _api(
        self,
        method: str,
        path_or_url: str,
        access_token: str,
        *,
        what: str,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        url = path_or_url if "://" in path_or_url else self._api_base() + path_or_url
        status, body = await self._request(
            method,
            url,
            what=what,
            data=data,
            headers={"Authorization": f"Bearer {access_token}", **(headers or {})},
        )
        if status == 401:
            raise AccessTokenRejected(what)
        return status, body

    # -- the retry loop --------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        data: bytes | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request with the reader's retry policy: 429s and 5xx/network failures are waited
        out (or turned into :class:`SpotifyRateLimited` / :class:`SpotifyUnavailable`); every
        other status is returned with its body (JSON decoded when it is JSON). ``what`` names
        the call in logs: URLs may carry nothing secret, but bodies and headers do."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._client().request(
                    method, url, data=data, headers=dict(headers or {})
                ) as response:
                    body = await _body(response)
                    failure = status_failure(response.status, response.headers, _reason(body))
                    if failure is None:
                        return response.status, body
            except TimeoutError:
                failure = Failure("unavailable", "timeout")
            except aiohttp.ClientError as exc:
                failure = Failure("unavailable", type(exc).__name__)
            try:
                delay = retry_delay(failure, attempt, self.policy)
            except SpotifyRateLimited:
                log.info("Spotify rate-limited %s (%s)", what, failure.detail)
                raise
            log.info("Spotify %s for %s; retrying in %.1f s", failure.detail, what, delay)
            await self._sleep(delay)


async def _body(response: aiohttp.ClientResponse) -> Any:
    text = await response.text()
    if response.content_type == "application/json" and text:
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _reason(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, Mapping) else None
    reason = error.get("reason") if isinstance(error, Mapping) else None
    return reason if isinstance(reason, str) else None


def _oauth_error(body: Any) -> str:
    """The OAuth error code alone (``invalid_grant``): never the description, which may echo
    what was sent."""
    code = body.get("error") if isinstance(body, Mapping) else None
    return code if isinstance(code, str) and code.isidentifier() else "refused"


def _api_error(body: Any) -> str:
    error = body.get("error") if isinstance(body, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    return message[:200] if isinstance(message, str) and message else "no reason given"
