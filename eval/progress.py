"""Progress bars for long work: tqdm on a terminal when it is installed, silence otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass


@contextmanager
def progress(total: int, description: str, unit: str = "it") -> Iterator[Any]:
    """A bar with ``update(n)``; shown on stderr only when it is a terminal (logs and tests stay
    clean) and tqdm is installed (it comes with the ``eval`` extra)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield _Silent()
        return
    with tqdm(
        total=total,
        desc=description,
        unit=unit,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
    ) as bar:
        yield bar
