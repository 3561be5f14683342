"""Each layer's error module draws its whole tree in its docstring: every error class it holds is
drawn, under its real parent, and nothing drawn is missing."""

from __future__ import annotations

import inspect
import re
from types import ModuleType

import pytest

import bot.app.errors
import models.errors
import models.parameters
from models.errors import CoverError


def drawn(module: ModuleType) -> dict[str, str]:
    """name → parent name, read from the tree in the module's docstring (a child's name starts
    four columns right of its parent's)."""
    at_column: dict[int, str] = {}
    tree = {}
    for line in (module.__doc__ or "").splitlines():
        match = re.search(r"[├└]── (\w+)", line) or re.match(r"\s+(CoverError)\b", line)
        if match is None:
            continue
        column = match.start(1)
        at_column[column] = match[1]
        if column - 4 in at_column:
            tree[match[1]] = at_column[column - 4]
    return tree


def defined(module: ModuleType) -> dict[str, str]:
    return {
        name: cls.__mro__[1].__name__
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and issubclass(cls, CoverError)
        and cls.__module__ == module.__name__
        and cls is not CoverError
    }


@pytest.mark.parametrize("module", [models.errors, bot.app.errors])
def test_the_docstring_draws_every_error_of_its_module_under_its_parent(module):
    tree = drawn(module)
    for name, parent in defined(module).items():
        assert tree.get(name) == parent, f"{name} is drawn under {tree.get(name)}, not {parent}"
