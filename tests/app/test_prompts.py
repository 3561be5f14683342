"""Prompt building: the seed heuristic, every style on rich and metadata-only playlists, the
mix order, determinism, the CLIP token budget and the errors."""

from __future__ import annotations

import functools
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.app.errors import InvalidOption
from bot.app.playlist import PlaylistFacts, TrackFacts
from bot.app.prompts import (
    DEFAULT_NEGATIVE,
    FACE_NEGATIVE,
    HEURISTIC_STYLES,
    STYLES,
    THEMES,
    Prompt,
    build_prompts,
    clean_title,
    condense_description,
    count_tokens,
    find_themes,
    fit_tokens,
)
from tests.properties import examples

# expand and auto (a language model) have their own tests in tests/models/test_expand.py.
SINGLE_STYLES = [s for s in HEURISTIC_STYLES if s != "mix"]
NIGHT = next(t for t in THEMES if t.name == "night")
DRIVE = next(t for t in THEMES if t.name == "drive")


def rich_playlist(**changes) -> PlaylistFacts:
    """Items readable: tracks, artists and genres known, and a description with boilerplate."""
    facts = dict(
        id="37i9dQZF1DX0XUsuxWHRQd",
        name="late night drive 🌙",
        description=(
            "neon, empty highways & slow jams for the 2am ride home. "
            "Updated weekly! Follow @nightshift for more"
        ),
        owner_id="nightowl",
        tracks=(
            TrackFacts("Tail Lights", ("Velvet Odessa",), ("a1",)),
            TrackFacts("Overpass", ("Velvet Odessa", "Neon Carrier"), ("a1", "a2")),
        ),
        top_artists=("Velvet Odessa", "Neon Carrier"),
        top_genres=("synthwave", "alternative r&b"),
        items_readable=True,
    )
    facts.update(changes)
    return PlaylistFacts(**facts)


def metadata_only(**changes) -> PlaylistFacts:
    """What Spotify gives for a playlist whose items the app may not read: no genres, artists."""
    facts = dict(
        id="4uLU6hMCjMI75M1A2tKUQC",
        name="Late Night Drive",
        description="songs for driving home at 3am",
        items_readable=False,
    )
    facts.update(changes)
    return PlaylistFacts(**facts)


def bare_playlist() -> PlaylistFacts:
    """Nothing to go on: an emoji title, no description, no items."""
    return PlaylistFacts(id="1" * 22, name="🎧🎧✨", description="")


def assert_well_formed(prompts: list[Prompt], title: str, seed: int, max_tokens: int = 77) -> None:
    assert [p.seed for p in prompts] == [seed + i for i in range(len(prompts))]
    for p in prompts:
        assert p.text.startswith(title), p.text
        assert count_tokens(p.text) + 2 <= max_tokens, p.text
        assert count_tokens(p.negative) + 2 <= 77, p.negative
        assert p.negative.startswith(DEFAULT_NEGATIVE)
        assert p.style in STYLES and p.style != "mix"
        assert "None" not in p.text and ", ," not in p.text and ",," not in p.text
        assert not p.text.endswith((",", " ")), p.text


# --- the seed heuristic ---------------------------------------------------------------------------


def test_seed_style_is_the_papers_prompt_exactly():
    # Seed 000, Figure 1: "Melodic Metal - 100 Best Melodic Metal Songs playlist cover image".
    facts = metadata_only(name="Melodic Metal - 100 Best Melodic Metal Songs", description="")
    prompts = build_prompts(facts, style="seed", seed=42)

    assert [p.text for p in prompts] == [
        "Melodic Metal - 100 Best Melodic Metal Songs playlist cover image"
    ] * 4
    assert [p.seed for p in prompts] == [42, 43, 44, 45]
    assert {p.style for p in prompts} == {"seed"}
    assert {p.negative for p in prompts} == {DEFAULT_NEGATIVE}


def test_seed_is_the_default_style():
    facts = rich_playlist()
    assert build_prompts(facts, seed=1) == build_prompts(facts, style="seed", seed=1)
    assert build_prompts(facts, seed=1)[0].text == "late night drive playlist cover image"


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("🔥 GYM HYPE 💪🏽", "GYM HYPE"),
        ("❤️ love songs ❤️", "love songs"),
        ("🇯🇵 city pop", "city pop"),
        ("𝓛𝓪𝓽𝓮 𝓝𝓲𝓰𝓱𝓽 𝓓𝓻𝓲𝓿𝓮", "Late Night Drive"),  # math-script letters, common on Spotify
        ("ｃｈｉｌｌ　ｖｉｂｅｓ", "chill vibes"),  # fullwidth
        ("c̶h̶i̶l̶l̶", "chill"),  # strike-through marks
        ("Café del Mar", "Café del Mar"),
        ("Привет 日本語 प्लेलिस्ट", "Привет 日本語 प्लेलिस्ट"),  # letters and Indic vowel signs stay
        ("chill\tvibes\x00\n", "chill vibes"),
        ("~ R&B 2000s ~", "R&B 2000s"),
        ("🎧🎧✨", "untitled"),
        ("", "untitled"),
    ],
)
def test_titles_keep_letters_and_lose_emoji(name: str, cleaned: str):
    assert clean_title(name) == cleaned
    prompt = build_prompts(metadata_only(name=name), style="seed", count=1, seed=0)[0]
    assert prompt.text == f"{cleaned} playlist cover image"


# --- every style, rich and metadata-only -------------------------------------------------------


@pytest.mark.parametrize("style", SINGLE_STYLES)
@pytest.mark.parametrize("make", [rich_playlist, metadata_only, bare_playlist])
def test_every_style_writes_good_prompts(style: str, make):
    facts = make()
    prompts = build_prompts(facts, style=style, seed=7)

    assert len(prompts) == 4
    assert_well_formed(prompts, clean_title(facts.name), seed=7)
    # Candidates of one style are not all the same text, except the paper's fixed prompt.
    if style != "seed":
        assert len({p.text for p in prompts}) > 1


def test_description_style_keeps_the_music_and_drops_the_boilerplate():
    prompts = build_prompts(rich_playlist(), style="description", seed=3)

    for p in prompts:
        assert p.style == "description"
        assert p.text.endswith("neon, empty highways & slow jams for the 2am ride home")
        assert "Follow" not in p.text and "Updated" not in p.text and "@" not in p.text


def test_genre_style_uses_the_top_genre_with_its_visual_cues():
    synth = next(t for t in THEMES if t.name == "electronic")
    for p in build_prompts(rich_playlist(), style="genre", seed=3):
        assert p.style == "genre"
        assert p.text.startswith("late night drive, synthwave ")
        assert any(cue in p.text for cue in synth.visuals), p.text


def test_genre_style_finds_genre_words_when_spotify_gives_none():
    facts = metadata_only(name="rainy day lo-fi study", description="")
    for p in build_prompts(facts, style="genre", seed=3):
        assert p.style == "genre"
        assert p.text.startswith("rainy day lo-fi study, lofi ")


def test_artist_style_names_the_artist_and_forbids_faces():
    for p in build_prompts(rich_playlist(), style="artist", seed=3):
        assert p.style == "artist"
        assert "cover art for a playlist of music like Velvet Odessa" in p.text
        assert p.negative == f"{DEFAULT_NEGATIVE}, {FACE_NEGATIVE}"
    # No artist name, no face negative.
    for style in ("seed", "description", "genre", "mood"):
        for p in build_prompts(rich_playlist(), style=style, seed=3):
            assert FACE_NEGATIVE not in p.negative


def test_artist_names_are_never_cut():
    long_name = " ".join(["Supercalifragilistic"] * 8)  # far over the name budget
    facts = rich_playlist(top_artists=(long_name, "Neon Carrier"))
    for p in build_prompts(facts, style="artist", seed=0):
        assert p.text.split(", ")[1] == "cover art for a playlist of music like Neon Carrier"


def test_mood_style_maps_late_night_drive_to_night_and_road_cues():
    # Seed 000 §1: "A late-night drive R&B playlist cover could depict darker blue tones with
    # roads or landscapes."
    for p in build_prompts(metadata_only(), style="mood", seed=11):
        assert p.style == "mood"
        assert any(cue in p.text for cue in NIGHT.visuals), p.text
        assert any(cue in p.text for cue in DRIVE.visuals), p.text


def test_mood_lexicon_covers_the_papers_workout_example():
    facts = metadata_only(name="Hip-Hop Gym Workout", description="")
    workout = next(t for t in THEMES if t.name == "workout")
    for p in build_prompts(facts, style="mood", seed=5):
        assert any(cue in p.text for cue in workout.visuals)
        assert "red" in p.text


@pytest.mark.parametrize(
    ("style", "facts", "used"),
    [
        ("description", metadata_only(description=""), "mood"),
        ("genre", metadata_only(), "mood"),  # no genres, no genre words
        ("artist", metadata_only(), "mood"),
        ("artist", metadata_only(name="rainy day lo-fi study"), "genre"),
        ("mood", bare_playlist(), "mood"),  # generic cues
    ],
)
def test_styles_without_material_fall_back_and_say_so(style: str, facts: PlaylistFacts, used: str):
    prompts = build_prompts(facts, style=style, seed=0)
    assert {p.style for p in prompts} == {used}
    assert all(FACE_NEGATIVE not in p.negative for p in prompts)


# --- mix ------------------------------------------------------------------------------------------


def test_mix_gives_each_candidate_a_different_style():
    prompts = build_prompts(rich_playlist(), style="mix", seed=100)

    assert [p.style for p in prompts] == ["seed", "description", "genre", "artist"]
    assert [p.seed for p in prompts] == [100, 101, 102, 103]
    assert prompts[0].text == "late night drive playlist cover image"
    assert len({p.text for p in prompts}) == 4
    assert prompts[3].negative.endswith(FACE_NEGATIVE)


def test_mix_falls_back_on_a_metadata_only_playlist():
    prompts = build_prompts(metadata_only(), style="mix", seed=100)
    assert [p.style for p in prompts] == ["seed", "description", "mood", "mood"]
    assert len({p.text for p in prompts}) == 4

    bare = build_prompts(bare_playlist(), style="mix", seed=100)
    assert [p.style for p in bare] == ["seed", "mood", "mood", "mood"]
    assert_well_formed(bare, "untitled", seed=100)


def test_mix_with_fewer_candidates_takes_the_order_from_the_start():
    prompts = build_prompts(rich_playlist(), style="mix", count=2, seed=0)
    assert [p.style for p in prompts] == ["seed", "description"]


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", HEURISTIC_STYLES)
def test_same_facts_style_and_seed_give_the_same_prompts(style: str):
    first = build_prompts(rich_playlist(), style=style, seed=2024)
    again = build_prompts(rich_playlist(), style=style, seed=2024)
    assert first == again


def test_another_seed_picks_other_cues():
    texts = {
        p.text
        for seed in range(0, 40, 4)
        for p in build_prompts(metadata_only(), style="mood", seed=seed)
    }
    assert len(texts) > 4


# --- themes and descriptions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Late-Night Drive R&B", ["night", "drive", "r&b"]),
        ("k-pop", ["k-pop"]),  # the longer keyword claims "pop"
        ("songs to fall asleep to", ["sleep"]),
        ("lo-fi beats to study to", ["lofi", "focus"]),
        ("My Playlist #7", []),
    ],
)
def test_find_themes(text: str, names: list[str]):
    assert [t.name for t in find_themes([text])] == names


def test_themes_ignore_the_promotional_part_of_a_description():
    facts = metadata_only(name="Soft Piano", description="Soft piano. Updated every Friday!")
    party = next(t for t in THEMES if t.name == "party")
    for p in build_prompts(facts, style="mood", seed=0):
        assert not any(cue in p.text for cue in party.visuals), p.text


def test_condense_description_drops_promotion():
    text = (
        "Soft piano trios & brushed drums. Updated every Friday! Follow us on Instagram "
        "| cover photo by @someone #jazz #coffee"
    )
    assert condense_description(text) == "Soft piano trios & brushed drums"
    assert condense_description("chill #lofi beats for #study") == "chill lofi beats for study"
    assert condense_description("") == ""


# --- the token budget -----------------------------------------------------------------------------

# Token counts (start and end included) from the real OpenAI CLIP BPE (bpe_simple_vocab_16e6,
# as shipped in the open_clip_torch wheel) through transformers' CLIPTokenizer.
REAL_CLIP_COUNTS = [
    ("late night drive playlist cover image", 8),
    ("Melodic Metal - 100 Best Melodic Metal Songs playlist cover image", 15),
    ("qxzvbn", 7),
    ("supercalifragilisticexpialidocious", 11),
    ("Beyoncé", 3),
    ("Sigur Rós – Ágætis byrjun", 14),
    ("日本語のプレイリスト", 14),
    ("Привет, мир", 14),
    ("R&B late-night drive!!!", 10),
    ("don't stop me now", 7),
    ("2024 summer hits (vol. 3)", 13),
    ("xvxvxvxvxvxvxvxvxvxv", 21),
    ("Tchaikovsky, Rachmaninoff & Shostakovich", 14),
    ("Hatsune Miku x Kagamine Rin", 9),
    ("lo-fi hip hop radio - beats to relax/study to", 15),
    ("CHVRCHES", 5),
    ("Mötley Crüe", 9),
    ("!!!???...", 5),
    ("a_b__c", 7),
    ("Dvořák", 8),
    ("Weihnachtslieder zum Mitsingen", 12),
]


@pytest.mark.parametrize(("text", "real"), REAL_CLIP_COUNTS)
def test_the_count_is_clips_own(text: str, real: int):
    assert count_tokens(text) + 2 == real


def test_the_count_of_our_own_text():
    assert count_tokens("late night drive playlist cover image") == 6
    assert count_tokens(DEFAULT_NEGATIVE) + 2 == 44  # real CLIP count
    assert count_tokens(f"{DEFAULT_NEGATIVE}, {FACE_NEGATIVE}") + 2 == 62
    assert count_tokens("") == 0


@settings(max_examples=examples(300), deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(
                st.sampled_from(
                    string.ascii_letters
                    + string.digits
                    + string.punctuation
                    + " \t\néüñßÅ日本🎵\u0301"
                ),
                max_size=60,
            ),
            st.sampled_from(["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>"]),
        ),
        max_size=4,
    ).map("".join)
)
@example("<|endoftext|>")  # found by this test at random in CI: 6 counted, 1 real
@example("<|startoftext|>")
@example("x<|endoftext|>y<|startoftext|>")
@example("<|ENDOFTEXT|>:")  # lowercased, the pre-tokenizer still splits the spelled token off
@example("<<|ENDOFTEXT|>")  # ... but only where its regex reaches it first
def test_the_count_matches_the_real_tokenizer_on_any_text(text: str):
    """The pure-Python count (models/clip_tokenizer.py) against transformers' CLIPTokenizer
    built from the same merge list: the same number of ids, start and end aside."""
    real = len(_real_tokenizer()(text, truncation=False)["input_ids"]) - 2
    assert count_tokens(text) == real


@functools.cache
def _real_tokenizer():
    from models.clip_tokenizer import clip_tokenizer

    return clip_tokenizer()


def test_fit_tokens_cuts_whole_trailing_words():
    text = "slow jams for the ride home " * 30
    fitted = fit_tokens(text, 30)

    assert count_tokens(fitted) + 2 <= 30
    assert text.startswith(fitted)  # a prefix of whole words
    assert text.split()[len(fitted.split()) - 1] == fitted.split()[-1]
    assert fitted.split()[-1] not in {"for", "the"}  # no dangling connective
    assert fit_tokens("late night drive", 77) == "late night drive"


def test_fit_tokens_cuts_a_single_giant_word_rather_than_return_nothing():
    fitted = fit_tokens("x" * 500, 20)
    assert fitted and set(fitted) == {"x"}
    assert count_tokens(fitted) + 2 <= 20


def test_long_title_and_description_fit_every_style():
    title = " ".join(f"wonderful{i}" for i in range(60))
    description = "an endless description about glittering summer evenings " * 50
    facts = rich_playlist(name=title, description=description)
    for style in HEURISTIC_STYLES:
        for p in build_prompts(facts, style=style, seed=9):
            assert count_tokens(p.text) + 2 <= 77, (style, p.text)
            assert p.text.startswith("wonderful0 wonderful1 wonderful2")
            # The title gives way, never the words that make the style.
            if p.style == "seed":
                assert p.text.endswith(" playlist cover image")
            if p.style == "artist":
                assert "music like Velvet Odessa" in p.text
            if p.style == "genre":
                assert ", synthwave " in p.text


def test_description_is_cut_before_the_title():
    facts = metadata_only(name="Sunday morning jazz", description="soft piano and coffee " * 40)
    for p in build_prompts(facts, style="description", seed=0):
        assert p.text.startswith("Sunday morning jazz ")
        assert ", soft piano and coffee" in p.text
        assert count_tokens(p.text) + 2 <= 77
        assert count_tokens(p.text) + 2 > 60  # the description fills what is left


def test_smaller_windows_are_honoured():
    for style in HEURISTIC_STYLES:
        for p in build_prompts(rich_playlist(), style=style, seed=0, max_tokens=40):
            assert count_tokens(p.text) + 2 <= 40


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_style_names_style_and_lists_the_valid_ones():
    with pytest.raises(ValueError, match="style") as caught:
        build_prompts(rich_playlist(), style="vibes", seed=0)
    assert isinstance(caught.value, InvalidOption)
    assert "'vibes'" in str(caught.value)
    for style in STYLES:
        assert style in str(caught.value)


@pytest.mark.parametrize("count", [0, 5, -1])
def test_count_must_be_between_one_and_four(count: int):
    with pytest.raises(InvalidOption, match=f"`count` must be between 1 and 4, got {count}"):
        build_prompts(rich_playlist(), count=count, seed=0)


def test_too_small_a_window_is_refused():
    with pytest.raises(ValueError, match="max_tokens"):
        build_prompts(rich_playlist(), seed=0, max_tokens=10)
    with pytest.raises(ValueError, match="max_tokens"):
        fit_tokens("anything", 2)


# --- CLIP's special tokens in outside text ------------------------------------------------------

SPECIAL_TITLES = [
    "late night <|endoftext|> drive",
    "<|startoftext|>gym hype",
    "study <|endoftext|><|startoftext|> beats",
    "＜｜endoftext｜＞ rainy day",  # fullwidth: NFKC makes the real token of it
    "<|endo\u200bftext|> summer",  # the zero-width space is dropped, joining the token
]


def _special_ids_inside(text: str) -> list[int]:
    ids = _real_tokenizer()(text, truncation=False)["input_ids"]
    return [i for i in ids[1:-1] if i in (49406, 49407)]  # start/end of text, not at the edges


@pytest.mark.parametrize("title", SPECIAL_TITLES)
@pytest.mark.parametrize("style", HEURISTIC_STYLES)
def test_a_title_that_spells_a_special_token_stays_text(title: str, style: str):
    facts = rich_playlist(name=title, description=f"{title}. more words after it")
    for prompt in build_prompts(facts, style=style, seed=3):
        assert not _special_ids_inside(prompt.text), prompt.text
        # The budget is computed on what the model sees.
        assert count_tokens(prompt.text) + 2 == len(_real_tokenizer()(prompt.text)["input_ids"])
    # The words after the token survive: nothing is cut at it.
    seed_prompt = build_prompts(facts, style="seed", seed=3)[0].text
    assert title.split()[-1] in seed_prompt


def test_an_expansion_that_emits_a_special_token_is_cleaned():
    def expander(prompt: str, seed: int, max_tokens: int) -> str:
        return f"{prompt}, neon<|endoftext|> glow, <|startoftext|>chrome"

    prompts = build_prompts(rich_playlist(), style="expand", seed=0, expander=expander)
    for prompt in prompts:
        assert not _special_ids_inside(prompt.text), prompt.text
        assert "glow" in prompt.text and "chrome" in prompt.text
