"""Prompt expansion (models/expand.py) and the ``expand``/``auto`` styles (bot/app/prompts.py): the
pure clean-filter-bound step on any text (hypothesis), and the GPT-2 stand-in (modeltools/standins/)
loaded from a Hugging Face cache as the real MagicPrompt is."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.app.playlist import PlaylistFacts
from bot.app.prompts import STYLES, build_prompts
from models.errors import ModelUnavailable
from models.expand import (
    UNWANTED_WORDS,
    clauses_of,
    clean_generated,
    count_clip_tokens,
    finish,
    fit_clauses,
    keep_clause,
    load_expander,
    words_of,
)
from tests.properties import examples

FACTS = PlaylistFacts(
    id="4uLU6hMCjMI75M1A2tKUQC", name="Gym Hype", description="", items_readable=False
)
BASE = "Gym Hype playlist cover image"


def clip_length(text: str) -> int:
    """CLIP tokens with start and end, counted by the real tokenizer (models/clip_tokenizer.py)."""
    from models.clip_tokenizer import clip_tokenizer

    return len(clip_tokenizer()(text)["input_ids"])


# -- the pure part -----------------------------------------------------------------------------


def test_finish_cleans_filters_and_keeps_the_base() -> None:
    generated = (
        ", digital art, nsfw nude figure, by greg rutkowski, trending on artstation\nsecond prompt"
    )
    assert finish(BASE, generated, count_tokens=count_clip_tokens) == (
        f"{BASE}, digital art, trending on artstation"
    )
    assert (
        finish(BASE, "\x12\ufffd, neon ✨ lights\t, , ", count_tokens=count_clip_tokens)
        == f"{BASE}, neon lights"
    )
    assert finish(BASE, "", count_tokens=count_clip_tokens) == BASE
    # styled letters are the same words after NFKC
    assert not keep_clause("ｎｕｄｅ beach")
    assert not keep_clause("art by someone") and not keep_clause("in the style of van gogh")
    assert keep_clause("bystander on a road")  # "by" only as a credit, not inside a word


def test_fit_clauses_cuts_the_first_clause_that_does_not_fit_without_a_dangling_word() -> None:
    words = " ".join(f"w{i}" for i in range(80))
    text = fit_clauses(BASE, ["highly detailed", f"{words} of"], count_tokens=count_clip_tokens)
    assert clip_length(text) <= 77 and text.startswith(f"{BASE}, highly detailed, w0 w1")
    assert not text.endswith((" of", ",")) and clip_length(text) >= 70
    assert fit_clauses(BASE, ["a", "a", "A"], count_tokens=count_clip_tokens) == f"{BASE}, a"
    assert fit_clauses(BASE, ["8k"], count_tokens=count_clip_tokens, max_tokens=8) == BASE


clause_text = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "Zs", "Cc", "So"]), max_size=60
)


@settings(max_examples=examples(150), deadline=None)
@given(
    st.lists(
        st.one_of(clause_text, st.sampled_from(sorted(UNWANTED_WORDS)), st.just("by greg")),
        max_size=12,
    ),
    st.sampled_from([",", ", ", "\n", ";", ". "]),
    st.integers(20, 77),
)
def test_finish_is_bounded_filtered_and_starts_with_the_base(parts, separator, budget) -> None:
    generated = separator.join(parts)
    text = finish(BASE, generated, count_tokens=count_clip_tokens, max_tokens=budget)
    assert text.startswith(BASE)
    added = text[len(BASE) :]
    assert clip_length(text) <= max(budget, clip_length(BASE))
    assert not set(words_of(added)) & UNWANTED_WORDS
    assert all(c.isprintable() for c in text) and "\n" not in text
    # nothing is added that the model did not write (clauses come from its first line)
    first_line = clean_generated(generated)
    for clause in clauses_of(added):
        assert clause.split()[0] in first_line
    assert finish(BASE, generated, count_tokens=count_clip_tokens, max_tokens=budget) == text


@given(clause_text)
def test_clean_generated_leaves_one_printable_line(text: str) -> None:
    cleaned = clean_generated(text)
    assert "\n" not in cleaned and "  " not in cleaned and cleaned == cleaned.strip()
    assert all(c.isprintable() for c in cleaned)


# -- the stand-in model in the cache ---------------------------------------------------------


@pytest.fixture
def hub(support_hub: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(support_hub))
    return support_hub


@pytest.mark.slow
def test_expand_gives_different_bounded_deterministic_prompts_per_candidate(hub: Path) -> None:
    import torch

    before = torch.random.get_rng_state()
    prompts = build_prompts(FACTS, style="expand", count=4, seed=11)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    assert [p.seed for p in prompts] == [11, 12, 13, 14]
    assert all(p.style == "expand" and p.text.startswith(BASE) for p in prompts)
    assert all(clip_length(p.text) <= 77 for p in prompts)
    assert len({p.text for p in prompts}) == 4, [p.text for p in prompts]
    assert any(len(p.text) > len(BASE) + 10 for p in prompts)  # it did add something
    assert build_prompts(FACTS, style="expand", count=4, seed=11) == prompts
    assert build_prompts(FACTS, style="expand", count=1, seed=12)[0] == prompts[1]
    shorter = build_prompts(FACTS, style="expand", count=2, seed=11, max_tokens=40)
    assert all(clip_length(p.text) <= 40 for p in shorter)
    # auto expands when the model is cached
    assert [p.style for p in build_prompts(FACTS, style="auto", count=2, seed=11)] == ["expand"] * 2
    # the raw continuation is sampled with the seed
    expander = load_expander()
    assert expander.generate(BASE, 5) == expander.generate(BASE, 5) != expander.generate(BASE, 6)


def test_without_the_model_expand_says_how_to_get_it_and_auto_mixes(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailable) as caught:
        build_prompts(FACTS, style="expand", count=2, seed=0)
    message = str(caught.value)
    assert "Gustavosta/MagicPrompt-Stable-Diffusion" in message
    assert "`python -m bot models pull magicprompt`" in message
    auto = build_prompts(FACTS, style="auto", count=4, seed=0)
    assert auto == build_prompts(FACTS, style="mix", count=4, seed=0)


def test_an_injected_expander_gets_each_candidates_seed_and_budget() -> None:
    calls = []

    def fake(prompt: str, seed: int, max_tokens: int) -> str:
        calls.append((prompt, seed, max_tokens))
        return f"{prompt}, #{seed}"

    prompts = build_prompts(FACTS, style="expand", count=3, seed=7, max_tokens=60, expander=fake)
    assert calls == [(BASE, 7, 60), (BASE, 8, 60), (BASE, 9, 60)]
    assert [p.text for p in prompts] == [f"{BASE}, #7", f"{BASE}, #8", f"{BASE}, #9"]


def test_cover_offers_expand_and_auto_in_its_style_choices() -> None:
    from bot.cogs.cover import CoverCog

    choices = [c.value for c in CoverCog.cover._params["style"].choices]
    assert choices == list(STYLES) and {"expand", "auto"} <= set(choices)


def test_the_cli_accepts_the_new_styles() -> None:
    from bot.__main__ import build_parser

    args = build_parser().parse_args(["cover", "x.json", "--prompt-style", "expand"])
    assert args.prompt_style == "expand"
