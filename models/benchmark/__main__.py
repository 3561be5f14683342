"""``python -m models.benchmark`` (see :mod:`models.benchmark.cli`)."""

from models.benchmark.cli import main

raise SystemExit(main())
