"""Which servers one bot process serves when the bot runs as several shard processes.

Discord splits a bot's servers into ``shard_count`` shards by a fixed formula (a server's id
shifted right by 22 bits – the snowflake's timestamp – modulo the count) and sends each
gateway connection only its shard's events. A process started with ``--shard-ids 0,1
--shard-count 4`` receives only the events of those shards' servers, so it must also be the
only one that reads back, resumes and closes *their* votes and jobs; the database, shared by
every process, holds everyone's rows. :class:`Shards` is that rule, free of Discord: the
storage filters its queries by it (bot/app/storage/dialect.py, :func:`shard_clause`) and
the vote and cover services ask it (bot/app/votes.py, bot/app/cover.py).

A row without a server (a direct message, a command-line request) belongs to shard 0, as
Discord sends direct messages to shard 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Discord's own limit is far lower in practice (it assigns the count at 2,500 servers a shard);
# this bounds what a typo can ask for.
MAX_SHARD_COUNT = 65_536


def shard_of(guild_id: int | str | None, shard_count: int) -> int:
    """The shard of a server: ``(guild_id >> 22) % shard_count``; 0 for no server.

    Raises ``ValueError`` naming the value for an id that is not a non-negative integer.
    """
    if guild_id is None or guild_id == "":
        return 0
    try:
        number = int(guild_id)
    except ValueError:
        raise ValueError(f"guild_id must be a Discord id (digits), got {guild_id!r}") from None
    if number < 0:
        raise ValueError(f"guild_id must not be negative, got {number}")
    return (number >> 22) % shard_count


@dataclass(frozen=True)
class Shards:
    """The shards one process serves: ``ids`` out of ``count``. ``Shards.every()`` (one
    process, the default) owns every row."""

    ids: tuple[int, ...] = (0,)
    count: int = 1

    def __post_init__(self) -> None:
        check_shards(self.ids, self.count)

    @classmethod
    def every(cls) -> Shards:
        return cls()

    @property
    def everything(self) -> bool:
        """Whether this process owns every server (no filter needed)."""
        return len(self.ids) == self.count

    def owns(self, guild_id: int | str | None) -> bool:
        """Whether the server ``guild_id`` (None: no server, shard 0) is this process's."""
        return self.everything or shard_of(guild_id, self.count) in self.ids

    def describe(self) -> str:
        """How the log says it: "shards 0, 1 of 4", or "every shard"."""
        if self.count == 1:
            return "every shard"
        return f"shard{'s' if len(self.ids) > 1 else ''} {', '.join(map(str, self.ids))} of {self.count}"


def check_shards(ids: Iterable[int], count: int) -> None:
    """Raise a ``ValueError`` saying what is wrong with ``ids`` out of ``count``: the count
    must be 1 to :data:`MAX_SHARD_COUNT`, the ids unique, each from 0 to ``count - 1``."""
    ids = tuple(ids)
    if not 1 <= count <= MAX_SHARD_COUNT:
        raise ValueError(f"the shard count must be 1 to {MAX_SHARD_COUNT}, got {count}")
    if not ids:
        raise ValueError("give at least one shard id")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"shard ids must be unique, got {', '.join(map(str, repeated))} twice")
    outside = [i for i in ids if not 0 <= i < count]
    if outside:
        raise ValueError(
            f"shard ids must be 0 to {count - 1} with a shard count of {count}, "
            f"got {', '.join(map(str, outside))}"
        )


def parse_shard_ids(text: str) -> tuple[int, ...]:
    """``"0,1"`` → ``(0, 1)``; a ``ValueError`` quoting the part that is not a number."""
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part.isascii() or not part.isdigit() or len(part) > 6:
            raise ValueError(f"shard ids are numbers separated by commas, got {part[:20]!r}")
        ids.append(int(part))
    return tuple(ids)
