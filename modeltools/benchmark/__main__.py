"""``python -m modeltools.benchmark`` (see :mod:`modeltools.benchmark.cli`)."""

from modeltools.benchmark.cli import main

raise SystemExit(main())
