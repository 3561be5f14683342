"""The vote rule, apart from Discord (the end-to-end vote flow is tested against the fake)."""

from __future__ import annotations

import pytest

from bot.cogs.votes import _choice, pick_winner


@pytest.mark.parametrize(
    ("tally", "winner"),
    [
        ({1: 0, 2: 3, 3: 1, 4: 0}, 2),
        ({1: 2, 2: 2, 3: 0, 4: 0}, 1),  # a tie goes to the lower number
        ({1: 0, 2: 0, 3: 4, 4: 4}, 3),
        ({1: 0, 2: 0}, None),  # nobody voted
        ({}, None),
    ],
)
def test_pick_winner(tally, winner):
    assert pick_winner(tally) == winner


def test_only_the_offered_numbers_count():
    assert _choice("2️⃣", 4) == 2
    assert _choice("4️⃣", 3) is None  # three candidates: 4️⃣ is not a ballot
    assert _choice("👍", 4) is None
    assert _choice("✅", 4) is None
