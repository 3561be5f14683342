"""Hypothesis profiles, chosen by ``HYPOTHESIS_PROFILE`` (tests/conftest.py loads it):

- ``ci`` (what ``.ci/run`` sets): derandomised – every run draws the same examples, so a
  submission passes or fails on its own change, never on a lucky draw – and no example database.
  A bug a property test finds by exploring is kept as an explicit ``@example`` beside the test.
- ``dev`` (the default): random draws, remembered in ``.hypothesis/`` so a failure found once is
  tried first on the next run.
- ``explore``: like ``dev`` with twenty times the examples, for a hunt by hand
  (``HYPOTHESIS_PROFILE=explore python -m pytest tests -k properties``; docs/testing.md).

Tests size their runs with :func:`examples`, not a bare ``max_examples=N``: a number written in
a test's ``@settings`` overrides the profile's, so only this way does ``explore`` reach them.
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis.database import DirectoryBasedExampleDatabase

EXPLORE_FACTOR = 20

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
# Spelled out, not inherited: where CI is set, hypothesis's own defaults are derandomised with
# no database, and a profile that only inherited them would not explore even when asked to.
_EXPLORING = {
    "derandomize": False,
    "database": DirectoryBasedExampleDatabase(".hypothesis/examples"),
}
settings.register_profile("dev", **_EXPLORING)
settings.register_profile("explore", max_examples=100 * EXPLORE_FACTOR, **_EXPLORING)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")


def examples(n: int) -> int:
    """The number of examples for a test that CI runs ``n`` of."""
    return n * EXPLORE_FACTOR if PROFILE == "explore" else n


def load() -> None:
    settings.load_profile(PROFILE)
