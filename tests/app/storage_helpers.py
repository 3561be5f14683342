"""What the storage tests (tests/app/test_storage*.py) share: a clock and a stored request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.app.prompts import Prompt
from bot.app.records import StoredParams
from bot.app.storage import Storage


class Clock:
    """Timestamps one second apart, so ordering by time is deterministic."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.moment += timedelta(seconds=1)
        return self.moment


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
