"""Running workloads: through our queue, the plain-diffusers baseline, and both alternating."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from models.jobs import GenerationParams, ImageSpec
from models.optimize import Optimizations
from modeltools.benchmark.flops import peak_tflops, unet_flop_per_image
from modeltools.benchmark.memory import MemoryProbe
from modeltools.benchmark.report import BenchmarkReport, Comparison
from modeltools.benchmark.stages import measure_stages
from modeltools.benchmark.submit import job, submit_and_wait
from modeltools.benchmark.workload import (
    DEFAULT_PROMPT,
    DEFAULT_WORKLOADS,
    Workload,
    WorkloadResult,
    images_per_worker,
    pipeline_calls,
)

if TYPE_CHECKING:
    from models.queue import GenerationQueue


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
    stages: bool = False,
) -> BenchmarkReport:
    """Run ``workloads`` one after the other through ``queue`` (started, on this event loop).
    With ``stages``, one more cover (the first workload's images per request) is timed stage
    by stage (:func:`~modeltools.benchmark.stages.measure_stages`) and put in the report.

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
            await submit_and_wait(queue, [job("benchmark-warmup", params, specs, priority)])

    # 2. The workloads, with the memory probe watching only them.
    probe = MemoryProbe(device)
    results: list[WorkloadResult] = []
    try:
        for number, workload in enumerate(workloads, start=1):
            say(f"workload {number}/{len(workloads)}: {workload.name}")
            results.append(await _measure(queue, params, workload, prompt, priority))
    finally:
        peak, memory_kind = probe.stop()

    # 3. Where one cover's time goes (outside the memory probe's window: the same pipeline).
    breakdown = None
    if stages:
        say("one cover, stage by stage")
        images = workloads[0].images_per_request
        breakdown = await measure_stages(
            queue, params, prompt=prompt, images=images, priority=priority
        )
    report = BenchmarkReport.measured(
        params, device, results, (peak, memory_kind), started_at, began, max_batch=queue.max_batch
    )
    return dataclasses.replace(report, stages=breakdown)


async def _measure(
    queue: GenerationQueue,
    params: GenerationParams,
    workload: Workload,
    prompt: str,
    priority: int,
) -> WorkloadResult:
    per_request = workload.images_per_request
    jobs = [
        job(
            f"benchmark-{i}",  # one user per request: the per-user limit does not apply
            params,
            tuple(ImageSpec(prompt, "", seed=i * per_request + k) for k in range(per_request)),
            priority,
        )
        for i in range(workload.requests)
    ]
    timed = await submit_and_wait(queue, jobs)
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

    ``pipe`` is a pipeline as diffusers loads it (no :mod:`models.optimize` applied; see
    :func:`load_baseline`). A request's latency runs from the common arrival to the end of its
    own call; the report's ``setup`` names the precision the pipeline really ran in.
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
        setup=f"baseline: one plain diffusers call per request, in turn, {dtype_name(pipe)}",
    )


def load_baseline(model: Any, *, device: str, cache_dir: Any, allow_downloads: bool) -> Any:
    """The baseline's pipeline, as the docs describe it (:meth:`Optimizations.plain`): as
    diffusers loads it, in float32 on every device – not the half precision a GPU loads for
    the bot, which would credit the baseline with one of our optimisations."""
    from models.registry import load_pipeline

    return load_pipeline(
        model,
        device=device,
        cache_dir=cache_dir,
        allow_downloads=allow_downloads,
        half_precision=Optimizations.plain().half_precision,
    )


def dtype_name(pipe: Any) -> str:
    """The precision ``pipe``'s UNet runs in, e.g. "float32"."""
    unet = getattr(pipe, "unet", None)
    return str(getattr(unet, "dtype", "unknown precision")).removeprefix("torch.")


def weights_bytes(pipe: Any) -> int:
    """Bytes held by ``pipe``'s modules' parameters and buffers (shared tensors counted once):
    what a pipeline occupies on its device for as long as it is loaded."""
    import torch

    seen: set[int] = set()
    total = 0
    for component in getattr(pipe, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in [*component.parameters(), *component.buffers()]:
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                total += tensor.numel() * tensor.element_size()
    return total


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
        base_best.append(median_run(base_tries))
        our_best.append(median_run(our_tries))

    # Both pipelines stay loaded in this one process, so each side's peak also counts the
    # other side's weights: take those out, so that each peak is its own pipeline's.
    loaded = getattr(queue.runner, "loaded_pipeline", None)
    ours_pipe = loaded(params) if loaded is not None else None
    other_weights = {
        "baseline": weights_bytes(ours_pipe) if ours_pipe is not None else 0,
        "ours": weights_bytes(pipe),
    }

    def merged(
        runs: list[BenchmarkReport], results: list[WorkloadResult], side: str
    ) -> BenchmarkReport:
        peaks = [r.peak_memory_bytes for r in runs if r.peak_memory_bytes is not None]
        less = other_weights[side]
        return dataclasses.replace(
            runs[0],
            results=tuple(results),
            peak_memory_bytes=max(0, max(peaks) - less) if peaks else None,
            memory_kind=f"{runs[0].memory_kind}, less the other side's weights"
            if less
            else runs[0].memory_kind,
            total_s=time.perf_counter() - began,
            started_at=warm.started_at,
        )

    flop = await asyncio.to_thread(unet_flop_per_image, pipe, params)
    return Comparison(
        merged(base_runs, base_best, "baseline"),
        merged(our_runs, our_best, "ours"),
        optimizations,
        unet_tflop_per_image=flop / 1e12,
        peak_tflops=peak_tflops(device),
        repeats=repeats,
    )


def median_run(runs: Sequence[WorkloadResult]) -> WorkloadResult:
    """The run with the median images/s (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.images_per_s)
    return ordered[(len(ordered) - 1) // 2]
