"""Progress for long work: a tqdm bar on a terminal, a few plain lines in a log.

The study's stages run for minutes each (generating 500 images per model, then Inception
features); a log file or CI output must still show that something moves, without a bar's
carriage-return noise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Lines:
    """Writes ``description: done/total unit (elapsed)`` to stderr at each quarter of the work."""

    def __init__(self, total: int, description: str, unit: str) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.done = 0
        self.next_quarter = 1
        self.started = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        quarter = self.done * 4 // max(1, self.total)
        if quarter < self.next_quarter:
            return
        self.next_quarter = quarter + 1
        elapsed = time.perf_counter() - self.started
        print(
            f"{self.description}: {self.done}/{self.total} {self.unit} ({elapsed:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    def set_postfix_str(self, text: str) -> None:
        pass


@contextmanager
def progress(total: int, description: str, unit: str = "it") -> Iterator[Any]:
    """A bar with ``update(n)``: tqdm's on a terminal (when installed, as with the ``eval``
    extra), otherwise :class:`_Lines` (which prints nothing for empty work)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or total <= 0 or not sys.stderr.isatty():
        yield _Lines(total, description, unit)
        return
    with tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True) as bar:
        yield bar
