"""``python -m eval``: FID/KID studies comparing models on held-out prompts.

The commands arrive with their own issue; until then this entry point says so plainly
instead of pretending to train.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval",
        description="Reproduce the seed paper's FID study. Not available yet in this release.",
    )
    parser.parse_args(argv)
    print("error: evaluation is not available in this release yet.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
