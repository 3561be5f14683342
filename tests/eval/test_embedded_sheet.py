"""The sample sheet reads a real title the way the synthetic rules would."""

from __future__ import annotations

from eval.embedded_sheet import PLACEHOLDER_GENRE, spec_from_title


def test_words_become_the_rules_signatures() -> None:
    spec = spec_from_title("rainy day lo-fi study ☔")
    assert (spec.genre, spec.activity, spec.mood, spec.era) == ("lofi", "study", "rain", None)
    spec = spec_from_title("Sunday morning jazz")
    assert (spec.genre, spec.activity) == ("jazz", "morning")


def test_whole_words_only_and_a_placeholder_genre() -> None:
    spec = spec_from_title("GYM HYPE 💪🔥")
    assert (spec.genre, spec.activity) == (PLACEHOLDER_GENRE, "workout")
    assert spec_from_title("trapeze artists").genre == PLACEHOLDER_GENRE  # not "trap"
