"""What the fake Discord keeps and answers with: the people (:class:`FakeUser`), the messages
and their files, the interactions and how the bot acknowledged them, every REST exchange,
and the payloads Discord builds of them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.fakes.discord.limits import ADMINISTRATOR, MANAGE_GUILD, MEMBER_PERMISSIONS


def _numbered(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Components as Discord answers them: each with its numeric ``id`` (1, 2, … through the
    rows and their buttons, in order), unless the sender gave one."""
    counter = itertools.count(1)

    def number(component: dict[str, Any]) -> dict[str, Any]:
        numbered = {"id": next(counter), **component}
        if "components" in component:
            numbered["components"] = [number(c) for c in component["components"]]
        return numbered

    return [number(c) for c in components]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FakeUser:
    id: int
    name: str
    admin: bool = False
    bot: bool = False
    manager: bool = False  # may manage the server ("Manage Server"), without being an admin

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
            "primary_guild": None,
        }

    def member(self) -> dict[str, Any]:
        permissions = (
            MEMBER_PERMISSIONS
            | (ADMINISTRATOR if self.admin else 0)
            | (MANAGE_GUILD if self.manager else 0)
        )
        return {
            "user": self.payload(),
            "roles": [],
            "joined_at": "2026-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": str(permissions),
        }


@dataclass(frozen=True)
class Exchange:
    """One REST request to the fake and its answer, as sent (for tests/fakes/discord_schema.py)."""

    method: str
    path: str  # under /api/v10
    sent: Any  # the request's JSON, None without one
    status: int
    answer: Any  # the answer's JSON, None without one
    headers: dict[str, str]


@dataclass
class Attachment:
    filename: str
    data: bytes
    # A file a person attaches to a slash command's attachment option (type 11): the type
    # Discord reports for it (from the upload, so it may be wrong) and the size it claims.
    content_type: str | None = None
    claimed_size: int | None = None


@dataclass
class Message:
    id: int
    channel_id: int
    author: FakeUser
    content: str
    attachments: list[Attachment] = field(default_factory=list)
    interaction_id: int | None = None  # set on an interaction's original response
    reference_id: int | None = None  # the message it replies to
    ephemeral: bool = False
    edits: list[str] = field(default_factory=list)  # every content it was edited to, in order
    edit_files: list[list[str]] = field(default_factory=list)  # attachment names per edit
    components: list[dict[str, Any]] = field(default_factory=list)  # action rows, as sent
    created: float = field(default_factory=time.monotonic)
    deleted: bool = False

    def buttons(self) -> list[dict[str, Any]]:
        """The buttons of every action row, in order."""
        return [
            c for row in self.components for c in row.get("components", ()) if c.get("type") == 2
        ]

    def payload(self, reactions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            **({"reactions": reactions} if reactions else {}),
            "type": 0 if self.reference_id is None else 19,
            "content": self.content,
            "author": self.author.payload(),
            "attachments": [
                {
                    "id": str(self.id + n + 1),
                    "filename": a.filename,
                    "size": len(a.data),
                    "url": f"https://cdn.invalid/{self.id}/{a.filename}",
                    "proxy_url": f"https://media.invalid/{self.id}/{a.filename}",
                }
                for n, a in enumerate(self.attachments)
            ],
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": _now(),
            "edited_timestamp": None,
            "flags": 64 if self.ephemeral else 0,
            "components": _numbered(self.components),
            **(
                {
                    "message_reference": {
                        "type": 0,
                        "message_id": str(self.reference_id),
                        "channel_id": str(self.channel_id),  # discord.py needs it
                    }
                }
                if self.reference_id
                else {}
            ),
        }


@dataclass
class Interaction:
    """One slash command a person ran (or button they pressed), and how the bot acknowledged
    it."""

    id: int
    token: str
    user: FakeUser
    command: str
    options: dict[str, Any]
    sent_at: float
    # a button press: the button's custom_id; a modal submit: the modal's
    custom_id: str | None = None
    # Discord's interaction type: 2 a slash command, 3 a button, 4 autocomplete, 5 a modal submit
    kind: int = 2
    message_id: int | None = None  # a button press (or its modal's submit): the button's message
    channel_id: int | None = None  # where it was run; None: the first guild's channel
    values: dict[str, str] = field(default_factory=dict)  # a modal submit: input id → text
    acked_at: float | None = None
    # 4 message, 5 deferred, 6 deferred update (a button's message), 8 autocomplete result,
    # 9 a modal (then ``response`` is the modal, as sent)
    response_type: int | None = None
    response: dict[str, Any] | None = None
    original: Message | None = None
    submitted: bool = False  # its modal was submitted (a modal closes on submit)

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot answered with (callback type 9), None if it answered otherwise."""
        return self.response if self.response_type == 9 else None

    @property
    def ack_latency_s(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.sent_at


@dataclass
class GatewaySession:
    """One gateway session: the shard it identified as (``shard`` of ``count``; 0 of 1
    unsharded), the intents it asked for, its events in order (replayed to a resume from the
    sequence number the bot last saw) and the connection they go to, if live."""

    id: str
    shard: int
    count: int
    intents: int
    seq: int = 0
    backlog: list[dict[str, Any]] = field(default_factory=list)
    connection: Any = None  # aiohttp's WebSocketResponse while connected

    def owns(self, guild_id: int | None) -> bool:
        """Whether events of ``guild_id`` go to this session: Discord's formula, and a
        guild-less event (a direct message) to shard 0."""
        return (0 if guild_id is None else (guild_id >> 22) % self.count) == self.shard
