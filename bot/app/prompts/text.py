"""Text as prompts need it: playlist titles and descriptions cleaned of emoji, junk and
boilerplate, and cut to CLIP's token budget, counted exactly (models/clip_tokenizer.py)."""

from __future__ import annotations

import re
import unicodedata

from models.clip_tokenizer import MAX_TOKENS as CLIP_MAX_TOKENS
from models.clip_tokenizer import count_tokens, neutralise_special_tokens

UNTITLED = "untitled"  # the title of a playlist whose name is nothing but emoji and junk

_COMBINING_BLOCKS = (
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
)
_DROP_CATEGORIES = {"So", "Sk", "Cf", "Co", "Cn", "Cs", "Me"}
_SPACE_CATEGORIES = {"Cc", "Zl", "Zp", "Zs"}
_EDGE_JUNK = " -–—|~•·*_=:/\\,;+"
_SPACES = re.compile(r"\s+")
# Words that make no sense at the end of a cut text.
_DANGLING_TEXT = "a an and & the of for with to in on at by from like or but my your"
_DANGLING = frozenset(_DANGLING_TEXT.split())


def clean_text(text: str) -> str:
    """Keep letters, digits and punctuation; drop emoji, symbols, control and stray marks, and
    CLIP's special tokens spelled out (``<|endoftext|>`` would end the prompt there).

    Every piece of outside text passes here before it becomes part of a prompt: titles,
    descriptions, genres, artists and an expansion model's output.

    NFKC first turns "𝓬𝓱𝓲𝓵𝓵" and fullwidth letters (common in playlist titles) into plain ones
    and composes accents, so the combining marks left afterwards are decoration (strike-through,
    "zalgo", emoji variation selectors) and can go. Marks outside those blocks are kept: Indic
    and Thai vowel signs are combining marks too.
    """
    text = unicodedata.normalize("NFKC", text or "")
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if category in _SPACE_CATEGORIES:
            kept.append(" ")
        elif category in _DROP_CATEGORIES or any(a <= ord(ch) <= b for a, b in _COMBINING_BLOCKS):
            continue
        else:
            kept.append(ch)
    # Last, on what is left: NFKC makes fullwidth "＜｜endoftext｜＞" the real thing, and dropping
    # a zero-width space can join "<|endo\u200bftext|>" into one.
    text = neutralise_special_tokens("".join(kept))
    return _SPACES.sub(" ", text).strip(_EDGE_JUNK)


def clean_title(name: str) -> str:
    """The playlist title as it goes into a prompt; ``"untitled"`` when nothing is left."""
    return clean_text(name) or UNTITLED


# Sentences of a description that talk about the playlist rather than the music.
_BOILERPLATE = re.compile(
    r"\b(follow|updated?|updates|submit|submissions?|instagram|insta|tiktok|twitter|youtube|"
    r"spotify|playlist by|curated by|made by|cover (?:art|photo|image|by)|photo by|"
    r"pic by|dm|link|links|contact|email|soundcloud|enjoy)\b|@\w|\.com\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s+[|•·]\s+|\s+[-–—]\s+")


def condense_description(description: str) -> str:
    """The description's sentences about the music, joined as one prompt clause.

    Drops promotional sentences ("Updated weekly!", "Follow @x", "Cover by ..."), hashtags'
    ``#`` signs and sentence-final punctuation; :func:`fit_tokens` later cuts it to length.
    """
    text = clean_text(description).replace("#", " ")
    sentences = [s.strip(" .!?" + _EDGE_JUNK) for s in _SENTENCE_END.split(text)]
    useful = [s for s in sentences if s and not _BOILERPLATE.search(s)]
    return _SPACES.sub(" ", ", ".join(useful)).strip()


# --- token budget ---------------------------------------------------------------------------


def fit_tokens(text: str, max_tokens: int = CLIP_MAX_TOKENS) -> str:
    """Cut trailing words of ``text`` until ``count_tokens(text) + 2 <= max_tokens``.

    Words are never split, except a single first word that alone is over the budget (it is cut
    to what fits, so a non-empty text never comes back empty while the budget holds one
    character: at most 4 tokens, one per UTF-8 byte). Connectives ("and", "of the") and commas
    left dangling by the cut are removed too.
    """
    budget = max_tokens - 2  # CLIP's start and end tokens
    if budget < 1:
        raise ValueError(f"max_tokens must be at least 3, got {max_tokens}")
    words = text.split()
    # The pre-tokenizer never joins across whitespace, so the estimate adds up word by word.
    total, keep = 0, 0
    for word in words:
        total += count_tokens(word)
        if total > budget:
            break
        keep += 1
    if keep == len(words):
        return " ".join(words)
    if keep == 0:
        word = words[0]
        while word and count_tokens(word) > budget:
            word = word[:-1]
        return word
    kept = words[:keep]
    while len(kept) > 1 and kept[-1].lower().strip(_EDGE_JUNK) in _DANGLING:
        kept.pop()
    # Junk left at the cut goes, unless it is all there is (a text never comes back empty).
    return " ".join(kept).rstrip(_EDGE_JUNK) or " ".join(kept)
