"""``python -m training``: fine-tuning (full with EMA, and LoRA) and dataset building.

The commands arrive with their own issue; until then this entry point says so plainly
instead of pretending to train.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Reproduce the seeds' fine-tuning (full fine-tune with EMA, and LoRA). "
        "Not available yet in this release.",
    )
    parser.parse_args(argv)
    print("error: training is not available in this release yet.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
