"""Prompts from playlist facts.

PlaylistFacts → clean title/description (text.py) → themes (lexicon.py) → one Prompt per
candidate (writer.py, which documents the styles)
"""

from bot.app.prompts.lexicon import GENERIC_VISUALS, THEMES, Theme, find_themes
from bot.app.prompts.text import (
    CLIP_MAX_TOKENS,
    UNTITLED,
    clean_text,
    clean_title,
    condense_description,
    count_tokens,
    fit_tokens,
)
from bot.app.prompts.writer import (
    DEFAULT_NEGATIVE,
    FACE_NEGATIVE,
    HEURISTIC_STYLES,
    MAX_CANDIDATES,
    MIN_TOKENS,
    STYLES,
    Expander,
    Prompt,
    build_prompts,
    check_inputs,
)

__all__ = [
    "CLIP_MAX_TOKENS",
    "DEFAULT_NEGATIVE",
    "FACE_NEGATIVE",
    "GENERIC_VISUALS",
    "HEURISTIC_STYLES",
    "MAX_CANDIDATES",
    "MIN_TOKENS",
    "STYLES",
    "THEMES",
    "UNTITLED",
    "Expander",
    "Prompt",
    "Theme",
    "build_prompts",
    "check_inputs",
    "clean_text",
    "clean_title",
    "condense_description",
    "count_tokens",
    "find_themes",
    "fit_tokens",
]
