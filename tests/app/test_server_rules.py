"""A server's own rules (bot/app/server_rules.py): the banned-word matcher, on the text people
type (examples, then properties over any Unicode), the daily limit counted from a real SQLite
file's requests, the NSFW policy's decision, and what managers may change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.app.errors import InvalidOption
from bot.app.request import CoverRequest
from bot.app.server_rules import (
    BANNED_WORD_REFUSAL,
    MAX_BANNED_WORDS,
    MAX_WORD_LENGTH,
    BannedWordUsed,
    DailyLimitReached,
    add_banned_word,
    admit,
    banned_word_in,
    day_start,
    keeps_flagged,
    normalise_word,
    remove_banned_word,
    set_daily_limit,
    set_nsfw_policy,
    words_of,
)
from bot.app.storage import Storage
from tests.app.storage_helpers import Clock, record
from tests.properties import examples

# -- the matcher -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "banned"),
    [
        ("Late Night DRIVE", "drive"),
        ("late night drive 🌙", "night drive"),  # an entry of several words
        ("ham_and_eggs", "ham"),  # the underscore separates words
        ("it's ham's", "ham"),
        ("Ｄｒｉｖｅ", "drive"),  # fullwidth
        ("𝓭𝓻𝓲𝓿𝓮 all night", "drive"),  # mathematical script letters
        ("d\u200br\u200bi\u200bv\u200be", "drive"),  # zero-width spaces inside
        ("d\u00adrive", "drive"),  # a soft hyphen
        ("d\u2060rive", "drive"),  # a word joiner
        ("D̶R̶I̶V̶E̶", "drive"),  # strike-through combining marks
        ("dr🔥ive", "drive"),  # an emoji inside: dropped, as from the prompt
        ("STRASSE", "straße"),  # case folding, both ways
        ("Straße", "strasse"),
        ("İstanbul nights", "istanbul"),
        ("ℌ𝔢𝔩𝔩𝔬", "hello"),
        ("गाना हिन्दी", "हिन्दी"),  # a vowel sign stays in its word
    ],
)
def test_banned_words_match_whole_words_through_case_and_unicode_tricks(text, banned):
    assert banned_word_in([text], [normalise_word(banned)]) == normalise_word(banned)


@pytest.mark.parametrize(
    ("text", "banned"),
    [
        ("hamster wheel", "ham"),  # not part of a word
        ("graham", "ham"),
        ("drive2", "drive"),  # a digit makes it another word
        ("night, then a drive", "night drive"),  # the words of an entry must be adjacent
        ("", "drive"),
        ("🌙🌙🌙", "drive"),
        ("हिन्दी", "ह"),  # a consonant inside a word is not the word
    ],
)
def test_other_words_are_not_banned(text, banned):
    assert banned_word_in([text], [normalise_word(banned)]) is None


def test_no_banned_words_bans_nothing_and_the_first_text_that_matches_wins():
    assert banned_word_in(["anything at all"], []) is None
    assert banned_word_in(["fine", "a bad day"], ["bad", "day"]) == "bad"


@pytest.mark.parametrize(
    ("entry", "stored"),
    [
        ("  Drive ", "drive"),
        ("NIGHT—drive", "night drive"),
        ("Ｈｅｌｌｏ", "hello"),
        ("㍿", "株式会社"),
    ],
)
def test_an_entry_is_stored_normalised(entry, stored):
    assert normalise_word(entry) == stored


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("🔥🔥", "no letters or digits left"),
        ("\u200b", "no letters or digits left"),
        ("x" * (MAX_WORD_LENGTH + 1), f"at most {MAX_WORD_LENGTH} characters, not 33"),
        ("㍿" * 9, "characters once normalised, not 36"),
    ],
)
def test_bad_entries_are_refused_with_a_reason(entry, message):
    with pytest.raises(InvalidOption, match=message):
        normalise_word(entry)


# Text as people type it, weighted towards the tricks a filter meets.
tricky = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.sampled_from("abcdrive NIGHT_-'.\u200b\u200d\u00ad\u2060\u0336\u035fＤｒ𝓭ß İ🔥\n"),
    ),
    max_size=200,
)
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöüßéñжд", min_size=1, max_size=12)


def disguise(text: str, data: st.DataObject) -> str:
    """``text`` as someone hiding it might write it: random case, fullwidth letters, and
    zero-width or combining characters between the letters."""
    out = []
    for ch in text:
        if data.draw(st.booleans(), label="upper"):
            ch = ch.upper()
        # ("ß".upper() is "SS": two letters, so only single ASCII letters get a fullwidth form)
        if (
            len(ch) == 1
            and "a" <= ch.lower() <= "z"
            and data.draw(st.booleans(), label="fullwidth")
        ):
            ch = chr(ord(ch) - ord("!") + 0xFF01)
        out.append(ch + data.draw(st.sampled_from(["", "\u200b", "\u2060", "\u0336"])))
    return "".join(out)


@settings(max_examples=examples(200))
@given(before=tricky, banned=word, after=tricky, data=st.data())
def test_a_banned_word_between_separators_is_always_found_however_disguised(
    before, banned, after, data
):
    text = f"{before} {disguise(banned, data)}. {after}"
    assert banned_word_in([text], [normalise_word(banned)]) is not None


@settings(max_examples=examples(300))
@given(text=tricky, entry=tricky)
@example(text="İ", entry="i")
@example(text="ℌ", entry="h")
def test_a_match_is_always_the_entry_s_words_side_by_side_in_the_text(text, entry):
    try:
        stored = normalise_word(entry)
    except InvalidOption:
        return  # nothing left, or too long: refused with a sentence, never stored
    assert len(stored) <= MAX_WORD_LENGTH
    assert normalise_word(stored) == stored  # stored words read the same when read again
    found = banned_word_in([text], [stored])
    words = f" {' '.join(words_of(text))} "
    assert (found is not None) == (f" {stored} " in words)


@settings(max_examples=examples(200))
@given(text=st.text(max_size=300))
def test_words_are_stable_when_read_again(text):
    words = words_of(text)
    assert all(words) and words_of(" ".join(words)) == words


def test_the_matcher_reads_a_bounded_amount_of_any_text():
    assert banned_word_in(["x " * 50_000 + "drive"], ["drive"]) is None  # past the bound
    assert banned_word_in(["x " * 5_000 + "drive"], ["drive"]) == "drive"


# -- the checks before queueing ----------------------------------------------------------------------

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the storage helpers' clock starts here


@pytest.fixture
def storage(tmp_path: Path):
    with Storage(tmp_path / "rules.db", now=Clock()) as storage:
        yield storage


def asked(**changes) -> CoverRequest:
    fields = {"playlist": "x", "user_id": "111", "source": "discord", "guild_id": "222"}
    return CoverRequest(**(fields | changes))


def test_the_daily_limit_counts_the_person_s_requests_in_the_server_on_the_utc_day(storage):
    admit(storage, asked(), ["late night drive"], now=NOON)  # no settings: no limit
    set_daily_limit(storage, "222", 2, by="mia")
    record(storage)  # 12:00:0x on 1 March, user 111 in server 222
    record(storage, user_id="999")  # someone else
    record(storage, guild_id="333")  # another server
    admit(storage, asked(), [], now=NOON)
    record(storage)
    with pytest.raises(DailyLimitReached) as refused:
        admit(storage, asked(), [], now=NOON.replace(hour=23, minute=59))
    assert refused.value.resets_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert str(refused.value).startswith("You have had your 2 requests for today in this server")
    # A new UTC day; another person; a request outside a server or from the command line.
    admit(storage, asked(), [], now=datetime(2026, 3, 2, tzinfo=UTC))
    admit(storage, asked(user_id="999"), [], now=NOON)
    admit(storage, asked(guild_id=None), [], now=NOON)
    admit(storage, asked(source="cli"), [], now=NOON)
    set_daily_limit(storage, "222", 0, by="mia")
    admit(storage, asked(), [], now=NOON)


def test_a_banned_word_refuses_the_request_without_naming_it(storage):
    add_banned_word(storage, "222", "Drive", by="mia")
    with pytest.raises(BannedWordUsed) as refused:
        admit(storage, asked(), ["fine title", "late night DRIVE"])
    assert str(refused.value) == BANNED_WORD_REFUSAL and "drive" not in str(refused.value)
    admit(storage, asked(), ["hard driver"])
    admit(storage, asked(guild_id="333"), ["late night drive"])  # another server's rules
    admit(storage, asked(source="cli"), ["late night drive"])


def test_the_day_starts_at_midnight_utc_whatever_the_time_zone():
    evening = datetime(2026, 3, 1, 21, 0, tzinfo=UTC)
    for hours in (-5, 0, 10):  # 16:00 on 1 March in New York, 07:00 on 2 March in Sydney
        moment = evening.astimezone(timezone(timedelta(hours=hours)))
        assert day_start(moment) == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("policy", "nsfw_channel", "guild_id", "kept"),
    [
        ("drop", True, "222", False),
        ("spoiler", True, "222", True),
        ("spoiler", False, "222", False),  # not an NSFW channel: still dropped
        ("spoiler", True, None, False),  # no server
    ],
)
def test_flagged_candidates_are_kept_only_by_a_spoiler_policy_in_an_nsfw_channel(
    storage, policy, nsfw_channel, guild_id, kept
):
    set_nsfw_policy(storage, "222", policy, by="mia")
    assert keeps_flagged(storage, asked(nsfw_channel=nsfw_channel, guild_id=guild_id)) is kept


def test_managers_changes_are_bounded_and_say_what_they_did(storage):
    assert add_banned_word(storage, "222", "Drive", by="mia") == ("drive", True)
    assert add_banned_word(storage, "222", "ＤＲＩＶＥ", by="mia") == ("drive", False)
    for n in range(MAX_BANNED_WORDS - 1):
        add_banned_word(storage, "222", f"word{n}", by="mia")
    with pytest.raises(InvalidOption, match=f"already bans {MAX_BANNED_WORDS} words"):
        add_banned_word(storage, "222", "one more", by="mia")
    assert len(storage.server_settings("222").banned_words) == MAX_BANNED_WORDS
    assert remove_banned_word(storage, "222", "DRIVE", by="ann") == ("drive", True)
    assert remove_banned_word(storage, "222", "drive", by="ann") == ("drive", False)
    with pytest.raises(InvalidOption, match="between 0 \\(no limit\\) and 1000, got 1001"):
        set_daily_limit(storage, "222", 1001, by="mia")
    with pytest.raises(InvalidOption, match="one of drop, spoiler, got 'blur'"):
        set_nsfw_policy(storage, "222", "blur", by="mia")
    current = storage.server_settings("222")
    assert (current.daily_limit, current.nsfw, current.updated_by) == (0, "drop", "ann")
