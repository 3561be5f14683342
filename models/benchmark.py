"""The generation benchmark: images per second and latency, measured through a GenerationQueue.

It goes through the same queue users go through, so what it measures is what they get: the
queue's batching of concurrent requests, its worker thread and the runner's real pipeline.

    warm-up job (loads the pipeline; not counted)
        │
    for each Workload: submit ``requests`` jobs at once ─► queue ─► runner
        │   per request: submit → result latency; per workload: first submit → last result
        │   peak memory: CUDA's allocator counter, or the process RSS sampled in a thread
        ▼
    BenchmarkReport ─► table() for Discord, render_chart() and write_report() for the docs

Two callers: the bot's admin ``/benchmark`` runs it on the bot's own, already running queue at a
low priority (users' jobs go first, so their work shows up in the numbers as waiting time), and
``python -m models.benchmark`` builds a queue of its own. torch is imported lazily, and only for
CUDA's memory counters: the bot imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from PIL import Image, ImageDraw, ImageFont

from models.errors import CoverError, ModelUnavailable
from models.jobs import GenerationJob, GenerationParams, ImageSpec, JobResult
from models.optimize import Optimizations

if TYPE_CHECKING:
    from models.queue import GenerationQueue, JobHandle

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "Quiet Afternoon playlist cover image"  # the seed paper's prompt shape
TABLE_LIMIT = 1500  # characters; a Discord message holds 2000, the table shares it with text
CUDA_MEMORY = "cuda max allocated"
SAMPLED_RSS = "process RSS peak (sampled)"
LIFETIME_RSS = "process RSS peak (lifetime, getrusage)"
NOT_MEASURED = "not measured"


# -- what is measured ----------------------------------------------------------------------


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


@dataclass(frozen=True)
class BenchmarkReport:
    model: str
    device: str
    width: int
    height: int
    steps: int
    guidance: float
    results: tuple[WorkloadResult, ...]
    peak_memory_bytes: int | None  # over the measured workloads, not the warm-up
    memory_kind: str  # what peak_memory_bytes is: CUDA_MEMORY, SAMPLED_RSS, LIFETIME_RSS, ...
    torch_version: str | None
    started_at: str  # ISO 8601, UTC
    total_s: float  # the whole run, warm-up included
    max_batch: int | None = None  # the queue's cap on images per pipeline call
    setup: str = "our queue"  # how the images were made (the baseline says so)

    @classmethod
    def measured(
        cls,
        params: GenerationParams,
        device: str,
        results: Sequence[WorkloadResult],
        memory: tuple[int | None, str],
        started_at: datetime,
        began: float,
        *,
        max_batch: int | None = None,
        setup: str = "our queue",
    ) -> BenchmarkReport:
        """A report of a run that started at ``started_at`` (``began`` on perf_counter)."""
        return cls(
            model=params.model,
            device=device,
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance=params.guidance,
            results=tuple(results),
            peak_memory_bytes=memory[0],
            memory_kind=memory[1],
            torch_version=_installed_version("torch"),
            started_at=started_at.isoformat(timespec="seconds"),
            total_s=time.perf_counter() - began,
            max_batch=max_batch,
            setup=setup,
        )

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON types (lists, not tuples): ``json.dumps`` takes it as is."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchmarkReport:
        """The inverse of :meth:`to_json` (e.g. to compare with a report in docs/benchmarks)."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"results"}
        return cls(
            **{name: data[name] for name in fields if name in data},
            results=tuple(WorkloadResult.from_json(item) for item in data["results"]),
        )

    def table(self) -> str:
        """A fixed-width table for a Discord code block (under :data:`TABLE_LIMIT` characters):
        a header naming the setup, one row per workload, a footer with memory and totals."""
        header = _clip(
            f"{self.model} on {self.device} · {self.width}x{self.height} px · "
            f"{self.steps} steps · guidance {self.guidance:g}"
            + (f" · max batch {self.max_batch}" if self.max_batch else ""),
            100,
        )
        name_width = min(28, max(len("workload"), *(len(r.workload.name) for r in self.results)))
        row = f"{{:<{name_width}}} {{:>6}} {{:>7}} {{:>7}} {{:>7}}  {{}}"
        columns = row.format("workload", "images", "img/s", "p50 s", "p95 s", "batches")
        rows = [
            row.format(
                _clip(r.workload.name, name_width),
                r.images,
                _number(r.images_per_s),
                _number(r.latency_p50_s),
                _number(r.latency_p95_s),
                _clip(_batches(r.batch_sizes), 24),
            )
            for r in self.results
        ]
        per_device = self.per_device_line()
        footer = per_device + _clip(
            f"peak memory {_bytes(self.peak_memory_bytes)} ({self.memory_kind}) · "
            f"total {self.total_s:.1f} s · torch {self.torch_version or 'not installed'}",
            120,
        )
        # Many workloads would overflow a message: keep the first ones, say how many are left.
        while rows:
            hidden = len(self.results) - len(rows)
            more = [f"… and {hidden} more workload(s) in the JSON"] if hidden else []
            text = "\n".join([header, columns, *rows, *more, footer])
            if len(text) < TABLE_LIMIT:
                return text
            rows.pop()
        return "\n".join([header, f"{len(self.results)} workload(s): see the JSON", footer])

    def per_device_line(self) -> str:
        """With several queue workers: each one's images and images/s over all workloads
        (the rows above are the totals), then a newline; else nothing."""
        images: defaultdict[str, int] = defaultdict(int)
        for result in self.results:
            for worker, count in result.per_worker:
                images[worker] += count
        if len(images) < 2:
            return ""
        wall = sum(result.wall_s for result in self.results)
        parts = [f"{w} {n} img ({_number(n / wall)}/s)" for w, n in images.items()]
        return _clip("per device: " + ", ".join(parts), 300) + "\n"


# -- pure maths ----------------------------------------------------------------------------


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


# -- running it ----------------------------------------------------------------------------


async def run_queue_benchmark(
    queue: GenerationQueue,
    params: GenerationParams,
    *,
    device: str,
    workloads: Sequence[Workload] = DEFAULT_WORKLOADS,
    priority: int = 1,
    warmup: bool = True,
    prompt: str = DEFAULT_PROMPT,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkReport:
    """Run ``workloads`` one after the other through ``queue`` (started, on this event loop).

    Each request is a job of user ``benchmark-<i>`` at ``priority``: with 1 or more, users'
    waiting jobs run first and never share a pipeline call with the benchmark's. ``device`` is
    where the queue's runner runs (``runner.device``); it picks the memory probe. ``progress``
    is told a short line as each stage starts.

    Errors propagate after the benchmark's jobs still in the queue are cancelled: a
    :class:`~models.errors.CoverError` when the queue refuses a job (``QueueFull``, ...) or a
    job fails, ``ValueError`` for empty ``workloads``.
    """
    if not workloads:
        raise ValueError("`workloads` is empty: give at least one Workload.")
    say = progress or (lambda line: None)
    started_at = datetime.now(UTC)
    began = time.perf_counter()

    # 1. Warm-up: the first call loads the pipeline (and on CUDA, picks its kernels).
    if warmup:
        # 1 loads the model; a compiled UNet also compiles each batch bucket on first use.
        optimizations = getattr(queue.runner, "optimizations", None) or Optimizations.plain()
        sizes = optimizations.warm_up_sizes(queue.max_batch)
        say(f"warming up (loading the model; batch sizes {', '.join(map(str, sizes))})")
        for size in sizes:  # one after the other, so each runs at exactly its size
            specs = tuple(ImageSpec(prompt, "", seed=k) for k in range(size))
            await _submit_and_wait(queue, [_job("benchmark-warmup", params, specs, priority)])

    # 2. The workloads, with the memory probe watching only them.
    probe = MemoryProbe(device)
    results: list[WorkloadResult] = []
    try:
        for number, workload in enumerate(workloads, start=1):
            say(f"workload {number}/{len(workloads)}: {workload.name}")
            results.append(await _measure(queue, params, workload, prompt, priority))
    finally:
        peak, memory_kind = probe.stop()

    return BenchmarkReport.measured(
        params, device, results, (peak, memory_kind), started_at, began, max_batch=queue.max_batch
    )


async def _measure(
    queue: GenerationQueue,
    params: GenerationParams,
    workload: Workload,
    prompt: str,
    priority: int,
) -> WorkloadResult:
    per_request = workload.images_per_request
    jobs = [
        _job(
            f"benchmark-{i}",  # one user per request: the per-user limit does not apply
            params,
            tuple(ImageSpec(prompt, "", seed=i * per_request + k) for k in range(per_request)),
            priority,
        )
        for i in range(workload.requests)
    ]
    timed = await _submit_and_wait(queue, jobs)
    first_submit = min(submitted for submitted, _, _ in timed)
    last_result = max(finished for _, _, finished in timed)
    latencies = [finished - submitted for submitted, _, finished in timed]
    results = [result for _, result, _ in timed]
    images = sum(len(result.images) for result in results)
    return WorkloadResult.timed(
        workload,
        images,
        last_result - first_submit,
        latencies,
        pipeline_calls(results),
        images_per_worker(results),
    )


def _job(
    user_id: str, params: GenerationParams, images: tuple[ImageSpec, ...], priority: int
) -> GenerationJob:
    return GenerationJob(
        user_id=user_id, params=params, images=images, priority=priority, label="benchmark"
    )


async def _submit_and_wait(
    queue: GenerationQueue, jobs: Sequence[GenerationJob]
) -> list[tuple[float, JobResult, float]]:
    """Submit ``jobs`` at once and wait for all: (submitted at, result, result at) per job, on
    the ``time.perf_counter`` clock. Whatever happens (a refused submit, a failed job, this
    coroutine cancelled), none of these jobs is left in the queue afterwards."""
    handles: list[JobHandle] = []
    submitted: list[float] = []
    try:
        for job in jobs:
            submitted.append(time.perf_counter())
            handles.append(queue.submit(job))
        finished = await _results(handles)
    finally:
        for handle in handles:
            handle.cancel()  # a no-op for jobs that have ended
    return [(s, result, at) for s, (result, at) in zip(submitted, finished, strict=True)]


async def _results(handles: Sequence[JobHandle]) -> list[tuple[JobResult, float]]:
    """Each job's result and when it came, in order; the first failure is raised at once."""

    async def result_of(handle: JobHandle) -> tuple[JobResult, float]:
        result = await handle.result()
        return result, time.perf_counter()

    tasks = [asyncio.create_task(result_of(handle)) for handle in handles]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            error = task.exception() if task.done() else None
            if error is not None:
                raise error
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # retrieve what they raised


# -- the baseline and the comparison ----------------------------------------------------


def run_baseline(
    pipe: Any,
    params: GenerationParams,
    *,
    device: str,
    workloads: Sequence[Workload] = DEFAULT_WORKLOADS,
    prompt: str = DEFAULT_PROMPT,
    progress: Callable[[str], None] | None = None,
    warmup: bool = True,
) -> BenchmarkReport:
    """The baseline, blocking: what a bot without our queue does. All of a workload's requests
    arrive at once; each gets one plain ``pipe(...)`` call of its own, one after the other.

    ``pipe`` is a pipeline as diffusers loads it (no :mod:`models.optimize` applied). A
    request's latency runs from the common arrival to the end of its own call.
    """
    import torch

    if not workloads:
        raise ValueError("`workloads` is empty: give at least one Workload.")
    say = progress or (lambda line: None)
    started_at = datetime.now(UTC)
    began = time.perf_counter()

    def call(count: int, first_seed: int) -> None:
        pipe(
            prompt=[prompt] * count,
            negative_prompt=[""] * count,
            generator=[torch.Generator("cpu").manual_seed(first_seed + k) for k in range(count)],
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            width=params.width,
            height=params.height,
        )

    if warmup:
        say("baseline: warming up")
        call(1, 0)
    probe = MemoryProbe(device)
    results: list[WorkloadResult] = []
    try:
        for number, workload in enumerate(workloads, start=1):
            say(f"baseline workload {number}/{len(workloads)}: {workload.name}")
            per_request = workload.images_per_request
            arrived = time.perf_counter()
            latencies = []
            for request in range(workload.requests):
                call(per_request, request * per_request)
                latencies.append(time.perf_counter() - arrived)
            results.append(
                WorkloadResult.timed(
                    workload,
                    workload.requests * per_request,
                    latencies[-1],
                    latencies,
                    (per_request,) * workload.requests,
                )
            )
    finally:
        peak, memory_kind = probe.stop()
    return BenchmarkReport.measured(
        params,
        device,
        results,
        (peak, memory_kind),
        started_at,
        began,
        setup="baseline: one plain diffusers call per request, in turn",
    )


async def run_comparison(
    pipe: Any,
    queue: GenerationQueue,
    params: GenerationParams,
    *,
    device: str,
    workloads: Sequence[Workload] = DEFAULT_WORKLOADS,
    repeats: int = 3,
    optimizations: str = "",
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Each workload ``repeats`` times each way, alternating baseline and ours, keeping each
    side's median run (by images/s).

    Alternating, and the median, because a shared machine's speed drifts by tens of percent
    from minute to minute: one long baseline run followed by one long run of ours would
    measure the drift. The baseline's calls run in a worker thread, as the queue's do.
    """
    say = progress or (lambda line: None)
    began = time.perf_counter()
    say("warming up both sides")
    await asyncio.to_thread(run_baseline, pipe, params, device=device, workloads=workloads[:1])
    warm = await run_queue_benchmark(queue, params, device=device, workloads=workloads[:1])
    base_runs: list[BenchmarkReport] = []
    our_runs: list[BenchmarkReport] = []
    base_best: list[WorkloadResult] = []
    our_best: list[WorkloadResult] = []
    for number, workload in enumerate(workloads, start=1):
        base_tries, our_tries = [], []
        for attempt in range(1, repeats + 1):
            say(f"workload {number}/{len(workloads)} ({workload.name}), run {attempt}/{repeats}")
            base = await asyncio.to_thread(
                run_baseline, pipe, params, device=device, workloads=[workload], warmup=False
            )
            ours = await run_queue_benchmark(
                queue, params, device=device, workloads=[workload], warmup=False
            )
            base_runs.append(base)
            our_runs.append(ours)
            base_tries.append(base.results[0])
            our_tries.append(ours.results[0])
        base_best.append(_median_run(base_tries))
        our_best.append(_median_run(our_tries))

    def merged(runs: list[BenchmarkReport], results: list[WorkloadResult]) -> BenchmarkReport:
        peaks = [r.peak_memory_bytes for r in runs if r.peak_memory_bytes is not None]
        return dataclasses.replace(
            runs[0],
            results=tuple(results),
            peak_memory_bytes=max(peaks) if peaks else None,
            total_s=time.perf_counter() - began,
            started_at=warm.started_at,
        )

    flop = await asyncio.to_thread(unet_flop_per_image, pipe, params)
    return Comparison(
        merged(base_runs, base_best),
        merged(our_runs, our_best),
        optimizations,
        unet_tflop_per_image=flop / 1e12,
        peak_tflops=peak_tflops(device),
        repeats=repeats,
    )


def _median_run(runs: Sequence[WorkloadResult]) -> WorkloadResult:
    """The run with the median images/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.images_per_s)
    return ordered[(len(ordered) - 1) // 2]


def unet_flop_per_image(pipe: Any, params: GenerationParams) -> float:
    """FLOPs the UNet spends on one image: one forward pass at batch 1, counted by
    ``torch.utils.flop_counter``, times the steps, times 2 with classifier-free guidance
    (the conditional and unconditional passes). Attention and convolutions dominate; the
    scheduler's and the VAE's work is left out, so utilisation is slightly understated."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # count the eager module when compiled
    factor = getattr(pipe, "vae_scale_factor", 8)
    config = unet.config
    device, dtype = unet.device, unet.dtype
    latents = torch.zeros(
        1,
        config.in_channels,
        params.height // factor,
        params.width // factor,
        device=device,
        dtype=dtype,
    )  # (1, C, H/8, W/8)
    width = config.cross_attention_dim
    context = torch.zeros(1, 77, width, device=device, dtype=dtype)  # (1, tokens, width)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(latents, torch.tensor([500], device=device), encoder_hidden_states=context)
    per_pass = float(counter.get_total_flops())
    return per_pass * params.steps * (2 if params.guidance > 1 else 1)


# Dense bf16/fp16 tensor-core peaks (vendor figures, without sparsity), for "share of peak".
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}


def peak_tflops(device: str) -> float | None:
    """The GPU's published half-precision peak, when its name is in :data:`PEAK_TFLOPS`."""
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


@dataclass(frozen=True)
class Comparison:
    """The same workloads run the baseline way and through our queue, in one process."""

    baseline: BenchmarkReport
    ours: BenchmarkReport
    optimizations: str  # Optimizations.describe() of our side
    unet_tflop_per_image: float | None = None
    peak_tflops: float | None = None  # the GPU's, when known
    repeats: int = 1  # runs per workload and side; each side's median run is kept

    def speedups(self) -> list[float]:
        return [
            ours.images_per_s / base.images_per_s
            for base, ours in zip(self.baseline.results, self.ours.results, strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.to_json(),
            "ours": self.ours.to_json(),
            "optimizations": self.optimizations,
            "unet_tflop_per_image": self.unet_tflop_per_image,
            "peak_tflops": self.peak_tflops,
            "repeats": self.repeats,
            "speedups": self.speedups(),
        }

    def tflops(self, result: WorkloadResult) -> float | None:
        if self.unet_tflop_per_image is None:
            return None
        return result.images_per_s * self.unet_tflop_per_image

    def table(self) -> str:
        """Side by side: images/s and latency both ways, the speed-up, and the UNet's
        achieved TFLOP/s (and share of the GPU's peak, when known)."""
        head = self.ours
        lines = [
            f"{head.model} on {head.device} · {head.width}x{head.height} px · {head.steps} steps"
            f" · guidance {head.guidance:g} · max batch {head.max_batch}",
            f"ours: {self.optimizations} · median of {self.repeats} alternating run(s) per side",
            f"{'workload':<18} {'base img/s':>10} {'ours img/s':>10} {'speed-up':>8} "
            f"{'base p50/p95 s':>15} {'ours p50/p95 s':>15} {'TFLOP/s':>8}",
        ]
        for base, ours, speedup in zip(
            self.baseline.results, self.ours.results, self.speedups(), strict=True
        ):
            achieved = self.tflops(ours)
            flops = "–" if achieved is None else f"{achieved:.3g}"
            if achieved is not None and self.peak_tflops:
                flops += f" ({achieved / self.peak_tflops:.0%})"
            lines.append(
                f"{_clip(ours.workload.name, 18):<18} {_number(base.images_per_s):>10} "
                f"{_number(ours.images_per_s):>10} {speedup:>7.2f}x "
                f"{_number(base.latency_p50_s) + '/' + _number(base.latency_p95_s):>15} "
                f"{_number(ours.latency_p50_s) + '/' + _number(ours.latency_p95_s):>15} "
                f"{flops:>8}"
            )
        lines.append(
            f"peak memory: baseline {_bytes(self.baseline.peak_memory_bytes)}, "
            f"ours {_bytes(head.peak_memory_bytes)} ({head.memory_kind}) · "
            f"torch {head.torch_version or '?'}"
        )
        return "\n".join(lines)


# -- peak memory ---------------------------------------------------------------------------


class MemoryProbe:
    """Peak memory from now until :meth:`stop`, measured as well as this device allows:
    CUDA's allocator counter (tensors only, not the caching allocator's reserve), else the
    process's resident set size sampled every ``interval_s`` (peaks shorter than that can be
    missed), else the process's lifetime RSS peak from ``getrusage``."""

    def __init__(self, device: str, *, interval_s: float = 0.02) -> None:
        device = device.split(",")[0].strip()  # several devices: the first one's counter
        self._cuda = device.startswith("cuda")
        self._interval_s = interval_s
        self._peak: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if self._cuda:
            import torch  # lazily: only a CUDA device gets here, and its runner has loaded torch

            torch.cuda.reset_peak_memory_stats(device)
            self._device = device
        elif (rss := read_rss_bytes()) is not None:
            self._peak = rss
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stopping.wait(self._interval_s):
            rss = read_rss_bytes()
            if rss is not None and (self._peak is None or rss > self._peak):
                self._peak = rss

    def stop(self) -> tuple[int | None, str]:
        """The peak in bytes (None when nothing could measure it) and what kind of peak it is."""
        if self._cuda:
            import torch

            return int(torch.cuda.max_memory_allocated(self._device)), CUDA_MEMORY
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            rss = read_rss_bytes()
            peak = max(self._peak or 0, rss or 0)
            return peak, SAMPLED_RSS
        return _lifetime_rss_peak()


def read_rss_bytes() -> int | None:
    """This process's resident set size now, from ``/proc/self/statm`` (None off Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _lifetime_rss_peak() -> tuple[int | None, str]:
    try:
        import resource
    except ImportError:  # Windows
        return None, NOT_MEASURED
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux counts KiB, macOS bytes.
    return (peak if sys.platform == "darwin" else peak * 1024), LIFETIME_RSS


def _installed_version(package: str) -> str | None:
    """The installed version of ``package``, without importing it."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- presenting it -------------------------------------------------------------------------

_BACKGROUND = (255, 255, 255)
_INK = (33, 37, 41)
_MUTED = (108, 117, 125)
_GRID = (222, 226, 230)
_BAR = (29, 185, 84)  # Spotify green
_BAR_EDGE = (20, 130, 60)


def render_chart(report: BenchmarkReport, *, width: int = 800, height: int = 450) -> Image.Image:
    """A bar chart of images/s per workload, with each bar's p50/p95 latency over it and the
    model, device and setup in the title. Pillow only."""
    if width < 200 or height < 150:
        raise ValueError(f"The chart needs at least 200x150 px, got {width}x{height}.")
    image = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font = _font(max(12, height // 22))
    text_font = _font(max(10, height // 34))
    line = _line_height(draw, text_font)

    # 1. Title and the setup beneath it.
    title = f"Generation benchmark: {report.model} on {report.device}"
    draw.text((16, 12), _fit(draw, title, title_font, width - 32), font=title_font, fill=_INK)
    setup = (
        f"{report.width}x{report.height} px · {report.steps} steps · "
        f"guidance {report.guidance:g} · peak memory {_bytes(report.peak_memory_bytes)} "
        f"({report.memory_kind}) · {report.started_at}"
    )
    top = 12 + _line_height(draw, title_font) + 6
    draw.text((16, top), _fit(draw, setup, text_font, width - 32), font=text_font, fill=_MUTED)

    # 2. The plot area; the y scale leaves room above the tallest bar for its three labels.
    left, right = 16 + int(draw.textlength("0000.0", font=text_font)) + 8, width - 16
    plot_top, plot_bottom = top + 2 * line + 8, height - 2 * line - 16
    plot_height = plot_bottom - plot_top
    labels_height = 3 * line + 6
    highest = max((r.images_per_s for r in report.results), default=0.0)
    scale_top = _nice_ceiling(highest * plot_height / max(plot_height - labels_height, 1))
    draw.text((16, plot_top - line - 4), "images / s", font=text_font, fill=_MUTED)

    def y_of(value: float) -> float:
        return plot_bottom - value / scale_top * plot_height

    step = _nice_ceiling(scale_top / 5)
    for tick in range(int(scale_top / step + 1e-9) + 1):
        value = tick * step
        y = y_of(value)
        draw.line([(left, y), (right, y)], fill=_GRID, width=1)
        draw.text((left - 6, y), f"{value:g}", font=text_font, fill=_MUTED, anchor="rm")

    # 3. One bar per workload: images/s on top, then p50 and p95; the name below.
    slot = (right - left) / max(len(report.results), 1)
    for index, result in enumerate(report.results):
        center = left + slot * (index + 0.5)
        half = slot * 0.3
        bar_top = y_of(result.images_per_s)
        draw.rectangle(
            [(center - half, bar_top), (center + half, plot_bottom)], fill=_BAR, outline=_BAR_EDGE
        )
        labels = [
            (f"p95 {_number(result.latency_p95_s)} s", _MUTED),
            (f"p50 {_number(result.latency_p50_s)} s", _MUTED),
            (f"{_number(result.images_per_s)} img/s", _INK),
        ]
        for row, (text, colour) in enumerate(labels):
            y = bar_top - 4 - (len(labels) - row) * line
            text = _fit(draw, text, text_font, slot - 4)
            draw.text((center, y), text, font=text_font, fill=colour, anchor="ma")
        name = _fit(draw, result.workload.name, text_font, slot - 4)
        draw.text((center, plot_bottom + 6), name, font=text_font, fill=_INK, anchor="ma")
        count = _fit(draw, f"{result.images} images", text_font, slot - 4)
        draw.text((center, plot_bottom + 6 + line), count, font=text_font, fill=_MUTED, anchor="ma")
    draw.line([(left, plot_bottom), (right, plot_bottom)], fill=_INK, width=1)
    return image


def write_report(report: BenchmarkReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``benchmark-<start time>.json`` and its chart ``.png`` into ``out_dir`` (made if
    missing; an earlier run's files are never overwritten). Returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(report.started_at).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem, attempt = f"benchmark-{stamp}", 1
    while (out_dir / f"{stem}.json").exists() or (out_dir / f"{stem}.png").exists():
        attempt += 1
        stem = f"benchmark-{stamp}-{attempt}"
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    render_chart(report).save(png_path)
    return json_path, png_path


def write_comparison(comparison: Comparison, out_dir: Path, command: str) -> tuple[Path, Path]:
    """Write ``compare-<start time>.json`` and a ``.md`` with the command and the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.fromisoformat(comparison.ours.started_at).astimezone(UTC)
    stem = f"compare-{comparison.ours.device.replace(':', '')}-{started:%Y%m%dT%H%M%SZ}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(comparison.to_json(), indent=2) + "\n", encoding="utf-8")
    md_path.write_text(
        f"# Baseline vs our queue, {started:%Y-%m-%d}\n\n```\n{command}\n```\n\n"
        f"```\n{comparison.table()}\n```\n",
        encoding="utf-8",
    )
    return json_path, md_path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _number(value: float) -> str:
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


def _bytes(count: int | None) -> str:
    if count is None:
        return "n/a"
    if count >= 2**30:
        return f"{count / 2**30:.2f} GiB"
    return f"{count / 2**20:.0f} MiB"


def _batches(sizes: Sequence[int]) -> str:
    """Pipeline calls as "8+8", or "6×8+4" once there are many."""
    if len(sizes) <= 4:
        return "+".join(str(size) for size in sizes) or "-"
    counts: dict[int, int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    return "+".join(f"{n}×{size}" if n > 1 else str(size) for size, n in counts.items())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k that is >= ``value`` (1 for nothing to show)."""
    if not value > 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * power >= value * (1 - 1e-9):
            return factor * power
    return 10 * power


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (its small bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError):
        return ImageFont.load_default()


def _line_height(draw: ImageDraw.ImageDraw, font: Any) -> int:
    _, top, _, bottom = draw.textbbox((0, 0), "Hg p95 0.1", font=font)
    return bottom - top + 4


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: float) -> str:
    """``text``, cut short with "…" until it is at most ``max_width`` px wide."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text + "…" if text else ""


# -- command line --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit status 2 (argparse prints its usage too)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _size(text: str) -> int:
    value = _positive(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 px, got {value}")
    return value


def _request_counts(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected request counts like 1,4,8 (whole numbers, at least 1), got {text!r}"
        )
    return [int(part) for part in parts]


def default_cache_dir() -> Path:
    """The project cache, as the bot's settings choose it (``COVER_CACHE_DIR``, else
    ``~/.cache/playlist-cover``); replicated here because ``models`` never imports ``bot``."""
    explicit = os.environ.get("COVER_CACHE_DIR")
    return Path(explicit).expanduser() if explicit else Path.home() / ".cache" / "playlist-cover"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m models.benchmark",
        description="Measure images/s and latency of a model through the generation queue, "
        "print a table and write a JSON report and a bar chart.",
    )
    parser.add_argument("--model", default="embedded", help="registry name or diffusers folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--devices",
        help="several devices, one queue worker each, e.g. cuda:0,cuda:1 or auto (every CUDA "
        "device); the table then adds each device's share (overrides --device)",
    )
    parser.add_argument("--steps", type=_positive, help="denoising steps (default: the model's)")
    parser.add_argument("--size", type=_size, help="image side in px (default: the model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument(
        "--workloads",
        type=_request_counts,
        default=[1, 4, 8],
        help="concurrent requests per workload, comma-separated (default: 1,4,8)",
    )
    parser.add_argument("--images", type=_positive, default=4, help="images per request (4)")
    parser.add_argument("--max-batch", type=_positive, default=8, help="images per call (8)")
    parser.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks"), help="report folder (docs/benchmarks)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="project cache with the embedded model (default: $COVER_CACHE_DIR or "
        "~/.cache/playlist-cover, as the bot)",
    )
    parser.add_argument(
        "--allow-downloads", action="store_true", help="fetch hub models missing from the cache"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the baseline (one plain diffusers call per request, in turn) in the "
        "same process and print both side by side",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=3,
        help="with --compare: runs of each workload per side, alternating, median kept (3)",
    )
    parser.add_argument(
        "--opt",
        type=_optimizations,
        default=Optimizations(),
        metavar="NAME=VALUE,...",
        help="switch optimisations of our side, e.g. channels_last=off,compile=on "
        "(names: half_precision, sdpa, channels_last, compile, vae_slicing_from, "
        "vae_tiling_from, prompt_cache, previews_every)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def _optimizations(text: str) -> Optimizations:
    try:
        return Optimizations().replace(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.benchmark``: exit 0 with the table on stdout and the two written
    paths after it; 2 for bad arguments (including an unknown model or device); 1 when the
    run fails with a :class:`~models.errors.CoverError`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from models.queue import GenerationQueue
    from models.registry import quiet_libraries, resolve_model
    from models.runner import DiffusersRunner

    quiet_libraries()
    # 1. Arguments that only the registry and torch can check.
    try:
        model = resolve_model(args.model)
        if args.compare and model.kind == "if":
            parser.error(
                f"--compare needs one diffusers pipeline; {model.name} runs two stages, "
                "which the queue side already calls plainly: run it without --compare."
            )
        from models.registry import local_devices

        devices = local_devices(args.devices) if args.devices else [args.device]
        runners = [
            DiffusersRunner(
                device=device,
                cache_dir=args.cache_dir or default_cache_dir(),
                allow_downloads=args.allow_downloads,
                optimizations=args.opt,
            )
            for device in devices
        ]
    except ModelUnavailable as error:
        parser.error(str(error))
    runner = runners[0]  # the baseline of --compare runs on the first device
    device = ", ".join(r.device for r in runners)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    size = args.size or model.native_size
    params = GenerationParams(
        model=args.model,
        width=size,
        height=size,
        steps=args.steps or model.steps,
        guidance=model.guidance if args.guidance is None else args.guidance,
    )
    workloads = [Workload.concurrent(n, args.images) for n in args.workloads]

    def say(line: str) -> None:
        print(f"benchmark: {line}", file=sys.stderr, flush=True)

    # 2. A queue of our own, big enough for the largest workload plus the warm-up.
    async def run() -> tuple[BenchmarkReport, Comparison | None]:
        async with GenerationQueue(
            runners,
            max_pending=max(w.requests for w in workloads) + 1,
            max_per_user=1,
            max_batch=args.max_batch,
            job_timeout_s=3600.0,  # a big model on a CPU is slow, not stuck
            name=runner.device if len(runners) == 1 else "bench",
        ) as queue:
            if not args.compare:
                report = await run_queue_benchmark(
                    queue, params, device=device, workloads=workloads, progress=say
                )
                return report, None
            # 3. Side by side: a plain pipeline of its own for the baseline.
            from models.registry import load_pipeline

            pipe = load_pipeline(
                model,
                device=runner.device,
                cache_dir=runner.cache_dir,
                allow_downloads=args.allow_downloads,
            )
            comparison = await run_comparison(
                pipe,
                queue,
                params,
                device=runner.device,
                workloads=workloads,
                repeats=args.repeats,
                optimizations=args.opt.describe(),
                progress=say,
            )
            return comparison.ours, comparison

    try:
        report, comparison = asyncio.run(run())
    except CoverError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1

    # 4. Show it and keep it.
    print(report.table())
    for path in write_report(report, args.out):
        print(path)
    if comparison is not None:
        print()
        print(comparison.table())
        command = "python -m models.benchmark " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        for path in write_comparison(comparison, args.out, command):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
