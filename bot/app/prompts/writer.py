"""Prompt writing: playlist facts to prompts, in the seed paper's heuristic and richer styles: the seed paper's heuristic and a few richer styles.

    PlaylistFacts → clean title/description → themes (lexicon) → one Prompt per candidate

Styles (``STYLES``):

- ``seed``: seed 000's heuristic, exactly ``"<title> playlist cover image"``. The paper tried
  genres and artists and dropped them (faces and unknown artists render badly), so this stays
  the default.
- ``description``: the title and the playlist's own description, condensed.
- ``genre``: the top genre (or genre words found in the title/description) with visual cues.
- ``artist``: the top artist's *name* as a musical reference, never a likeness: those prompts
  carry :data:`FACE_NEGATIVE`.
- ``mood``: mood words (late-night drive, workout, rain, ...) mapped to palettes, light and
  motifs by a small hand-made lexicon (seed 000 §1 describes exactly these cues).
- ``mix``: a different style per candidate, falling back where a playlist has no material.
- ``expand``: seed 003's prompt expansion – the ``seed`` prompt continued by a GPT-2 prompt
  model (:mod:`models.expand`), sampled with the candidate's seed, filtered and kept within
  CLIP's 77 tokens. Needs the model in the local cache; without it the request fails with a
  message saying how to fetch it.
- ``auto``: ``expand`` where its model is cached, ``mix`` otherwise.

A playlist may be metadata only (Spotify's Feb 2026 rules, see docs/facts.md): every style can then
still write a prompt from the title and description, and reports the style it really used in
:attr:`Prompt.style`.

Everything is deterministic: the same facts, style and seed give the same prompts; candidate
``i`` uses ``seed + i`` both as its image seed and to pick among synonymous visual cues.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.app.errors import InvalidOption
from bot.app.playlist import PlaylistFacts
from bot.app.prompts.lexicon import GENERIC_VISUALS, Theme, find_themes
from bot.app.prompts.text import (
    CLIP_MAX_TOKENS,
    clean_text,
    clean_title,
    condense_description,
    count_tokens,
    fit_tokens,
)

STYLES = ("seed", "description", "genre", "artist", "mood", "mix", "expand", "auto")
# The styles written from the lexicon alone: no model, nothing cached needed.
HEURISTIC_STYLES = tuple(s for s in STYLES if s not in ("expand", "auto"))
MAX_CANDIDATES = 4  # one per vote reaction 1️⃣..4️⃣: the one place this limit is set
MIN_TOKENS = 40  # room for a title, a frame and an artist reference

DEFAULT_NEGATIVE = (
    "blurry, low quality, lowres, jpeg artifacts, watermark, signature, username, "
    "deformed, distorted text, misspelled text, cropped, out of frame, duplicate, "
    "noisy, ugly"
)
# Added whenever an artist name is in the prompt: the name is a reference to a sound, and a
# diffusion model asked for a musician tends to paint a (bad) likeness of them.
FACE_NEGATIVE = "face, portrait, person, people, human, celebrity, crowd, hands, body"

_LABEL_TOKENS = 20  # longest artist name (else the next artist) or genre label in a prompt
_SEED_SUFFIX = "playlist cover image"  # seed 000 §3: "<playlist title> playlist cover image"

# Candidate i of a "mix" request takes the first of these styles that has material.
_MIX_ORDER: tuple[tuple[str, ...], ...] = (
    ("seed",),
    ("description", "mood", "genre"),
    ("genre", "mood", "description"),
    ("artist", "mood", "genre", "description"),
)

# Phrases that frame a prompt as cover art; non-seed styles vary them per candidate.
_FRAMES = (
    "playlist cover art",
    "playlist cover image",
    "square album cover art",
    "music cover artwork",
)


@dataclass(frozen=True)
class Prompt:
    text: str
    negative: str
    style: str  # the style actually used (after any fallback for missing material)
    seed: int


# --- prompt writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Material:
    """What a playlist offers to the styles, computed once per request."""

    title: str
    description: str
    genre: str | None  # the genre label: Spotify's top genre, else a genre theme's name
    genre_themes: tuple[Theme, ...]
    mood_themes: tuple[Theme, ...]  # moods first, then genres: all carry visual cues
    artist: str | None


def _material(facts: PlaylistFacts) -> _Material:
    title = clean_title(facts.name)
    description = condense_description(facts.description)
    genres = [g for g in (clean_text(g) for g in facts.top_genres) if g]
    # Themes come from the condensed description: "Updated every Friday" is no party.
    genre_themes = find_themes(genres[:3], genres_only=True) or find_themes(
        [title, description], genres_only=True
    )
    genre = genres[0] if genres else (genre_themes[0].name if genre_themes else None)
    genre = fit_tokens(genre, _LABEL_TOKENS + 2) if genre else None
    themes = find_themes([title, description, *genres[:3]])
    moods = [t for t in themes if not t.genre] + [t for t in themes if t.genre]
    # A cut name would name someone else: the first top artist whose whole name is short enough.
    names = (clean_text(a) for a in facts.top_artists)
    artists = [a for a in names if a and count_tokens(a) <= _LABEL_TOKENS]
    return _Material(
        title=title,
        description=description,
        genre=genre,
        genre_themes=tuple(genre_themes),
        mood_themes=tuple(moods),
        artist=artists[0] if artists else None,
    )


def _has_material(style: str, m: _Material) -> bool:
    return {
        "seed": True,
        "description": bool(m.description),
        "genre": m.genre is not None,
        "artist": m.artist is not None,
        "mood": any(not t.genre for t in m.mood_themes),
    }[style]


def _effective_style(style: str, m: _Material) -> str:
    """The style a single-style request really gets when its material is missing."""
    if _has_material(style, m):
        return style
    if style == "artist" and m.genre is not None:
        return "genre"
    return "mood"  # mood always writes something: matched themes or generic cues


def _mix_styles(count: int, m: _Material) -> list[str]:
    """Candidate i takes the first style of ``_MIX_ORDER[i]`` that has material, else mood.

    The orders are chosen so that a style repeats only when the playlist has too little
    material for four different ones (then the per-candidate seed still varies the cues).
    """
    return [
        next((s for s in preferences if _has_material(s, m)), "mood")
        for preferences in _MIX_ORDER[:count]
    ]


def _cues(themes: Sequence[Theme], rng: random.Random, limit: int = 2) -> list[str]:
    if not themes:
        return [rng.choice(GENERIC_VISUALS)]
    return [rng.choice(theme.visuals) for theme in themes[:limit]]


def _compose(
    title: str,
    max_tokens: int,
    *,
    suffix: str = "",
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    tail: str = "",
    spare: int = 0,
) -> str:
    """``title suffix, required..., optional..., tail`` within ``max_tokens``.

    Priorities: the suffix and required clauses always fit (the title gives way, whole words
    only, and also leaves ``spare`` tokens); optional clauses follow while they fit whole; the
    tail (a description) takes what is left, cut word by word.
    """
    fixed = (f" {suffix}" if suffix else "") + "".join(f", {clause}" for clause in required)
    # Estimates add up across whitespace, so title + fixed fits when each fits its share.
    reserve = max(spare, count_tokens(fixed))
    text = fit_tokens(title, max(3, max_tokens - reserve)) + fixed
    for clause in optional:
        longer = f"{text}, {clause}"
        if count_tokens(longer) + 2 > max_tokens:
            break
        text = longer
    if tail:
        text = fit_tokens(f"{text}, {tail}", max_tokens)
    return text


def _write(style: str, m: _Material, seed: int, max_tokens: int) -> Prompt:
    rng = random.Random(seed)
    if style == "seed":
        # The paper's prompt, verbatim; only a title too long for the window loses words.
        text = _compose(m.title, max_tokens, suffix=_SEED_SUFFIX)
        return Prompt(text, DEFAULT_NEGATIVE, style, seed)
    # Other styles leave a third of the window for their own words even after a long title.
    spare = max_tokens // 3
    frame = rng.choice(_FRAMES)
    negative = DEFAULT_NEGATIVE
    if style == "description":
        text = _compose(m.title, max_tokens, suffix=frame, tail=m.description, spare=spare)
    elif style == "genre":
        assert m.genre is not None
        cues = _cues(m.genre_themes, rng, limit=1)
        text = _compose(
            m.title, max_tokens, required=[f"{m.genre} {frame}"], optional=cues, spare=spare
        )
    elif style == "artist":
        assert m.artist is not None
        reference = f"cover art for a playlist of music like {m.artist}"
        cues = _cues(m.genre_themes or m.mood_themes, rng, limit=1)
        text = _compose(m.title, max_tokens, required=[reference], optional=cues, spare=spare)
        negative = f"{DEFAULT_NEGATIVE}, {FACE_NEGATIVE}"
    else:  # mood
        cues = _cues(m.mood_themes, rng, limit=2)
        text = _compose(m.title, max_tokens, suffix=frame, optional=cues, spare=spare)
    return Prompt(text=text, negative=negative, style=style, seed=seed)


def check_inputs(count: int, style: str, max_tokens: int) -> None:
    if style not in STYLES:
        raise InvalidOption(f"`style` must be one of {', '.join(STYLES)}, got {style!r}")
    if not 1 <= count <= MAX_CANDIDATES:
        raise InvalidOption(f"`count` must be between 1 and {MAX_CANDIDATES}, got {count}")
    if max_tokens < MIN_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_TOKENS}, got {max_tokens}")


# (prompt, seed, max_tokens) → the expanded prompt; models.expand.default_expander is the real one
Expander = Callable[[str, int, int], str]


def build_prompts(
    facts: PlaylistFacts,
    *,
    count: int = MAX_CANDIDATES,
    style: str = "seed",
    seed: int,
    max_tokens: int = CLIP_MAX_TOKENS,
    expander: Expander | None = None,
) -> list[Prompt]:
    """One prompt per candidate; candidate ``i`` (from 0) gets seed ``seed + i``.

    Raises :class:`~bot.app.errors.InvalidOption` (a ``ValueError``) naming ``style`` or ``count``
    when they are out of range. ``expand`` (and ``auto`` where the model is cached) runs a
    language model: call it off the event loop. ``expander`` replaces the default model.
    """
    check_inputs(count, style, max_tokens)
    # 1. What the playlist offers: cleaned title and description, genres, themes, an artist.
    m = _material(facts)
    if style == "auto":
        style = "expand" if expander is not None or _expansion_available() else "mix"
    if style == "expand":
        # The paper's short prompt is what seed 003 expands; the sampled continuation, not the
        # cues, makes the candidates differ.
        expand = expander or _default_expander()
        bases = [_write("seed", m, seed + i, max_tokens) for i in range(count)]
        # The continuation is outside text like a title: cleaned the same way.
        return [
            Prompt(
                clean_text(expand(b.text, b.seed, max_tokens)), DEFAULT_NEGATIVE, "expand", b.seed
            )
            for b in bases
        ]
    # 2. One style per candidate: the same for all, or the mix order with fallbacks.
    styles = _mix_styles(count, m) if style == "mix" else [_effective_style(style, m)] * count
    # 3. Write each; the per-candidate seed also picks among synonymous cues, so candidates of
    #    one style differ a little while staying reproducible.
    return [_write(s, m, seed + i, max_tokens) for i, s in enumerate(styles)]


def _expansion_available() -> bool:
    from models.expand import expansion_available  # lazy: torch only when a model is there

    return expansion_available()


def _default_expander() -> Expander:
    from models.expand import default_expander, load_expander

    load_expander()  # fails here, naming the model and how to fetch it, if it is not cached
    return default_expander
