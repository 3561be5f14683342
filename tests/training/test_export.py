"""``python -m training export-votes``: closed votes' winners (and nothing else) become a dataset."""

from __future__ import annotations

import json

from PIL import Image

from bot.app.records import CandidateRecord, StoredParams
from bot.app.storage import Storage
from training.__main__ import main
from training.data import load_examples


def _request(storage: Storage, tmp_path, name: str, count: int = 3) -> str:
    request_id = storage.record_request(
        source="discord",
        user_id="u1",
        playlist_id=f"pl-{name}",
        playlist_name=name,
        model="embedded",
        params=StoredParams(width=16, height=16, steps=4, guidance=1.0),
        prompts=[],
    )
    candidates = []
    for index in range(1, count + 1):
        png = tmp_path / f"{name}-{index}.png"
        Image.new("RGB", (16, 16), (index * 60, 0, 0)).save(png)
        prompt = f"{name} {index} playlist cover image"
        candidates.append(CandidateRecord(request_id, index, prompt, "", index, str(png), None))
    storage.add_candidates(request_id, candidates)
    return request_id


def test_export_votes_writes_the_winners_with_their_prompts(db_target, tmp_path, capsys):
    """From the SQLite file, and from PostgreSQL by its URL (the bot's COVER_DB_URL)."""
    db = db_target
    with Storage(db) as storage:
        won = _request(storage, tmp_path, "winner")
        storage.register_cover_message(
            message_id="m1", channel_id="c", request_id=won, candidate_count=3
        )
        storage.close_vote("m1", winner=2)
        for message_id, name, winner in (("m2", "open", None), ("m3", "nobody", None)):
            request_id = _request(storage, tmp_path, name)
            storage.register_cover_message(
                message_id=message_id, channel_id="c", request_id=request_id, candidate_count=3
            )
            if name == "nobody":
                storage.close_vote(message_id, winner=winner)
        gone = _request(storage, tmp_path, "deleted")
        storage.register_cover_message(
            message_id="m4", channel_id="c", request_id=gone, candidate_count=3
        )
        storage.close_vote("m4", winner=1)
        (tmp_path / "deleted-1.png").unlink()
        assert [w.candidate.prompt for w in storage.winning_covers()] == [
            "winner 2 playlist cover image",
            "deleted 1 playlist cover image",
        ]

    assert main(["export-votes", "--db", str(db), "--out", str(tmp_path / "ds")]) == 0
    out, err = capsys.readouterr()
    assert "Exported 1 " in out and "1 winner image" in err
    rows = [
        json.loads(line) for line in (tmp_path / "ds" / "metadata.jsonl").read_text().splitlines()
    ]
    assert [(r["text"], r["playlist_id"]) for r in rows] == [
        ("winner 2 playlist cover image", "pl-winner")
    ]
    examples = load_examples(tmp_path / "ds")
    assert [e.caption for e in examples] == ["winner 2 playlist cover image"]
    with Image.open(examples[0].image) as image:
        assert image.getpixel((0, 0)) == (120, 0, 0)  # candidate 2's colour


def test_export_votes_without_a_database_is_one_line(tmp_path, capsys):
    assert main(["export-votes", "--db", str(tmp_path / "none.db"), "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: There is no database")


def test_export_reads_the_bots_postgresql_url_from_its_setting(
    postgres_url, tmp_path, capsys, monkeypatch
):
    with Storage(postgres_url) as storage:
        won = _request(storage, tmp_path, "winner")
        storage.register_cover_message(
            message_id="m1", channel_id="c", request_id=won, candidate_count=3
        )
        storage.cast_vote(message_id="m1", user_id="v1", choice=3)
        storage.close_vote("m1", winner=3)
    monkeypatch.setenv("COVER_DB_URL", postgres_url)
    monkeypatch.setenv("COVER_DB_PATH", str(tmp_path / "not-this.db"))
    assert main(["export-votes", "--out", str(tmp_path / "ds")]) == 0
    assert "Exported 1 " in capsys.readouterr().out
    # Its candidates' prompts differ, so no pair – but both were read from PostgreSQL.
    assert main(["export-pairs", "--out", str(tmp_path / "pairs")]) == 0
    assert "(candidates without a pair: 2 prompt)" in capsys.readouterr().out


def test_an_unreachable_postgresql_url_never_shows_its_password(tmp_path, capsys):
    url = "postgresql://cover:hunter2-secret@127.0.0.1:1/covers"
    assert main(["export-votes", "--db", url, "--out", str(tmp_path / "ds")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cover:***@127.0.0.1:1" in err
    assert "hunter2" not in err


def test_a_mistyped_database_url_never_shows_its_password(tmp_path, capsys):
    url = "postgresq://cover:hunter2-secret@db.example/covers"
    assert main(["export-votes", "--db", url, "--out", str(tmp_path / "ds")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: There is no database") and "hunter2" not in err
