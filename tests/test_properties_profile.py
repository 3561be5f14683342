"""CI's property tests draw the same examples on every run (tests/properties.py): a run of the
same test twice under the ``ci`` profile sees the same inputs, and the ``dev`` profile does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
from hypothesis import given, strategies as st
from tests import properties

properties.load()
seen = []

@given(st.text(max_size=30))
def probe(text):
    seen.append(text)

probe()
print(repr(seen))
"""


def _draws(profile: str) -> str:
    env = {**os.environ, "HYPOTHESIS_PROFILE": profile}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_ci_profile_draws_the_same_examples_every_run():
    first = _draws("ci")
    assert first == _draws("ci")
    assert len(eval(first)) > 10  # it really drew examples


def test_the_dev_profile_explores():
    assert _draws("dev") != _draws("dev")


def test_ci_is_the_profile_when_ci_is_set():
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    code = "from tests import properties; print(properties.PROFILE)"
    for ci, profile in (("true", "ci"), ("", "dev")):
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, "CI": ci},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.stdout.strip() == profile, done.stderr
