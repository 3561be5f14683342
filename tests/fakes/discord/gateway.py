"""The fake Discord's gateway: the websocket discord.py connects to, its sessions (IDENTIFY,
RESUME, READY, the backlog a resume replays), heartbeats and their deadline, the intents
that decide which events are sent, sharding, and the payloads of those events.

Sharding as Discord does it (discord-api-docs, Gateway: Sharding): IDENTIFY may carry
``shard: [id, count]``; each shard is its own session whose READY lists only the guilds with
``(guild_id >> 22) % count == id`` (then a GUILD_CREATE for each), and an event of a guild
goes only to the session of its shard (a guild-less one to shard 0). An invalid shard (id not
below count) is closed with 4010; identifying unsharded, or with too few shards, when a
shard would hold more than :attr:`FakeDiscord.max_guilds_per_shard` guilds (Discord: 2,500)
is closed with 4011, Sharding required.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord.limits import (
    BOT_PERMISSIONS,
    EVENT_INTENTS,
    MEMBER_PERMISSIONS,
    MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    snowflake,
)
from tests.fakes.discord.models import Attachment, FakeUser, GatewaySession, Interaction


class GatewaySide:
    """The websocket half of :class:`tests.fakes.discord.FakeDiscord` (its state is set up in
    tests/fakes/discord/server.py): sessions, heartbeats, resumes and the events sent."""

    # -- gateway -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a gateway session of the bot has a live connection (identified or resumed)."""
        return any(s.connection is not None for s in self._sessions.values())

    def connected_shards(self) -> list[tuple[int, int]]:
        """``(shard, count)`` of every session with a live connection, in order."""
        return sorted((s.shard, s.count) for s in self._sessions.values() if s.connection)

    def _live_connections(self) -> list[web.WebSocketResponse]:
        return [s.connection for s in self._sessions.values() if s.connection is not None]

    def _owner(self, guild_id: int | None) -> GatewaySession | None:
        """The session that gets ``guild_id``'s events (its shard's), if there is one."""
        return next((s for s in self._sessions.values() if s.owns(guild_id)), None)

    @contextlib.asynccontextmanager
    async def offline(self, *, resumable: bool = False) -> AsyncIterator[None]:
        """Drop the bot's gateway connection and hold its reconnection until the block ends.

        With ``resumable=False`` the session is gone, as after a longer outage: whatever people
        do inside the block reaches the bot only as state, its RESUME is answered op 9 and it
        must identify again (a new READY). With ``resumable=True`` the session lives on and
        Discord replays the block's events when the bot resumes.
        """
        self._gateway_open.clear()
        if not resumable:
            self._sessions.clear()
        for socket in list(self._sockets):
            await self._drop(socket, 4000, b"going offline")  # a code bots reconnect on
        try:
            yield
        finally:
            self._gateway_open.set()

    @contextlib.asynccontextmanager
    async def reconnecting(self) -> AsyncIterator[None]:
        """Ask the bot to reconnect (op 7 RECONNECT, as Discord does before it moves a
        session) and hold its new connection until the block ends; the events of the block
        are replayed when it resumes."""
        self._gateway_open.clear()
        for connection in self._live_connections():
            await connection.send_str(json.dumps({"op": 7, "d": None}))
        try:
            yield
        finally:
            self._gateway_open.set()

    @contextlib.asynccontextmanager
    async def unresponsive(self) -> AsyncIterator[None]:
        """The bot's connection goes quiet inside the block (no heartbeat ACKs, no events) –
        a zombie connection, as when a Discord node hangs. The bot must notice (discord.py:
        nothing received for ``heartbeat_timeout``), close it and resume; the events held
        back are replayed then. A new connection made inside the block answers normally."""
        self._unresponsive = set(self._live_connections())
        try:
            yield
        finally:
            self._unresponsive = set()

    @contextlib.asynccontextmanager
    async def slow_reads(self, message_id: int) -> AsyncIterator[None]:
        """Hold every read of ``message_id`` (the message and its reactions) until the block
        ends, as Discord does when it is slow to serve one: a bot reading its open votes back
        after READY is stuck on that one while events for the others keep arriving."""
        released = self._held_reads[message_id] = asyncio.Event()
        try:
            yield
        finally:
            released.set()
            del self._held_reads[message_id]

    async def _held(self, message_id: int) -> None:
        released = self._held_reads.get(message_id)
        if released is not None:
            self.held_reads_waiting += 1
            await self._notify()
            try:
                await released.wait()
            finally:
                self.held_reads_waiting -= 1

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        await self._gateway_open.wait()
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.add(socket)
        beat = [time.monotonic()]  # when the last heartbeat came; HELLO starts the clock
        watchdog = asyncio.create_task(self._watch_heartbeats(socket, beat))
        try:
            hello = {"heartbeat_interval": round(self.heartbeat_interval_s * 1000)}
            await socket.send_str(json.dumps({"op": 10, "d": hello}))
            async for frame in socket:
                if frame.type == WSMsgType.TEXT:
                    await self._gateway_op(socket, json.loads(frame.data), beat)
        finally:
            watchdog.cancel()
            self._sockets.discard(socket)
            for session in list(self._sessions.values()):
                if session.connection is not socket:
                    continue
                session.connection = None
                # The bot closing with 1000 or 1001 ends its session (discord.py does on
                # close()); any other code, or a close of the fake's, leaves it resumable.
                if socket not in self._dropped and socket.close_code in (1000, 1001):
                    del self._sessions[session.id]
            self._dropped.discard(socket)
            await self._notify()
        return socket

    async def _gateway_op(
        self, socket: web.WebSocketResponse, message: dict[str, Any], beat: list[float]
    ) -> None:
        op, data = message.get("op"), message.get("d") or {}
        if op == 1:  # heartbeat
            if self._beat_missed(beat[0]):  # it came after the deadline: the watchdog's case
                await self._time_out(socket)
                return
            beat[0] = time.monotonic()
            if socket not in self._unresponsive:
                await socket.send_str(json.dumps({"op": 11}))
        elif op == 2:  # identify
            await self._identify(socket, data)
        elif op == 6:  # resume
            session = self._sessions.get(str(data.get("session_id")))
            if session is None:
                # Not resumable: op 9, the bot must identify anew.
                await socket.send_str(json.dumps({"op": 9, "d": False}))
                return
            self.resumed += 1
            session.connection = socket
            seen = int(data.get("seq") or 0)
            for frame in [f for f in session.backlog if f["s"] > seen]:  # what it missed
                await self._send(socket, frame)
            await self._dispatch_to(session, "RESUMED", {})
            await self._notify()

    async def _identify(self, socket: web.WebSocketResponse, data: dict[str, Any]) -> None:
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await self._drop(socket, 4014, b"Disallowed intent(s).")
            return
        shard = data.get("shard", [0, 1])
        if (
            not isinstance(shard, list)
            or len(shard) != 2
            or not all(type(n) is int for n in shard)
            or not 0 <= shard[0] < shard[1]
        ):
            self.refused.append(f"IDENTIFY shard {shard!r}: 4010")
            await self._drop(socket, 4010, b"Invalid shard.")
            return
        shard_id, count = shard
        on_shard = [g for g in self.guild_channels if (g >> 22) % count == shard_id]
        if len(on_shard) > self.max_guilds_per_shard:
            self.refused.append(f"IDENTIFY shard {shard!r}: 4011")
            await self._drop(socket, 4011, b"Sharding required.")
            return
        self.identified += 1
        self.intents = intents
        # A new session of a shard replaces its old one, as does a new shard count.
        for old in list(self._sessions.values()):
            if old.count != count or old.shard == shard_id:
                del self._sessions[old.id]
        session = GatewaySession(f"session-{snowflake()}", shard_id, count, intents)
        session.connection = socket
        self._sessions[session.id] = session
        await self._dispatch_to(session, "READY", self._ready_payload(session, on_shard))
        # Then each guild READY listed as unavailable, in full (discord.py fills its cache).
        for guild_id in on_shard:
            await self._dispatch_to(session, "GUILD_CREATE", self._guild_payload(guild_id))
        await self._notify()

    def _beat_missed(self, last: float) -> bool:
        return time.monotonic() - last > self.heartbeat_interval_s + self.heartbeat_grace_s

    async def _watch_heartbeats(self, socket: web.WebSocketResponse, beat: list[float]) -> None:
        """Close a connection whose heartbeat is late, as Discord does (4009, Session timed
        out: the session is gone and the bot must identify again)."""
        while not socket.closed:
            if self._beat_missed(beat[0]):
                await self._time_out(socket)
                return
            due = beat[0] + self.heartbeat_interval_s + self.heartbeat_grace_s
            await asyncio.sleep(max(0.01, due - time.monotonic()))

    async def _time_out(self, socket: web.WebSocketResponse) -> None:
        self.timed_out += 1
        for session in list(self._sessions.values()):
            if session.connection is socket:
                del self._sessions[session.id]
        await self._drop(socket, 4009, b"Session timed out")

    async def _drop(self, socket: web.WebSocketResponse, code: int, reason: bytes) -> None:
        self._dropped.add(socket)
        await socket.close(code=code, message=reason)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _ready_payload(self, session: GatewaySession, guilds: list[int]) -> dict[str, Any]:
        return {
            "v": 10,
            "user": self.bot_user.payload(),
            # Every guild starts unavailable; GUILD_CREATE follows for each, as on Discord.
            "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            **({"shard": [session.shard, session.count]} if session.count > 1 else {}),
        }

    def _channel_payload(self, guild_id: int) -> dict[str, Any]:
        denied = BOT_PERMISSIONS & ~self.bot_permissions  # revoke(): the bot's role denied
        overwrites = [{"id": str(self.bot_role_id), "type": 0, "allow": "0", "deny": str(denied)}]
        return {
            "id": str(self.guild_channels[guild_id]),
            "type": 0,
            "guild_id": str(guild_id),
            "name": "covers",
            "position": 0,
            "permission_overwrites": overwrites if denied else [],
            "nsfw": self.channel_nsfw,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
        }

    def _guild_payload(self, guild_id: int) -> dict[str, Any]:
        """The guild as GUILD_CREATE carries it: its channels, roles and member count, and of
        its members only the bot (the rest needs the GUILD_MEMBERS intent and chunking)."""
        role = {"hoist": False, "mentionable": False, "icon": None, "unicode_emoji": None}
        roles = [
            {
                **role,
                "id": str(guild_id),
                "name": "@everyone",
                "color": 0,
                "position": 0,
                "permissions": str(MEMBER_PERMISSIONS),
                "managed": False,
                "flags": 0,
            },
            {
                **role,
                "id": str(self.bot_role_id),
                "name": self.bot_user.name,
                "color": 0,
                "position": 1,
                "permissions": str(BOT_PERMISSIONS),
                "managed": True,
                "flags": 0,
                "tags": {"bot_id": str(self.bot_user.id)},
            },
        ]
        me = self.bot_user.member() | {"roles": [str(self.bot_role_id)]}
        me.pop("permissions")  # only interactions carry a member's computed permissions
        return {
            "id": str(guild_id),
            "name": "Cover Club" if guild_id == self.guild_id else f"Server {guild_id}",
            "icon": None,
            "owner_id": str(next(iter(self.users))),
            "unavailable": False,
            "large": False,
            "member_count": len(self.users),
            "joined_at": "2026-01-01T00:00:00+00:00",
            "channels": []
            if self._gone(self.guild_channels[guild_id])
            else [self._channel_payload(guild_id)],
            "threads": [],
            "roles": roles,
            "members": [me],
            "voice_states": [],
            "presences": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "max_members": 500000,
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    async def _send(self, socket: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        self.sent.append(frame["t"])
        with contextlib.suppress(ConnectionError):  # closing under it: the resume replays it
            await socket.send_str(json.dumps(frame))

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        guild_id = int(data["guild_id"]) if data.get("guild_id") else None
        session = self._owner(guild_id)
        if session is None:
            raise RuntimeError(f"no bot session has the shard of guild {guild_id} for {event}")
        await self._dispatch_to(session, event, data)

    async def _dispatch_if_connected(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the session of its guild's shard, if there is one."""
        session = self._owner(int(data["guild_id"]) if data.get("guild_id") else None)
        if session is not None:
            await self._dispatch_to(session, event, data)

    async def _dispatch_to(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        """Send an event to ``session`` if it asked for the event's intent: to its connection
        now, and kept for a resume either way."""
        needs = EVENT_INTENTS.get(event, 0)
        if session.intents & needs != needs:
            return
        if event.startswith("MESSAGE_") and "content" in data:
            data = self._without_content(data, session.intents)
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.backlog.append(frame)
        if session.connection is not None and session.connection not in self._unresponsive:
            await self._send(session.connection, frame)

    def _without_content(self, data: dict[str, Any], intents: int) -> dict[str, Any]:
        """A message as a bot without the MESSAGE_CONTENT intent sees it: empty, unless the
        bot wrote it or is mentioned in it (discord-api-docs, Message Content Intent)."""
        mentioned = any(int(u["id"]) == self.bot_user.id for u in data.get("mentions", ()))
        mine = int(data["author"]["id"]) == self.bot_user.id
        if intents & MESSAGE_CONTENT or mentioned or mine:
            return data
        return data | {"content": "", "embeds": [], "attachments": [], "components": []}

    def _interaction_payload(
        self, interaction: Interaction, kind: int, *, focused: str | None = None
    ) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        options = []
        for name, value in interaction.options.items():
            option_type = _option_type(value)
            if isinstance(value, Attachment):  # an attachment option: its id, resolved beside
                option_type, value = 11, str(snowflake())
                self.attached[value] = interaction.options[name]
                resolved[value] = self._attachment_payload(value, interaction.options[name])
            option = {"name": name, "type": option_type, "value": value}
            options.append(option | ({"focused": True} if name == focused else {}))
        name, *subcommand = interaction.command.split() or [""]  # "": a button press
        if subcommand:  # "/spotify link": the subcommand is the group's one option
            options = [{"name": subcommand[-1], "type": 1, "options": options}]
        if len(subcommand) == 2:  # "/settings banned-words add": a group within the group
            options = [{"name": subcommand[0], "type": 2, "options": options}]
        command = next((c for c in self.commands if c["name"] == name), None)
        channel_id = interaction.channel_id or self.channel_id
        guild_id = self.channel_guild[channel_id]
        return {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": interaction.token,
            "version": 1,
            "guild_id": str(guild_id),
            "channel_id": str(channel_id),
            "channel": {
                "id": str(channel_id),
                "type": 0,
                "guild_id": str(guild_id),
                "name": "covers",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": self.channel_nsfw,
            },
            "member": interaction.user.member(),
            "app_permissions": str(self.bot_permissions),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
            "data": {
                "id": command["id"] if command else str(snowflake()),
                "name": name,
                "type": 1,
                "options": options,
            }
            | ({"resolved": {"attachments": resolved}} if resolved else {}),
        }

    def _attachment_payload(self, key: str, attached: Attachment) -> dict[str, Any]:
        """Discord's attachment object; its URL is this server's stand-in for Discord's CDN."""
        url = f"{self.base_url}/attachments/{key}/{attached.filename}"
        size = len(attached.data) if attached.claimed_size is None else attached.claimed_size
        return {
            "id": key,
            "filename": attached.filename,
            "size": size,
            "url": url,
            "proxy_url": url,
            "ephemeral": True,
        } | ({"content_type": attached.content_type} if attached.content_type else {})

    async def _attachment(self, request: web.Request) -> web.Response:
        attached = self.attached.get(request.match_info["id"])
        if attached is None:
            return web.Response(status=404, text="Not found")
        return web.Response(
            body=attached.data, content_type=attached.content_type or "application/octet-stream"
        )

    def _reaction_payload(
        self, user: FakeUser, message_id: int, emoji: str, super_: bool = False
    ) -> dict[str, Any]:
        message = self.messages[message_id]
        return {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message_id),
            "guild_id": str(self.channel_guild.get(message.channel_id, self.guild_id)),
            "emoji": {"id": None, "name": emoji},
            "member": user.member(),
            "message_author_id": str(message.author.id),
            "burst": super_,
            "burst_colors": ["#ffd700", "#ff8c00"] if super_ else [],
            "type": 1 if super_ else 0,
        }


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3
