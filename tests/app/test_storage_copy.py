"""``python -m bot db copy``: a SQLite file with every table filled, linked accounts' tokens
encrypted, moved into a real PostgreSQL (tests/postgres.py) and read back through Storage."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from bot.__main__ import main
from bot.app.records import CandidateRecord
from bot.app.storage import Storage
from bot.app.storage.copy import TABLES
from tests.app.storage_helpers import Clock, record
from tests.app.test_storage import playlist_json

LATER = datetime(2030, 1, 1, tzinfo=UTC)
KEY = Fernet.generate_key()


def fill(path: Path) -> dict[str, str]:
    """Every table at least one row; returns the ids to look for."""
    with Storage(path, now=Clock()) as storage:
        request_id = record(storage)
        storage.add_candidates(
            request_id,
            [
                CandidateRecord(request_id, i, f"prompt {i}", "", 2**63 - i, f"{i}.png", None)
                for i in (1, 2)
            ],
        )
        storage.save_snapshot(playlist_json())
        storage.register_cover_message(
            message_id="m1", channel_id="c", request_id=request_id, candidate_count=2
        )
        storage.cast_vote(message_id="m1", user_id="alice", choice=2)
        storage.cast_vote(message_id="m1", user_id="bob", choice=1)
        storage.close_vote("m1", winner=2, reason="timer")
        storage.save_link_state(
            state_hash="h",
            discord_user_id="carol",
            verifier=Fernet(KEY).encrypt(b"verifier"),
            expires_at=LATER,
        )
        storage.save_spotify_account(
            discord_user_id="alice",
            spotify_user_id="spot-alice",
            display_name="Alice 🎧",
            scopes="playlist-modify-private ugc-image-upload",
            tokens=Fernet(KEY).encrypt(b'{"access_token": "a", "refresh_token": "r"}'),
            expires_at=LATER,
        )
        storage.record_upload(
            message_id="m1",
            request_id=request_id,
            playlist_id="p",
            discord_user_id="alice",
            spotify_user_id="spot-alice",
            candidate=2,
            jpeg_bytes=1234,
            status="applied",
        )
        storage.set_community_style("g1", lora_path="/l", base_model="sd15", set_by="admin")
        storage.change_server_settings(
            "g1",
            lambda s: dataclasses.replace(s, banned_words=("drive", "日本"), daily_limit=2),
            by="admin",
        )
    with sqlite3.connect(path) as conn:
        for table in TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table
    return {"request": request_id}


def test_every_table_moves_with_its_tokens_still_encrypted_and_a_second_run_adds_nothing(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
):
    source = tmp_path / "cover.db"
    ids = fill(source)
    url = postgres_url.replace("postgres@", "postgres:hunter2@")  # trust auth ignores it

    assert main(["db", "copy", str(source), url]) == 0
    out, err = capsys.readouterr()
    assert "Copied 10 tables" in out and "(0 new)" not in out
    assert "spotify_accounts: 1/1 rows" in err  # the progress line
    assert "hunter2" not in out + err and "postgres:***@" in out

    with Storage(source) as sqlite, Storage(postgres_url) as postgres:
        assert postgres.request(ids["request"]) == sqlite.request(ids["request"])
        assert postgres.candidates(ids["request"]) == sqlite.candidates(ids["request"])
        assert postgres.latest_snapshot("37i9dQZF1DX0XUsuxWHRQd") == sqlite.latest_snapshot(
            "37i9dQZF1DX0XUsuxWHRQd"
        )
        assert postgres.cover_message("m1") == sqlite.cover_message("m1")
        assert postgres.tally("m1") == {1: 1, 2: 1}
        account = postgres.spotify_account("alice")
        assert account == sqlite.spotify_account("alice")
        assert Fernet(KEY).decrypt(account.tokens) == b'{"access_token": "a", "refresh_token": "r"}'
        assert postgres.uploads("m1") == sqlite.uploads("m1")
        assert postgres.community_style("g1") == sqlite.community_style("g1")
        assert postgres.server_settings("g1") == sqlite.server_settings("g1")
        assert postgres.server_settings("g1").banned_words == ("drive", "日本")
        [state] = postgres._rows("SELECT verifier FROM link_states WHERE state_hash = 'h'")
        assert Fernet(KEY).decrypt(state["verifier"]) == b"verifier"
        [upload] = postgres.uploads("m1")
        later = postgres.record_upload(
            message_id="m1",
            request_id=ids["request"],
            playlist_id="p",
            discord_user_id="alice",
            spotify_user_id=None,
            candidate=None,
            jpeg_bytes=None,
            status="failed",
        )
        assert later > upload.id  # the id sequence continues after the copied rows
        postgres.db.execute("DELETE FROM spotify_uploads WHERE id = ?", [later])

    # Again: nothing new; the rows still match.
    capsys.readouterr()
    assert main(["db", "copy", str(source), postgres_url]) == 0
    assert "(0 new)" in capsys.readouterr().out


def test_a_target_with_rows_of_its_own_fails_the_check_in_one_line(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
):
    source = tmp_path / "cover.db"
    fill(source)
    with Storage(postgres_url) as postgres:
        postgres.set_community_style("g2", lora_path="/x", base_model="sd15", set_by="someone")
    assert main(["db", "copy", str(source), postgres_url]) == 1
    err = capsys.readouterr().err
    assert "The copy of community_styles does not match: 1 rows in the SQLite file, 2" in err


def test_a_missing_file_or_a_target_that_is_not_postgres_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["db", "copy", str(tmp_path / "nothing.db"), "postgresql://u@h/d"]) == 1
    assert "There is no SQLite database at" in capsys.readouterr().err
    assert not (tmp_path / "nothing.db").exists()  # not created by looking
    fill(tmp_path / "cover.db")
    assert main(["db", "copy", str(tmp_path / "cover.db"), str(tmp_path / "other.db")]) == 1
    assert "must be a postgresql://" in capsys.readouterr().err
