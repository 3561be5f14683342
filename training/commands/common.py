"""What the commands of ``python -m training`` share: flags made from a config dataclass's
fields, quieter library logging, and the note on rows an export left out."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from typing import Any

from training.config import DEFAULT_PRESET, PRESETS


def add_field(
    parser: argparse.ArgumentParser,
    spec: dataclasses.Field,
    hint: Any,
    presets: dict[str, dict[str, Any]] = PRESETS,
) -> None:
    flag = "--" + spec.name.replace("_", "-")
    default = spec.default if spec.default is not dataclasses.MISSING else []
    text = spec.metadata["help"]
    # What a run gets: each preset's own value where it sets one (the default preset first).
    given = {name: values[spec.name] for name, values in presets.items() if spec.name in values}
    if given:
        cells = [
            f"{name} {shown(given.get(name, default))}"
            for name in [DEFAULT_PRESET, *sorted(set(PRESETS) - {DEFAULT_PRESET})]
        ]
        text += f" [{', '.join(cells)}]"
    elif isinstance(default, bool):
        text += f" [default {'on' if default else 'off'}]"
    elif default not in ("", None, []):
        text += f" [default {default}]"
    # SUPPRESS: only flags actually given override the preset.
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": text}
    base = flag_type(hint)
    if base is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(base) is typing.Literal:
        parser.add_argument(flag, choices=typing.get_args(base), **kwargs)
    elif typing.get_origin(base) is list:
        parser.add_argument(flag, nargs="+", metavar="TEXT", **kwargs)
    else:
        parser.add_argument(flag, type=base, metavar=spec.name.split("_")[-1].upper(), **kwargs)


def flag_type(hint: Any) -> Any:
    """What a flag's text is parsed as: the type itself, ``X`` for an optional ``X | None``
    (argparse calls ``type`` on the text, and a union is not callable)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "-" if value is None else str(value)


def quiet_diffusers() -> None:
    from models.registry import quiet_libraries

    quiet_libraries()  # loading bars; training has its own


def print_dropped(malformed: int, superseded: int) -> None:
    """The rows an export left out, counted (training/export.py says why each is dropped)."""
    if malformed:
        print(
            f"{malformed} vote(s) had malformed rows in the database and were skipped.",
            file=sys.stderr,
        )
    if superseded:
        print(
            f"{superseded} earlier post(s) of a request posted again were left out "
            "(the last closed post of a request counts).",
            file=sys.stderr,
        )


def bot_database() -> str:
    """The bot's database as its settings name it: ``COVER_DB_URL`` (PostgreSQL) when set,
    else ``COVER_DB_PATH`` or the default SQLite file."""
    return (
        os.environ.get("COVER_DB_URL")
        or os.environ.get("COVER_DB_PATH")
        or "data/playlist-cover.db"
    )
