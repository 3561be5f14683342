"""Storage promises an independent mutation sample found untested (issue 36): secure delete on
the file's bytes, an unlink that takes the pending link with it, the vote export's window and
tally, and a context manager that closes. Each test names the mutant it was seen to kill."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app.prompts import Prompt
from bot.app.records import CandidateRecord, StoredParams
from bot.app.storage import Storage, StorageUnavailable, _reason
from tests.app.storage_helpers import Clock

TOKENS = b"sealed-token-blob-" + bytes(range(48, 122))  # distinctive: found by a byte search
LATER = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def storage(
    db_engine: str, db_target: Path | str, tmp_path: Path, clock: Clock
) -> Iterator[Storage]:
    target = tmp_path / "cover.db" if db_engine == "sqlite" else db_target
    with Storage(target, now=clock) as storage:
        yield storage


def file_bytes(path: Path) -> bytes:
    """The database file and its -wal/-shm companions, as they are on disk."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def link(storage: Storage, user: str = "111", tokens: bytes = TOKENS) -> None:
    storage.save_spotify_account(
        discord_user_id=user,
        spotify_user_id=f"spot-{user}",
        display_name=None,
        scopes="playlist-read-private",
        tokens=tokens,
        expires_at=LATER,
    )


@pytest.fixture
def sqlite_without_secure_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new connection starts with ``secure_delete`` off, as on a SQLite built without
    SQLITE_SECURE_DELETE (python.org's and Homebrew's builds; Debian's has it on, which is why
    removing the pragma went unnoticed here)."""
    connect = sqlite3.connect

    def connect_without_secure_delete(*args, **kwargs) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_without_secure_delete)


@pytest.mark.usefixtures("sqlite_without_secure_delete")
def test_unlinked_tokens_leave_the_file_even_where_sqlite_keeps_deleted_rows(tmp_path: Path):
    """Kills: deleting ``PRAGMA secure_delete = ON`` in ``Storage._open``."""
    # The check can see a leftover: a plain connection with the same default keeps the bytes.
    plain_path = tmp_path / "plain.db"
    plain = sqlite3.connect(plain_path)
    plain.execute("CREATE TABLE t (b BLOB)")
    plain.execute("INSERT INTO t VALUES (?)", [TOKENS])
    plain.commit()
    plain.execute("DELETE FROM t")
    plain.commit()
    plain.close()
    assert TOKENS in plain_path.read_bytes()

    path = tmp_path / "cover.db"
    with Storage(path) as storage:
        link(storage)
        link(storage, user="222", tokens=b"another-user")  # the page keeps other rows
        assert TOKENS in file_bytes(path)
        assert storage.delete_spotify_account("111")
        assert TOKENS not in file_bytes(path)
        assert bytes(storage.spotify_account("222").tokens) == b"another-user"


def test_unlinking_drops_the_persons_pending_link_and_nobody_elses(storage: Storage):
    """Kills: deleting ``DELETE FROM link_states …`` in ``delete_spotify_account``."""
    link(storage)
    for user in ("111", "222"):
        storage.save_link_state(
            state_hash=f"h{user}", discord_user_id=user, verifier=b"v", expires_at=LATER
        )
    assert storage.delete_spotify_account("111")
    assert storage.take_link_state("h111") is None  # a link begun before the unlink is void
    assert storage.take_link_state("h222").discord_user_id == "222"


def test_a_context_manager_closes_the_connection(tmp_path: Path):
    """Kills: ``__exit__`` without ``self.close()``."""
    with Storage(tmp_path / "cover.db") as storage:
        assert storage.spotify_account("111") is None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        storage.db.execute("SELECT 1")


def request(storage: Storage) -> str:
    """A recorded request with three candidates."""
    request_id = storage.record_request(
        source="discord",
        user_id="111",
        playlist_id="p",
        playlist_name="p",
        model="embedded",
        params=StoredParams(width=64, height=64, steps=4, guidance=1.0),
        prompts=[Prompt("t", "", "seed", 1)],
    )
    storage.add_candidates(
        request_id,
        [
            CandidateRecord(
                request_id=request_id,
                index=i,
                prompt=f"prompt {i}",
                negative="",
                seed=i,
                png_path=f"c{i}.png",
                jpeg_path=f"c{i}.jpg",
                black_retries=0,
            )
            for i in range(1, 4)
        ],
    )
    return request_id


def closed_vote(storage: Storage, message_id: str, votes: dict[str, int], *, reason: str) -> str:
    """A three-candidate post voted on and closed; returns its ``closed_at``."""
    request_id = request(storage)
    storage.register_cover_message(
        message_id=message_id, channel_id="c", request_id=request_id, candidate_count=3
    )
    for user, choice in votes.items():
        storage.cast_vote(message_id=message_id, user_id=user, choice=choice)
    storage.close_vote(message_id, winner=max(votes.values()), reason=reason)
    return storage.cover_message(message_id).closed_at


def test_the_vote_export_window_is_since_inclusive_until_exclusive(storage: Storage):
    """Kills: dropping the ``until`` filter, ``<`` → ``<=`` on it, ``>=`` → ``>`` on ``since``."""
    stamps = [closed_vote(storage, f"m{n}", {"u": 1}, reason="timer") for n in range(1, 4)]
    moments = [datetime.fromisoformat(stamp) for stamp in stamps]

    def window(**bounds) -> list[str]:
        return [vote.message.message_id for vote in storage.closed_votes(**bounds)[0]]

    assert window() == ["m1", "m2", "m3"]
    assert window(until=moments[1]) == ["m1"]  # closed at `until`: left for the next export
    assert window(since=moments[1]) == ["m2", "m3"]  # closed at `since`: in
    assert window(since=moments[0], until=moments[2]) == ["m1", "m2"]
    assert window(since=moments[2], until=moments[0]) == []


def test_the_vote_export_carries_each_votes_tally(storage: Storage):
    """Kills: building a ``ClosedVote`` in ``closed_votes`` without its ``tally`` (or with
    ``candidates`` None); every candidate
    is present, unvoted ones with 0, and a vote closed because its post was deleted is left
    out."""
    closed_vote(storage, "m1", {"a": 2, "b": 2, "c": 3}, reason="timer")
    closed_vote(storage, "gone", {"a": 1}, reason="deleted")
    [vote], _ = storage.closed_votes()
    assert vote.message.message_id == "m1"
    assert vote.tally == {1: 0, 2: 2, 3: 1}
    assert list(vote.candidates) == storage.candidates(vote.request.id)  # mutmut: → None
    assert [c.index for c in vote.candidates] == [1, 2, 3]


# -- found by the project's own sample (tests.mutation_sample, seed 15) ------------------------


def test_a_write_waits_only_as_long_as_the_busy_timeout(tmp_path: Path):
    """Another program holding the write lock: the write gives up after ``busy_timeout_s``, not
    sqlite3's default 5 s. Kills dropping ``timeout=self.busy_timeout_s`` in ``_open``."""
    path = tmp_path / "cover.db"
    with Storage(path, busy_timeout_s=0.1) as storage:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(StorageUnavailable, match=r"held its lock for over 0\.1 s"):
                link(storage)
            assert time.monotonic() - started < 2.5
        finally:
            other.execute("ROLLBACK")
            other.close()


def test_an_os_error_without_a_reason_is_named_by_its_type():
    """Kills ``type(exc).__name__`` → ``type(None).__name__`` in ``_reason``."""
    assert _reason(FileNotFoundError()) == "FileNotFoundError"
    assert _reason(OSError(13, "Permission denied")) == "Permission denied"


def test_a_requests_cover_post_is_found_or_none(storage: Storage, clock: Clock):
    """Kills the two ``cover_message_of`` mutants no test reached (its query and its None)."""
    request_id = request(storage)
    assert storage.cover_message_of(request_id) is None
    storage.register_cover_message(
        message_id="m1", channel_id="c", request_id=request_id, candidate_count=2
    )
    assert storage.cover_message_of(request_id).message_id == "m1"
    assert storage.cover_message_of("unknown") is None


@pytest.mark.sqlite_only("opens the file with the sqlite3 module")
def test_a_snapshot_row_names_its_playlist_for_a_person_reading_the_file(
    storage: Storage, tmp_path: Path
):
    """The ``name`` and ``snapshot_id`` columns are for the sqlite3 shell (nothing reads them
    back). Kills ``str(playlist.get("name") or "")`` → ``str(None)``."""
    storage.save_snapshot({"id": "p1", "name": "late night drive", "snapshot_id": "s9"})
    storage.save_snapshot({"id": "p2", "snapshot_id": 7})  # no name; a snapshot_id not a string
    with sqlite3.connect(tmp_path / "cover.db") as conn:
        rows = conn.execute(
            "SELECT playlist_id, name, snapshot_id FROM playlist_snapshots ORDER BY playlist_id"
        ).fetchall()
    assert rows == [("p1", "late night drive", "s9"), ("p2", "", None)]


@pytest.mark.parametrize("playlist_id", [None, "", 42])
def test_a_snapshot_needs_an_id_string(storage: Storage, playlist_id):
    """Kills ``not isinstance(playlist_id, str) or not playlist_id`` → ``and`` (a truthy id of
    another type got in), found by tests.mutation_sample_ast."""
    with pytest.raises(ValueError, match="'id' string"):
        storage.save_snapshot({"id": playlist_id, "name": "n"})
