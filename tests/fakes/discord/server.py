""":class:`FakeDiscord`: its state, its lifecycle as an aiohttp server, what the people in the
channel do and what tests look at. The gateway and the REST routes are its two halves
(tests/fakes/discord/gateway.py, tests/fakes/discord/rest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.discord.gateway import GatewaySide
from tests.fakes.discord.limits import (
    BOT_PERMISSIONS,
    HEARTBEAT_INTERVAL_S,
    MAX_GUILDS_PER_SHARD,
    RECOMMENDED_GUILDS_PER_SHARD,
    TEXT_INPUT_LIMIT,
    UPLOAD_LIMIT,
    snowflake,
)
from tests.fakes.discord.models import (
    Attachment,
    Exchange,
    FakeUser,
    GatewaySession,
    Interaction,
    Message,
)
from tests.fakes.discord.rest import RestSide
from tests.fakes.discord.validation import _text_inputs


class FakeDiscord(GatewaySide, RestSide):
    """Discord for one bot in one guild with one text channel (:attr:`guild_id`,
    :attr:`channel_id`), and more guilds of one channel each with :meth:`add_guild`, which the
    bot may serve in shards. Use as an async context manager."""

    def __init__(self) -> None:
        self.bot_user = FakeUser(snowflake(), "CoverBot", bot=True)
        self.application_id = snowflake()
        self.guild_id = snowflake()
        self.channel_id = snowflake()
        self.bot_role_id = snowflake()  # the role Discord makes for the bot at its invite
        # Every guild the bot is in → its one text channel (the first: guild_id, channel_id).
        self.guild_channels: dict[int, int] = {self.guild_id: self.channel_id}
        # Sharding: a shard may hold this many guilds, else IDENTIFY is closed 4011 (Discord:
        # 2,500); /gateway/bot recommends a shard per RECOMMENDED_GUILDS_PER_SHARD guilds.
        self.max_guilds_per_shard = MAX_GUILDS_PER_SHARD
        self.max_concurrency = 1  # shards that may IDENTIFY at once (session_start_limit)
        self.messages: dict[int, Message] = {}
        self.interactions: dict[int, Interaction] = {}
        self.reactions: dict[int, list[tuple[int, str]]] = {}  # message → (user id, emoji)
        # Super reactions (Nitro's "burst" ones), apart: a person may show both kinds at once.
        self.super_reactions: dict[int, list[tuple[int, str]]] = {}
        self.commands: list[dict[str, Any]] = []  # as the bot last synced them
        self.unknown: list[str] = []  # "METHOD /path" of requests no route matched
        self.exchanges: list[Exchange] = []  # every REST request and its answer, in order
        # "METHOD /path: status code" of every request refused (4xx), for tests to read
        self.refused: list[str] = []
        self.upload_limit = UPLOAD_LIMIT  # bytes per file; a bigger one gets 413
        self.identified = 0  # gateway sessions started (IDENTIFY received)
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user}  # everyone seen
        self.bot_permissions = BOT_PERMISSIONS  # in the one channel; see revoke()
        self.channel_deleted = False
        self.channel_nsfw = False  # "age-restricted" in Discord's settings; see mark_nsfw()
        self.reaction_interval_s = 0.0  # 0: no rate limit on reactions
        self.rate_limited = 0  # requests answered 429
        self._last_reaction = 0.0
        # With (n, seconds) set: each interaction token's webhook (follow-ups, edits of the
        # original) takes n requests per window, as Discord's webhook buckets do; the rest 429.
        self.webhook_rate: tuple[int, float] | None = None
        # True: that limit is a shared resource's (X-RateLimit-Scope: shared), which the
        # headers do not announce – only its 429s tell, and the bot must wait them out.
        self.webhook_limit_shared = False
        self._webhook_hits: dict[str, list[float]] = {}
        self._held_reads: dict[int, asyncio.Event] = {}  # message → released; see slow_reads()
        self.held_reads_waiting = 0  # GETs of a held message waiting now
        self._sockets: set[web.WebSocketResponse] = set()
        self._gateway_open = asyncio.Event()
        self._gateway_open.set()
        # The gateway sessions, one per shard (tests/fakes/discord/models.py GatewaySession).
        self.intents: int | None = None  # as the bot last identified
        self.privileged_intents = 0  # switched on for the application in the developer portal
        self.heartbeat_interval_s = HEARTBEAT_INTERVAL_S
        self.heartbeat_grace_s = 5.0  # a heartbeat later than interval + grace is missed
        self.resumed = 0  # sessions resumed (RESUME accepted)
        self.timed_out = 0  # connections closed for a missed heartbeat
        self.sent: list[str] = []  # the events sent to the bot, by name, in order
        self._sessions: dict[str, GatewaySession] = {}  # by session id
        self._unresponsive: set[web.WebSocketResponse] = set()  # see unresponsive()
        self._dropped: set[web.WebSocketResponse] = set()  # connections the fake closed
        self._changed = asyncio.Condition()
        self.attached: dict[str, Attachment] = {}  # files people attached to commands, by id
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{id}/{name}", self._attachment)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- guilds and shards -------------------------------------------------------------------

    def add_guild(self, *, shard: int = 0, shard_count: int = 1) -> tuple[int, int]:
        """The bot joins one more guild, with one text channel, whose id puts it on ``shard``
        of ``shard_count`` (Discord's formula, ``(guild_id >> 22) % shard_count``); its id and
        its channel's. A bot identifying later sees it; one connected now does not (Discord
        would send GUILD_CREATE, which no test here needs)."""
        if not 0 <= shard < shard_count:
            raise ValueError(f"shard must be 0 to {shard_count - 1}, got {shard}")
        base = snowflake()
        # A timestamp part further on for each guild, so no two guilds share an id.
        stamp = ((base >> 22) // shard_count + len(self.guild_channels)) * shard_count + shard
        guild_id = stamp << 22 | (base & (1 << 22) - 1)
        channel_id = snowflake()
        self.guild_channels[guild_id] = channel_id
        return guild_id, channel_id

    @property
    def channel_guild(self) -> dict[int, int]:
        """Each channel → its guild."""
        return {channel: guild for guild, channel in self.guild_channels.items()}

    def recommended_shards(self) -> int:
        """What ``GET /gateway/bot`` answers: a shard per
        :data:`RECOMMENDED_GUILDS_PER_SHARD` guilds, more if a shard would hold more than
        :attr:`max_guilds_per_shard`."""
        count = max(1, -(-len(self.guild_channels) // RECOMMENDED_GUILDS_PER_SHARD))
        while any(
            sum((g >> 22) % count == shard for g in self.guild_channels) > self.max_guilds_per_shard
            for shard in range(count)
        ):
            count += 1
        return count

    # -- what people do ----------------------------------------------------------------------

    async def slash(
        self, user: FakeUser, command: str, *, channel_id: int | None = None, **options: Any
    ) -> Interaction:
        """``user`` runs ``/command`` with ``options`` (None values are left out, as Discord does)
        in ``channel_id`` (default: the first guild's channel); the event goes to the gateway
        session of that guild's shard."""
        given = {name: value for name, value in options.items() if value is not None}
        if channel_id is not None and channel_id not in self.channel_guild:
            raise ValueError(f"no channel {channel_id}: add_guild() makes one")
        interaction = Interaction(
            snowflake(),
            f"token-{snowflake()}",
            user,
            command,
            given,
            time.monotonic(),
            channel_id=channel_id,
        )
        self.interactions[interaction.id] = interaction
        await self._dispatch("INTERACTION_CREATE", self._interaction_payload(interaction, 2))
        return interaction

    async def autocomplete(
        self, user: FakeUser, command: str, option: str, typed: str
    ) -> Interaction:
        interaction = Interaction(
            snowflake(),
            f"token-{snowflake()}",
            user,
            command,
            {option: typed},
            time.monotonic(),
            kind=4,
        )
        self.interactions[interaction.id] = interaction
        await self._dispatch(
            "INTERACTION_CREATE", self._interaction_payload(interaction, 4, focused=option)
        )
        return interaction

    async def press(self, user: FakeUser, message_id: int, custom_id: str) -> Interaction:
        """``user`` presses the button ``custom_id`` on a message (it must carry that button)."""
        message = self.messages[message_id]
        if custom_id not in [b.get("custom_id") for b in message.buttons()]:
            raise ValueError(f"message {message_id} has no button {custom_id!r}")
        interaction = Interaction(
            snowflake(),
            f"token-{snowflake()}",
            user,
            "",
            {},
            time.monotonic(),
            custom_id=custom_id,
            message_id=message_id,
            kind=3,
            channel_id=message.channel_id,
        )
        self.interactions[interaction.id] = interaction
        payload = self._interaction_payload(interaction, 3)
        payload["message"] = message.payload()
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def submit(self, user: FakeUser, opened: Interaction, **values: str) -> Interaction:
        """``user`` fills in the modal the bot opened in answer to ``opened`` and submits it:
        ``values`` by text input ``custom_id`` (an input not named keeps its prefilled value).

        Only what Discord's client lets through can be sent: the modal is shown only to the
        person whose interaction opened it and closes once submitted, a required input must
        be filled, a value must be within its input's ``min_length``-``max_length``. Anything
        else raises ValueError, as :meth:`press` does for a button the message lacks.
        """
        modal = opened.modal
        if modal is None:
            raise ValueError(f"interaction {opened.id} was not answered with a modal")
        if user.id != opened.user.id:
            raise ValueError(f"the modal was shown to {opened.user.name}, not {user.name}")
        if opened.submitted:
            raise ValueError(f"the modal of interaction {opened.id} was submitted already")
        inputs = _text_inputs(modal)
        unknown = set(values) - {t["custom_id"] for t, _ in inputs}
        if unknown:
            raise ValueError(f"the modal has no text input {sorted(unknown)}")
        rows: list[dict[str, Any]] = []
        sent: dict[str, str] = {}
        ids = itertools.count(1)
        for text_input, labelled in inputs:
            custom_id = text_input["custom_id"]
            value = values.get(custom_id, text_input.get("value") or "")
            low = text_input.get("min_length") or 0
            high = text_input.get("max_length") or TEXT_INPUT_LIMIT
            if text_input.get("required", True) and not value:
                raise ValueError(f"text input {custom_id!r} is required")
            if value and not low <= len(value) <= high:
                raise ValueError(
                    f"text input {custom_id!r} takes {low}-{high} characters, not {len(value)}"
                )
            sent[custom_id] = value
            answer = {"type": 4, "custom_id": custom_id, "value": value}
            if labelled:
                rows.append({"type": 18, "id": next(ids), "component": answer | {"id": next(ids)}})
            else:
                rows.append(
                    {"type": 1, "id": next(ids), "components": [answer | {"id": next(ids)}]}
                )
        opened.submitted = True
        interaction = Interaction(
            snowflake(),
            f"token-{snowflake()}",
            user,
            opened.command,
            {},
            time.monotonic(),
            custom_id=modal["custom_id"],
            kind=5,
            message_id=opened.message_id,
            values=sent,
            channel_id=opened.channel_id,
        )
        self.interactions[interaction.id] = interaction
        payload = self._interaction_payload(interaction, 5)
        if opened.message_id is not None:  # opened from a button: Discord names its message
            payload["message"] = self.messages[opened.message_id].payload()
        payload["data"] = {"custom_id": modal["custom_id"], "components": rows}
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def react(
        self, user: FakeUser, message_id: int, emoji: str, *, super_: bool = False
    ) -> None:
        """``user`` adds a reaction (``super_``: a super reaction, Discord's "burst" kind).
        With no bot connected only the message changes: Discord does not replay missed
        reaction events on the next connection."""
        self.users[user.id] = user
        entry = (user.id, emoji)
        kept = (self.super_reactions if super_ else self.reactions).setdefault(message_id, [])
        if entry in kept:
            return  # one reaction of each kind per person and emoji, as on Discord
        kept.append(entry)
        await self._dispatch_if_connected(
            "MESSAGE_REACTION_ADD", self._reaction_payload(user, message_id, emoji, super_)
        )

    async def unreact(
        self, user: FakeUser, message_id: int, emoji: str, *, super_: bool = False
    ) -> None:
        (self.super_reactions if super_ else self.reactions)[message_id].remove((user.id, emoji))
        payload = self._reaction_payload(user, message_id, emoji, super_)
        payload.pop("member")
        payload.pop("message_author_id")
        payload.pop("burst_colors")
        await self._dispatch_if_connected("MESSAGE_REACTION_REMOVE", payload)

    async def delete_message(self, message_id: int, *, event: bool = True) -> None:
        """Someone (its author, a moderator) deletes a message: later requests on it get 404,
        and a connected bot gets MESSAGE_DELETE (``event=False``: an event the bot missed)."""
        message = self.messages[message_id]
        message.deleted = True
        self.reactions.pop(message_id, None)
        self.super_reactions.pop(message_id, None)
        if event:
            await self._dispatch_if_connected(
                "MESSAGE_DELETE",
                {
                    "id": str(message_id),
                    "channel_id": str(message.channel_id),
                    "guild_id": str(self.channel_guild.get(message.channel_id, self.guild_id)),
                },
            )
        await self._notify()

    async def delete_messages(self, *message_ids: int) -> None:
        """A moderator deletes several messages at once (a purge): later requests on them
        get 404, and a connected bot gets one MESSAGE_DELETE_BULK for all of them."""
        for message_id in message_ids:
            self.messages[message_id].deleted = True
            self.reactions.pop(message_id, None)
            self.super_reactions.pop(message_id, None)
        await self._dispatch_if_connected(
            "MESSAGE_DELETE_BULK",
            {
                "ids": [str(m) for m in message_ids],
                "channel_id": str(self.channel_id),
                "guild_id": str(self.guild_id),
            },
        )
        await self._notify()

    async def say(self, user: FakeUser, content: str) -> Message:
        """``user`` writes ``content`` in the channel: MESSAGE_CREATE, its content empty for a
        bot without the MESSAGE_CONTENT intent (see :data:`EVENT_INTENTS`)."""
        self.users[user.id] = user
        message = Message(snowflake(), self.channel_id, user, content)
        self.messages[message.id] = message
        mentioned = [u for u in self.users.values() if f"<@{u.id}>" in content]
        payload = message.payload() | {
            "guild_id": str(self.guild_id),
            "member": user.member(),
            "mentions": [u.payload() for u in mentioned],
        }
        await self._dispatch_if_connected("MESSAGE_CREATE", payload)
        return message

    async def type_(self, user: FakeUser) -> None:
        """``user`` starts typing in the channel (TYPING_START)."""
        payload = {
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id),
            "user_id": str(user.id),
            "timestamp": int(time.time()),
            "member": user.member(),
        }
        await self._dispatch_if_connected("TYPING_START", payload)

    async def go_online(self, user: FakeUser) -> None:
        """``user`` comes online (PRESENCE_UPDATE, for bots with the GUILD_PRESENCES intent)."""
        payload = {
            "user": {"id": str(user.id)},
            "guild_id": str(self.guild_id),
            "status": "online",
            "activities": [],
            "client_status": {"desktop": "online"},
        }
        await self._dispatch_if_connected("PRESENCE_UPDATE", payload)

    def delete_channel(self) -> None:
        """The channel is deleted: everything addressed to it answers 404 Unknown Channel."""
        self.channel_deleted = True

    async def mark_nsfw(self, nsfw: bool = True) -> None:
        """A manager marks the channel NSFW (or not): Discord sends CHANNEL_UPDATE, and later
        interactions carry the flag in their channel. The flag is the fake's, so every server's
        channel changes, each told to its own shard."""
        self.channel_nsfw = nsfw
        for guild_id in self.guild_channels:
            await self._dispatch_if_connected("CHANNEL_UPDATE", self._channel_payload(guild_id))

    def revoke(self, permissions: int) -> None:
        """Take permissions (bits, as in :data:`SEND_MESSAGES`) away from the bot."""
        self.bot_permissions &= ~permissions

    def age(self, interaction: Interaction, seconds: float) -> None:
        """Make ``interaction`` ``seconds`` older, as if the bot had been that slow."""
        interaction.sent_at -= seconds

    # -- what tests look at ------------------------------------------------------------------

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until ``condition()`` is truthy: checked after every request the bot makes and
        every tenth of a second (for conditions on the bot's side, such as its database)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while not (result := condition()):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.1)
                return result

    def channel_messages(self) -> list[Message]:
        """Messages visible in the channel, in order (ephemeral and deleted ones left out)."""
        return [m for m in self.messages.values() if not m.ephemeral and not m.deleted]

    def bot_reactions(self, message_id: int) -> list[str]:
        return [e for user, e in self.reactions.get(message_id, []) if user == self.bot_user.id]

    def followups(self, interaction: Interaction) -> list[Message]:
        return [
            m
            for m in self.messages.values()
            if m.interaction_id == interaction.id and m is not interaction.original
        ]
