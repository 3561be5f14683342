"""A throw-away PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temp dir.

``postgres_server`` (session) starts one cluster on a free localhost port – trust auth on
127.0.0.1 only, no Unix socket, ``fsync`` off (nothing here must survive a power cut) – and
stops and removes it at the end. ``postgres_url`` (per test) is a fresh, empty database on it,
so every test starts from no tables, as a new SQLite file does.

PostgreSQL refuses to run as root: under root the server runs as ``nobody`` (``runuser``), its
directory handed to that user. Without the server binaries the tests that need it skip, except
in CI (``CI=true``), where a missing PostgreSQL is a failure: CI never skips it.

Why not pytest-postgresql: it drives ``pg_ctl`` too, but as the current user only (root here,
which PostgreSQL refuses), and brings mirakuru and port-for for what is 100 lines here.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BINARIES = ("initdb", "pg_ctl")


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: PATH first, then Debian's versioned folders."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):  # newest first
        if all(Path(folder, name).exists() for name in PG_BINARIES):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    datadir: Path
    port: int
    _user: str | None  # who runs the server when we are root, else None (ourselves)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True)

    def start(self) -> None:
        self.run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.datadir / "server.log")
        self.run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", log, "-o", options
        )

    def stop(self) -> None:
        self.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.datadir))


def _start(bindir: Path) -> tuple[PostgresServer, Path]:
    root = Path(tempfile.mkdtemp(prefix="cover-pg-"))
    user = "nobody" if os.geteuid() == 0 else None
    if user is not None:
        shutil.chown(root, user=user)
    server = PostgresServer(bindir, root / "data", _free_port(), user)
    try:
        server.start()
    except subprocess.CalledProcessError as error:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(
            f"PostgreSQL did not start: {' '.join(error.cmd)}\n{error.stdout}{error.stderr}"
        ) from None
    return server, root


def require_bindir() -> Path:
    """The server binaries' folder; without them a skip with the reason, or in CI a failure."""
    bindir = find_bindir()
    if bindir is None:
        reason = "PostgreSQL's initdb and pg_ctl are not installed (apt install postgresql)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI runs the storage suite on PostgreSQL too", pytrace=False)
        pytest.skip(reason)
    return bindir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = require_bindir()
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[dev]'")
    server, root = _start(bindir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


_schema_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty schema on the session's server, as a URL whose ``search_path`` is it: every
    test starts from no tables, as with a new SQLite file. (A schema, not a database: creating
    one takes milliseconds, a database a quarter of a second.)"""
    import psycopg

    name = f"test_{os.getpid()}_{next(_schema_numbers)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')  # our own name, never input
    return postgres_server.url(f"postgres?options=-csearch_path%3D{name}")


# -- storage on both engines ----------------------------------------------------------------------

ENGINES = ("sqlite", "postgres")
try:  # a constraint the database itself enforces, as each engine's driver reports it
    import psycopg

    INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
except ImportError:
    INTEGRITY_ERRORS = (sqlite3.IntegrityError,)


def parametrize_engines(metafunc: pytest.Metafunc) -> None:
    """A test asking for ``db_engine`` runs once per engine; ``@pytest.mark.sqlite_only(reason)``
    keeps it to SQLite (a promise about the file itself)."""
    if "db_engine" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("sqlite_only")
    metafunc.parametrize("db_engine", ENGINES[:1] if only else ENGINES, indirect=True)


@pytest.fixture
def db_engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_target(db_engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """What ``Storage`` opens: a new SQLite file (in folders that do not exist yet), or a new
    database on the session's PostgreSQL."""
    if db_engine == "postgres":
        return request.getfixturevalue("postgres_url")
    return tmp_path / "nested" / "dir" / "cover.db"
