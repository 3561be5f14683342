"""Storage's votes on real SQLite files and a real PostgreSQL (tests/postgres.py): one vote per
person, closing, reconciling with Discord's reactions, uploads, and the candidate counts' edges."""

from __future__ import annotations

import threading

import pytest

from bot.app.storage import SCHEMA_MAX_CANDIDATES, Storage
from tests.app.storage_helpers import record
from tests.postgres import INTEGRITY_ERRORS


def test_a_registered_message_starts_open(storage: Storage, message: str):
    row = storage.cover_message(message)
    assert row.status == "open" and row.winner is None and row.closed_at is None
    assert row.candidate_count == 4 and row.channel_id == "333"
    assert storage.tally(message) == {1: 0, 2: 0, 3: 0, 4: 0}
    assert [m.message_id for m in storage.open_cover_messages()] == [message]
    assert storage.cover_message("unknown") is None


def test_registering_checks_its_inputs(storage: Storage, message: str):
    request_id = storage.cover_message(message).request_id
    with pytest.raises(ValueError, match="already registered"):
        storage.register_cover_message(
            message_id=message, channel_id="333", request_id=request_id, candidate_count=4
        )
    with pytest.raises(KeyError, match="nope"):
        storage.register_cover_message(
            message_id="9002", channel_id="333", request_id="nope", candidate_count=4
        )
    with pytest.raises(ValueError, match="candidate_count"):
        storage.register_cover_message(
            message_id="9003", channel_id="333", request_id=request_id, candidate_count=0
        )


def test_a_second_vote_by_the_same_user_replaces_the_first(storage: Storage, message: str):
    assert storage.cast_vote(message_id=message, user_id="alice", choice=1)
    assert storage.cast_vote(message_id=message, user_id="bob", choice=1)
    assert storage.tally(message) == {1: 2, 2: 0, 3: 0, 4: 0}

    assert storage.cast_vote(message_id=message, user_id="alice", choice=3)
    assert storage.tally(message) == {1: 1, 2: 0, 3: 1, 4: 0}
    assert storage.vote_of(message, "alice") == 3
    count = storage.db.execute("SELECT COUNT(*) FROM votes WHERE user_id = 'alice'").fetchone()[0]
    assert count == 1


def test_the_database_itself_allows_one_vote_per_user(storage: Storage, message: str):
    storage.cast_vote(message_id=message, user_id="alice", choice=1)
    with pytest.raises(INTEGRITY_ERRORS):
        storage.db.execute(
            "INSERT INTO votes (message_id, user_id, choice, voted_at) VALUES (?, 'alice', 2, 'x')",
            [message],
        )


def test_remove_vote(storage: Storage, message: str):
    storage.cast_vote(message_id=message, user_id="alice", choice=1)
    storage.cast_vote(message_id=message, user_id="alice", choice=2)  # moved from 1 to 2

    # The reaction 1 being taken off must not cancel the newer vote for 2.
    assert not storage.remove_vote(message_id=message, user_id="alice", choice=1)
    assert storage.tally(message)[2] == 1
    assert storage.remove_vote(message_id=message, user_id="alice", choice=2)
    assert storage.tally(message) == {1: 0, 2: 0, 3: 0, 4: 0}
    assert storage.vote_of(message, "alice") is None

    storage.cast_vote(message_id=message, user_id="bob", choice=4)
    assert storage.remove_vote(message_id=message, user_id="bob")  # any choice
    assert not storage.remove_vote(message_id=message, user_id="bob")
    assert not storage.remove_vote(message_id="unknown", user_id="bob")


@pytest.mark.parametrize("choice", [0, 5, -1])
def test_a_choice_outside_the_candidates_is_refused(storage: Storage, message: str, choice: int):
    with pytest.raises(ValueError, match=f"choice must be between 1 and 4, got {choice}"):
        storage.cast_vote(message_id=message, user_id="alice", choice=choice)
    assert storage.vote_of(message, "alice") is None


def test_votes_on_unknown_messages_are_ignored(storage: Storage):
    assert storage.cast_vote(message_id="not-a-cover", user_id="alice", choice=1) is False
    assert storage.tally("not-a-cover") == {}


def test_votes_survive_reopening_the_file(open_storage, message: str, storage: Storage):
    storage.cast_vote(message_id=message, user_id="alice", choice=2)
    storage.cast_vote(message_id=message, user_id="bob", choice=4)
    storage.close()

    reopened = open_storage()
    assert reopened.tally(message) == {1: 0, 2: 1, 3: 0, 4: 1}
    assert reopened.cast_vote(message_id=message, user_id="alice", choice=4)
    assert reopened.tally(message) == {1: 0, 2: 0, 3: 0, 4: 2}


def test_a_closed_vote_rejects_votes_and_keeps_its_result(storage: Storage, message: str):
    storage.cast_vote(message_id=message, user_id="alice", choice=2)
    assert storage.close_vote(message, winner=2) is True

    closed = storage.cover_message(message)
    assert (closed.status, closed.winner) == ("closed", 2)
    assert closed.closed_at > closed.created_at
    assert storage.cast_vote(message_id=message, user_id="bob", choice=1) is False
    assert storage.remove_vote(message_id=message, user_id="alice") is False
    assert storage.tally(message) == {1: 0, 2: 1, 3: 0, 4: 0}
    assert storage.open_cover_messages() == []

    assert storage.close_vote(message, winner=3) is False  # closing is final
    assert storage.cover_message(message).winner == 2


def test_close_vote_checks_its_inputs(storage: Storage, message: str):
    with pytest.raises(ValueError, match="winner"):
        storage.close_vote(message, winner=5)
    with pytest.raises(KeyError, match="unknown"):
        storage.close_vote("unknown", winner=None)
    storage.close_vote(message, winner=None)
    assert storage.cover_message(message).winner is None


def test_calls_from_other_threads_are_serialised(storage: Storage, message: str):
    # asyncio.to_thread or a worker thread may use the same Storage (check_same_thread=False
    # plus a lock): 8 threads x 25 voters each, all recorded.
    def vote(thread: int) -> None:
        for n in range(25):
            storage.cast_vote(message_id=message, user_id=f"{thread}-{n}", choice=1 + n % 4)

    threads = [threading.Thread(target=vote, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(storage.tally(message).values()) == 200


def test_uploads_are_recorded_in_order(storage: Storage, message: str):
    request_id = storage.cover_message(message).request_id
    common = dict(
        message_id=message,
        request_id=request_id,
        playlist_id="pl",
        discord_user_id="111",
        spotify_user_id="spot",
        candidate=2,
        jpeg_bytes=1234,
    )
    first = storage.record_upload(**common, status="rate_limited", error="try again in 60 s")
    second = storage.record_upload(**common, status="applied")
    rows = storage.uploads(message)
    assert [(r.id, r.status, r.error) for r in rows] == [
        (first, "rate_limited", "try again in 60 s"),
        (second, "applied", None),
    ]
    with pytest.raises(ValueError, match="status must be"):
        storage.record_upload(**common, status="maybe")
    with pytest.raises(INTEGRITY_ERRORS):  # a cover message of ours, or nothing
        storage.record_upload(**{**common, "message_id": "999"}, status="applied")


@pytest.mark.parametrize("count", [1, 4, SCHEMA_MAX_CANDIDATES])
def test_every_candidate_number_at_the_edges_counts(storage: Storage, count: int):
    """1 and ``candidate_count`` are ballots and winners; 0 and ``candidate_count + 1`` are
    not (a mutation run found these edges unused)."""
    request_id = record(storage)
    storage.register_cover_message(
        message_id="m", channel_id="c", request_id=request_id, candidate_count=count
    )
    for bad in (0, count + 1):
        with pytest.raises(ValueError, match=f"choice must be between 1 and {count}, got {bad}"):
            storage.cast_vote(message_id="m", user_id="u", choice=bad)
    assert storage.cast_vote(message_id="m", user_id="first", choice=1)
    assert storage.cast_vote(message_id="m", user_id="last", choice=count)
    expected = {n: 0 for n in range(1, count + 1)}
    expected[1] += 1
    expected[count] += 1
    assert storage.tally("m") == expected
    for bad in (0, count + 1):
        with pytest.raises(ValueError, match=f"winner must be between 1 and {count}, got {bad}"):
            storage.close_vote("m", winner=bad)
    assert storage.close_vote("m", winner=count)
    assert storage.cover_message("m").winner == count


@pytest.mark.parametrize("count", [0, SCHEMA_MAX_CANDIDATES + 1])
def test_a_cover_message_needs_between_one_and_ten_candidates(storage: Storage, count: int):
    request_id = record(storage)
    with pytest.raises(ValueError, match=f"candidate_count must be between 1 and 10, got {count}"):
        storage.register_cover_message(
            message_id="m", channel_id="c", request_id=request_id, candidate_count=count
        )
    assert storage.cover_message("m") is None


def test_reconciling_votes_with_the_reactions_discord_shows(storage: Storage, message: str):
    """The rule :meth:`Storage.reconcile_votes` documents, one case per clause."""
    for user, choice in (("kept", 2), ("moved", 1), ("gone", 3)):
        storage.cast_vote(message_id=message, user_id=user, choice=choice)
    ballots = {"kept": {1, 2}, "moved": {3, 2}, "gone": set(), "new": {9, 3}, "none": {7}}
    assert storage.reconcile_votes(message, ballots) == 3
    votes = {u: storage.vote_of(message, u) for u in ("kept", "moved", "gone", "new", "none")}
    assert votes == {"kept": 2, "moved": 2, "gone": None, "new": 3, "none": None}
    assert storage.tally(message) == {1: 0, 2: 2, 3: 1, 4: 0}
    assert storage.reconcile_votes(message, ballots) == 0  # reconciled: nothing left to change
    assert storage.reconcile_votes("unknown", ballots) == 0
    storage.close_vote(message, winner=2, reason="timer")
    assert storage.reconcile_votes(message, {"late": {1}}) == 0  # a closed vote stays closed
    assert storage.vote_of(message, "late") is None
    row = storage.cover_message(message)
    assert (row.winner, row.close_reason) == (2, "timer")


def test_a_close_reason_must_be_known(storage: Storage, message: str):
    with pytest.raises(ValueError, match="reason must be one of"):
        storage.close_vote(message, winner=None, reason="bored")
    assert storage.cover_message(message).status == "open"
