"""What a benchmark measures: workloads, their timed results and the pure maths over them."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.jobs import GenerationParams, JobResult
from models.registry import resolve_model

DEFAULT_PROMPT = "Quiet Afternoon playlist cover image"  # the seed paper's prompt shape


@dataclass(frozen=True)
class Workload:
    """``requests`` requests submitted at once, each asking for ``images_per_request`` images."""

    name: str  # e.g. "lone request", "4 concurrent x 4"
    requests: int  # concurrent requests submitted at once
    images_per_request: int = 4

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"`requests` must be at least 1, got {self.requests}.")
        if self.images_per_request < 1:
            raise ValueError(
                f"`images_per_request` must be at least 1, got {self.images_per_request}."
            )

    @classmethod
    def concurrent(cls, requests: int, images_per_request: int = 4) -> Workload:
        """The workload of ``requests`` concurrent requests, named the usual way."""
        name = "lone request" if requests == 1 else f"{requests} concurrent x {images_per_request}"
        return cls(name, requests, images_per_request)


DEFAULT_WORKLOADS: tuple[Workload, ...] = (
    Workload("lone request", 1),
    Workload("4 concurrent x 4", 4),
    Workload("8 concurrent x 4", 8),
)


@dataclass(frozen=True)
class WorkloadResult:
    workload: Workload
    images: int
    wall_s: float  # first submit -> last result
    images_per_s: float
    latency_p50_s: float  # per-request latency: submit -> result
    latency_p95_s: float
    batch_sizes: tuple[int, ...]  # the pipeline calls the queue made, largest first
    # (worker, images) per queue worker (device or Ray actor) that made some, in worker order
    per_worker: tuple[tuple[str, int], ...] = ()

    @classmethod
    def timed(
        cls,
        workload: Workload,
        images: int,
        wall_s: float,
        latencies: Sequence[float],
        batch_sizes: tuple[int, ...],
        per_worker: tuple[tuple[str, int], ...] = (),
    ) -> WorkloadResult:
        """A result from the run's wall time and each request's latency."""
        wall_s = max(wall_s, 1e-9)
        return cls(
            workload=workload,
            images=images,
            wall_s=wall_s,
            images_per_s=images / wall_s,
            latency_p50_s=percentile(latencies, 50),
            latency_p95_s=percentile(latencies, 95),
            batch_sizes=batch_sizes,
            per_worker=per_worker,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkloadResult:
        return cls(
            workload=Workload(**data["workload"]),
            images=data["images"],
            wall_s=data["wall_s"],
            images_per_s=data["images_per_s"],
            latency_p50_s=data["latency_p50_s"],
            latency_p95_s=data["latency_p95_s"],
            batch_sizes=tuple(data["batch_sizes"]),
            per_worker=tuple((name, count) for name, count in data.get("per_worker", ())),
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` by linear interpolation between the two
    nearest ranks, as ``numpy.percentile``'s default method does:

        x = sorted(values), p = (n - 1) * q / 100, i = floor(p)
        percentile = x[i] + (p - i) * (x[i+1] - x[i])
    """
    if not values:
        raise ValueError("`values` is empty: a percentile needs at least one value.")
    if not 0 <= q <= 100:
        raise ValueError(f"`q` must be within 0-100, got {q}.")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


def pipeline_calls(results: Sequence[JobResult]) -> tuple[int, ...]:
    """The sizes of the pipeline calls behind ``results``, largest first.

    Each :class:`JobResult` lists the size of every call its job took part in, so a call of 8
    shared by two jobs of 4 shows up twice. Per call size, add up the images each job put into
    calls of that size, and divide by the size. Exact when a job shares one call with others or
    is alone in each of its calls (the queue's two cases); after out-of-memory splits that mixed
    jobs unevenly it is an estimate, as a job's images are then spread evenly over its calls.
    """
    images_in: defaultdict[int, float] = defaultdict(float)
    for result in results:
        sizes = result.batch_sizes
        if not sizes:
            continue
        if sum(sizes) == len(result.images):  # alone in every call (or a single call)
            shares: Sequence[float] = sizes
        else:
            shares = [len(result.images) / len(sizes)] * len(sizes)
        for size, share in zip(sizes, shares, strict=True):
            images_in[size] += share
    calls: list[int] = []
    for size in sorted(images_in, reverse=True):
        calls += [size] * max(1, round(images_in[size] / size))
    return tuple(calls)


def images_per_worker(results: Sequence[JobResult]) -> tuple[tuple[str, int], ...]:
    """How many of the images behind ``results`` each queue worker made, in first-seen order.

    A job's images are spread over its calls as in :func:`pipeline_calls` (exact when the job
    shares one call or is alone in each), then counted for the worker of each call.
    """
    made: dict[str, float] = {}
    for result in results:
        if not result.workers:
            continue
        sizes = result.batch_sizes
        if sum(sizes) == len(result.images):
            shares: Sequence[float] = sizes
        else:
            shares = [len(result.images) / len(sizes)] * len(sizes)
        for worker, share in zip(result.workers, shares, strict=True):
            made[worker] = made.get(worker, 0.0) + share
    return tuple((worker, round(count)) for worker, count in made.items())


def preset_params(model: str, *, steps: int | None, size: int | None) -> GenerationParams:
    """One cover's parameters for ``model``: its preset's size, steps and guidance, unless
    ``steps`` or ``size`` override them (the CPU benchmarks' side-by-side runs)."""
    spec = resolve_model(model)
    return GenerationParams(
        model=model,
        width=size or spec.native_size,
        height=size or spec.native_size,
        steps=steps or spec.steps,
        guidance=spec.guidance,
    )


def spread(values: Sequence[float]) -> str:
    """Seconds as "median [min–max]", one decimal."""
    return f"{statistics.median(values):.1f} [{min(values):.1f}–{max(values):.1f}]"
