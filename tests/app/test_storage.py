"""Storage on real SQLite files and a real PostgreSQL (every test asking for ``storage`` runs on
both: tests/postgres.py): migrations, requests and candidates, snapshots and votes."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app.prompts import Prompt
from bot.app.records import CandidateRecord
from bot.app.storage import MIGRATIONS, Storage
from tests.app.storage_helpers import PARAMS, record


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
    ("playlist_cover", "m008_server_settings"),
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
            dict(
                id=f"r{n}",
                created_at="2026-01-01",
                source="discord",
                user_id="u",
                playlist_id="p",
                playlist_name="n",
                model="embedded",
                params=json.dumps(params),
                prompts="[]",
                status="done",
            )
        )
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
        storage.set_community_style(
            "g", lora_path="/l/a.safetensors", base_model="embedded", set_by="admin"
        )
        storage.set_community_style(
            "g", lora_path="/l/b.safetensors", base_model="embedded", set_by="admin2"
        )
        style = storage.community_style("g")
        assert (style.lora_path, style.set_by) == ("/l/b.safetensors", "admin2")
        [vote], malformed = storage.closed_votes()
        assert (vote.message.winner, vote.tally, malformed) == (2, {1: 0, 2: 1}, 0)
        assert storage.clear_community_style("g") and not storage.clear_community_style("g")
        with pytest.raises(ValueError, match="needs a guild_id"):
            storage.set_community_style("", lora_path="x", base_model="embedded", set_by="a")
    assert migration_rows(db_path) == ALL_MIGRATIONS
