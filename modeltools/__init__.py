"""Tooling for the models that ``/cover`` never runs: stand-ins (tiny random-weight copies of the
hub presets and support models, laid out in a Hugging Face cache, for tests and benchmarks
without a download) and the benchmarks (``python -m modeltools.benchmark``, its ``.cpu`` and
``.runtime`` studies, ``python -m modeltools.benchmark_ray``).

It imports :mod:`models`; nothing in :mod:`models` imports it (the import contracts in
pyproject.toml). The bot's administrators-only ``/benchmark`` command (bot/cogs/benchmark.py)
is the one place the bot runs it.
"""
