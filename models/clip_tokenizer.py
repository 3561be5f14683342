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
