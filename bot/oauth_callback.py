"""The OAuth callback: a small aiohttp server that the bot runs beside its Discord connection.

Spotify sends the person's browser back to ``SPOTIFY_REDIRECT_URI`` with ``?code=…&state=…``
(or ``?error=access_denied&state=…``). This server answers that one path, hands the query to
:meth:`bot.app.accounts.SpotifyAccounts.complete_link` and shows a short plain page: linked, or the
sentence saying why not. Tokens never reach the page.

It listens where :meth:`bot.app.settings.Settings.callback_bind` says: the redirect URI's own
``127.0.0.1:PORT`` for a loopback URI, or a local port behind the reverse proxy that serves an
``https://`` one. The access log is off: its lines would hold the authorisation code and state.
"""

from __future__ import annotations

import html
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.app.accounts import LinkedAccount, SpotifyAccounts
from bot.app.errors import LinkFailed, LinkingDisabled
from bot.app.settings import Settings
from models.errors import CoverError

log = logging.getLogger(__name__)


class _NoRequestDetails(logging.Filter):
    """aiohttp logs a request it cannot parse with the parser's exception, whose text quotes
    the raw request line – the query string with the authorisation code and state included.
    Keep the line, drop the details."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = "Refused a request the callback server could not handle (%s)"
            record.args = (type(record.exc_info[1]).__name__,)
            record.exc_info = None
            record.exc_text = None
        return True


# The callback server's own logger, handed to aiohttp instead of its "aiohttp.server".
_server_log = logging.getLogger(__name__ + ".server")
_server_log.addFilter(_NoRequestDetails())

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>playlist-cover · Spotify</title></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto; line-height: 1.5">
<h1>{title}</h1>
<p>{text}</p>
</body>
</html>
"""

# The page shows text only: no scripts, no outside requests, no referrer carrying the code.
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def _page(status: int, title: str, text: str) -> web.Response:
    body = _PAGE.format(title=html.escape(title, quote=False), text=html.escape(text, quote=False))
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=_HEADERS
    )


class CallbackServer:
    """Serves the redirect URI's path. ``on_linked`` runs after each successful link (the cog
    uses it to tell the person in Discord); its failures are logged, never shown."""

    def __init__(
        self,
        accounts: SpotifyAccounts,
        settings: Settings,
        *,
        on_linked: Callable[[LinkedAccount], Awaitable[None]] | None = None,
    ) -> None:
        self.accounts = accounts
        self.host, self.port, self.path = settings.callback_bind()
        self.on_linked = on_linked
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the address can't be bound (port taken)."""
        app = web.Application()
        # GET only: add_get would answer HEAD through the same handler, and link prefetchers
        # (chat apps, mail scanners) send HEAD first – that would spend the one-time state
        # before the person's own GET arrives (tests/e2e/test_account_linking.py).
        app.router.add_route("GET", self.path, self._callback)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, logger=_server_log)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("Spotify callback server listening on %s:%s%s", self.host, self.port, self.path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _callback(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            account = await self.accounts.complete_link(
                state=query.get("state"), code=query.get("code"), error=query.get("error")
            )
        except LinkFailed as exc:
            return _page(400, "Not linked", str(exc))
        except LinkingDisabled as exc:
            return _page(503, "Not linked", str(exc))
        except CoverError as exc:  # Spotify unavailable, rate-limiting, …
            return _page(502, "Not linked", str(exc))
        except Exception:
            incident = uuid.uuid4().hex[:8]
            log.error("Spotify callback failed (incident %s)", incident, exc_info=True)
            return _page(
                500,
                "Not linked",
                f"Something went wrong on our side (incident {incident}); please try again.",
            )
        if self.on_linked is not None:
            try:
                await self.on_linked(account)
            except Exception:
                log.warning(
                    "Could not report the link of user %s", account.discord_user_id, exc_info=True
                )
        return _page(
            200,
            "Linked",
            f"Your Discord account is now linked to the Spotify account "
            f"{account.display_name}. You can close this tab.",
        )
