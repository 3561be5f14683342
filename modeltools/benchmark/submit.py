"""Benchmark jobs through a queue: one job's shape, and submitting many at once then waiting
for all of them (what the workloads, the stage-by-stage cover and the Ray benchmark share)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.jobs import GenerationJob, GenerationParams, ImageSpec, JobResult

if TYPE_CHECKING:
    from models.queue import GenerationQueue, JobHandle


def job(
    user_id: str, params: GenerationParams, images: tuple[ImageSpec, ...], priority: int
) -> GenerationJob:
    return GenerationJob(
        user_id=user_id, params=params, images=images, priority=priority, label="benchmark"
    )


async def submit_and_wait(
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
