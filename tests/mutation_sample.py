"""Mutation scores of the four core modules on a fixed sample of their logic mutants.

    python -m tests.mutation_sample [--per-module 120] [--seed 15] [--jobs 1] [MODULE ...]

MODULE is a dotted name from ``[tool.mutmut] source_paths`` (default: all four). Run by hand,
not in CI: it takes minutes per module on 2 cores. The steps:

1. ``mutmut run`` with a pattern that matches no mutant: mutmut writes every mutant of the
   configured modules to ``mutants/`` (git-ignored) and records which tests reach which
   function, and runs none.
2. Each mutant is compared with its original function as a syntax tree with every string
   literal blanked: a mutant that only rewords a message (mutmut wraps strings in ``XX``) is
   left out, the rest – flipped comparisons, ±1 constants, negated conditions, swapped
   ``and``/``or``, dropped arguments and statements – are the logic mutants this samples from.
3. ``--per-module`` of those (all, if fewer) are drawn with ``--seed`` (per module, so a
   module's draw is the same whichever others run with it) and run with
   ``mutmut run NAME …``; a mutant counts as killed when a test failed or timed out.

The judging tests are ``[tool.mutmut] pytest_add_cli_args_test_selection`` (the modules' unit
tests), so a mutant only an end-to-end test would catch counts as surviving. Prints one line
per module (killed / sampled, the score) and the names of the survivors;
``mutmut show NAME`` shows one.
"""

from __future__ import annotations

import argparse
import ast
import random
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]
KILLED = {"killed", "timeout"}


def configured_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    paths = config["tool"]["mutmut"]["source_paths"]
    return [path.removesuffix(".py").replace("/", ".") for path in paths]


class _BlankStrings(ast.NodeTransformer):
    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        return ast.Constant("") if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.JoinedStr:
        values = [v if isinstance(v, ast.FormattedValue) else ast.Constant("") for v in node.values]
        return ast.JoinedStr([self.generic_visit(v) for v in values])


def _shape(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """The function's body and arguments with every string literal blanked."""
    blanked = _BlankStrings().visit(ast.parse(ast.unparse(function)))
    [node] = blanked.body
    return ast.dump(ast.Module([*node.body], []), annotate_fields=False) + ast.dump(node.args)


def logic_mutants(module: str) -> list[str]:
    """The names of ``module``'s mutants that change more than a string literal."""
    source = ROOT / "mutants" / (module.replace(".", "/") + ".py")
    functions = {
        node.name: node
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name
    }
    names = []
    for name, function in functions.items():
        base, _, number = name.rpartition("__mutmut_")
        if not number.isdigit() or f"{base}__mutmut_orig" not in functions:
            continue
        if _shape(function) != _shape(functions[f"{base}__mutmut_orig"]):
            names.append(f"{module}.{name}")
    return sorted(names)


def statuses(names: set[str]) -> dict[str, str]:
    listing = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in listing.splitlines():
        name, _, status = line.strip().partition(": ")
        if name in names:
            found[name] = status
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation_sample", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("modules", nargs="*", help="dotted module names (default: all four)")
    parser.add_argument("--per-module", type=int, default=120, help="mutants drawn per module")
    parser.add_argument("--seed", type=int, default=15, help="seed of the draw")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    args = parser.parse_args(argv)
    modules = args.modules or configured_modules()

    # 1. Every mutant written, none run (a fresh mutants/ folder, so no old result counts).
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    # mutmut writes the mutants, then stops with "nothing matches": expected, so kept quiet.
    subprocess.run([*MUTMUT, "run", "no-such-mutant*"], cwd=ROOT, check=False, capture_output=True)
    # 2. and 3. The draw, then one mutmut run over all drawn names.
    drawn: dict[str, list[str]] = {}
    for module in modules:
        candidates = logic_mutants(module)
        rng = random.Random(f"{args.seed}:{module}")  # a module's draw is the same alone or not
        drawn[module] = sorted(rng.sample(candidates, min(args.per_module, len(candidates))))
        print(f"{module}: {len(candidates)} logic mutants, {len(drawn[module])} drawn", flush=True)
    names = [name for module in modules for name in drawn[module]]
    subprocess.run(
        [*MUTMUT, "run", "--max-children", str(args.jobs), *names], cwd=ROOT, check=False
    )
    found = statuses(set(names))
    print()
    for module in modules:
        killed = [n for n in drawn[module] if found.get(n) in KILLED]
        survived = [n for n in drawn[module] if found.get(n) not in KILLED]
        total = len(drawn[module])
        print(f"{module}: {len(killed)}/{total} killed = {len(killed) / max(total, 1):.1%}")
        for name in survived:
            print(f"    survived: {name} ({found.get(name, 'not run')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
