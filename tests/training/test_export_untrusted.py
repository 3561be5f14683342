"""Exports read the bot's database as untrusted input (issue 31): request ids cannot steer file
names out of ``--out``, malformed rows are skipped and counted, image paths naming anything but
a sane image are not copied, and a request posted twice gives the pairs of its last post only."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app.storage import Storage
from tests.training.test_dpo import CAPTION, _clock, _cover, _votes
from training.__main__ import main
from training.export import export_pairs, export_votes, file_stem


def _rename_request(db: Path, old_id: str, new_id: str) -> None:
    """What a hand-edited or hostile database holds: an id that is a path."""
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA foreign_keys = OFF")
        for table, column in (
            ("requests", "id"),
            ("candidates", "request_id"),
            ("cover_messages", "request_id"),
        ):
            raw.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", [new_id, old_id])


def _one_vote(tmp_path: Path, name: str = "one") -> tuple[Path, str]:
    db = tmp_path / "bot.db"
    with Storage(db, now=_clock(datetime(2026, 3, 1, tzinfo=UTC))) as storage:
        message = _cover(storage, tmp_path, name, [CAPTION] * 2)
        _votes(storage, message, [2, 2])
        storage.close_vote(message, winner=2, reason="requester")
        request_id = storage.cover_message(message).request_id
    return db, request_id


@pytest.mark.parametrize("export", ["export-pairs", "export-votes"])
def test_a_request_id_that_is_a_path_stays_inside_out(tmp_path, export):
    db, request_id = _one_vote(tmp_path)
    _rename_request(db, request_id, "../../escaped")
    out = tmp_path / "deep" / "er" / "out"
    assert main([export, "--db", str(db), "--out", str(out)]) == 0
    assert [p for p in tmp_path.rglob("*escaped*") if out not in p.parents] == []
    written = [p for p in out.rglob("*") if p.suffix == ".png"]
    assert written and all(out in p.resolve().parents for p in written)


@pytest.mark.parametrize("params", ["[]", "null", '"text"'])
def test_malformed_params_are_skipped_and_counted(tmp_path, capsys, params):
    db, request_id = _one_vote(tmp_path)
    with Storage(db) as storage:  # a second, well-formed vote is still exported
        message = _cover(storage, tmp_path, "two", [CAPTION] * 2)
        _votes(storage, message, [1])
        storage.close_vote(message, winner=1, reason="timer")
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE requests SET params = ? WHERE id = ?", [params, request_id])
    out = tmp_path / "pairs"
    assert main(["export-pairs", "--db", str(db), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Exported 1 pairs from 1 votes" in captured.out
    assert "1 vote(s) had malformed rows in the database and were skipped." in captured.err


def test_two_posts_of_one_request_give_the_last_posts_pairs_only(tmp_path, capsys):
    db = tmp_path / "bot.db"
    with Storage(db, now=_clock(datetime(2026, 3, 1, tzinfo=UTC))) as storage:
        first = _cover(storage, tmp_path, "twice", [CAPTION] * 2)
        request_id = storage.cover_message(first).request_id
        storage.register_cover_message(
            message_id="m-again", channel_id="c", request_id=request_id, candidate_count=2
        )
        _votes(storage, first, [1, 1])  # 1 > 2 on the first post
        storage.close_vote(first, winner=1, reason="requester")
        _votes(storage, "m-again", [2, 2, 2])  # 2 > 1 on the later one
        storage.close_vote("m-again", winner=2, reason="timer")
    result = export_pairs(db, tmp_path / "pairs")
    rows = [
        json.loads(line) for line in (tmp_path / "pairs" / "pairs.jsonl").read_text().splitlines()
    ]
    assert [(r["message_id"], r["winner_index"], r["loser_index"]) for r in rows] == [
        ("m-again", 2, 1)
    ]
    assert result.superseded == 1
    votes = export_votes(db, tmp_path / "votes")
    assert (votes.exported, votes.superseded) == (1, 1)


def test_an_image_path_naming_a_device_is_not_read(tmp_path):
    db, _ = _one_vote(tmp_path)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE candidates SET png_path = '/dev/zero' WHERE idx = 2")
    result = export_pairs(db, tmp_path / "pairs")  # before: copied /dev/zero until the disk filled
    assert result.pairs == 0 and "/dev/zero" in result.missing


def test_file_stems_never_hold_a_separator_and_keep_distinct_ids_apart():
    assert file_stem("0123abcd", 2) == "0123abcd-2"
    stems = {file_stem(i, 1) for i in ("../../x", "..-..-x", "__/__/x", "a" * 500, "a" * 501)}
    assert len(stems) == 5 and not any("/" in s or s.startswith(".") for s in stems)
