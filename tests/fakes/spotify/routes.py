"""The fake Spotify's routes: the middleware that logs, scripts and checks every answer against
Spotify's API description, who a token lets read what, the user flow (authorise, tokens,
``/v1/me``, the cover upload) and the playlist, artist, search and image reads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import io
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from PIL import Image

from tests.fakes import spotify_schema
from tests.fakes.spotify.models import (
    COVER_PAYLOAD_CUTOFF,
    DEFAULT_LIMIT,
    EMBEDDED_ITEMS,
    MAX_LIMIT,
    NOT_REGISTERED,
    SEARCH_DEFAULT_LIMIT,
    SEARCH_MAX_LIMIT,
    SEARCH_MAX_OFFSET,
    FakePlaylist,
    Grant,
    LoggedRequest,
    Reply,
    Upload,
    _AccessToken,
    _Code,
    _json,
    error_body,
)


class SpotifyRoutes:
    """The request handlers of :class:`tests.fakes.spotify.FakeSpotify` (its state is set up in
    tests/fakes/spotify/server.py)."""

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

    async def _playlist_images(self, request: web.Request) -> web.Response:
        """The playlist's cover as a list of images: [] for a playlist without one (Spotify's
        answer for a new, empty playlist), its ``images`` otherwise."""
        stored = self.playlists.get(request.match_info["id"])
        if stored is None:
            return _json(error_body(404), 404)
        return _json(copy.deepcopy(stored.meta.get("images") or []))

    async def _image(self, request: web.Request) -> web.StreamResponse:
        stored = self.images.get(request.match_info["key"])
        if stored is None:
            return web.Response(status=404, text="Not found")
        if not stored.chunked:
            return web.Response(body=stored.data, content_type=stored.content_type)
        # No Content-Length: a client learns the size only by reading, as from a server that
        # streams (or lies about) what it sends.
        response = web.StreamResponse(headers={"Content-Type": stored.content_type})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(stored.data), 64 * 1024):
            await response.write(stored.data[start : start + 64 * 1024])
        await response.write_eof()
        return response
