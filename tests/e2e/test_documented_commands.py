"""Every command the documentation names runs: each ``python -m <module> [subcommand …]`` found in
README.md and docs/*.md is started with ``--help`` in a subprocess (exit 0, a usage line naming
the subcommand, no traceback); every setting the code reads is in docs/settings.md's tables;
every extra the docs and the code's install hints name exists in pyproject.toml; the README
stays a user's page; every relative link between the docs leads to a file.

The commands are parsed from the files, so a command is covered the day it is documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
# Runners of other tools, not ours.
NOT_OURS = {"venv", "pip", "pytest", "http.server"}

# `python -m module` then words; a word counts as a subcommand only when it is a plain lowercase
# word standing alone (not "runs/standin-hub", "models.queue", "--flag" or a placeholder).
_COMMAND = re.compile(r"python3? -m ([a-z_][a-z0-9_.]*)((?: [a-z][a-z-]*(?=[\s`'\"|)]|$))*)")


def documented_commands(texts: dict[str, str]) -> dict[tuple[str, ...], str]:
    """(module, subcommand, …) → the first file naming it, for every ``python -m`` in ``texts``.
    A command ``python -m bot models pull`` also yields its prefixes (``bot``, ``bot models``)."""
    found: dict[tuple[str, ...], str] = {}
    for name, text in texts.items():
        for match in _COMMAND.finditer(text):
            module, words = match.group(1), match.group(2).split()
            if module in NOT_OURS:
                continue
            for end in range(len(words) + 1):
                found.setdefault((module, *words[:end]), name)
    return found


def test_the_parser_finds_commands_and_their_subcommands():
    texts = {
        "a.md": "run `python -m bot models pull magicprompt` or\n.venv/bin/python -m eval fid real/ gen/\n",
        "b.md": "python -m modeltools.standins runs/hub blip and python -m tests.mutation_sample "
        "models.queue, then python3 -m venv .venv",
    }
    assert set(documented_commands(texts)) == {
        ("bot",),
        ("bot", "models"),
        ("bot", "models", "pull"),
        ("bot", "models", "pull", "magicprompt"),
        ("eval",),
        ("eval", "fid"),
        ("modeltools.standins",),
        ("tests.mutation_sample",),
    }


@cache
def _help(command: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", *command, "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _usage(done: subprocess.CompletedProcess[str]) -> str:
    return next((line for line in done.stdout.splitlines() if line.startswith("usage:")), "")


def _subcommand_words(command: tuple[str, ...]) -> tuple[str, ...]:
    """The longest run of ``command``'s words that the program takes as subcommands. A word is
    an argument (a preset name, say) only when ``--help`` after it succeeds and shows the usage
    of what comes before it; a word whose ``--help`` fails is a broken subcommand, and is kept
    so that the test reports it."""
    known = command[:1]
    for word in command[1:]:
        done = _help((*known, word))
        named = _usage(done).startswith(f"usage: python -m {' '.join((*known, word))} ")
        if done.returncode == 0 and not named:
            break
        known = (*known, word)
    return known


DOCUMENTED = documented_commands({p.name: p.read_text(encoding="utf-8") for p in DOCS})
PROGRAMS = sorted({c[:1] for c in DOCUMENTED})


def test_the_docs_name_the_commands_people_run():
    # The parser really reads the files: the README's own first commands are among them.
    assert {("bot", "cover"), ("bot", "models"), ("training",), ("eval", "fid")} <= set(DOCUMENTED)


@pytest.mark.parametrize("program", PROGRAMS, ids=" ".join)
def test_every_documented_program_and_subcommand_starts(program: tuple[str, ...]):
    commands = sorted(c for c in DOCUMENTED if c[:1] == program)
    # 1. Which words of each documented command are subcommands (asked of the program itself);
    #    their --help runs are cached, and run a few at a time.
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(_subcommand_words, commands))
    failures = []
    for command in sorted(set(runs)):
        done = _help(command)
        shown = " ".join(command)
        where = DOCUMENTED[next(c for c in commands if c[: len(command)] == command)]
        # 2. Exit 0, no traceback, and a usage line that names the whole subcommand.
        if done.returncode != 0 or "Traceback" in done.stderr + done.stdout:
            failures.append(
                f"python -m {shown} --help ({where}): exit {done.returncode}\n{done.stderr[-1500:]}"
            )
        elif f"python -m {shown}" not in _usage(done):
            failures.append(f"python -m {shown} --help ({where}): usage {_usage(done)!r}")
    assert not failures, "\n\n".join(failures)


def test_a_subcommand_the_program_does_not_have_is_caught():
    # The check above can fail: an invented subcommand is taken as an argument, so the usage
    # line of "python -m training nonsense --help" does not name it.
    assert _subcommand_words(("training", "nonsense")) == ("training",)
    assert _subcommand_words(("training", "pretrain")) == ("training", "pretrain")


def test_the_ray_benchmark_runs_end_to_end_on_a_local_ray(tmp_path: Path):
    """The README's Ray figure comes from ``python -m modeltools.benchmark_ray``: a smoke run with
    the echo runner (no model) on a throwaway local Ray writes its table and files."""
    pytest.importorskip("ray")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeltools.benchmark_ray",
            "--runner",
            "echo",
            "--rounds",
            "1",
            "--jobs",
            "2",
            "--images",
            "1",
            "--steps",
            "2",
            "--overhead-calls",
            "2",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "speed-up 2 vs 1 Ray worker" in done.stdout
    [report] = tmp_path.glob("ray-*.json")
    assert str(tmp_path) not in report.read_text()  # no path of this machine in results
    assert len(list(tmp_path.glob("ray-*.md"))) == 1


# -- settings and extras -------------------------------------------------------------------------


SETTINGS_DOC = ROOT / "docs" / "settings.md"


def settings_table_names(text: str) -> set[str]:
    """The variables named in the first column of ``text``'s tables."""
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def setting_variables() -> set[str]:
    """Every environment variable the app reads: each field of the settings class under its
    primary name (an alias's first choice, else COVER_<FIELD>), and the variables the programs
    read directly (``os.environ.get("COVER_…")``)."""
    from pydantic import AliasChoices

    from bot.app.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]))
        else:
            names.add(f"{prefix}{field_name}".upper())
    for package in ("bot", "models", "training", "eval"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            names |= set(re.findall(r"env(?:iron)?(?:\.get\(|\[)\s*\"(COVER_[A-Z0-9_]+)\"", text))
            names |= set(re.findall(r"^[A-Z_]+_ENV = \"(COVER_[A-Z0-9_]+)\"", text, re.M))
    return names


def test_the_settings_table_reader_reads_first_columns_only():
    text = "| `COVER_A`, `COVER_B` | 1 | like `COVER_C` |\n`COVER_D` in prose\n"
    assert settings_table_names(text) == {"COVER_A", "COVER_B"}


def test_every_setting_the_code_reads_is_in_the_settings_tables():
    documented = settings_table_names(SETTINGS_DOC.read_text(encoding="utf-8"))
    variables = setting_variables()
    # It reads them: the settings class, a program's own variable, the image's start-up check.
    read = {"DISCORD_TOKEN", "COVER_DB_PATH", "COVER_INCEPTION_PATH", "COVER_EXPECT_GPU"}
    assert read <= variables
    missing = sorted(variables - documented)
    assert not missing, f"settings missing from the tables of docs/settings.md: {missing}"


def pyproject_extras() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def readme_extras_table() -> set[str]:
    """The first column of the README's table headed ``| extra |``."""
    table = re.search(r"^\| extra +\|.*?\n((?:\|.*\n)+)", (ROOT / "README.md").read_text(), re.M)
    assert table, "README.md has no extras table"
    return set(re.findall(r"^\| `([a-z][a-z0-9_-]*)` +\|", table.group(1), re.M))


def named_extras() -> dict[str, str]:
    """extra → where it is named: install commands (``'.[dev]'``, ``'playlist-cover[gen,bot]'``),
    "the ``[onnx]`` extra", and the README's extras table, in the docs and in the code's hints."""
    sources = [*DOCS]
    for package in ("bot", "models", "training", "eval"):
        sources += sorted((ROOT / package).rglob("*.py"))
    found = dict.fromkeys(readme_extras_table(), "README.md")
    patterns = (
        r"(?:\.|playlist-cover)\[([a-z][a-z0-9_,-]*)\]",
        r"\[([a-z][a-z0-9_-]*)\]`? extra",
    )
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for pattern in patterns:
            for group in re.findall(pattern, text, re.M):
                for extra in group.split(","):
                    found.setdefault(extra, path.relative_to(ROOT).as_posix())
    return found


def test_every_extra_the_docs_name_exists_and_the_readme_lists_them_all():
    named = named_extras()
    assert {"dev", "gen"} <= set(named)  # the install line is read
    unknown = {extra: where for extra, where in named.items() if extra not in pyproject_extras()}
    assert not unknown, f"extras that pyproject.toml does not define: {unknown}"
    missing = pyproject_extras() - readme_extras_table()
    assert not missing, f"extras missing from README's extras table: {missing}"


# -- the README is a user's page; links lead somewhere ---------------------------------------------

README_MAX_LINES = 300
# History belongs in git, not in the README: "issue 17", "issue #17", "stop 3".
_HISTORY = re.compile(r"\b(?:issue|stop) #?\d+", re.I)


def history_mentions(text: str) -> list[str]:
    return [m.group(0) for m in _HISTORY.finditer(text)]


def test_the_history_check_finds_issue_and_stop_numbers():
    text = "Since issue 17 the queue … at stop 3, see Issue #29; an issued 5 is fine"
    assert history_mentions(text) == ["issue 17", "stop 3", "Issue #29"]


def test_the_readme_is_short_and_names_no_issue_numbers():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md: the rest belongs in docs/"
    assert not history_mentions(text), history_mentions(text)


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(path: Path, text: str) -> list[str]:
    """Relative links (``[text](target)``, images too) in ``text`` whose file is not there."""
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, mail, or a heading on the same page
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    return broken


def test_the_link_check_finds_a_missing_file(tmp_path: Path):
    (tmp_path / "there.md").write_text("")
    text = "[a](there.md) [b](missing.md#part) [c](https://example.org) ![d](gone.png) [e](#top)"
    assert broken_links(tmp_path / "page.md", text) == ["missing.md#part", "gone.png"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(doc: Path):
    assert not broken_links(doc, doc.read_text(encoding="utf-8"))
