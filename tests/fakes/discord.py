"""A local stand-in for Discord: the REST routes and the gateway websocket discord.py uses.

The real discord.py client connects to it through the bot's settings
(``discord_api_base``, ``discord_gateway_url``), exactly as it would to a Discord-compatible
self-hosted server. The fake plays the part of Discord and of the people in one channel:

- it answers login, command sync, interaction callbacks, webhook follow-ups and edits, channel
  messages and reactions, and keeps what it was sent (messages with their attachment bytes,
  every status edit, every reaction) for tests to inspect;
- it sends gateway events: READY (the guild listed as unavailable), GUILD_CREATE (its channel,
  roles, member count and the bot's own member, so discord.py's cache is filled as in
  production), then whatever a test makes people do – run a slash command
  (:meth:`FakeDiscord.slash`, ``"group sub"`` for a subcommand), press a message's button
  (:meth:`press`), fill in and submit a modal the bot opened (:meth:`submit`), react or take a reaction back (:meth:`react`, :meth:`unreact`), delete a
  message (:meth:`delete_message`) or several at once (:meth:`delete_messages`, one
  MESSAGE_DELETE_BULK), write (:meth:`say`), type (:meth:`type_`), come online
  (:meth:`go_online`). Reactions the bot adds come back to it as gateway events, as on
  Discord, so the bot must ignore its own.

Its gateway keeps Discord's rules (:data:`EVENT_INTENTS`):

- only the events of the intents the bot asked for at IDENTIFY are sent, and without
  MESSAGE_CONTENT a message's content arrives empty; a privileged intent the application has
  not got (:attr:`FakeDiscord.privileged_intents`) closes the connection with 4014;
- a session is resumable: its events are kept, and a RESUME gets those after the sequence
  number the bot last saw, then RESUMED; :meth:`FakeDiscord.reconnecting` sends op 7,
  :meth:`offline` drops the connection (``resumable=False``: op 9, a new IDENTIFY),
  :meth:`unresponsive` makes it a zombie the bot must notice;
- a heartbeat later than the interval HELLO asked for plus a grace
  (:attr:`FakeDiscord.heartbeat_interval_s`, :attr:`heartbeat_grace_s`) closes the connection
  with 4009, Session timed out, and the session is gone.

It fails the way Discord does, which is where a bot's real bugs hide:

- reactions made while no bot is connected change the message's state only: Discord never
  replays them as events, so a bot learns of them only by reading the message
  (``GET …/messages/{id}``, ``GET …/reactions/{emoji}``, paginated as on Discord);
- people can super-react (``react(..., super_=True)``): the event says ``burst: true``, the
  message counts it in ``count_details.burst``, and the list of who reacted holds only normal
  reactions unless it is asked for ``type=1``, as on Discord;
- a deleted message (:meth:`delete_message`) or channel (:meth:`delete_channel`) answers 404
  with Discord's codes (10008 Unknown Message, 10003 Unknown Channel), and a reply that
  references an unknown message is refused with 400 code 50035 unless the reference says
  ``fail_if_not_exists: false``;
- permissions the bot lost (:meth:`revoke`) answer 403 (50013 Missing Permissions, 50001
  Missing Access);
- an interaction must be acknowledged within 3 seconds (later: 404 code 10062) and its token
  lives 15 minutes (later, follow-ups and edits answer 401 code 50027); :meth:`age` makes an
  interaction older without waiting;
- message components are checked as Discord checks them (at most 5 action rows of at most 5
  buttons, labels up to 80 characters, ``custom_id`` 1-100 characters and unique in the
  message): anything else is 400 code 50035, Invalid Form Body;
- a modal (callback type 9) answers only a slash command or a button press, never a modal
  submit or an autocomplete, and is held to Discord's limits: a title of 1-45 characters, a
  ``custom_id`` of 1-100, 1-5 rows each holding one text input (an action row whose input has
  a label of 1-45 characters, or a Label component of 1-45 around it), every input's
  ``custom_id`` 1-100 characters and unique, ``min_length`` 0-4,000, ``max_length`` 1-4,000
  and not below ``min_length``, a prefilled ``value`` of at most 4,000 characters and at most
  ``max_length``, a placeholder of at most 100 – anything else is 400 code 50035 (the fake
  knows no modal component but the text input, and refuses the others too). What a person
  submits (:meth:`FakeDiscord.submit`) is what Discord's client lets through: required inputs
  filled, every value within its input's lengths;
- with :attr:`FakeDiscord.reaction_interval_s` set, reactions on a channel are limited to one
  per interval, and a faster one gets 429 with ``retry_after`` (counted in
  :attr:`FakeDiscord.rate_limited`);
- bodies are held to Discord's published limits (the constants below): content up to 2,000
  characters, 10 embeds, 10 files, each file within the server's upload limit
  (:attr:`FakeDiscord.upload_limit`; over it 413 code 40005), never empty (50006), autocomplete
  answers of at most 25 choices of up to 100 characters, only the callback types an
  interaction takes, follow-ups only once it was answered (404 code 10015), known emoji only
  (10014), command syncs within Discord's name, description and option limits; every refusal
  is kept in :attr:`FakeDiscord.refused`;
- every answer carries ``X-RateLimit-*`` headers, and with :attr:`FakeDiscord.webhook_rate`
  set an interaction's webhook takes only so many requests a second (the rest 429 with
  ``Retry-After``), announced in its headers or, with :attr:`webhook_limit_shared`, only by
  its 429s;
- reading a message back can be slow (:meth:`FakeDiscord.slow_reads` holds one message's reads),
  so a bot reconciling its open votes after READY can be caught half-way by live events.

A request to a route it does not know is answered 404 and kept in :attr:`FakeDiscord.unknown`,
so a test can assert the bot only used what it meant to. Every REST exchange is kept in
:attr:`FakeDiscord.exchanges`, and tests/fakes/discord_schema.py holds them to Discord's own
API description (discord/discord-api-spec), the bot's requests and the fake's answers alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

ADMINISTRATOR = 1 << 3
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MEMBER_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | ADD_REACTIONS | ATTACH_FILES
# What the README's invite link grants the bot (permissions=101440).
BOT_PERMISSIONS = MEMBER_PERMISSIONS | READ_MESSAGE_HISTORY
# Discord's published limits (discord-api-docs, API v10: message resource, interactions, the
# JSON error codes); what the fake enforces of each is said where it is checked.
CONTENT_LIMIT = 2000  # characters in a message's content
EMBEDS_LIMIT = 10
ATTACHMENTS_LIMIT = 10  # files on one message
UPLOAD_LIMIT = 10 * 1024**2  # bytes per file in a server without boosts
# Callback types each interaction type takes: a slash command (2) a message (4) or
# "thinking…" (5), a button (3) also an update of its message (6, 7), autocomplete (4) only
# its choices (8); 9 (a modal) for the first two. A modal submit (5) takes a message or
# "thinking…", and an update of the message only when the modal was opened from a button.
CALLBACK_TYPES = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}
# A modal's limits (discord-api-docs, Interactions: Modal; Components: Text Input), also in
# discord/discord-api-spec's ModalInteractionCallbackRequestData and
# TextInputComponentForModalRequest (tests/fakes/discord_openapi.json).
MODAL_TITLE_LIMIT = 45
MODAL_ROWS_LIMIT = 5  # top-level components, each holding one text input
TEXT_INPUT_LABEL_LIMIT = 45
TEXT_INPUT_LIMIT = 4000  # a text input's max_length, min_length and value
PLACEHOLDER_LIMIT = 100
ACK_DEADLINE_S = 3.0  # an interaction not acknowledged by then is gone
TOKEN_LIFETIME_S = 15 * 60  # an interaction token's follow-ups and edits work this long
# Gateway intents (discord-api-docs, API v10, Gateway: List of Intents) and the events each
# brings: an event whose intent the bot did not ask for at IDENTIFY is not sent, and without
# MESSAGE_CONTENT a message's content, embeds, attachments and components arrive empty. The
# privileged ones must also be switched on for the application (FakeDiscord.privileged_intents)
# or IDENTIFY is closed with 4014, Disallowed intent(s).
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
GUILD_MESSAGE_TYPING = 1 << 11
MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
EVENT_INTENTS = {
    "GUILD_CREATE": GUILDS,
    "CHANNEL_UPDATE": GUILDS,
    "GUILD_MEMBER_ADD": GUILD_MEMBERS,
    "PRESENCE_UPDATE": GUILD_PRESENCES,
    "MESSAGE_CREATE": GUILD_MESSAGES,
    "MESSAGE_DELETE": GUILD_MESSAGES,
    "MESSAGE_DELETE_BULK": GUILD_MESSAGES,
    "MESSAGE_REACTION_ADD": GUILD_MESSAGE_REACTIONS,
    "MESSAGE_REACTION_REMOVE": GUILD_MESSAGE_REACTIONS,
    "TYPING_START": GUILD_MESSAGE_TYPING,
}
HEARTBEAT_INTERVAL_S = 41.25  # what Discord's HELLO asks for
_snowflakes = itertools.count(1_300_000_000_000_000_000)


def snowflake() -> int:
    return next(_snowflakes)


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py requires exactly "application/json": aiohttp's json_response adds a charset.
    return web.Response(status=status, body=json.dumps(data), content_type="application/json")


def _error(
    status: int,
    message: str,
    code: int,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An error as Discord words it: its HTTP status, message and JSON error code."""
    body = {"message": message, "code": code, **extra}
    if status == 429:
        body["global"] = False
    return web.Response(
        status=status, body=json.dumps(body), content_type="application/json", headers=headers
    )


def _invalid(where: str, *problems: str, code: str = "BASE_TYPE_BAD") -> web.Response:
    """Discord's 400 Invalid Form Body (50035), its errors nested along ``where``
    (``"data.choices.3.name"``) as Discord nests them."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": p} for p in problems]}
    for key in reversed(where.split(".")):
        errors = {key: errors}
    return _error(400, "Invalid Form Body", 50035, errors=errors)


def _too_long(where: str, limit: int) -> web.Response:
    return _invalid(where, f"Must be {limit} or fewer in length.", code="BASE_TYPE_MAX_LENGTH")


def _message_refused(
    body: dict[str, Any], files: list[Attachment], upload_limit: int
) -> web.Response | None:
    """Discord's limits on a message body (create, follow-up, edit, an interaction's reply),
    or None if kept. Emptiness is the caller's to check: an edit may leave parts as they were."""
    content = body.get("content") or ""
    if len(content) > CONTENT_LIMIT:
        return _too_long("content", CONTENT_LIMIT)
    if len(body.get("embeds") or []) > EMBEDS_LIMIT:
        return _too_long("embeds", EMBEDS_LIMIT)
    if len(files) > ATTACHMENTS_LIMIT or len(body.get("attachments") or []) > ATTACHMENTS_LIMIT:
        return _too_long("attachments", ATTACHMENTS_LIMIT)
    if any(len(f.data) > upload_limit for f in files):  # the server's limit, for each file
        return _error(413, "Request entity too large", 40005)
    return _components_refused(body.get("components"))


def _empty(body: dict[str, Any], files: list[Attachment]) -> bool:
    return not (
        body.get("content")
        or body.get("embeds")
        or files
        or body.get("attachments")
        or body.get("components")
        or body.get("sticker_ids")
        or body.get("poll")
    )


def _emoji_known(emoji: str) -> bool:
    """A custom emoji as ``name:id``, or a Unicode emoji: symbols with their joiners,
    variation selectors and keycaps (``1️⃣`` is ``1``, U+FE0F, U+20E3). Letters, spaces and
    control characters make an unknown emoji."""
    name, _, custom_id = emoji.partition(":")
    if custom_id:
        return bool(name) and custom_id.isdigit()
    if not 1 <= len(emoji) <= 10:
        return False
    kinds = [unicodedata.category(c) for c in emoji]
    if any(k[0] in "LZ" or k == "Cc" for k in kinds):
        return False
    return "So" in kinds or "\u20e3" in emoji or any(0x1F1E6 <= ord(c) <= 0x1F1FF for c in emoji)


_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def _commands_refused(commands: Any) -> web.Response | None:
    """Discord's limits on a command sync: at most 100 chat commands, names 1-32 lower-case
    word characters or dashes, descriptions 1-100 characters, at most 25 options (and 25
    choices) each, required options before optional ones."""
    if not isinstance(commands, list) or len(commands) > 100:
        return _too_long("_", 100)
    for n, command in enumerate(commands):
        if (refused := _command_refused(command, str(n))) is not None:
            return refused
    return None


def _command_refused(item: dict[str, Any], where: str) -> web.Response | None:
    name, description = item.get("name") or "", item.get("description") or ""
    if not _COMMAND_NAME.match(name) or name != name.lower():
        return _invalid(
            f"{where}.name", "Command name is invalid", code="APPLICATION_COMMAND_INVALID_NAME"
        )
    if item.get("type", 1) == 1 and not 1 <= len(description) <= 100:
        return _invalid(
            f"{where}.description",
            "Must be between 1 and 100 in length.",
            code="BASE_TYPE_BAD_LENGTH",
        )
    options = list(item.get("options") or [])
    if len(options) > 25:
        return _too_long(f"{where}.options", 25)
    choices = list(item.get("choices") or [])
    if len(choices) > 25:
        return _too_long(f"{where}.choices", 25)
    for n, choice in enumerate(choices):
        if not 1 <= len(str(choice.get("name") or "")) <= 100:
            return _too_long(f"{where}.choices.{n}.name", 100)
    required = [bool(o.get("required")) for o in options]
    if required != sorted(required, reverse=True):
        return _invalid(
            f"{where}.options",
            "Required options must be placed before non-required options",
            code="APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
        )
    for n, option in enumerate(options):
        if (refused := _command_refused(option, f"{where}.options.{n}")) is not None:
            return refused
    return None


def _choices_refused(data: dict[str, Any]) -> web.Response | None:
    """An autocomplete answer: at most 25 choices, names 1-100 characters, string values up
    to 100. One bad choice and Discord refuses the whole answer (people see no list)."""
    choices = list(data.get("choices") or [])
    if len(choices) > 25:
        return _too_long("data.choices", 25)
    for n, choice in enumerate(choices):
        name, value = str(choice.get("name") or ""), choice.get("value")
        if not 1 <= len(name) <= 100:
            return _too_long(f"data.choices.{n}.name", 100)
        if isinstance(value, str) and len(value) > 100:
            return _too_long(f"data.choices.{n}.value", 100)
    return None


def _components_refused(components: Any) -> web.Response | None:
    """Discord's rules for a message's buttons (see the module docstring), or None if kept."""
    rows = list(components or [])
    problems: list[str] = []
    ids: list[str] = []
    if len(rows) > 5:
        problems.append(f"{len(rows)} action rows (at most 5)")
    for row in rows:
        buttons = list(row.get("components") or [])
        if row.get("type") != 1 or not 1 <= len(buttons) <= 5:
            problems.append(f"an action row of {len(buttons)} components (1-5)")
        for button in buttons:
            label, custom_id = button.get("label") or "", button.get("custom_id")
            if len(label) > 80:
                problems.append(f"a label of {len(label)} characters (at most 80)")
            if button.get("style") != 5:  # link buttons carry a url, not a custom_id
                if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 100:
                    problems.append(f"custom_id {custom_id!r} (1-100 characters)")
                ids.append(str(custom_id))
    if len(ids) != len(set(ids)):
        problems.append("a custom_id used twice")
    if not problems:
        return None
    errors = {
        "components": {"_errors": [{"code": "BASE_TYPE_BAD", "message": p} for p in problems]}
    }
    return _error(400, "Invalid Form Body", 50035, errors=errors)


def _length_refused(where: str, value: Any, low: int, high: int) -> web.Response | None:
    """Discord's refusal of a string outside ``low``-``high`` characters, None if within."""
    if isinstance(value, str) and low <= len(value) <= high:
        return None
    if isinstance(value, str) and len(value) > high:
        return _too_long(where, high)
    return _invalid(
        where, f"Must be between {low} and {high} in length.", code="BASE_TYPE_BAD_LENGTH"
    )


def _modal_refused(data: dict[str, Any]) -> web.Response | None:
    """Discord's limits on a modal (callback type 9; see the module docstring), or None if
    kept. Errors are nested along the body's path, as Discord nests them."""
    refused = _length_refused("data.title", data.get("title"), 1, MODAL_TITLE_LIMIT)
    refused = refused or _length_refused("data.custom_id", data.get("custom_id"), 1, 100)
    if refused is not None:
        return refused
    rows = data.get("components")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MODAL_ROWS_LIMIT:
        return _invalid(
            "data.components",
            f"Must be between 1 and {MODAL_ROWS_LIMIT} in length.",
            code="BASE_TYPE_BAD_LENGTH",
        )
    ids: list[str] = []
    for n, row in enumerate(rows):
        where = f"data.components.{n}"
        if row.get("type") == 1:  # an action row: its one text input carries the label
            inputs = list(row.get("components") or [])
            if len(inputs) != 1:
                return _invalid(
                    f"{where}.components",
                    "A modal's action row holds exactly one text input.",
                    code="BASE_TYPE_BAD_LENGTH",
                )
            text_input, where = inputs[0], f"{where}.components.0"
            refused = _text_input_refused(text_input, where, labelled=True)
        elif row.get("type") == 18:  # a Label component around its one text input
            refused = _length_refused(f"{where}.label", row.get("label"), 1, TEXT_INPUT_LABEL_LIMIT)
            text_input, where = row.get("component") or {}, f"{where}.component"
            refused = refused or _text_input_refused(text_input, where, labelled=False)
        else:
            return _invalid(
                f"{where}.type",
                f"Component type {row.get('type')!r} is not a text input's row or label "
                "(the fake knows no other modal component).",
                code="UNION_TYPE_CHOICES",
            )
        if refused is not None:
            return refused
        ids.append(text_input["custom_id"])
    if len(ids) != len(set(ids)):
        return _invalid(
            "data.components",
            "Component custom id cannot be duplicated",
            code="COMPONENT_CUSTOM_ID_DUPLICATED",
        )
    return None


def _text_input_refused(
    text_input: dict[str, Any], where: str, *, labelled: bool
) -> web.Response | None:
    """One text input of a modal within Discord's limits, or its refusal; ``labelled``: it
    carries its own label (in an action row), not a Label component around it."""
    if text_input.get("type") != 4:
        return _invalid(
            f"{where}.type",
            f"Component type {text_input.get('type')!r} is not a text input (4).",
            code="UNION_TYPE_CHOICES",
        )
    if labelled:
        label = text_input.get("label")
        if (
            refused := _length_refused(f"{where}.label", label, 1, TEXT_INPUT_LABEL_LIMIT)
        ) is not None:
            return refused
    if text_input.get("style") not in (1, 2):
        return _invalid(
            f"{where}.style", f"Value {text_input.get('style')!r} is not a valid enum value."
        )
    refused = _length_refused(f"{where}.custom_id", text_input.get("custom_id"), 1, 100)
    if refused is not None:
        return refused
    low, high = text_input.get("min_length"), text_input.get("max_length")
    for name, value, floor in (("min_length", low, 0), ("max_length", high, 1)):
        if value is None:
            continue
        if not isinstance(value, int) or value < floor:
            return _invalid(
                f"{where}.{name}",
                f"int value should be greater than or equal to {floor}.",
                code="NUMBER_TYPE_MIN",
            )
        if value > TEXT_INPUT_LIMIT:
            return _invalid(
                f"{where}.{name}",
                f"int value should be less than or equal to {TEXT_INPUT_LIMIT}.",
                code="NUMBER_TYPE_MAX",
            )
    if low is not None and high is not None and low > high:
        return _invalid(
            f"{where}.min_length",
            "min_length must be less than or equal to max_length.",
            code="BASE_TYPE_BAD_LENGTH",
        )
    value = text_input.get("value")
    if value is not None:
        refused = _length_refused(f"{where}.value", value, 0, high or TEXT_INPUT_LIMIT)
        if refused is not None:
            return refused
    placeholder = text_input.get("placeholder")
    if placeholder is not None:
        return _length_refused(f"{where}.placeholder", placeholder, 0, PLACEHOLDER_LIMIT)
    return None


def _text_inputs(modal: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """A kept modal's text inputs, in order, each with whether it sits in a Label (type 18)."""
    found = []
    for row in modal.get("components") or []:
        if row.get("type") == 18:
            found.append((row["component"], True))
        else:
            found.extend((c, False) for c in row.get("components") or [])
    return found


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
        permissions = MEMBER_PERMISSIONS | (ADMINISTRATOR if self.admin else 0)
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


class FakeDiscord:
    """Discord for one bot in one guild with one text channel. Use as an async context manager."""

    def __init__(self) -> None:
        self.bot_user = FakeUser(snowflake(), "CoverBot", bot=True)
        self.application_id = snowflake()
        self.guild_id = snowflake()
        self.channel_id = snowflake()
        self.bot_role_id = snowflake()  # the role Discord makes for the bot at its invite
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
        # The gateway session: the intents it asked for, its events in order (replayed to a
        # resume from the sequence number the bot last saw), the connection they go to.
        self.intents: int | None = None  # as the bot last identified
        self.privileged_intents = 0  # switched on for the application in the developer portal
        self.heartbeat_interval_s = HEARTBEAT_INTERVAL_S
        self.heartbeat_grace_s = 5.0  # a heartbeat later than interval + grace is missed
        self.resumed = 0  # sessions resumed (RESUME accepted)
        self.timed_out = 0  # connections closed for a missed heartbeat
        self.sent: list[str] = []  # the events sent to the bot, by name, in order
        self._session: str | None = None
        self._seq = 0
        self._backlog: list[dict[str, Any]] = []  # every dispatch of the session, as sent
        self._connection: web.WebSocketResponse | None = None  # the session's, if live
        self._unresponsive: web.WebSocketResponse | None = None  # see unresponsive()
        self._dropped: set[web.WebSocketResponse] = set()  # connections the fake closed
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_get("/gateway", self._gateway)
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
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- what people do ----------------------------------------------------------------------

    async def slash(self, user: FakeUser, command: str, **options: Any) -> Interaction:
        """``user`` runs ``/command`` with ``options`` (None values are left out, as Discord does)."""
        given = {name: value for name, value in options.items() if value is not None}
        interaction = Interaction(
            snowflake(), f"token-{snowflake()}", user, command, given, time.monotonic()
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
                    "guild_id": str(self.guild_id),
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

    # -- gateway -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the bot's gateway session has a live connection (identified or resumed)."""
        return self._connection is not None

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
            self._session = None
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
        if self._connection is not None:
            await self._connection.send_str(json.dumps({"op": 7, "d": None}))
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
        self._unresponsive = self._connection
        try:
            yield
        finally:
            self._unresponsive = None

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
            if self._connection is socket:
                self._connection = None
                # The bot closing with 1000 or 1001 ends its session (discord.py does on
                # close()); any other code, or a close of the fake's, leaves it resumable.
                if socket not in self._dropped and socket.close_code in (1000, 1001):
                    self._session = None
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
            if socket is not self._unresponsive:
                await socket.send_str(json.dumps({"op": 11}))
        elif op == 2:  # identify
            intents = int(data.get("intents", 0))
            if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
                await self._drop(socket, 4014, b"Disallowed intent(s).")
                return
            self.identified += 1
            self.intents = intents
            self._session, self._seq, self._backlog = f"session-{snowflake()}", 0, []
            self._connection = socket
            await self._dispatch_if_connected("READY", self._ready_payload())
            # Then each guild READY listed as unavailable, in full (discord.py fills its cache).
            await self._dispatch_if_connected("GUILD_CREATE", self._guild_payload())
            await self._notify()
        elif op == 6:  # resume
            if self._session is None or data.get("session_id") != self._session:
                # Not resumable: op 9, the bot must identify anew.
                await socket.send_str(json.dumps({"op": 9, "d": False}))
                return
            self.resumed += 1
            self._connection = socket
            seen = int(data.get("seq") or 0)
            for frame in [f for f in self._backlog if f["s"] > seen]:  # what it missed
                await self._send(socket, frame)
            await self._dispatch_if_connected("RESUMED", {})
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
        if self._connection is socket:
            self._session = None
        await self._drop(socket, 4009, b"Session timed out")

    async def _drop(self, socket: web.WebSocketResponse, code: int, reason: bytes) -> None:
        self._dropped.add(socket)
        await socket.close(code=code, message=reason)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _ready_payload(self) -> dict[str, Any]:
        return {
            "v": 10,
            "user": self.bot_user.payload(),
            # Every guild starts unavailable; GUILD_CREATE follows for each, as on Discord.
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": self._session,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
        }

    def _channel_payload(self) -> dict[str, Any]:
        denied = BOT_PERMISSIONS & ~self.bot_permissions  # revoke(): the bot's role denied
        overwrites = [{"id": str(self.bot_role_id), "type": 0, "allow": "0", "deny": str(denied)}]
        return {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": "covers",
            "position": 0,
            "permission_overwrites": overwrites if denied else [],
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
        }

    def _guild_payload(self) -> dict[str, Any]:
        """The guild as GUILD_CREATE carries it: its channels, roles and member count, and of
        its members only the bot (the rest needs the GUILD_MEMBERS intent and chunking)."""
        role = {"hoist": False, "mentionable": False, "icon": None, "unicode_emoji": None}
        roles = [
            {**role, "id": str(self.guild_id), "name": "@everyone", "color": 0, "position": 0,
             "permissions": str(MEMBER_PERMISSIONS), "managed": False, "flags": 0},
            {**role, "id": str(self.bot_role_id), "name": self.bot_user.name, "color": 0,
             "position": 1, "permissions": str(BOT_PERMISSIONS), "managed": True, "flags": 0,
             "tags": {"bot_id": str(self.bot_user.id)}},
        ]  # fmt: skip
        me = self.bot_user.member() | {"roles": [str(self.bot_role_id)]}
        me.pop("permissions")  # only interactions carry a member's computed permissions
        return {
            "id": str(self.guild_id),
            "name": "Cover Club",
            "icon": None,
            "owner_id": str(next(iter(self.users))),
            "unavailable": False,
            "large": False,
            "member_count": len(self.users),
            "joined_at": "2026-01-01T00:00:00+00:00",
            "channels": [] if self.channel_deleted else [self._channel_payload()],
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
        if self._session is None:
            raise RuntimeError(f"no bot is connected to receive {event}")
        await self._dispatch_if_connected(event, data)

    async def _dispatch_if_connected(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to the bot's session, if it has one and asked for the event's intent:
        to its connection now, and kept for a resume either way."""
        needs = EVENT_INTENTS.get(event, 0)
        if self._session is None or (self.intents or 0) & needs != needs:
            return
        if event.startswith("MESSAGE_") and "content" in data:
            data = self._without_content(data)
        self._seq += 1
        frame = {"op": 0, "t": event, "s": self._seq, "d": data}
        self._backlog.append(frame)
        if self._connection is not None and self._connection is not self._unresponsive:
            await self._send(self._connection, frame)

    def _without_content(self, data: dict[str, Any]) -> dict[str, Any]:
        """A message as a bot without the MESSAGE_CONTENT intent sees it: empty, unless the
        bot wrote it or is mentioned in it (discord-api-docs, Message Content Intent)."""
        mentioned = any(int(u["id"]) == self.bot_user.id for u in data.get("mentions", ()))
        mine = int(data["author"]["id"]) == self.bot_user.id
        if (self.intents or 0) & MESSAGE_CONTENT or mentioned or mine:
            return data
        return data | {"content": "", "embeds": [], "attachments": [], "components": []}

    def _interaction_payload(
        self, interaction: Interaction, kind: int, *, focused: str | None = None
    ) -> dict[str, Any]:
        options = [
            {"name": name, "type": _option_type(value), "value": value}
            | ({"focused": True} if name == focused else {})
            for name, value in interaction.options.items()
        ]
        name, *subcommand = interaction.command.split() or [""]  # "": a button press
        if subcommand:  # "/spotify link": the subcommand is the group's one option
            options = [{"name": subcommand[0], "type": 1, "options": options}]
        command = next((c for c in self.commands if c["name"] == name), None)
        return {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": interaction.token,
            "version": 1,
            "guild_id": str(self.guild_id),
            "channel_id": str(self.channel_id),
            "channel": {
                "id": str(self.channel_id),
                "type": 0,
                "guild_id": str(self.guild_id),
                "name": "covers",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
            },
            "member": interaction.user.member(),
            "app_permissions": str(self.bot_permissions),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": self.upload_limit,
            "data": {
                "id": command["id"] if command else str(snowflake()),
                "name": name,
                "type": 1,
                "options": options,
            },
        }

    def _reaction_payload(
        self, user: FakeUser, message_id: int, emoji: str, super_: bool = False
    ) -> dict[str, Any]:
        message = self.messages[message_id]
        return {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message_id),
            "guild_id": str(self.guild_id),
            "emoji": {"id": None, "name": emoji},
            "member": user.member(),
            "message_author_id": str(message.author.id),
            "burst": super_,
            "burst_colors": ["#ffd700", "#ff8c00"] if super_ else [],
            "type": 1 if super_ else 0,
        }

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
                self.channel_id,
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
        if self._gone(self.channel_id):
            return _error(404, "Unknown Channel", 10003)
        body, files = await _read_body(request)
        if (refused := self._body_refused(body, files)) is not None:
            return refused
        message = self._store(self.channel_id, body, files, interaction_id=interaction.id)
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


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3
