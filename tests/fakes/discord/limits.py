"""Discord's numbers as the fake keeps them: permission bits, the published limits on bodies,
modals and interactions, the gateway's intents and the events each brings, and the
snowflakes the fake hands out.
"""

from __future__ import annotations

import itertools

ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5  # "Manage Server"
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
# Sharding (discord-api-docs, Gateway: Sharding): a shard may hold 2,500 guilds, else IDENTIFY
# is closed with 4011; /gateway/bot recommends about one shard per 1,000.
MAX_GUILDS_PER_SHARD = 2500
RECOMMENDED_GUILDS_PER_SHARD = 1000
SESSION_STARTS_PER_DAY = 1000  # session_start_limit.total
_snowflakes = itertools.count(1_300_000_000_000_000_000)


def snowflake() -> int:
    return next(_snowflakes)
