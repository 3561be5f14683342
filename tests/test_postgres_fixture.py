"""The PostgreSQL fixture's own promise (tests/postgres.py): without the server binaries a
local run skips, saying why, and CI fails."""

from __future__ import annotations

import pytest

from tests import postgres


def test_without_binaries_a_local_run_skips_and_ci_fails(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt install postgresql"):
        postgres.require_bindir()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI runs the storage suite on PostgreSQL"):
        postgres.require_bindir()


def test_the_binaries_are_found_here():
    bindir = postgres.find_bindir()
    if bindir is None:
        postgres.require_bindir()  # skips locally, fails in CI
    assert (bindir / "initdb").exists() and (bindir / "pg_ctl").exists()
