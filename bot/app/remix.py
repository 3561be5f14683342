"""Prompts a person writes instead of the ones made from the playlist: the Remix form under a
cover post, and the command line's ``--prompt``.

    the post's prompts ─► remix_form: one text input per distinct prompt (≤ 4) + the negative
    the person's edits ─► read_remix: one text per candidate, and the negative prompt
                       ─► written_prompts: each cleaned as every prompt is (clean_text) and
                          fitted to CLIP's window, new seeds

Why one input per *distinct* prompt: Discord's form (a modal) holds at most five text inputs
and a post at most four candidates, so the candidates' prompts and the negative prompt always
fit; but the default style gives every candidate the same prompt, and four copies of one text
to edit alike would invite mistakes. Candidates that shared a prompt share its edit; ones that
had their own (the ``mix`` style) keep their own. The negative prompt is one for all: the
writer gives every candidate of a style the same one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.app.errors import InvalidOption
from bot.app.prompts import (
    CLIP_MAX_TOKENS,
    DEFAULT_NEGATIVE,
    MAX_CANDIDATES,
    Prompt,
    clean_text,
    fit_tokens,
)

MAX_TEXT = 4000  # characters in one written prompt: a Discord text input's limit, the CLI's too
LABEL_LIMIT = 45  # characters in a text input's label (Discord)
WRITTEN = "written"  # Prompt.style of a prompt the person wrote
NEGATIVE_KEY = "negative"


@dataclass(frozen=True)
class RemixField:
    """One text input of the Remix form."""

    key: str  # its custom_id: "prompt-1" … "prompt-4", or "negative"
    label: str
    value: str  # what it is prefilled with
    candidates: tuple[int, ...]  # the candidates (from 1) whose prompt it is; () the negative


def remix_form(prompts: Sequence[Prompt]) -> tuple[RemixField, ...]:
    """The form for a post's ``prompts`` (in candidate order): its distinct prompts in order of
    first use, then the negative prompt (the first candidate's)."""
    if not 1 <= len(prompts) <= MAX_CANDIDATES:
        raise ValueError(f"`prompts` must hold 1-{MAX_CANDIDATES} prompts, got {len(prompts)}")
    distinct: dict[str, list[int]] = {}
    for n, prompt in enumerate(prompts, start=1):
        distinct.setdefault(prompt.text, []).append(n)
    fields = []
    for k, (text, candidates) in enumerate(distinct.items(), start=1):
        if len(distinct) == 1:
            label = "Prompt" if len(prompts) == 1 else "Prompt (every candidate)"
        else:
            label = f"Prompt of candidate{'s' if len(candidates) > 1 else ''} " + ", ".join(
                map(str, candidates)
            )
        fields.append(RemixField(f"prompt-{k}", label, text[:MAX_TEXT], tuple(candidates)))
    negative = prompts[0].negative[:MAX_TEXT]
    fields.append(RemixField(NEGATIVE_KEY, "Negative prompt (what to avoid)", negative, ()))
    return tuple(fields)


def read_remix(
    fields: Sequence[RemixField], values: Mapping[str, str]
) -> tuple[tuple[str, ...], str]:
    """The texts a person submitted, as (one prompt per candidate, the negative prompt), still
    raw: :func:`written_prompts` cleans and checks them. An input missing from ``values`` keeps
    its prefilled text; keys the form does not have are ignored."""
    count = sum(len(f.candidates) for f in fields)
    texts = [""] * count
    negative = ""
    for field in fields:
        value = values.get(field.key, field.value)
        if field.key == NEGATIVE_KEY:
            negative = value
        for n in field.candidates:
            texts[n - 1] = value
    return tuple(texts), negative


def written_prompts(
    texts: Sequence[str],
    negative: str | None,
    *,
    count: int,
    seed: int,
    max_tokens: int = CLIP_MAX_TOKENS,
) -> tuple[Prompt, ...]:
    """One :class:`Prompt` per candidate from what a person wrote: one text for every candidate,
    or one each; candidate ``i`` (from 0) gets seed ``seed + i``. ``negative`` None keeps the
    writer's default.

    Each text is cleaned as the playlist's own text is (:func:`clean_text`: no emoji, control
    characters or CLIP's special tokens) and cut to CLIP's window (:func:`fit_tokens`).
    Raises :class:`InvalidOption` for a text over :data:`MAX_TEXT` characters or one with
    nothing left after cleaning, naming the candidate.
    """
    if not 1 <= count <= MAX_CANDIDATES:
        raise InvalidOption(f"`count` must be between 1 and {MAX_CANDIDATES}, got {count}")
    if len(texts) not in (1, count):
        raise InvalidOption(f"give one prompt, or one for each of the {count} candidates")
    each = list(texts) * count if len(texts) == 1 else list(texts)
    negative_text = DEFAULT_NEGATIVE if negative is None else _clean(negative, "negative prompt")
    if negative_text:
        negative_text = fit_tokens(negative_text, max_tokens)
    prompts = []
    for i, text in enumerate(each):
        # One text for all (or the same text in each) is "the prompt" to the person.
        which = "prompt" if len(set(texts)) == 1 else f"prompt of candidate {i + 1}"
        cleaned = _clean(text, which)
        if not cleaned:
            raise InvalidOption(
                f"The {which} has no words left once emoji, symbols and control characters "
                "are removed."
            )
        prompts.append(Prompt(fit_tokens(cleaned, max_tokens), negative_text, WRITTEN, seed + i))
    return tuple(prompts)


def _clean(text: str, which: str) -> str:
    if len(text) > MAX_TEXT:
        raise InvalidOption(
            f"The {which} may be at most {MAX_TEXT:,} characters, not {len(text):,}."
        )
    return clean_text(text)
