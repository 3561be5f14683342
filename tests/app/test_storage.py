"""Storage on real SQLite files and a real PostgreSQL (every test asking for ``storage`` runs on
both: tests/postgres.py): migrations, requests and candidates, snapshots and votes."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.app.prompts import Prompt
from bot.app.records import CandidateRecord, StoredParams
from bot.app.storage import MIGRATIONS, SCHEMA_MAX_CANDIDATES, Storage
from tests.postgres import INTEGRITY_ERRORS


class Clock:
    """Timestamps one second apart, so ordering by time is deterministic."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "cover.db"  # parents do not exist yet


@pytest.fixture
def open_storage(db_target: Path | str) -> Iterator[Callable[[], Storage]]:
    """Opens Storage on the same database as often as a test likes; closes them all afterwards."""
    opened: list[Storage] = []

    def _open() -> Storage:
        storage = Storage(db_target, now=Clock())
        opened.append(storage)
        return storage

    yield _open
    for storage in opened:
        storage.close()


@pytest.fixture
def storage(open_storage: Callable[[], Storage]) -> Storage:
    return open_storage()


PARAMS = StoredParams(width=128, height=128, steps=20, guidance=7.5, style="mix")


def record(storage: Storage, **changes) -> str:
    fields = dict(
        source="discord",
        user_id="111",
        playlist_id="37i9dQZF1DX0XUsuxWHRQd",
        playlist_name="late night drive 🌙",
        model="embedded",
        params=PARAMS,
        prompts=[
            Prompt("late night drive playlist cover image", "", "seed", 7),
            Prompt("late night drive, synthwave", "blurry", "genre", 8),
        ],
        guild_id="222",
        channel_id="333",
    )
    fields.update(changes)
    return storage.record_request(**fields)


def schema(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


ALL_MIGRATIONS = [
    ("playlist_cover", "m001_initial"),
    ("playlist_cover", "m002_spotify_accounts"),
    ("playlist_cover", "m003_request_resumes"),
    ("playlist_cover", "m004_close_reasons"),
    ("playlist_cover", "m005_community_styles"),
    ("playlist_cover", "m006_spotify_account_ids"),
    ("playlist_cover", "m007_params_community"),
]


def migration_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT migration_set, name FROM _sqlite_migrations").fetchall()


# --- migrations -----------------------------------------------------------------------------------


@pytest.mark.sqlite_only(
    "the file, WAL and PRAGMAs are SQLite's; test_storage_postgres.py checks its tables"
)
def test_opening_creates_the_file_the_tables_wal_and_foreign_keys(storage: Storage, db_path: Path):
    assert db_path.is_file()
    names = set(storage.db.table_names())
    assert {"requests", "candidates", "playlist_snapshots", "cover_messages", "votes"} <= names
    assert storage.db.journal_mode == "wal"
    assert storage.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert migration_rows(db_path) == ALL_MIGRATIONS


@pytest.mark.sqlite_only("reads sqlite_master; test_storage_postgres.py has PostgreSQL's")
def test_migrations_run_twice_safely(open_storage, db_path: Path):
    first = open_storage()
    before = schema(db_path)
    first.migrate()  # again on the same connection
    first.close()
    second = open_storage()  # and again from a fresh open of the same file
    second.migrate()

    assert schema(db_path) == before
    assert migration_rows(db_path) == ALL_MIGRATIONS
    assert [m.name for m in MIGRATIONS.pending(second.db)] == []


def test_a_database_of_the_first_release_is_upgraded_in_place(db_path: Path):
    from sqlite_utils import Database

    db_path.parent.mkdir(parents=True)
    old = Database(db_path)
    MIGRATIONS.apply(old, stop_before="m002_spotify_accounts")
    old.close()
    assert migration_rows(db_path) == ALL_MIGRATIONS[:1]
    with Storage(db_path) as storage:
        request_id = record(storage)  # the old tables work, the new ones are there
        assert {"link_states", "spotify_accounts", "spotify_uploads"} <= set(
            storage.db.table_names()
        )
        assert storage.request(request_id).status == "queued"
    assert migration_rows(db_path) == ALL_MIGRATIONS


def test_stored_params_from_before_m007_read_community_under_its_request_name(db_path: Path):
    from sqlite_utils import Database

    db_path.parent.mkdir(parents=True)
    old = Database(db_path)
    MIGRATIONS.apply(old, stop_before="m007_params_community")
    for n, (key, value) in enumerate([("community_style", True), ("community_style", False)]):
        params = {"width": 64, "height": 64, "steps": 4, "guidance": 1.0, key: value}
        old["requests"].insert(
            dict(id=f"r{n}", created_at="2026-01-01", source="discord", user_id="u",
                 playlist_id="p", playlist_name="n", model="embedded",
                 params=json.dumps(params), prompts="[]", status="done")
        )  # fmt: skip
    old.close()
    with Storage(db_path) as storage:
        assert [storage.request(f"r{n}").params.community for n in (0, 1)] == [True, False]
        [raw] = storage._rows("SELECT params FROM requests WHERE id = 'r0'")
        assert "community_style" not in json.loads(raw["params"])


# --- requests and candidates ----------------------------------------------------------------------


def test_a_request_round_trips_with_its_json_fields(storage: Storage):
    request_id = record(storage)

    row = storage.request(request_id)
    assert row is not None
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    assert row.status == "queued"
    assert row.playlist_name == "late night drive 🌙"
    assert row.params == PARAMS
    assert row.prompts[1] == Prompt("late night drive, synthwave", "blurry", "genre", 8)
    assert row.timings == {} and row.finished_at is None
    assert (row.guild_id, row.channel_id) == ("222", "333")
    assert row.created_at == "2026-03-01T12:00:01.000+00:00"

    storage.finish_request(request_id, status="done", timings={"read_s": 0.2, "generate_s": 1.5})
    row = storage.request(request_id)
    assert row.status == "done"
    assert row.timings == {"read_s": 0.2, "generate_s": 1.5}
    assert row.error is None
    assert row.finished_at > row.created_at


def test_a_failed_request_keeps_its_error(storage: Storage):
    request_id = record(storage, guild_id=None, channel_id=None, source="cli")
    storage.finish_request(request_id, status="failed", timings={}, error="GPU out of memory")

    row = storage.request(request_id)
    assert (row.status, row.error, row.timings) == ("failed", "GPU out of memory", {})
    assert row.guild_id is None


def test_unknown_requests(storage: Storage):
    assert storage.request("nope") is None
    assert storage.candidates("nope") == []
    with pytest.raises(KeyError, match="nope"):
        storage.finish_request("nope", status="done", timings={})
    with pytest.raises(KeyError, match="nope"):
        storage.add_candidates("nope", [candidate(1)])


def candidate(index: int, **changes) -> CandidateRecord:
    row = dict(
        request_id="",  # add_candidates files it under the request it is given
        index=index,
        prompt=f"prompt {index}",
        negative="blurry",
        seed=100 + index,
        png_path=f"covers/x/candidate-{index}.png",
        jpeg_path=f"covers/x/candidate-{index}.jpg",
        black_retries=0,
    )
    row.update(changes)
    return CandidateRecord(**row)


def test_candidates_round_trip_in_order(storage: Storage):
    request_id = record(storage)
    storage.add_candidates(
        request_id, [candidate(2, black_retries=1, seed=2**63 - 1), candidate(1)]
    )

    rows = storage.candidates(request_id)
    assert [r.index for r in rows] == [1, 2]
    assert rows[0] == dataclasses.replace(candidate(1), request_id=request_id)
    assert rows[1].black_retries == 1 and rows[1].seed == 2**63 - 1

    storage.add_candidates(request_id, [candidate(1, prompt="redone")])  # replaces, no duplicate
    assert [r.prompt for r in storage.candidates(request_id)] == ["redone", "prompt 2"]


def test_candidate_values_are_checked(storage: Storage):
    request_id = record(storage)
    with pytest.raises(ValueError, match="seed"):
        storage.add_candidates(request_id, [candidate(1, seed=2**64)])
    with pytest.raises(ValueError, match="index"):
        storage.add_candidates(request_id, [candidate(0)])
    assert storage.candidates(request_id) == []


# --- snapshots ------------------------------------------------------------------------------------


def playlist_json(**changes) -> dict:
    data = {
        "id": "37i9dQZF1DX0XUsuxWHRQd",
        "name": "late night drive",
        "snapshot_id": "MTAsZDVmZDQ1",
        "description": "neon &amp; slow jams",
        "owner": {"id": "nightowl"},
        "items": {"total": 1, "items": [{"item": {"name": "Tail Lights", "artists": []}}]},
        "artists": [{"id": "a1", "name": "Velvet Odessa", "genres": ["synthwave"]}],
    }
    data.update(changes)
    return data


def test_snapshots_are_idempotent(storage: Storage):
    storage.save_snapshot(playlist_json())
    first = storage.latest_snapshot("37i9dQZF1DX0XUsuxWHRQd")
    storage.save_snapshot(playlist_json())  # same content again
    storage.save_snapshot({**playlist_json(), "fetched_at": "whenever"})  # our own key ignored

    rows = list(storage.db.query("SELECT * FROM playlist_snapshots"))
    assert len(rows) == 1
    assert rows[0]["snapshot_id"] == "MTAsZDVmZDQ1"
    latest = storage.latest_snapshot("37i9dQZF1DX0XUsuxWHRQd")
    assert latest == {**playlist_json(), "fetched_at": latest["fetched_at"]}
    assert latest["fetched_at"] > first["fetched_at"]  # seen again later
    assert rows[0]["first_fetched_at"] == first["fetched_at"]


def test_latest_snapshot_follows_changes(storage: Storage):
    storage.save_snapshot(playlist_json())
    storage.save_snapshot(playlist_json(name="late night drive II", snapshot_id="NEW"))
    assert storage.latest_snapshot("37i9dQZF1DX0XUsuxWHRQd")["name"] == "late night drive II"
    storage.save_snapshot(playlist_json())  # reverted on Spotify: the old content is latest again
    assert storage.latest_snapshot("37i9dQZF1DX0XUsuxWHRQd")["name"] == "late night drive"

    assert storage.db.execute("SELECT COUNT(*) FROM playlist_snapshots").fetchone()[0] == 2
    assert storage.latest_snapshot("0000000000000000000000") is None


def test_a_snapshot_needs_an_id(storage: Storage):
    with pytest.raises(ValueError, match="'id'"):
        storage.save_snapshot({"name": "no id"})


def test_a_latest_snapshot_reads_back_as_playlist_facts(storage: Storage, tmp_path: Path):
    import json

    from bot.app.playlist import load_snapshot

    storage.save_snapshot(playlist_json())
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(storage.latest_snapshot("37i9dQZF1DX0XUsuxWHRQd")), "utf-8")
    facts = load_snapshot(path)
    assert (facts.name, facts.description, facts.tracks[0].name) == (
        "late night drive",
        "neon & slow jams",
        "Tail Lights",
    )


# --- votes ----------------------------------------------------------------------------------------


@pytest.fixture
def message(storage: Storage) -> str:
    request_id = record(storage)
    storage.register_cover_message(
        message_id="9001", channel_id="333", request_id=request_id, candidate_count=4
    )
    return "9001"


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


# --- linked Spotify accounts ----------------------------------------------------------------------


def test_a_link_state_is_taken_once(storage: Storage):
    later = datetime(2030, 1, 1, tzinfo=UTC)
    storage.save_link_state(
        state_hash="h1", discord_user_id="111", verifier=b"sealed", expires_at=later
    )
    row = storage.take_link_state("h1")
    assert (row.discord_user_id, bytes(row.verifier)) == ("111", b"sealed")
    assert row.expires_at.startswith("2030-01-01T00:00:00")
    assert storage.take_link_state("h1") is None
    assert storage.take_link_state("unknown") is None


def test_one_pending_link_per_person_and_expired_ones_are_swept(storage: Storage):
    past = datetime(2000, 1, 1, tzinfo=UTC)
    later = datetime(2030, 1, 1, tzinfo=UTC)
    storage.save_link_state(
        state_hash="old", discord_user_id="111", verifier=b"v", expires_at=later
    )
    storage.save_link_state(
        state_hash="stale", discord_user_id="222", verifier=b"v", expires_at=past
    )
    storage.save_link_state(
        state_hash="new", discord_user_id="111", verifier=b"v", expires_at=later
    )
    assert storage.take_link_state("old") is None  # replaced by the newer link
    assert storage.take_link_state("stale") is None  # swept: expired
    assert storage.take_link_state("new") is not None


def link_account(storage: Storage, user: str = "111", tokens: bytes = b"sealed-1") -> None:
    storage.save_spotify_account(
        discord_user_id=user,
        spotify_user_id="spot",
        display_name="Spot",
        scopes="playlist-read-private ugc-image-upload",
        tokens=tokens,
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def test_an_account_links_refreshes_relinks_and_unlinks(storage: Storage):
    link_account(storage)
    row = storage.spotify_account("111")
    assert (row.spotify_user_id, bytes(row.tokens), row.refreshed_at) == (
        "spot",
        b"sealed-1",
        None,
    )
    later = datetime(2031, 1, 1, tzinfo=UTC)
    assert storage.update_spotify_tokens("111", tokens=b"sealed-2", expires_at=later, scopes="x")
    row = storage.spotify_account("111")
    assert bytes(row.tokens) == b"sealed-2" and row.refreshed_at is not None
    assert row.expires_at.startswith("2031")
    link_account(storage, tokens=b"sealed-3")  # linking again replaces the row
    assert bytes(storage.spotify_account("111").tokens) == b"sealed-3"
    assert storage.spotify_account("111").refreshed_at is None
    assert storage.delete_spotify_account("111") is True
    assert storage.spotify_account("111") is None
    assert storage.delete_spotify_account("111") is False
    assert not storage.update_spotify_tokens("111", tokens=b"t", expires_at=later, scopes="x")


@pytest.mark.sqlite_only(
    "secure_delete on the file's bytes; test_storage_postgres.py has PostgreSQL's"
)
def test_an_unlinked_accounts_tokens_leave_the_file(storage: Storage, db_path: Path):
    blob = b"sealed-token-blob-" + bytes(range(48, 122))
    link_account(storage, tokens=blob)

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))

    assert blob in on_disk()
    storage.delete_spotify_account("111")
    assert blob not in on_disk()


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


def test_unfinished_requests_are_the_queued_ones_of_a_source_oldest_first(storage: Storage):
    first, second = record(storage), record(storage)
    record(storage, source="cli")
    done = record(storage)
    storage.finish_request(done, status="done", timings={})
    rows = storage.unfinished_requests("discord")
    assert [row.id for row in rows] == [first, second]
    assert rows[0].params.style == "mix"  # JSON columns come back decoded
    assert len(storage.unfinished_requests("cli")) == 1


def test_resumptions_are_counted_per_request(storage: Storage):
    request_id, other = record(storage), record(storage)
    assert [storage.note_resume(request_id) for _ in range(3)] == [1, 2, 3]
    assert storage.note_resume(other) == 1
    with pytest.raises(KeyError, match="no request 'missing'"):
        storage.note_resume("missing")


def test_the_last_request_time_is_per_user_and_source(storage: Storage):
    assert storage.last_request_at("111", "discord") is None
    record(storage)
    latest = record(storage)
    record(storage, user_id="222")
    record(storage, source="cli")
    stamp = storage.request(latest).created_at
    assert storage.last_request_at("111", "discord") == datetime.fromisoformat(stamp)
    assert storage.last_request_at("333", "discord") is None


def test_json_is_kept_as_written_and_hashed_as_utf8(storage: Storage):
    """Non-ASCII text is stored as itself, and a snapshot's hash is of its canonical UTF-8 JSON
    (sorted keys, no spaces), so hashes match what any other tool computes for the same text."""
    import hashlib
    import json

    from bot.app.storage import content_hash

    request_id = record(storage, params=dataclasses.replace(PARAMS, style="café ☕"))
    [raw] = storage._rows("SELECT params FROM requests WHERE id = ?", [request_id])
    assert "café ☕" in raw["params"]
    playlist = {"name": "Ключ 🔑", "id": "p", "fetched_at": "ignored"}
    canonical = '{"id":"p","name":"Ключ 🔑"}'
    assert content_hash(playlist) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert json.loads(canonical) == {k: v for k, v in playlist.items() if k != "fetched_at"}


# --- community styles (m005, docs/dpo.md) -------------------------------------------------------


def test_a_database_before_community_styles_is_upgraded_and_keeps_its_votes(db_path: Path):
    from sqlite_utils import Database

    db_path.parent.mkdir(parents=True)
    old = Database(db_path)
    MIGRATIONS.apply(old, stop_before="m005_community_styles")
    old.close()
    with Storage(db_path) as storage:
        request_id = record(storage)
        storage.register_cover_message(
            message_id="m1", channel_id="c", request_id=request_id, candidate_count=2
        )
        storage.cast_vote(message_id="m1", user_id="u", choice=2)
        storage.close_vote("m1", winner=2, reason="requester")
        assert storage.community_style("g") is None
        storage.set_community_style("g", lora_path="/l/a.safetensors", base_model="embedded",
                                    set_by="admin")  # fmt: skip
        storage.set_community_style("g", lora_path="/l/b.safetensors", base_model="embedded",
                                    set_by="admin2")  # fmt: skip
        style = storage.community_style("g")
        assert (style.lora_path, style.set_by) == ("/l/b.safetensors", "admin2")
        [vote], malformed = storage.closed_votes()
        assert (vote.message.winner, vote.tally, malformed) == (2, {1: 0, 2: 1}, 0)
        assert storage.clear_community_style("g") and not storage.clear_community_style("g")
        with pytest.raises(ValueError, match="needs a guild_id"):
            storage.set_community_style("", lora_path="x", base_model="embedded", set_by="a")
    assert migration_rows(db_path) == ALL_MIGRATIONS
