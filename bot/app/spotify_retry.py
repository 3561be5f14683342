"""How a Spotify request fails, and whether and how long to wait before trying again.

Pure: no I/O. :class:`bot.app.spotify.SpotifyAPI` runs every request through
:func:`classify` and :func:`retry_delay`, within ``settings.spotify_max_tries`` and
``settings.spotify_max_wait_s``. spotipy's own retries are off (bot/app/spotify.py says why), so
this module is the one retry policy for every Spotify call.

It also holds the filter that keeps spotipy's own log lines free of credentials and its routine
HTTP errors out of the ERROR level (:func:`tame_spotipy_logs`).
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from spotipy.exceptions import SpotifyException, SpotifyOauthError

from bot.app.errors import SpotifyRateLimited, SpotifyUnavailable
from bot.app.settings import Settings

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
    """The retryable :class:`Failure` that ``exc`` stands for, or None if retrying won't help
    (the caller then interprets ``exc``: a 404, a refused code…)."""
    if isinstance(exc, SpotifyOauthError):
        return _token_failure(exc)
    if isinstance(exc, SpotifyException):
        return status_failure(exc.http_status, exc.headers or {}, exc.reason)
    if isinstance(exc, OSError):  # requests' errors (spotipy's transport) are OSErrors
        detail = "timeout" if "Timeout" in type(exc).__name__ else "connection failed"
        return Failure("unavailable", detail)
    return None


def status_failure(status: int, headers: Mapping[str, str], reason: str | None) -> Failure | None:
    """The retryable :class:`Failure` an HTTP status stands for (429, 5xx), else None."""
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


def _token_failure(exc: SpotifyOauthError) -> Failure | None:
    # spotipy raises SpotifyOauthError inside its `except HTTPError`, so the HTTP answer of the
    # token endpoint is the exception's context; a 429/5xx there is Spotify's trouble, not ours.
    response = getattr(exc.__context__, "response", None)
    if response is None:
        return None
    return status_failure(response.status_code, response.headers, None)


def oauth_code(exc: SpotifyOauthError) -> str:
    """The short OAuth error code alone (``invalid_grant``): never the description, which may
    echo what was sent."""
    return exc.error if isinstance(exc.error, str) and exc.error.isidentifier() else "refused"


class TameSpotipyLogs(logging.Filter):
    """Two fixes to spotipy's logging, applied to its own loggers.

    - Its debug lines print request headers and bodies: Basic (client id:secret), Bearer
      tokens, and the form of a token request (a code and its verifier, a refresh token).
      All dropped: tests/e2e/test_account_linking.py logs a whole link flow at DEBUG and looks for them.
    - It logs every HTTP error at ERROR, including the 403 that most playlists now answer on
      ``/items`` and the 429s we retry. We report every outcome ourselves, so those go to DEBUG.
    """

    dropped = 0  # records held back so far (tests check that spotipy did log)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (
            record.levelno <= logging.DEBUG
            or "Authorization" in message
            or "token" in message.lower()
        ):
            TameSpotipyLogs.dropped += 1
            return False
        if record.levelno == logging.ERROR and message.startswith("HTTP Error for"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_LOG_FILTER = TameSpotipyLogs()


def tame_spotipy_logs() -> None:
    for name in ("spotipy.oauth2", "spotipy.client", "spotipy.cache_handler"):
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)
