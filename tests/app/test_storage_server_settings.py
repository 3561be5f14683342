"""Servers' settings in the database (bot/app/storage/server_settings.py), on SQLite and on a
real PostgreSQL (tests/postgres.py parametrises ``db_engine``): defaults without a row, a
change read and written in one transaction, the database's own checks, and the count the
daily limit reads."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import pytest

from bot.app.records import MalformedRow, ServerSettings
from bot.app.storage import Storage
from tests.app.storage_helpers import record
from tests.postgres import INTEGRITY_ERRORS


def with_word(word: str):
    def change(current: ServerSettings) -> ServerSettings:
        return dataclasses.replace(current, banned_words=(*current.banned_words, word))

    return change


def test_a_server_without_a_row_has_the_defaults(storage: Storage, db_engine: str):
    assert storage.server_settings("222") == ServerSettings("222")
    assert ServerSettings("222").nsfw == "drop" and ServerSettings("222").daily_limit == 0


def test_a_change_is_stored_with_who_made_it(storage: Storage, open_storage, db_engine: str):
    stored = storage.change_server_settings(
        "222",
        lambda s: dataclasses.replace(
            s, banned_words=("drive", "ｎｏ"), daily_limit=3, nsfw="spoiler"
        ),
        by="mia",
    )
    again = open_storage().server_settings("222")  # another connection reads it back
    assert again == stored
    assert (again.banned_words, again.daily_limit, again.nsfw) == (("drive", "ｎｏ"), 3, "spoiler")
    assert again.updated_by == "mia" and again.updated_at.startswith("2026-03-01T12:00")
    assert storage.server_settings("333") == ServerSettings("333")  # other servers untouched


def test_a_change_that_raises_stores_nothing(storage: Storage, db_engine: str):
    storage.change_server_settings("222", with_word("drive"), by="mia")

    def refuse(current: ServerSettings) -> ServerSettings:
        raise ValueError("the list is full")

    with pytest.raises(ValueError, match="full"):
        storage.change_server_settings("222", refuse, by="ann")
    with pytest.raises(ValueError, match="not settings for server"):
        storage.change_server_settings(
            "222", lambda s: dataclasses.replace(s, nsfw="blur"), by="ann"
        )
    assert storage.server_settings("222").banned_words == ("drive",)
    assert storage.server_settings("222").updated_by == "mia"


def test_two_managers_changing_at_once_both_keep_their_change(open_storage, db_engine: str):
    handles = [open_storage(), open_storage()]  # two connections, as two processes would have
    errors: list[BaseException] = []

    def add(storage: Storage, who: str) -> None:
        try:
            for n in range(8):
                storage.change_server_settings("222", with_word(f"{who}{n}"), by=who)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=add, args=(h, w)) for h, w in zip(handles, "ab", strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    words = handles[0].server_settings("222").banned_words
    assert sorted(words) == sorted(f"{w}{n}" for w in "ab" for n in range(8))


def test_the_database_refuses_what_the_settings_never_are(storage: Storage, db_engine: str):
    insert = "INSERT INTO server_settings (guild_id, banned_words, daily_limit, nsfw) VALUES (?, ?, ?, ?)"
    for values in (["g1", "[]", 0, "blur"], ["g2", "[]", -1, "drop"]):
        with pytest.raises(INTEGRITY_ERRORS), storage._transaction() as db:
            db.execute(insert, values)
    with storage._transaction() as db:
        db.execute(insert, ["g3", '{"not": "a list"}', 0, "drop"])
    with pytest.raises(MalformedRow, match="g3"):
        storage.server_settings("g3")


def test_requests_are_counted_per_person_per_server_from_a_moment(storage: Storage, db_engine: str):
    for changes in ({}, {}, {"user_id": "999"}, {"guild_id": "333"}, {"guild_id": None}):
        record(storage, **changes)  # 12:00:01 … 12:00:05 on 1 March 2026
    assert storage.requests_since("222", "111", datetime(2026, 3, 1, tzinfo=UTC)) == 2
    assert storage.requests_since("222", "111", datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)) == 1
    assert storage.requests_since("222", "111", datetime(2026, 3, 2, tzinfo=UTC)) == 0
    assert storage.requests_since("333", "111", datetime(2026, 3, 1, tzinfo=UTC)) == 1
