"""Linked Spotify accounts: linking, keeping tokens fresh, and what a link is used for.

    /spotify link ─► start_link ─► (browser: Spotify asks the person) ─► callback server
                                                                            │
          storage.spotify_accounts ◄── complete_link: state → user, code + verifier → tokens
                 │
                 ├─► read_items     /cover on your own playlist: its items, so genres and artists
                 └─► apply_cover    "Apply to Spotify" on a closed vote: the winner's JPEG

The ``state`` ties the browser's return to the Discord user who asked: it is random, stored only
as a hash, expires after ``settings.link_state_ttl_s`` and works once (it is deleted the moment
it is looked up). The PKCE verifier and the tokens are stored encrypted with Fernet (AES-128-CBC
+ HMAC-SHA256) under ``COVER_TOKEN_KEY``; without that key linking is off. A new key makes the
stored links unreadable, and their owners are asked to link again.

Access tokens live an hour. Each use refreshes one that is about to expire, and one the API
answers 401 to, once; a per-person lock keeps two uses from both spending the same (rotating)
refresh token. A refresh token Spotify refuses means the person revoked the app: the link is
deleted and they are told to link again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from bot.app.errors import (
    LinkFailed,
    LinkingDisabled,
    NotLinked,
    NotRequester,
    SpotifyRateLimited,
    UploadRefused,
)
from bot.app.settings import GENERATE_KEY, Settings
from bot.app.spotify import AccessTokenRejected, SpotifyUserClient
from bot.app.spotify_oauth import (
    SCOPES,
    UPLOAD_SCOPES,
    TokenGrant,
    authorize_url,
    challenge_for,
    new_state,
    new_verifier,
)
from bot.app.storage import Storage
from models.errors import CoverError

log = logging.getLogger(__name__)

T = TypeVar("T")

REFRESH_MARGIN = timedelta(seconds=60)  # refresh a token this close to expiring before use


@dataclass(frozen=True)
class LinkedAccount:
    """A linked account as the rest of the bot sees it: no tokens."""

    discord_user_id: str
    spotify_user_id: str  # the user `id`: what a playlist's `owner.id` is compared with
    display_name: str
    scopes: frozenset[str]
    linked_at: datetime
    # Spotify's immutable `account_id`, which its description says to link by; for accounts
    # linked before we stored it, their user id.
    account_id: str = ""

    @property
    def can_upload(self) -> bool:
        return UPLOAD_SCOPES.issubset(self.scopes)


@dataclass(frozen=True)
class AppliedCover:
    playlist_id: str
    playlist_name: str
    candidate: int
    jpeg_bytes: int
    upload_id: int


class TokenVault:
    """Fernet encryption of the secrets we must keep: tokens and PKCE verifiers."""

    def __init__(self, key: SecretStr) -> None:
        try:
            self._fernet = Fernet(key.get_secret_value().encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            # Fernet's own message names no part of the key; ours neither.
            raise LinkingDisabled(
                "Linking Spotify accounts is switched off on this bot: COVER_TOKEN_KEY is not a "
                f"Fernet key (32 url-safe base64-encoded bytes; make one with: {GENERATE_KEY})."
            ) from None

    def seal(self, secrets: Mapping[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(dict(secrets)).encode("utf-8"))

    def open(self, blob: bytes) -> dict[str, str]:
        """Raises ``cryptography.fernet.InvalidToken`` when the key is not the one it was
        sealed with (or the blob was tampered with)."""
        return json.loads(self._fernet.decrypt(bytes(blob)))

    def __repr__(self) -> str:
        return "TokenVault(…)"


def state_hash(state: str) -> str:
    # A hash, so that the database file alone cannot complete someone's pending link.
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SpotifyAccounts:
    """Everything a linked account does. One per bot, built with the bot's storage.

    Builds even when linking is not configured (``enabled`` is then False and each linking
    call raises :class:`LinkingDisabled` saying what to set), so the rest of the bot can ask
    it questions either way. ``client`` and ``now`` are injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        client: SpotifyUserClient | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.client = client or SpotifyUserClient(settings, now=now)
        self._now = now
        self._locks: dict[str, asyncio.Lock] = {}
        self._vault: TokenVault | None = None
        self._client_id = ""
        try:
            self._client_id, key = settings.require_linking()
            self._vault = TokenVault(key)
            self.disabled_reason: str | None = None
        except LinkingDisabled as exc:
            self.disabled_reason = str(exc)

    @property
    def enabled(self) -> bool:
        return self.disabled_reason is None

    def disable(self, reason: str) -> None:
        """Switch linking off with a reason people are told (the callback server can't run)."""
        self.disabled_reason = reason

    def _require_vault(self) -> TokenVault:
        if self.disabled_reason is not None or self._vault is None:
            raise LinkingDisabled(self.disabled_reason or "Linking Spotify accounts is off.")
        return self._vault

    async def close(self) -> None:
        await self.client.close()

    # -- 1. linking ------------------------------------------------------------------------

    def start_link(self, discord_user_id: str) -> tuple[str, datetime]:
        """A fresh authorisation URL for this person and when it stops working."""
        vault = self._require_vault()
        state, verifier = new_state(), new_verifier()
        expires_at = self._now() + timedelta(seconds=self.settings.link_state_ttl_s)
        self.storage.save_link_state(
            state_hash=state_hash(state),
            discord_user_id=discord_user_id,
            verifier=vault.seal({"verifier": verifier}),
            expires_at=expires_at,
        )
        url = authorize_url(
            self.settings,
            client_id=self._client_id,
            state=state,
            challenge=challenge_for(verifier),
        )
        return url, expires_at

    async def complete_link(
        self, *, state: str | None, code: str | None, error: str | None
    ) -> LinkedAccount:
        """Finish a link from the query Spotify redirected the browser with.

        Raises :class:`LinkFailed` with a sentence for the browser page: a missing, unknown,
        used or expired ``state`` (nothing is sent to Spotify then), the person declining,
        Spotify refusing the code, or fewer scopes granted than :data:`SCOPES`.
        """
        vault = self._require_vault()
        # 1. the state: known, unused, unexpired. Looking it up uses it up.
        if not state:
            raise LinkFailed(
                "This address only works as Spotify's redirect after /spotify link; "
                "nothing was linked."
            )
        pending = self.storage.take_link_state(state_hash(state))
        if pending is None:
            raise LinkFailed(
                "This authorisation link is not valid or was already used; run /spotify link "
                "in Discord for a new one."
            )
        if datetime.fromisoformat(pending.expires_at) <= self._now():
            minutes = self.settings.link_state_ttl_s / 60
            raise LinkFailed(
                f"This authorisation link expired (links last {minutes:g} minutes); run "
                "/spotify link in Discord for a new one."
            )
        user = pending.discord_user_id
        # 2. what the person decided on Spotify's page
        if error:
            code_name = error if error.isidentifier() else "refused"
            raise LinkFailed(
                f"Spotify says access was not allowed ({code_name}); nothing was linked."
            )
        if not code:
            raise LinkFailed("Spotify sent no authorisation code; run /spotify link again.")
        # 3. code + verifier → tokens, with every scope we asked for
        try:
            verifier = vault.open(pending.verifier)["verifier"]
        except InvalidToken:
            raise LinkFailed(
                "The bot's encryption key changed during your link; run /spotify link again."
            ) from None
        grant = await self.client.exchange_code(
            client_id=self._client_id, code=code, verifier=verifier
        )
        missing = sorted(set(SCOPES) - grant.scopes)
        if missing:
            raise LinkFailed(
                f"Spotify granted fewer permissions than the bot needs (missing "
                f"{', '.join(missing)}); run /spotify link again."
            )
        # 4. who they are on Spotify, then keep it
        try:
            profile = await self.client.me(grant.access_token)
        except AccessTokenRejected:
            raise LinkFailed(
                "Spotify rejected the new token at once; run /spotify link again."
            ) from None
        self.storage.save_spotify_account(
            discord_user_id=user,
            spotify_user_id=profile["id"],
            display_name=str(profile.get("display_name") or profile["id"]),
            scopes=" ".join(sorted(grant.scopes)),
            tokens=self._seal(grant),
            expires_at=grant.expires_at,
            spotify_account_id=profile.get("account_id") or None,
        )
        log.info("Discord user %s linked Spotify user %s", user, profile["id"])
        account = self.account(user)
        assert account is not None  # just saved
        return account

    def account(self, discord_user_id: str) -> LinkedAccount | None:
        row = self.storage.spotify_account(discord_user_id)
        if row is None:
            return None
        return LinkedAccount(
            discord_user_id=row.discord_user_id,
            spotify_user_id=row.spotify_user_id,
            display_name=row.display_name or row.spotify_user_id,
            scopes=frozenset(row.scopes.split()),
            linked_at=datetime.fromisoformat(row.linked_at),
            account_id=row.spotify_account_id or row.spotify_user_id,
        )

    def unlink(self, discord_user_id: str) -> bool:
        """Delete the person's tokens (works with linking switched off, too)."""
        deleted = self.storage.delete_spotify_account(discord_user_id)
        if deleted:
            log.info("Discord user %s unlinked their Spotify account", discord_user_id)
        return deleted

    # -- 2. using a link -------------------------------------------------------------------

    def owner_account(self, discord_user_id: str, playlist_id: str) -> LinkedAccount | None:
        """The person's linked account if it owns the playlist (by the last snapshot the bot
        read of it), else None. No network: decides whether to offer "Apply to Spotify"."""
        if not self.enabled:
            return None
        account = self.account(discord_user_id)
        snapshot = self.storage.latest_snapshot(playlist_id)
        if account is None or snapshot is None:
            return None
        return account if _owner_id(snapshot) == account.spotify_user_id else None

    async def read_items(
        self, discord_user_id: str, playlist: Mapping[str, Any]
    ) -> list[dict[str, Any]] | None:
        """The items of a playlist the app may not read, read with the person's own token when
        their linked account owns it (or it is collaborative). None when that does not apply
        or fails: items are a bonus, and a failure here never fails a /cover."""
        if not self.enabled:
            return None
        account = self.account(discord_user_id)
        if account is None:
            return None
        if _owner_id(playlist) != account.spotify_user_id and not playlist.get("collaborative"):
            return None
        playlist_id = str(playlist["id"])
        limit = max(1, self.settings.spotify_max_items)
        try:
            return await self._with_token(
                discord_user_id,
                lambda token: self.client.playlist_items(token, playlist_id, limit=limit),
            )
        except CoverError as exc:
            log.warning(
                "Could not read playlist %s with the linked account of user %s: %s",
                playlist_id,
                discord_user_id,
                exc,
            )
            return None

    async def apply_cover(self, *, message_id: str, discord_user_id: str) -> AppliedCover:
        """Upload the winning candidate of a closed vote as its playlist's cover.

        Only the requester may (:class:`NotRequester` otherwise, not recorded). Every attempt
        of theirs is recorded in ``spotify_uploads``, failures with the message they were
        given, and failures are raised as the :class:`CoverError` that says why.
        """
        message = self.storage.cover_message(message_id)
        if message is None or message.open or message.winner is None:
            raise UploadRefused("This vote has no winning cover to apply.")
        request = self.storage.request(message.request_id)
        if request is None or request.user_id != discord_user_id:
            raise NotRequester()
        attempt: dict[str, Any] = {
            "message_id": message_id,
            "request_id": request.id,
            "playlist_id": request.playlist_id,
            "discord_user_id": discord_user_id,
            "spotify_user_id": None,
            "candidate": message.winner,
            "jpeg_bytes": None,
        }
        try:
            self._require_vault()
            account = self.account(discord_user_id)
            if account is None:
                raise NotLinked()
            attempt["spotify_user_id"] = account.spotify_user_id
            if self.owner_account(discord_user_id, request.playlist_id) is None:
                raise UploadRefused(
                    f"Your linked Spotify account ({account.display_name}) does not own this "
                    "playlist, and Spotify takes covers only from a playlist's owner."
                )
            if not account.can_upload:
                raise UploadRefused(
                    "Your Spotify link does not allow image uploads; link again with /spotify link."
                )
            jpeg = await self._winner_jpeg(request.id, message.winner)
            attempt["jpeg_bytes"] = len(jpeg)
            await self._with_token(
                discord_user_id,
                lambda token: self.client.upload_cover(token, request.playlist_id, jpeg),
            )
        except Exception as exc:
            status = "rate_limited" if isinstance(exc, SpotifyRateLimited) else "failed"
            # A bug's own text stays in the log (with its traceback, where it is caught).
            error = str(exc) if isinstance(exc, CoverError) else f"unexpected {type(exc).__name__}"
            self.storage.record_upload(**attempt, status=status, error=error)
            log.info("Cover upload for message %s %s: %s", message_id, status, error)
            raise
        upload_id = self.storage.record_upload(**attempt, status="applied")
        log.info(
            "Applied cover %s of message %s to playlist %s",
            message.winner,
            message_id,
            request.playlist_id,
        )
        return AppliedCover(
            request.playlist_id,
            request.playlist_name,
            message.winner,
            attempt["jpeg_bytes"],
            upload_id,
        )

    async def _winner_jpeg(self, request_id: str, winner: int) -> bytes:
        candidate = self.storage.candidate(request_id, winner)
        try:
            if candidate is None or not candidate.jpeg_path:
                raise FileNotFoundError
            return await asyncio.to_thread(Path(candidate.jpeg_path).read_bytes)
        except OSError:
            raise UploadRefused(
                "The winning cover's files are no longer on the bot's disk."
            ) from None

    # -- tokens ----------------------------------------------------------------------------

    async def _with_token(self, discord_user_id: str, call: Callable[[str], Awaitable[T]]) -> T:
        """``call(access_token)`` with a fresh token; after a 401, refresh once and retry."""
        token = await self._fresh_token(discord_user_id)
        try:
            return await call(token)
        except AccessTokenRejected:
            log.info("Spotify rejected the access token of user %s; refreshing", discord_user_id)
        token = await self._fresh_token(discord_user_id, rejected=token)
        try:
            return await call(token)
        except AccessTokenRejected:
            raise NotLinked(
                "Spotify rejects your linked account even after a refresh; link it again with "
                "/spotify link."
            ) from None

    async def _fresh_token(self, discord_user_id: str, *, rejected: str | None = None) -> str:
        """The stored access token, refreshed first when it expires within
        :data:`REFRESH_MARGIN` or is the one the API just rejected."""
        vault = self._require_vault()
        lock = self._locks.setdefault(discord_user_id, asyncio.Lock())
        async with lock:
            row = self.storage.spotify_account(discord_user_id)
            if row is None:
                raise NotLinked()
            try:
                tokens = vault.open(row.tokens)
            except InvalidToken:
                self.storage.delete_spotify_account(discord_user_id)
                raise NotLinked(
                    "Your Spotify link can no longer be read (the bot's encryption key "
                    "changed); link it again with /spotify link."
                ) from None
            expires_at = datetime.fromisoformat(row.expires_at)
            if tokens["access_token"] != rejected and expires_at - REFRESH_MARGIN > self._now():
                return tokens["access_token"]
            try:
                grant = await self.client.refresh(
                    client_id=self._client_id, refresh_token=tokens["refresh_token"]
                )
            except NotLinked:
                self.storage.delete_spotify_account(discord_user_id)
                log.info(
                    "Spotify refused the refresh token of user %s; link dropped", discord_user_id
                )
                raise
            scopes = grant.scopes or frozenset(row.scopes.split())
            self.storage.update_spotify_tokens(
                discord_user_id,
                tokens=self._seal(grant),
                expires_at=grant.expires_at,
                scopes=" ".join(sorted(scopes)),
            )
            log.info("Refreshed the Spotify token of user %s", discord_user_id)
            return grant.access_token

    def _seal(self, grant: TokenGrant) -> bytes:
        vault = self._require_vault()
        return vault.seal(
            {"access_token": grant.access_token, "refresh_token": grant.refresh_token}
        )


def _owner_id(playlist: Mapping[str, Any]) -> str | None:
    owner = playlist.get("owner")
    owner_id = owner.get("id") if isinstance(owner, Mapping) else None
    return owner_id if isinstance(owner_id, str) else None
