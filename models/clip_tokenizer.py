"""OpenAI CLIP's BPE tokenizer, built offline from the vocabulary file that ships with us.

``assets/bpe_simple_vocab_16e6.txt.gz`` is OpenAI's CLIP merge list (MIT licence; the copy in
the ``open_clip_torch`` wheel, see ``assets/README.md``). CLIP's 49,408-entry vocabulary is
derived from it in a fixed order:

    256 byte symbols · the same 256 with ``</w>`` (end of word) · the first 48,894 merges,
    joined · ``<|startoftext|>`` (49406) · ``<|endoftext|>`` (49407)

and the byte symbols are GPT-2's printable stand-ins for bytes, printable Latin-1 bytes first.
Built this way, the ids equal those of ``openai/clip-vit-*`` (``"a photo of a cat"`` →
49406, 320, 1125, 539, 320, 2368, 49407), which is what makes a model trained here speak the
same token language as Stable Diffusion's text encoders.
"""

from __future__ import annotations

import gzip
import itertools
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

VOCAB_FILE = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MAX_TOKENS = 77  # CLIP's context length, start and end tokens included
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_MERGES = VOCAB_SIZE - 2 * 256 - 2  # merges that made it into the vocabulary


def byte_symbols() -> list[str]:
    """The 256 printable characters standing for bytes 0-255, in CLIP's (and GPT-2's) order:
    bytes that are printable Latin-1 keep their own character and come first; the others get
    code points from 256 upwards."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


@lru_cache(maxsize=1)
def vocabulary() -> tuple[dict[str, int], tuple[str, ...]]:
    """(token → id, merges as ``"a b"`` lines), read from :data:`VOCAB_FILE`."""
    with gzip.open(VOCAB_FILE, "rt", encoding="utf-8") as lines:
        merges = tuple(line.rstrip("\n") for line in lines)[1 : _MERGES + 1]  # line 0: version
    symbols = byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges)]
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}, merges


def clip_tokenizer() -> Any:
    """A ``transformers.CLIPTokenizer`` (the fast one) with CLIP's real vocabulary and merges,
    padding with ``<|endoftext|>`` to 77 tokens as Stable Diffusion's does."""
    from transformers import CLIPTokenizer

    vocab, merges = vocabulary()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split(" ")) for m in merges],
        model_max_length=MAX_TOKENS,
    )


# -- counting tokens without transformers ------------------------------------------------------

# CLIP's pre-tokenizer: contractions, letter runs, single digits, runs of anything else. Python's
# re has no \p{L}: [^\W\d_] is "word characters minus digits and underscore", i.e. letters.
_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+")
_SPACES = re.compile(r"\s+")


_PRINTABLE = frozenset(s for s in byte_symbols() if ord(s) < 256)


@lru_cache(maxsize=1)
def _merge_ranks() -> dict[tuple[str, str], int]:
    _, merges = vocabulary()
    return {tuple(m.split(" ", 1)): rank for rank, m in enumerate(merges)}  # type: ignore[misc]


@lru_cache(maxsize=1)
def _byte_table() -> tuple[str, ...]:
    """Byte value → its symbol. :func:`byte_symbols` lists the symbols in vocabulary order;
    a printable byte's symbol is the byte's own character, the others count up from 256."""
    table = [""] * 256
    others = iter(s for s in byte_symbols() if ord(s) >= 256)
    for value in range(256):
        printable = chr(value) in _PRINTABLE
        table[value] = chr(value) if printable else next(others)
    return tuple(table)


@lru_cache(maxsize=65536)
def _bpe(piece: str) -> int:
    """How many tokens BPE makes of one pre-token: its bytes as symbols, the last one marked
    end of word, then the lowest-ranked adjacent pair merged, everywhere it occurs, until no
    learned pair is left (the algorithm of the merge list above)."""
    table = _byte_table()
    parts = [table[b] for b in piece.encode("utf-8")]
    parts[-1] += "</w>"
    ranks = _merge_ranks()
    while len(parts) > 1:
        best = min(itertools.pairwise(parts), key=lambda p: ranks.get(p, len(ranks)))
        if best not in ranks:
            break
        merged: list[str] = []
        i = 0
        while i < len(parts):
            if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return len(parts)


# The tokenizer matches its special tokens in the raw text, exactly and case-sensitively, before
# it normalises or lowercases anything: "<|endoftext|>" is one id (49407), "<|ENDOFTEXT|>" six.
_SPECIAL = re.compile("|".join(re.escape(t) for t in (BOS, EOS)))


def neutralise_special_tokens(text: str) -> str:
    """``text`` with every literal ``<|startoftext|>`` and ``<|endoftext|>`` replaced by a space.

    Text from outside (a playlist's title or description, an expansion model's output) must not
    speak for the tokenizer: a spelled-out end-of-text token ends the prompt there, for the text
    encoder's attention and for SD's pooled features, and silently drops the rest. A space
    cannot be part of a special token, so the pieces left either side can never join into a new
    one and one pass is enough."""
    return _SPECIAL.sub(" ", text)


# The pre-tokenizer (run on the lowercased text) also knows the two strings, as its first
# alternatives: "<|ENDOFTEXT|>:" is pre-token "<|endoftext|>" then ":", and the byte-level step
# splits that pre-token into "<|", "endoftext", "|>" – plain BPE words, not the special id.
_SPELLED = tuple(t.lower() for t in (BOS, EOS))
_PRETOKEN_SPELLED = re.compile("|".join(re.escape(t) for t in _SPELLED) + "|" + _PRETOKEN.pattern)


def _count_plain(text: str) -> int:
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", text)).strip().lower()
    return sum(
        _bpe("<|") + _bpe(piece[2:-2]) + _bpe("|>") if piece in _SPELLED else _bpe(piece)
        for piece in _PRETOKEN_SPELLED.findall(text)
    )


def count_tokens(text: str) -> int:
    """CLIP's token count for ``text``, start and end tokens *not* included: the number of ids
    :func:`clip_tokenizer` gives before padding and truncation, minus two. Pure Python on the
    shipped merge list (no transformers, no torch), so the bot can budget its prompts exactly;
    tests/app/test_prompts.py checks it against the real tokenizer. A literal special token in
    the text counts as the one id the tokenizer makes of it, and splits the text around it as
    the tokenizer does (prompts never carry one: :func:`neutralise_special_tokens`)."""
    pieces = _SPECIAL.split(text)
    return len(pieces) - 1 + sum(_count_plain(piece) for piece in pieces)
