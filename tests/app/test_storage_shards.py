"""Shard processes on one database (bot/app/shards.py): each reads back and resumes only its
own servers' rows, and where two could take the same row the database lets one through.
Both engines (tests/postgres.py)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bot.app.shards import Shards, shard_of
from bot.app.storage import Storage
from tests.app.storage_helpers import record


def guild_on(shard: int, count: int, n: int = 1) -> str:
    """A server id (as stored) on ``shard`` of ``count``: a real-sized snowflake."""
    guild = ((19_403_645_698 + n * count) // count * count + shard) << 22 | 12345
    assert shard_of(guild, count) == shard
    return str(guild)


def _post(storage: Storage, message_id: str, guild_id: str | None) -> str:
    request_id = record(storage, guild_id=guild_id)
    storage.register_cover_message(
        message_id=message_id, channel_id="333", request_id=request_id, candidate_count=2
    )
    return request_id


def test_open_votes_and_unfinished_requests_are_filtered_by_shard(db_target: Path | str) -> None:
    with Storage(db_target) as storage:
        _post(storage, "m0", guild_on(0, 4))
        _post(storage, "m1", guild_on(1, 4))
        _post(storage, "m2", guild_on(2, 4, n=7))
        _post(storage, "dm", None)  # no server: shard 0's
        zero, one_two = Shards((0,), 4), Shards((1, 2), 4)
        assert [m.message_id for m in storage.open_cover_messages(zero)] == ["m0", "dm"]
        assert [m.message_id for m in storage.open_cover_messages(one_two)] == ["m1", "m2"]
        assert [m.message_id for m in storage.open_cover_messages(Shards((3,), 4))] == []
        every = [m.message_id for m in storage.open_cover_messages()]
        assert every == [m.message_id for m in storage.open_cover_messages(Shards.every())]
        assert every == ["m0", "m1", "m2", "dm"]
        unfinished = {r.guild_id for r in storage.unfinished_requests("discord", one_two)}
        assert unfinished == {guild_on(1, 4), guild_on(2, 4, n=7)}
        assert len(storage.unfinished_requests("discord", zero)) == 2
        assert len(storage.unfinished_requests("discord")) == 4


def test_sql_puts_every_server_on_the_shard_python_does(db_target: Path | str) -> None:
    """The biggest ids Discord can give (63 bits) and 200 random ones go through each engine's
    formula to the shard :func:`shard_of` names, for several shard counts."""
    rng = random.Random(22)
    guilds = [str(2**63 - 1), str(2**62 + 5 * 2**22), "0", guild_on(2, 3)]
    guilds += [str(rng.getrandbits(63)) for _ in range(200)]
    with Storage(db_target) as storage:
        for n, guild in enumerate(guilds):
            _post(storage, f"m{n}", guild)
        for count in (2, 3, 7, 16):
            for shard in range(count):
                found = sorted(
                    storage.request(m.request_id).guild_id
                    for m in storage.open_cover_messages(Shards((shard,), count))
                )
                assert found == sorted(g for g in guilds if shard_of(g, count) == shard)


def test_a_row_whose_server_is_not_an_id_is_shard_zeros_and_breaks_no_query(
    db_target: Path | str,
) -> None:
    """Rows this code did not write (a hand edit, an old import): shard 0 owns them, as it owns
    rows without a server, and every process's query still answers."""
    odd = ["abc", "-5", " 12", "1e9", "9" * 30, "٣"]  # the last: an Arabic-Indic digit
    with Storage(db_target) as storage:
        for n, guild in enumerate(odd):
            _post(storage, f"odd{n}", guild)
        _post(storage, "mine", guild_on(1, 2))
        assert len(storage.open_cover_messages(Shards((0,), 2))) == len(odd) - 1
        on_one = [m.message_id for m in storage.open_cover_messages(Shards((1,), 2))]
        assert "mine" in on_one and len(on_one) == 2  # 10**30 - 1: digits, shard 1 of 2


def _race(targets: list[Callable[[], Any]]) -> list[Any]:
    """Run each target in its own thread, released together; their results in order."""
    start = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)

    def run(n: int) -> None:
        start.wait()
        results[n] = targets[n]()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_processes_resuming_one_request_claim_it_once(db_target: Path | str) -> None:
    with Storage(db_target) as first, Storage(db_target) as second:
        for _ in range(10):
            request_id = record(first)
            seen = first.request(request_id).resumes
            claims = _race([partial(s.note_resume, request_id, seen=seen) for s in (first, second)])
            assert sorted(claims, key=str) == [1, None]
            assert second.request(request_id).resumes == 1
            # A request that ended meanwhile is nobody's to resume.
            first.finish_request(request_id, status="done", timings={})
            assert first.note_resume(request_id, seen=1) is None


def test_two_processes_closing_one_vote_close_it_once(db_target: Path | str) -> None:
    with Storage(db_target) as first, Storage(db_target) as second:
        for n in range(10):
            _post(first, f"m{n}", guild_on(1, 2))
            first.cast_vote(message_id=f"m{n}", user_id="9", choice=2)
            closed = _race(
                [partial(s.close_vote, f"m{n}", winner=2, reason="timer") for s in (first, second)]
            )
            assert sorted(closed) == [False, True]
            assert second.cover_message(f"m{n}").winner == 2


def test_a_claim_is_held_against_other_processes_until_released(db_target: Path | str) -> None:
    postgres = isinstance(db_target, str)
    with Storage(db_target) as first, Storage(db_target) as second:
        with first.claim("cover-start", "discord:7") as free:
            assert free
            with second.claim("cover-start", "discord:7") as taken:
                # PostgreSQL: the other process is refused. A SQLite file has no other
                # machine; each process keeps its own claims apart in memory.
                assert taken is not postgres
            with second.claim("cover-start", "discord:8") as other_person:
                assert other_person
        with second.claim("cover-start", "discord:7") as released:
            assert released


def test_each_process_expires_and_reads_back_only_its_own_servers_votes(
    db_target: Path | str,
) -> None:
    from bot.app.votes import VoteService

    with Storage(db_target) as storage:
        _post(storage, "zero", guild_on(0, 2))
        _post(storage, "one", guild_on(1, 2))
        _post(storage, "dm", None)
        mine = {
            shard: VoteService(storage, close_after_s=0, shards=Shards((shard,), 2))
            for shard in (0, 1)
        }
        assert [m.message_id for m in mine[0].expired()] == ["zero", "dm"]
        assert [m.message_id for m in mine[1].expired()] == ["one"]
        assert [m.message_id for m in mine[1].open_votes()] == ["one"]
        every = VoteService(storage, close_after_s=0)
        assert [m.message_id for m in every.open_votes(shard_id=0)] == ["zero", "one", "dm"]
