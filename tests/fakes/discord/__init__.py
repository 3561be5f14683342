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
  (:meth:`FakeDiscord.slash`, ``"group sub"`` for a subcommand; an :class:`Attachment` as an
  option's value is sent as an attachment option, resolved, its bytes served at its URL), press a message's button
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
- it shards as Discord does: IDENTIFY's ``shard: [id, count]`` makes a session of that shard,
  whose READY (and GUILD_CREATEs) hold only the guilds with ``(guild_id >> 22) % count == id``
  (:meth:`FakeDiscord.add_guild` adds a guild with a channel on a chosen shard; ``slash(...,
  channel_id=…)`` runs a command there), and each guild's events go only to its shard's
  session; an invalid shard is closed with 4010, a connection that would hold more than
  :attr:`FakeDiscord.max_guilds_per_shard` guilds with 4011 (Sharding required), and
  ``GET /gateway/bot`` answers the gateway URL, the shards to run and the session start
  limit with :attr:`FakeDiscord.max_concurrency`;
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
- bodies are held to Discord's published limits (tests/fakes/discord/limits.py): content up to 2,000
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

The package's modules: limits.py (Discord's numbers), models.py (users, messages,
interactions and their payloads), validation.py (the refusals), gateway.py (the
websocket), rest.py (the HTTP routes) and server.py (:class:`FakeDiscord`, which joins
the two).
"""

from tests.fakes.discord.limits import (
    ADD_REACTIONS,
    GUILD_MESSAGE_REACTIONS,
    GUILD_MESSAGES,
    GUILDS,
    MESSAGE_CONTENT,
    PRIVILEGED_INTENTS,
    SEND_MESSAGES,
    snowflake,
)
from tests.fakes.discord.models import Attachment, FakeUser, Interaction, Message
from tests.fakes.discord.server import FakeDiscord

__all__ = [
    "ADD_REACTIONS",
    "GUILDS",
    "GUILD_MESSAGES",
    "GUILD_MESSAGE_REACTIONS",
    "MESSAGE_CONTENT",
    "PRIVILEGED_INTENTS",
    "SEND_MESSAGES",
    "Attachment",
    "FakeDiscord",
    "FakeUser",
    "Interaction",
    "Message",
    "snowflake",
]
