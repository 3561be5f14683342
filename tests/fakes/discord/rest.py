"""The fake Discord's REST API: the routes discord.py calls (login, command sync, interaction
callbacks, webhook follow-ups and edits, channel messages and reactions), the rate limits
and ``X-RateLimit-*`` headers, and reading a request's JSON or multipart body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.discord.limits import (
    ACK_DEADLINE_S,
    ADD_REACTIONS,
    ATTACH_FILES,
    CALLBACK_TYPES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SESSION_STARTS_PER_DAY,
    TOKEN_LIFETIME_S,
    VIEW_CHANNEL,
    snowflake,
)
from tests.fakes.discord.models import Attachment, Exchange, Interaction, Message
from tests.fakes.discord.validation import (
    _choices_refused,
    _commands_refused,
    _emoji_known,
    _empty,
    _error,
    _invalid,
    _json,
    _message_refused,
    _modal_refused,
)


class RestSide:
    """The HTTP half of :class:`tests.fakes.discord.FakeDiscord` (its state is set up in
    tests/fakes/discord/server.py): the routes, their refusals and rate limits."""

    # -- REST --------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        try:
            response = await self._route(request, path.split("/")[1:])
        finally:
            await self._notify()
        if response is None:
            self.unknown.append(f"{request.method} {path}")
            return _json({"message": "404: Not Found", "code": 0}, status=404)
        if not response.prepared:
            response.headers.update(self._rate_headers(path))
        if response.status >= 400 and isinstance(response, web.Response):
            code = json.loads(response.text)["code"] if response.text else None
            self.refused.append(f"{request.method} {path}: {response.status} {code}")
        if isinstance(response, web.Response):
            self.exchanges.append(
                Exchange(
                    request.method,
                    path,
                    await _sent_body(request),
                    response.status,
                    json.loads(response.text) if response.body else None,
                    dict(response.headers),
                )
            )
        return response

    async def _route(self, request: web.Request, parts: list[str]) -> web.StreamResponse | None:
        method = request.method
        match parts:
            case ["users", "@me"] if method == "GET":
                return _json(self.bot_user.payload() | {"mfa_enabled": False, "locale": "en-US"})
            case ["gateway", "bot"] if method == "GET":
                return _json(self._gateway_bot())
            case ["oauth2", "applications", "@me"] if method == "GET":
                return _json(self._application())
            case ["applications", _, "commands"] if method == "PUT":
                return self._sync(await request.json())
            case ["applications", _, "guilds", _, "commands"] if method == "PUT":
                return self._sync(await request.json())
            case ["interactions", interaction_id, token, "callback"] if method == "POST":
                return await self._callback(request, int(interaction_id), token)
            case ["webhooks", _, token] if method == "POST":
                return self._webhook_limited(token) or await self._followup(request, token)
            case ["webhooks", _, token, "messages", "@original"]:
                return self._webhook_limited(token) or await self._original(request, token)
            case ["channels", channel_id, *_] if self._gone(int(channel_id)):
                return _error(404, "Unknown Channel", 10003)
            case ["channels", channel_id, "messages"] if method == "POST":
                return await self._create_message(request, int(channel_id))
            case ["channels", _, "messages", message_id] if method == "GET":
                await self._held(int(message_id))
                return self._get_message(int(message_id))
            case ["channels", _, "messages", message_id] if method == "DELETE":
                return await self._delete_own_message(int(message_id))
            case ["channels", _, "messages", message_id, "reactions", emoji, "@me"]:
                return self._own_reaction(request, int(message_id), emoji)
            case ["channels", _, "messages", message_id, "reactions", emoji] if method == "GET":
                await self._held(int(message_id))
                return self._reaction_users(request, int(message_id), emoji)
        return None

    def _rate_headers(self, path: str) -> dict[str, str]:
        """Discord's ``X-RateLimit-*`` headers: a webhook's real bucket when
        :attr:`webhook_rate` is set, elsewhere a bucket far from its limit."""
        parts = path.split("/")
        limit, window, used = 50, 1.0, 1
        bucket = "/".join(parts[1:4] if parts[1:2] == ["webhooks"] else parts[1:3])
        if (
            parts[1:2] == ["webhooks"]
            and self.webhook_rate is not None
            and not self.webhook_limit_shared
        ):
            limit, window = self.webhook_rate
            used = len(self._recent(parts[3], window))
        now = time.time()
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - used)),
            "X-RateLimit-Reset": f"{now + window:.3f}",
            "X-RateLimit-Reset-After": f"{window:.3f}",
            "X-RateLimit-Bucket": f"fake-{bucket}",
        }

    def _recent(self, token: str, window: float) -> list[float]:
        now = time.monotonic()
        hits = [t for t in self._webhook_hits.get(token, []) if now - t < window]
        self._webhook_hits[token] = hits
        return hits

    def _webhook_limited(self, token: str) -> web.Response | None:
        """429 when the token's webhook bucket is spent (see :attr:`webhook_rate`)."""
        if self.webhook_rate is None:
            return None
        limit, window = self.webhook_rate
        hits = self._recent(token, window)
        if len(hits) >= limit:
            self.rate_limited += 1
            wait = round(window - (time.monotonic() - hits[0]), 3)
            return _error(
                429,
                "You are being rate limited.",
                0,
                retry_after=wait,
                headers={
                    "Via": "1.1 google",
                    "Retry-After": str(wait),
                    "X-RateLimit-Scope": "shared" if self.webhook_limit_shared else "user",
                },
            )
        hits.append(time.monotonic())
        return None

    def _gateway_bot(self) -> dict[str, Any]:
        """Where to connect, how many shards to run, and how many sessions may still start
        (discord-api-docs, Gateway: Get Gateway Bot)."""
        return {
            "url": self.gateway_url,
            "shards": self.recommended_shards(),
            "session_start_limit": {
                "total": SESSION_STARTS_PER_DAY,
                "remaining": max(0, SESSION_STARTS_PER_DAY - self.identified),
                "reset_after": 24 * 3600 * 1000,
                "max_concurrency": self.max_concurrency,
            },
        }

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": "CoverBot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": {**self.bot_user.payload(), "bot": False},
            "verify_key": "0" * 64,
            "flags": 0,
            "flags_new": "0",
            "type": None,
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "approximate_guild_count": 1,
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "team": None,
            "eligible_oauth2_scopes": [],
        }

    def _sync(self, commands: list[dict[str, Any]]) -> web.Response:
        if (refused := _commands_refused(commands)) is not None:
            return refused
        self.commands = [
            {
                **c,
                "id": str(snowflake()),
                "application_id": str(self.application_id),
                "version": str(snowflake()),
                "type": c.get("type", 1),
                "description": c.get("description") or "",
                # Discord answers permissions as a string and fills the install types in.
                "default_member_permissions": None
                if c.get("default_member_permissions") is None
                else str(c["default_member_permissions"]),
                "integration_types": c.get("integration_types") or [0],
            }
            for c in commands
        ]
        return _json(self.commands)

    def _gone(self, channel_id: int) -> bool:
        return self.channel_deleted and channel_id == self.channel_id

    def _lacks(self, *permissions: int) -> web.Response | None:
        """Discord's 403 when the bot lacks one of ``permissions`` in the channel."""
        if not self.bot_permissions & VIEW_CHANNEL:
            return _error(403, "Missing Access", 50001)
        if any(not self.bot_permissions & p for p in permissions):
            return _error(403, "Missing Permissions", 50013)
        return None

    def _live(self, message_id: int) -> Message | None:
        message = self.messages.get(message_id)
        return None if message is None or message.deleted else message

    async def _create_message(self, request: web.Request, channel_id: int) -> web.Response:
        body, files = await _read_body(request)
        if (refused := self._body_refused(body, files)) is not None:
            return refused
        refused = self._lacks(SEND_MESSAGES, *([ATTACH_FILES] if files else []))
        if refused is not None:
            return refused
        reference = body.get("message_reference")
        if reference and self._live(int(reference["message_id"])) is None:
            if reference.get("fail_if_not_exists", True):
                return _error(
                    400,
                    "Invalid Form Body",
                    50035,
                    errors={
                        "message_reference": {
                            "_errors": [
                                {
                                    "code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                    "message": "Unknown message",
                                }
                            ]
                        }
                    },
                )
            body = {k: v for k, v in body.items() if k != "message_reference"}
        return _json(self._store(channel_id, body, files).payload())

    def _get_message(self, message_id: int) -> web.Response:
        refused = self._lacks(READ_MESSAGE_HISTORY)
        if refused is not None:
            return refused
        message = self._live(message_id)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        normal: dict[str, list[int]] = {}
        burst: dict[str, list[int]] = {}
        for kept, counts in ((self.reactions, normal), (self.super_reactions, burst)):
            for user_id, emoji in kept.get(message_id, []):
                counts.setdefault(emoji, []).append(user_id)
        reactions = [
            {
                "emoji": {"id": None, "name": emoji},
                "count": len(normal.get(emoji, ())) + len(burst.get(emoji, ())),
                "count_details": {
                    "burst": len(burst.get(emoji, ())),
                    "normal": len(normal.get(emoji, ())),
                },
                "me": self.bot_user.id in normal.get(emoji, ()),
                "me_burst": self.bot_user.id in burst.get(emoji, ()),
                "burst_colors": ["#ffd700", "#ff8c00"] if emoji in burst else [],
            }
            for emoji in dict.fromkeys([*normal, *burst])
        ]
        return _json(message.payload(reactions))

    def _reaction_users(self, request: web.Request, message_id: int, emoji: str) -> web.Response:
        """Who reacted with ``emoji``: by user id, ``limit`` (1–100, default 25) after ``after``;
        normal reactions only unless ``type=1`` (super reactions), as on Discord."""
        refused = self._lacks(READ_MESSAGE_HISTORY)
        if refused is not None:
            return refused
        if self._live(message_id) is None:
            return _error(404, "Unknown Message", 10008)
        limit = min(100, max(1, int(request.query.get("limit", 25))))
        after = int(request.query.get("after", 0))
        kind = request.query.get("type", "0")
        if kind not in ("0", "1"):
            return _invalid("type", f"Value {kind!r} is not a valid enum value.")
        kept = self.super_reactions if kind == "1" else self.reactions
        ids = sorted(u for u, e in kept.get(message_id, []) if e == emoji and u > after)
        return _json([self.users[u].payload() for u in ids[:limit]])

    async def _delete_own_message(self, message_id: int) -> web.Response:
        message = self._live(message_id)
        if message is None:
            return _error(404, "Unknown Message", 10008)
        if message.author is not self.bot_user:
            return _error(403, "Missing Permissions", 50013)  # would need Manage Messages
        await self.delete_message(message_id)
        return web.Response(status=204)

    async def _callback(
        self, request: web.Request, interaction_id: int, token: str
    ) -> web.Response:
        interaction = self.interactions.get(interaction_id)
        late = interaction is not None and time.monotonic() - interaction.sent_at > ACK_DEADLINE_S
        if (
            interaction is None
            or interaction.token != token
            or (late and interaction.acked_at is None)
        ):
            return _error(404, "Unknown interaction", 10062)
        if interaction.acked_at is not None:
            return _json(
                {"message": "Interaction has already been acknowledged.", "code": 40060}, 400
            )
        body, files = await _read_body(request)
        if body.get("type") not in CALLBACK_TYPES[interaction.kind]:
            return _invalid(
                "type",
                f"Interaction response type {body.get('type')!r} is not valid for an "
                f"interaction of type {interaction.kind}",
                code="INTERACTION_RESPONSE_TYPE_INVALID",
            )
        data = body.get("data") or {}
        if body["type"] == 8:
            refused = _choices_refused(data)
        elif body["type"] == 4:
            refused = self._body_refused(data, files)
        elif body["type"] == 9:
            refused = _modal_refused(data)
        elif body["type"] in (6, 7) and interaction.message_id is None:
            # A modal submit updates a message only when a button on it opened the modal.
            refused = _invalid(
                "type",
                "Interaction response type is only valid for a modal opened from a component",
                code="INTERACTION_RESPONSE_TYPE_INVALID",
            )
        else:
            refused = None
        if refused is not None:
            return refused
        interaction.acked_at = time.monotonic()
        interaction.response_type = body["type"]
        interaction.response = body.get("data") or {}
        if body["type"] in (4, 5):
            data = interaction.response
            interaction.original = self._store(
                interaction.channel_id or self.channel_id,
                {
                    "content": data.get("content", ""),
                    "flags": data.get("flags", 0),
                    "components": data.get("components"),
                },
                files,
                interaction_id=interaction.id,
            )
        elif body["type"] == 6 and interaction.message_id is not None:
            # A button press acknowledged silently: its "original" is the button's message.
            interaction.original = self.messages[interaction.message_id]
        if request.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        return _json(
            {
                "interaction": {
                    "id": str(interaction.id),
                    "type": interaction.kind,
                    **(
                        {"response_message_id": str(interaction.original.id)}
                        if interaction.original
                        else {}
                    ),
                    "response_message_loading": body["type"] == 5,
                    "response_message_ephemeral": bool(interaction.response.get("flags", 0) & 64),
                }
            }
        )

    def _by_token(self, token: str) -> Interaction | None:
        return next((i for i in self.interactions.values() if i.token == token), None)

    @staticmethod
    def _expired(interaction: Interaction) -> web.Response | None:
        if time.monotonic() - interaction.sent_at > TOKEN_LIFETIME_S:
            return _error(401, "Invalid Webhook Token", 50027)
        return None

    async def _followup(self, request: web.Request, token: str) -> web.Response:
        interaction = self._by_token(token)
        if interaction is None:
            return _error(404, "Unknown Webhook", 10015)
        if (expired := self._expired(interaction)) is not None:
            return expired
        if interaction.acked_at is None:  # its webhook exists once the interaction is answered
            return _error(404, "Unknown Webhook", 10015)
        channel_id = interaction.channel_id or self.channel_id
        if self._gone(channel_id):
            return _error(404, "Unknown Channel", 10003)
        body, files = await _read_body(request)
        if (refused := self._body_refused(body, files)) is not None:
            return refused
        message = self._store(channel_id, body, files, interaction_id=interaction.id)
        return _json(message.payload())

    async def _original(self, request: web.Request, token: str) -> web.Response | None:
        interaction = self._by_token(token)
        if interaction is not None and (expired := self._expired(interaction)) is not None:
            return expired
        if interaction is None or interaction.original is None or interaction.original.deleted:
            return _error(404, "Unknown Message", 10008)
        original = interaction.original
        if request.method == "PATCH":
            body, files = await _read_body(request)
            if (refused := _message_refused(body, files, self.upload_limit)) is not None:
                return refused
            after = {
                "content": body.get("content", original.content),
                "components": body.get("components", original.components),
                "attachments": (files or body["attachments"])
                if files or "attachments" in body
                else original.attachments,
            }
            if _empty(after, []):  # an edit may not leave the message empty either
                return _error(400, "Cannot send an empty message", 50006)
            if "content" in body and body["content"] is not None:
                original.content = body["content"]
                original.edits.append(body["content"])
                original.edit_files.append([f.filename for f in files])
            if files or "attachments" in body:  # new files, or the list of those to keep
                original.attachments = files
            if "components" in body:
                original.components = body["components"] or []
        elif request.method == "DELETE":  # the original response, deleted by the bot
            original.deleted = True
            return web.Response(status=204)
        elif request.method != "GET":
            return None
        return _json(original.payload())

    def _own_reaction(self, request: web.Request, message_id: int, emoji: str) -> web.Response:
        if self._live(message_id) is None:
            return _error(404, "Unknown Message", 10008)
        entry = (self.bot_user.id, emoji)
        if not _emoji_known(emoji):
            return _error(400, "Unknown Emoji", 10014)
        if request.method == "PUT":
            refused = self._lacks(READ_MESSAGE_HISTORY, ADD_REACTIONS)
            if refused is not None:
                return refused
            now = time.monotonic()
            wait = self._last_reaction + self.reaction_interval_s - now
            if wait > 0:
                self.rate_limited += 1
                # discord.py retries a 429 after retry_after, but only one that came through
                # Discord's proxy (a Via header); without one it takes it for a Cloudflare ban.
                return _error(
                    429,
                    "You are being rate limited.",
                    0,
                    retry_after=round(wait, 3),
                    headers={"Via": "1.1 google", "X-RateLimit-Scope": "user"},
                )
            self._last_reaction = now
            if entry not in self.reactions.setdefault(message_id, []):
                self.reactions[message_id].append(entry)
                # Discord tells the bot about its own reactions too.
                payload = self._reaction_payload(self.bot_user, message_id, emoji)
                asyncio.get_running_loop().create_task(
                    self._dispatch("MESSAGE_REACTION_ADD", payload)
                )
        elif request.method == "DELETE":
            with contextlib.suppress(ValueError):
                self.reactions[message_id].remove(entry)
        return web.Response(status=204)

    def _body_refused(self, body: dict[str, Any], files: list[Attachment]) -> web.Response | None:
        """A new message's body as Discord checks it: its limits, and never empty (50006)."""
        if (refused := _message_refused(body, files, self.upload_limit)) is not None:
            return refused
        if _empty(body, files):
            return _error(400, "Cannot send an empty message", 50006)
        return None

    def _store(
        self,
        channel_id: int,
        body: dict[str, Any],
        files: list[Attachment],
        *,
        interaction_id: int | None = None,
    ) -> Message:
        reference = (body.get("message_reference") or {}).get("message_id")
        message = Message(
            snowflake(),
            channel_id,
            self.bot_user,
            body.get("content") or "",
            files,
            interaction_id=interaction_id,
            reference_id=int(reference) if reference else None,
            ephemeral=bool((body.get("flags") or 0) & 64),
            components=list(body.get("components") or []),
        )
        self.messages[message.id] = message
        return message


# A multipart request's payload_json and files, kept once read.
_MULTIPART = web.RequestKey("multipart", tuple)


async def _read_body(request: web.Request) -> tuple[dict[str, Any], list[Attachment]]:
    """A JSON body, or multipart with ``payload_json`` and ``files[i]`` as discord.py sends."""
    if not request.content_type.startswith("multipart/"):
        text = await request.text()
        return (json.loads(text) if text else {}), []
    if _MULTIPART in request:  # read already (the multipart stream reads once)
        return request[_MULTIPART]
    body: dict[str, Any] = {}
    files: list[Attachment] = []
    reader = await request.multipart()
    async for part in reader:
        if part.name == "payload_json":
            body = json.loads(await part.text())
        elif part.filename:
            files.append(Attachment(part.filename, bytes(await part.read())))
    request[_MULTIPART] = body, files
    return body, files


async def _sent_body(request: web.Request) -> Any:
    """The JSON a request carried (a multipart one's ``payload_json``), None if none."""
    if request.content_type.startswith("multipart/"):
        return (await _read_body(request))[0] if request.body_exists else None
    text = await request.text() if request.body_exists else ""
    return json.loads(text) if text else None
