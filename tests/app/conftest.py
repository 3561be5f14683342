"""Fixtures of the storage tests (tests/app/test_storage*.py): Storage on each engine (tests/postgres.py
parametrises ``db_target``), opened as often as a test likes, and a cover message to vote on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.app.storage import Storage
from tests.app.storage_helpers import Clock, record


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


@pytest.fixture
def message(storage: Storage) -> str:
    request_id = record(storage)
    storage.register_cover_message(
        message_id="9001", channel_id="333", request_id=request_id, candidate_count=4
    )
    return "9001"
