"""Two processes on one database file, as the CLI and the bot share ``data/playlist-cover.db``
(and on one PostgreSQL database, as several bot processes share ``COVER_DB_URL``).

Each process runs 1,000 mixed read-then-write operations (requests, votes, closing votes,
snapshots, account tokens) against the same real database at the same time. Every one must
succeed: a transaction that reads first and writes later must take the write lock up front and
wait for the other process, not fail with "database is locked".
"""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path

from bot.app.records import CandidateRecord, StoredParams
from bot.app.storage import Storage

OPERATIONS = 1000
MESSAGES = 8

PARAMS = StoredParams(width=64, height=64, steps=4, guidance=1.0)


def _seed(path: Path | str) -> list[str]:
    with Storage(path) as storage:
        messages = []
        for n in range(MESSAGES):
            request_id = storage.record_request(
                source="discord",
                user_id="owner",
                playlist_id="p",
                playlist_name="p",
                model="embedded",
                params=PARAMS,
                prompts=[],
            )
            message_id = f"m{n}"
            storage.register_cover_message(
                message_id=message_id, channel_id="c", request_id=request_id, candidate_count=4
            )
            messages.append(message_id)
        return messages


def _worker(path: str, seed: int, messages: list[str], failures) -> None:
    rng = random.Random(seed)
    storage = Storage(path)
    errors: list[str] = []
    for n in range(OPERATIONS):
        message = rng.choice(messages)
        user = f"u{seed}-{rng.randrange(20)}"
        try:
            match n % 6:
                case 0:
                    request_id = storage.record_request(
                        source="cli",
                        user_id=user,
                        playlist_id="p",
                        playlist_name="p",
                        model="embedded",
                        params=PARAMS,
                        prompts=[],
                    )
                    storage.finish_request(request_id, status="done", timings={})
                case 1 | 2:
                    storage.cast_vote(message_id=message, user_id=user, choice=rng.randint(1, 4))
                case 3:
                    storage.remove_vote(message_id=message, user_id=user, choice=rng.randint(1, 4))
                case 4:
                    storage.save_snapshot({"id": "p", "name": f"p{rng.randrange(50)}"})
                case 5:
                    storage.tally(message)
                    storage.add_candidates(
                        storage.cover_message(message).request_id,
                        [CandidateRecord("", rng.randint(1, 4), "x", "", n, None, None)],
                    )
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
    storage.close()
    failures.put(errors)


def test_two_processes_lose_nothing(db_target: Path | str) -> None:
    path = db_target
    messages = _seed(path)
    context = multiprocessing.get_context("spawn")
    failures = context.Queue()
    workers = [
        context.Process(target=_worker, args=(str(path), seed, messages, failures))
        for seed in (1, 2)
    ]
    for worker in workers:
        worker.start()
    errors = [error for _ in workers for error in failures.get(timeout=300)]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert errors == [], f"{len(errors)} failed operations, e.g. {errors[:3]}"
    with Storage(path) as storage:
        rows = storage._rows("SELECT count(*) AS n FROM requests WHERE source = 'cli'")
        assert rows[0]["n"] == 2 * len(range(0, OPERATIONS, 6))  # every request of both
