"""A second mutation sample, drawn the other way: deleted statements and flipped constants.

    python -m tests.mutation_sample_ast [--per-module 60] [--seed 36] [--new FILE ...] [MODULE ...]

mutmut (tests/mutation_sample.py) mutates expressions – comparisons, ±1 numbers, swapped
operators, dropped arguments, ``x = None`` – but never deletes a statement, so an untested
``PRAGMA`` or a missing ``DELETE`` cannot show up there (issue 36). This sampler makes its own
mutants from the syntax tree. The steps:

1. The packages of ``[tool.mutmut] also_copy`` are copied to a temporary folder: the work tree
   is never changed, so an interrupted run leaves nothing behind.
2. Every function and method body of MODULE gives one mutant per site:
   - ``delete``: a statement replaced by ``pass`` (docstrings and logging calls excepted – a log
     line is not behaviour these samples judge);
   - ``constant``: ``True`` ↔ ``False``, an integer n → n + 1 and n − 1 (so a row index 0 → −1),
     a float x → 2x (0.0 → 1.0);
   - ``compare``: ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``, ``is`` ↔ ``is not``,
     ``in`` ↔ ``not in``;
   - ``operator``: ``+`` ↔ ``-``, ``*`` ↔ ``/``, ``and`` ↔ ``or``, ``not x`` → ``x``.
   Module-level constants, argument defaults and annotations are left alone.
3. ``--per-module`` mutants (all, if fewer) are drawn with ``--seed`` (per module: a module's
   draw is the same alone or with others), each written over the module's copy (as
   ``ast.unparse`` gives it; the clean run uses the same unparsed source) and judged by the
   module's unit tests: the files of ``[tool.mutmut] pytest_add_cli_args_test_selection`` that
   import it, with ``-x``. A mutant is killed when a test fails, errors or runs past
   ``--timeout-factor`` × the clean run.

``--new`` names test files to run last and count apart: a mutant whose first failing test is
in one of them is "killed only by the new tests", so one run gives the score before and after
those files. Prints one line per module and every survivor with its line and change.
Run by hand, one module at a time (about 2-5 s per mutant on a quiet core).
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGGERS = {"log", "logger", "logging"}
COMPARE_SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
BOOLOP_SWAPS = {ast.And: ast.Or, ast.Or: ast.And}
SYMBOLS = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.And: "and",
    ast.Or: "or",
}


@dataclass(frozen=True)
class Mutant:
    """One change: the ``node``-th node of ``ast.walk`` over the module, changed as ``kind``
    (for an integer constant, ``delta`` says ±1)."""

    module: str
    function: str
    line: int
    kind: str
    node: int
    change: str
    delta: int = 0


def _short(node: ast.AST) -> str:
    text = ast.unparse(node).splitlines()[0]
    return text if len(text) <= 60 else text[:57] + "..."


def _is_docstring_or_log(statement: ast.stmt) -> bool:
    if not isinstance(statement, ast.Expr):
        return isinstance(statement, ast.Pass)
    value = statement.value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return True
    func = value.func if isinstance(value, ast.Call) else None
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in LOGGERS
    )


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name, outermost first."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield f"{prefix}{child.name}", child
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            elif not isinstance(child, ast.expr):
                yield from visit(child, prefix)

    yield from visit(tree, "")  # type: ignore[misc]


def mutants(module: str) -> list[Mutant]:
    """Every mutant of ``module`` (a dotted name), in a fixed order."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
    index = {id(node): n for n, node in enumerate(ast.walk(tree))}
    owner: dict[int, str] = {}
    for name, function in _functions(tree):
        for statement in function.body:
            for node in ast.walk(statement):
                owner[id(node)] = name  # inner functions overwrite with their own name later
    found = []
    for node in ast.walk(tree):
        function = owner.get(id(node))
        if function is None:
            continue
        where = dict(module=module, function=function, line=getattr(node, "lineno", 0))
        n = index[id(node)]
        if isinstance(node, ast.stmt) and not _is_docstring_or_log(node):
            found.append(Mutant(**where, kind="delete", node=n, change=f"delete `{_short(node)}`"))
        elif isinstance(node, ast.Constant) and not isinstance(node.value, str | bytes):
            value = node.value
            if isinstance(value, bool):
                found.append(
                    Mutant(**where, kind="constant", node=n, change=f"{value} → {not value}")
                )
            elif isinstance(value, int):
                for delta in (1, -1):
                    change = f"{value} → {value + delta}"
                    found.append(
                        Mutant(**where, kind="constant", node=n, change=change, delta=delta)
                    )
            elif isinstance(value, float):
                flipped = value * 2 if value else 1.0
                found.append(
                    Mutant(**where, kind="constant", node=n, change=f"{value} → {flipped}")
                )
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in COMPARE_SWAPS:
                    change = f"`{SYMBOLS[type(op)]}` → `{SYMBOLS[COMPARE_SWAPS[type(op)]]}`"
                    found.append(Mutant(**where, kind=f"compare{k}", node=n, change=change))
        elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
            change = f"`{SYMBOLS[type(node.op)]}` → `{SYMBOLS[BINOP_SWAPS[type(node.op)]]}`"
            found.append(Mutant(**where, kind="operator", node=n, change=change))
        elif isinstance(node, ast.BoolOp):
            change = f"`{SYMBOLS[type(node.op)]}` → `{SYMBOLS[BOOLOP_SWAPS[type(node.op)]]}`"
            found.append(Mutant(**where, kind="operator", node=n, change=change))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append(Mutant(**where, kind="not", node=n, change="`not x` → `x`"))
    return found


def mutated_source(mutant: Mutant) -> str:
    """The module's source (as ``ast.unparse`` writes it) with ``mutant`` applied."""
    path = ROOT / (mutant.module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = list(ast.walk(tree))
    target = nodes[mutant.node]
    if mutant.kind == "delete":
        for parent in nodes:
            for field in ("body", "orelse", "finalbody"):
                body = getattr(parent, field, None)
                if isinstance(body, list) and any(s is target for s in body):
                    body[[id(s) for s in body].index(id(target))] = ast.Pass()
    elif mutant.kind == "constant":
        value = target.value
        if isinstance(value, bool):
            target.value = not value
        elif isinstance(value, int):
            target.value = value + mutant.delta
        else:
            target.value = value * 2 if value else 1.0
    elif mutant.kind.startswith("compare"):
        k = int(mutant.kind.removeprefix("compare"))
        target.ops[k] = COMPARE_SWAPS[type(target.ops[k])]()
    elif mutant.kind == "operator" and isinstance(target, ast.BinOp):
        target.op = BINOP_SWAPS[type(target.op)]()
    elif mutant.kind == "operator":
        target.op = BOOLOP_SWAPS[type(target.op)]()
    elif mutant.kind == "not":
        replacement = copy.deepcopy(target.operand)
        for parent in nodes:
            for field, value in ast.iter_fields(parent):
                if value is target:
                    setattr(parent, field, replacement)
                elif isinstance(value, list) and any(v is target for v in value):
                    value[[id(v) for v in value].index(id(target))] = replacement
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def mutmut_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"]


def test_files(module: str, new: list[str]) -> list[str]:
    """The test selection's files that import ``module``, ``new`` ones last."""
    config = mutmut_config()
    pattern = re.compile(rf"\b(from|import)\s+{re.escape(module)}\b")
    files = [
        f
        for f in config["pytest_add_cli_args_test_selection"]
        if pattern.search((ROOT / f).read_text(encoding="utf-8"))
    ]
    return [f for f in files if f not in new] + [f for f in files if f in new]


def run_tests(workdir: Path, files: list[str], timeout: float) -> tuple[str, str | None]:
    """("passed" | "failed" | "timeout", the file of the first failing test)."""
    args = [a for a in mutmut_config()["pytest_add_cli_args"] if a != "-x"]
    command = [sys.executable, "-m", "pytest", "-x", *args, *files]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", None
    if done.returncode == 0:
        return "passed", None
    if done.returncode == 5:
        raise RuntimeError(f"no tests collected in {files}")
    first = re.search(r"^(?:FAILED|ERROR) (\S+?)(?:::|\s)", done.stdout, re.MULTILINE)
    return "failed", first.group(1) if first else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation_sample_ast", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("modules", nargs="*", help="dotted module names (default: all four)")
    parser.add_argument("--per-module", type=int, default=60, help="mutants drawn per module")
    parser.add_argument("--seed", type=int, default=36, help="seed of the draw")
    parser.add_argument("--new", nargs="*", default=[], help="test files counted apart, run last")
    parser.add_argument("--timeout-factor", type=float, default=5.0)
    args = parser.parse_args(argv)
    paths = mutmut_config()["source_paths"]
    modules = args.modules or [p.removesuffix(".py").replace("/", ".") for p in paths]

    # A stopped run (kill PID) still removes its copy: SIGTERM unwinds like an exception.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="mutation-ast-") as tmp:
        # 1. A copy of the packages; the tests run there.
        work = Path(tmp)
        for name in mutmut_config()["also_copy"]:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(
                    source, work / name, ignore=shutil.ignore_patterns("__pycache__", "mutants")
                )
            else:
                shutil.copy2(source, work / name)
        for module in modules:
            # 2. and 3. The draw, the clean run, then each mutant.
            everything = mutants(module)
            rng = random.Random(f"{args.seed}:{module}")
            drawn = sorted(
                rng.sample(everything, min(args.per_module, len(everything))),
                key=lambda m: (m.line, m.node, m.delta),
            )
            files = test_files(module, args.new)
            target = work / (module.replace(".", "/") + ".py")
            original = target.read_text(encoding="utf-8")
            target.write_text(ast.unparse(ast.parse(original)) + "\n", encoding="utf-8")
            started = time.monotonic()
            status, _ = run_tests(work, files, timeout=600)
            clean_s = time.monotonic() - started
            if status != "passed":
                raise RuntimeError(f"{module}: the tests fail without a mutant ({status})")
            print(
                f"{module}: {len(everything)} mutants, {len(drawn)} drawn; clean run "
                f"{clean_s:.1f} s over {', '.join(files)}",
                flush=True,
            )
            killed, only_new, survived = 0, [], []
            for mutant in drawn:
                target.write_text(mutated_source(mutant), encoding="utf-8")
                status, first = run_tests(work, files, timeout=args.timeout_factor * clean_s + 10)
                if status == "passed":
                    survived.append(mutant)
                    continue
                killed += 1
                if first in args.new:
                    only_new.append(mutant)
            target.write_text(original, encoding="utf-8")
            total = len(drawn)
            line = f"{module}: {killed}/{total} killed = {killed / max(total, 1):.1%}"
            if args.new:
                before = killed - len(only_new)
                line += f" (without {' '.join(args.new)}: {before}/{total} = {before / max(total, 1):.1%})"
            print(line)
            for mutant in only_new:
                print(
                    f"    killed only by the new tests: {mutant.function} line {mutant.line}: {mutant.change}"
                )
            for mutant in survived:
                print(f"    survived: {mutant.function} line {mutant.line}: {mutant.change}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
