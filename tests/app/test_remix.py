"""Prompts a person writes (bot/app/remix.py): the Remix form, reading it back, and the checks
every written prompt passes – with property tests, since the text comes from outside."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.app.errors import InvalidOption
from bot.app.prompts import CLIP_MAX_TOKENS, DEFAULT_NEGATIVE, Prompt, clean_text, count_tokens
from bot.app.remix import (
    LABEL_LIMIT,
    MAX_TEXT,
    WRITTEN,
    read_remix,
    remix_form,
    written_prompts,
)
from tests.properties import examples


def prompt(text: str, seed: int = 1, negative: str = "blurry") -> Prompt:
    return Prompt(text, negative, "seed", seed)


def test_one_shared_prompt_is_one_input_and_the_negative_another():
    form = remix_form([prompt("late night drive playlist cover image", n) for n in range(4)])
    assert [(f.key, f.label, f.candidates) for f in form] == [
        ("prompt-1", "Prompt (every candidate)", (1, 2, 3, 4)),
        ("negative", "Negative prompt (what to avoid)", ()),
    ]
    assert form[0].value == "late night drive playlist cover image" and form[1].value == "blurry"
    assert remix_form([prompt("one")])[0].label == "Prompt"


def test_candidates_with_their_own_prompts_get_an_input_each():
    form = remix_form([prompt("a"), prompt("b"), prompt("a"), prompt("c")])
    assert [(f.key, f.label, f.candidates) for f in form] == [
        ("prompt-1", "Prompt of candidates 1, 3", (1, 3)),
        ("prompt-2", "Prompt of candidate 2", (2,)),
        ("prompt-3", "Prompt of candidate 4", (4,)),
        ("negative", "Negative prompt (what to avoid)", ()),
    ]
    texts, negative = read_remix(form, {"prompt-1": "A", "negative": "", "elsewhere": "x"})
    assert texts == ("A", "b", "A", "c") and negative == ""
    with pytest.raises(ValueError, match="1-4 prompts"):
        remix_form([prompt(str(n)) for n in range(5)])


def test_written_prompts_are_cleaned_fitted_and_seeded_like_every_prompt():
    made = written_prompts(["neon 🌃 city <|endoftext|> at night"], None, count=3, seed=40)
    assert [p.text for p in made] == [clean_text("neon 🌃 city <|endoftext|> at night")] * 3
    assert "🌃" not in made[0].text and "<|endoftext|>" not in made[0].text
    assert [p.seed for p in made] == [40, 41, 42]
    assert {p.style for p in made} == {WRITTEN} and made[0].negative == DEFAULT_NEGATIVE
    long = written_prompts(["word " * 500], "", count=1, seed=0)[0]
    assert count_tokens(long.text) + 2 <= CLIP_MAX_TOKENS and long.negative == ""
    each = written_prompts(["one", "two"], "no text", count=2, seed=0)
    assert [(p.text, p.negative) for p in each] == [("one", "no text"), ("two", "no text")]


@pytest.mark.parametrize(
    ("texts", "negative", "count", "message"),
    [
        (["🎵🎵"], None, 2, "The prompt has no words left"),
        (["fine", "  \u200b "], None, 2, "The prompt of candidate 2 has no words left"),
        (["x" * (MAX_TEXT + 1)], None, 1, "at most 4,000 characters, not 4,001"),
        (["fine"], "n" * (MAX_TEXT + 1), 1, "negative prompt may be at most 4,000"),
        (["a", "b"], None, 3, "one for each of the 3 candidates"),
        (["a"], None, 5, "`count` must be between 1 and 4"),
    ],
)
def test_what_cannot_be_a_prompt_is_refused_with_a_sentence(texts, negative, count, message):
    with pytest.raises(InvalidOption, match=message):
        written_prompts(texts, negative, count=count, seed=0)


# -- properties: whatever a person types -------------------------------------------------------

typed = st.text(
    st.one_of(
        st.sampled_from(string.ascii_letters + string.digits + string.punctuation + " \n\t"),
        st.characters(),  # anything Unicode has, emoji and controls included
    ),
    max_size=300,
) | st.sampled_from(["<|endoftext|>", "＜｜endoftext｜＞", "<|endo\u200bftext|>", "x" * MAX_TEXT])


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(typed, min_size=1, max_size=4), st.none() | typed)
@example(["<|endoftext|>"], None)
@example(["x" * MAX_TEXT], "")
def test_any_text_becomes_a_clean_prompt_or_a_clear_refusal(texts, negative):
    try:
        made = written_prompts(texts, negative, count=len(texts), seed=7)
    except InvalidOption as refusal:
        assert str(refusal).startswith("The ")
        return
    assert len(made) == len(texts)
    for p in made:
        assert p.text and clean_text(p.text) == p.text  # nothing cleaning would still remove
        assert count_tokens(p.text) + 2 <= CLIP_MAX_TOKENS
        assert count_tokens(p.negative) + 2 <= CLIP_MAX_TOKENS


@settings(max_examples=examples(100), deadline=None)
@given(
    st.lists(st.text(max_size=200), min_size=1, max_size=4),
    st.text(max_size=200),
    st.dictionaries(
        st.sampled_from(["prompt-1", "prompt-2", "prompt-3", "negative", "x"]), st.text(max_size=50)
    ),
)
def test_the_form_fits_discord_and_reads_back_what_was_typed(texts, negative, edits):
    prompts = [prompt(t, negative=negative) for t in texts]
    form = remix_form(prompts)
    assert len(form) <= 5  # Discord's limit on a modal's inputs
    assert len({f.key for f in form}) == len(form)
    assert all(1 <= len(f.label) <= LABEL_LIMIT and len(f.value) <= MAX_TEXT for f in form)
    # Untouched, the form gives back each candidate's own prompt.
    assert read_remix(form, {}) == (tuple(texts), negative)
    got, got_negative = read_remix(form, edits)
    assert len(got) == len(texts)
    assert got_negative == edits.get("negative", negative)
    for field in form:
        for n in field.candidates:
            assert got[n - 1] == edits.get(field.key, texts[n - 1])
