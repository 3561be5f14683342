"""How soon the first candidate of a cover is finished on a CPU: one batch of 4, or 1 then 3.

``python -m modeltools.benchmark.cpu --first-candidate`` runs, with our runner (``--opt``),

    whole:  one call of 4 candidates: the first is finished when all are
    split:  one call of 1 candidate, then one of the other 3: the first is finished after the
            first call, the cover after both

alternating whole, split, whole, split, … ``--repeats`` times after one untimed cover each,
and reports the first candidate's and the whole cover's seconds both ways (medians with the
range of the runs). A batch makes the UNet's matrix products larger, so it can be cheaper per
image than single calls; whether that is worth a first candidate later is what this measures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeltools.benchmark.workload import DEFAULT_PROMPT, preset_params, spread

CANDIDATES = 4
WAYS = ("whole", "split")


@dataclass(frozen=True)
class FirstCandidate:
    model: str
    steps: int
    size: int
    repeats: int
    optimizations: str
    first_s: dict[str, tuple[float, ...]]  # per way, per run: first candidate finished
    cover_s: dict[str, tuple[float, ...]]  # per way, per run: all four finished

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "steps": self.steps,
            "size": self.size,
            "candidates": CANDIDATES,
            "repeats": self.repeats,
            "optimizations": self.optimizations,
            "first_s": {way: list(v) for way, v in self.first_s.items()},
            "cover_s": {way: list(v) for way, v in self.cover_s.items()},
        }

    def table(self) -> str:
        lines = [
            f"{self.model} · {self.size}x{self.size} px · {self.steps} step(s) · one cover of "
            f"{CANDIDATES} · n = {self.repeats} alternating covers per way, median [min–max]",
            f"ours: {self.optimizations}",
            "",
            "| way | first candidate s | whole cover s |",
            "|---|---|---|",
            *(
                f"| {way} ({'4' if way == 'whole' else '1 + 3'}) | {spread(self.first_s[way])} "
                f"| {spread(self.cover_s[way])} |"
                for way in WAYS
            ),
        ]
        return "\n".join(lines)


def measure_first_candidate(
    model: str,
    *,
    steps: int | None,
    repeats: int,
    optimizations: Any,
    cache_dir: Path,
    size: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    say: Callable[[str], None] = print,
) -> FirstCandidate:
    """Both ways for one ``model`` (see the module docstring)."""
    from models.jobs import ImageSpec, NoControl
    from models.runner import DiffusersRunner

    params = preset_params(model, steps=steps, size=size)
    runner = DiffusersRunner(device="cpu", cache_dir=cache_dir, optimizations=optimizations)
    runner.pipeline(params)

    def cover(way: str, text: str) -> tuple[float, float]:
        specs = [ImageSpec(text, "", seed=k) for k in range(CANDIDATES)]
        batches = [specs] if way == "whole" else [specs[:1], specs[1:]]
        began = time.perf_counter()
        ends = []
        for batch in batches:
            runner(params, batch, NoControl())
            ends.append(time.perf_counter() - began)
        return ends[0], ends[-1]

    for way in WAYS:  # untimed: the first call of each batch size sets up its kernels
        cover(way, f"{prompt} 0")
    first: dict[str, list[float]] = {way: [] for way in WAYS}
    whole: dict[str, list[float]] = {way: [] for way in WAYS}
    for attempt in range(1, repeats + 1):
        for way in WAYS:
            a, b = cover(way, f"{prompt} {attempt}")
            first[way].append(a)
            whole[way].append(b)
            say(f"cpu: {model}: run {attempt}/{repeats} {way}: first {a:.1f} s, cover {b:.1f} s")
    return FirstCandidate(
        model=model,
        steps=params.steps,
        size=params.width,
        repeats=repeats,
        optimizations=optimizations.describe(),
        first_s={way: tuple(v) for way, v in first.items()},
        cover_s={way: tuple(v) for way, v in whole.items()},
    )
