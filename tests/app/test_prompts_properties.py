"""Property-based tests of prompt building: whatever a playlist's owner typed (Spotify lets them
type anything into a name or description), every style gives the asked-for number of prompts,
reproducibly, inside CLIP's 77-token context as CLIP's real tokenizer counts it."""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.app.errors import InvalidOption
from bot.app.playlist import PlaylistFacts, TrackFacts
from bot.app.prompts import (
    HEURISTIC_STYLES,
    MAX_CANDIDATES,
    MIN_TOKENS,
    STYLES,
    build_prompts,
    fit_tokens,
)
from models.clip_tokenizer import BOS, EOS, MAX_TOKENS, clip_tokenizer
from tests.properties import examples

# Text as owners write it: any Unicode, with more weight on the letters, spaces, emoji and
# punctuation that real names are made of.
owner_text = st.one_of(
    st.text(max_size=300),
    st.text(
        alphabet=st.sampled_from("abcxyzqQ ÄéßñЖ日本🎧🔥 -–,.!?&'\"#@\n\t\u200b\u0301"),
        max_size=300,
    ),
    st.lists(
        st.sampled_from(["night", "drive", "lofi", "metal", "summer", "sad"]), max_size=12
    ).map(" ".join),
    # CLIP's special tokens spelled out, plainly and in the forms that clean-up turns into them
    # (fullwidth letters under NFKC, a zero-width space that is dropped).
    st.lists(
        st.one_of(
            st.sampled_from(
                ["<|endoftext|>", "<|startoftext|>", "＜｜endoftext｜＞", "<|endo\u200bftext|>"]
            ),
            st.text(alphabet="ab <|>", max_size=8),
        ),
        max_size=8,
    ).map("".join),
)
track = st.builds(TrackFacts, name=owner_text, artists=st.lists(owner_text, max_size=3).map(tuple))
facts = st.builds(
    PlaylistFacts,
    id=st.just("37i9dQZF1DXcBWIGoYBM5M"),
    name=owner_text,
    description=owner_text,
    tracks=st.lists(track, max_size=5).map(tuple),
    top_artists=st.lists(owner_text, max_size=4).map(tuple),
    top_genres=st.lists(owner_text, max_size=4).map(tuple),
    items_readable=st.booleans(),
)


@lru_cache(maxsize=1)
def tokenizer():
    return clip_tokenizer()


def clip_tokens(text: str) -> int:
    """Tokens CLIP's real tokenizer gives ``text``, start and end tokens included, untruncated."""
    return len(tokenizer()(text, truncation=False)["input_ids"])


def special_ids_inside(text: str) -> list[int]:
    """The start/end-of-text ids the real tokenizer makes of ``text`` between its own start and
    end token: any one there is text speaking for the tokenizer."""
    specials = set(tokenizer().convert_tokens_to_ids([BOS, EOS]))
    ids = tokenizer()(text, truncation=False)["input_ids"]
    return [i for i in ids[1:-1] if i in specials]


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    playlist=facts,
    style=st.sampled_from(HEURISTIC_STYLES),
    count=st.integers(1, MAX_CANDIDATES),
    seed=st.integers(0, 2**31),
    max_tokens=st.integers(MIN_TOKENS, MAX_TOKENS),
)
def test_any_playlist_gives_prompts_inside_clips_context(playlist, style, count, seed, max_tokens):
    prompts = build_prompts(playlist, count=count, style=style, seed=seed, max_tokens=max_tokens)
    assert len(prompts) == count
    assert [p.seed for p in prompts] == list(range(seed, seed + count))
    for prompt in prompts:
        assert prompt.text.strip() and prompt.style in STYLES
        assert clip_tokens(prompt.text) <= max_tokens, prompt.text
        assert clip_tokens(prompt.negative) <= MAX_TOKENS
        assert not special_ids_inside(prompt.text), prompt.text
    again = build_prompts(playlist, count=count, style=style, seed=seed, max_tokens=max_tokens)
    assert again == prompts  # the same request writes the same prompts


@settings(max_examples=examples(300), deadline=None)
@given(text=owner_text, max_tokens=st.integers(3, MAX_TOKENS))
@example(text=":\r00\x80", max_tokens=6)  # found once the counts were exact: only junk fitted
@example(text="00000 00| 0", max_tokens=10)  # the junk after the cut goes: "00" ends it
def test_fit_tokens_stays_inside_the_budget(text, max_tokens):
    fitted = fit_tokens(text, max_tokens)
    assert clip_tokens(fitted) <= max_tokens, fitted
    # Whole leading words of the text; only the last may be cut short (junk at the cut, or a
    # single word longer than the budget).
    kept, words = fitted.split(), text.split()
    if kept:
        assert kept[:-1] == words[: len(kept) - 1]
        assert words[len(kept) - 1].startswith(kept[-1])
    if text.split() and max_tokens >= 6:  # room for one character's 4 UTF-8 bytes
        assert fitted  # a non-empty text never comes back empty


@given(style=st.text(max_size=20).filter(lambda s: s not in STYLES), count=st.integers())
def test_bad_options_are_named(style, count):
    playlist = PlaylistFacts(id="x", name="Late night drive", description="")
    with pytest.raises(InvalidOption, match="`style` must be one of"):
        build_prompts(playlist, style=style, seed=0)
    if not 1 <= count <= MAX_CANDIDATES:
        with pytest.raises(InvalidOption, match="`count` must be between"):
            build_prompts(playlist, count=count, seed=0)
