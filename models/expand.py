"""Prompt expansion (seed 003 §3.3): a small causal language model continues a short prompt.

    built prompt ─► GPT-2 prompt model, sampling with the candidate's own seed
      ─► first line only, printable characters only           (:func:`clean_generated`)
      ─► clauses with unwanted words or artist credits dropped (:func:`keep_clause`)
      ─► clauses appended while the whole fits CLIP's 77 tokens (:func:`fit_clauses`)

The reference model is ``Gustavosta/MagicPrompt-Stable-Diffusion`` (GPT-2 small fine-tuned on
~80k Stable Diffusion prompts, the public equivalent of seed 003's expander; docs/facts.md),
loaded from the local Hugging Face cache like every hub model here (models/support.py); any
``AutoModelForCausalLM`` folder works. It runs on the CPU: GPT-2 small writes a prompt in well
under a second there, and the GPU stays with the image pipeline.

Deterministic: candidate ``i`` samples with ``torch.manual_seed(seed + i)`` inside
``torch.random.fork_rng``, so the same prompt and seed give the same text and the global RNG is
left as it was. Bounded: every clause is counted with CLIP's own tokenizer
(models/clip_tokenizer.py), start and end tokens included, never more than ``max_tokens``.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from models.clip_tokenizer import MAX_TOKENS, clip_tokenizer
from models.errors import ModelUnavailable
from models.loading import quiet_libraries
from models.support import is_available, model_folder

DEFAULT_EXPANSION_MODEL = "Gustavosta/MagicPrompt-Stable-Diffusion"

# Words whose clause is dropped. MagicPrompt learned from public SD prompts, which are full of
# these; a cover for a server's playlist should never ask for them. Matched as whole words,
# case-insensitively, after NFKC (so fullwidth or styled letters do not slip through).
UNWANTED_WORDS = frozenset(
    [
        "nsfw",
        "nude",
        "nudity",
        "naked",
        "topless",
        "nipples",
        "nipple",
        "breasts",
        "boobs",
        "cleavage",
        "lingerie",
        "erotic",
        "sexy",
        "sex",
        "sexual",
        "porn",
        "pornographic",
        "hentai",
        "fetish",
        "gore",
        "gory",
        "blood",
        "bloody",
        "corpse",
        "corpses",
        "dead",
        "decapitated",
        "mutilated",
        "violence",
        "violent",
        "gun",
        "guns",
        "weapon",
        "weapons",
        "kill",
        "killing",
        "suicide",
        "drug",
        "drugs",
        "cocaine",
        "swastika",
        "nazi",
    ]
)
# Clauses that credit an artist ("by greg rutkowski", "in the style of ..."): prompt sites
# are full of living artists' names, and a cover should not imitate one without consent (the
# bot names musicians only as a reference to a sound, with a face negative: bot/app/prompts.py).
_CREDIT = re.compile(r"^(?:art(?:work)?\s+)?by\s|\bin\s+the\s+style\s+of\b|\bstyle\s+of\s")
_WORD = re.compile(r"[0-9a-z]+")
_DANGLING = frozenset(
    ["a", "an", "and", "the", "of", "for", "with", "to", "in", "on", "at", "by", "from", "or"]
)
_KEEP_CATEGORIES = ("L", "N", "P", "Zs")  # letters, digits, punctuation, spaces


def clean_generated(text: str) -> str:
    """The first line of generated text, with only letters, digits, punctuation and single
    spaces left (a model's stray bytes, emoji and control characters go)."""
    text = unicodedata.normalize("NFKC", text or "")
    first = re.split(r"[\r\n\u2028\u2029]", text, maxsplit=1)[0]
    kept = "".join(c for c in first if unicodedata.category(c).startswith(_KEEP_CATEGORIES))
    return " ".join(kept.split())


def words_of(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def keep_clause(clause: str, unwanted: frozenset[str] = UNWANTED_WORDS) -> bool:
    """Whether a comma-separated clause of an expansion may stay: it has a word, none of them
    unwanted, and it credits no artist."""
    found = words_of(clause)
    if not found or any(word in unwanted for word in found):
        return False
    return not _CREDIT.search(" ".join(found) + " ")


def clauses_of(text: str) -> list[str]:
    """Comma/semicolon/period-separated clauses, stripped of edge punctuation, in order."""
    parts = re.split(r"[,;|]|\.(?:\s|$)", text)
    return [p.strip(" -–—:·*_~'\"()[]{}") for p in parts if p.strip(" -–—:·*_~'\"()[]{}")]


def fit_clauses(
    base: str,
    clauses: Iterable[str],
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int = MAX_TOKENS,
) -> str:
    """``base`` followed by ``, clause`` for as many clauses as fit in ``max_tokens`` CLIP
    tokens (``count_tokens`` counts without the start and end tokens, which take 2 more). The
    first clause that does not fit whole is cut to the words that do, without a dangling
    "of"/"and"; nothing follows it. ``base`` itself is returned as it is."""
    text = base
    seen = {base.casefold()}
    for clause in clauses:
        if clause.casefold() in seen:
            continue  # GPT-2 repeats itself; one copy is enough
        longer = f"{text}, {clause}"
        if count_tokens(longer) + 2 <= max_tokens:
            text = longer
            seen.add(clause.casefold())
            continue
        words = clause.split()
        while words and count_tokens(f"{text}, {' '.join(words)}") + 2 > max_tokens:
            words.pop()
        while words and words[-1].casefold() in _DANGLING:
            words.pop()
        if words:
            text = f"{text}, {' '.join(words)}"
        break
    return text


def finish(
    base: str,
    generated: str,
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int = MAX_TOKENS,
    unwanted: frozenset[str] = UNWANTED_WORDS,
) -> str:
    """The expanded prompt from the model's continuation ``generated`` of ``base``: cleaned,
    filtered, bounded (module docstring). Pure, so it is tested on any text."""
    kept = [c for c in clauses_of(clean_generated(generated)) if keep_clause(c, unwanted)]
    return fit_clauses(base, kept, count_tokens=count_tokens, max_tokens=max_tokens)


@lru_cache(maxsize=1)
def _clip_tokenizer() -> Any:
    return clip_tokenizer()


def count_clip_tokens(text: str) -> int:
    """CLIP tokens of ``text``, start and end tokens not counted (what SD's encoder sees)."""
    return len(_clip_tokenizer()(text, add_special_tokens=False)["input_ids"])


@dataclass
class PromptExpander:
    """A loaded causal LM and its tokenizer: ``expander(prompt, seed)`` → the expanded prompt."""

    model: Any
    tokenizer: Any
    name: str
    max_new_tokens: int = 60  # GPT-2 tokens; more than CLIP's window can hold after a title
    temperature: float = 0.9
    top_k: int = 50
    repetition_penalty: float = 1.2
    unwanted: frozenset[str] = UNWANTED_WORDS

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # one generation at a time: the model is not re-entrant

    def generate(self, prompt: str, seed: int) -> str:
        """The model's raw continuation of ``prompt`` (without the prompt), sampled with
        ``seed``."""
        import torch

        inputs = self.tokenizer(prompt, return_tensors="pt")
        with self._lock, torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            ids = self.model.generate(
                **inputs,
                do_sample=True,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                repetition_penalty=self.repetition_penalty,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        new = ids[0, inputs["input_ids"].shape[1] :]  # (T_new,)
        return self.tokenizer.decode(new, skip_special_tokens=True)

    def __call__(self, prompt: str, seed: int, max_tokens: int = MAX_TOKENS) -> str:
        generated = self.generate(prompt, seed)
        return finish(
            prompt,
            generated,
            count_tokens=count_clip_tokens,
            max_tokens=max_tokens,
            unwanted=self.unwanted,
        )


_LOADED: dict[str, PromptExpander] = {}
_LOADING = threading.Lock()


def load_expander(name: str = DEFAULT_EXPANSION_MODEL) -> PromptExpander:
    """The expander ``name`` (hub id in the local cache, or a folder), loaded once per process.
    Raises :class:`~models.errors.ModelUnavailable` naming the model and how to fetch it."""
    folder = model_folder(name, role="prompt expansion")
    key = str(folder)
    with _LOADING:
        if key in _LOADED:
            return _LOADED[key]
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            quiet_libraries()
            model = AutoModelForCausalLM.from_pretrained(folder).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except ImportError:
            raise ModelUnavailable(
                "Prompt expansion needs transformers: pip install -e '.[gen]' in the project's checkout."
            ) from None
        except (OSError, ValueError, KeyError) as error:
            raise ModelUnavailable(
                f"The prompt expansion model {name} could not be loaded from {folder} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:200]})."
            ) from error
        _LOADED[key] = PromptExpander(model, tokenizer, name=name)
        return _LOADED[key]


def expansion_available(name: str = DEFAULT_EXPANSION_MODEL) -> bool:
    """Whether :func:`load_expander` would find the model (nothing is loaded)."""
    return is_available(name)


def default_expander(prompt: str, seed: int, max_tokens: int = MAX_TOKENS) -> str:
    """The reference expander, loaded on first use: what the ``expand`` style calls."""
    return load_expander()(prompt, seed, max_tokens)
