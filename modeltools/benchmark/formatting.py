"""Numbers, sizes and plain JSON for the benchmark's tables and files."""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Sequence
from typing import Any


def installed_version(package: str) -> str | None:
    """The installed version of ``package``, without importing it."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def plain_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(item) for item in value]
    return value


def number(value: float) -> str:
    """Three significant digits or so, never in exponent notation."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def byte_size(count: int | None) -> str:
    if count is None:
        return "n/a"
    if count >= 2**30:
        return f"{count / 2**30:.2f} GiB"
    return f"{count / 2**20:.0f} MiB"


def batches(sizes: Sequence[int]) -> str:
    """Pipeline calls as "8+8", or "6×8+4" once there are many."""
    if len(sizes) <= 4:
        return "+".join(str(size) for size in sizes) or "-"
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return "+".join(f"{n}×{size}" if n > 1 else str(size) for size, n in counts.items())


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
