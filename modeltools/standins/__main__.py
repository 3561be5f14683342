"""``python -m modeltools.standins HUB_CACHE [NAME ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from modeltools.standins.diffusion import REAL_REPOS, write_standin
from modeltools.standins.support import SUPPORT_REPOS, write_support_standin


def main(argv: list[str] | None = None) -> int:
    """``python -m modeltools.standins HUB_CACHE [NAME ...]``: write stand-ins (all by default) into
    a hub cache, e.g. to benchmark the presets' pipelines without downloading them."""
    parser = argparse.ArgumentParser(prog="python -m modeltools.standins", description=main.__doc__)
    parser.add_argument("hub_cache", type=Path, help="the folder to use as HF_HUB_CACHE")
    every = [*REAL_REPOS, *SUPPORT_REPOS]
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(every)} (all)")
    parser.add_argument("--safety", choices=["pass", "flag-all"], default="pass")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(every))
    if unknown:
        parser.error(f"no stand-in for {', '.join(unknown)}; there are {', '.join(every)}")
    for name in args.names or every:
        if name in SUPPORT_REPOS:
            print(f"{name}: {write_support_standin(name, args.hub_cache)}")
            continue
        for snapshot in write_standin(name, args.hub_cache, safety=args.safety):
            print(f"{name}: {snapshot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
