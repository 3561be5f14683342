"""What the queue holds at one moment, as a read-only copy, and how long its recent jobs ran.

:meth:`models.queue.GenerationQueue.snapshot` makes a :class:`QueueSnapshot`: plain frozen
values, no handles, so whoever reads it (the bot's ``/queue``, bot/app/queue_view.py) can
neither change the queue nor cancel a job through it. :class:`RecentTimings` is the queue's
small rolling record of finished jobs, the measurements an estimate of waiting times starts from.

Times are on the queue's clock (``time.monotonic``), as in :class:`~models.jobs.JobResult`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from models.handles import JobHandle

RECENT_TIMINGS = 64  # finished jobs remembered, all models together (oldest dropped first)


@dataclass(frozen=True)
class JobSnapshot:
    """One waiting or running job."""

    job_id: str
    user_id: str  # the submitter (the bot: a Discord user id as a string)
    model: str  # the preset or folder it paints with (GenerationParams.model)
    images: int
    priority: int  # 0: people's work; higher: the bot's own (benchmark, warm-up)
    submitted_at: float
    position: int | None  # 1 runs next; None once it runs
    started_at: float | None  # when its first pipeline call began; None while it waits

    @classmethod
    def of(cls, handle: JobHandle, position: int | None) -> JobSnapshot:
        job = handle.job
        return cls(
            job_id=handle.id,
            user_id=job.user_id,
            model=job.params.model,
            images=len(job.images),
            priority=job.priority,
            submitted_at=handle._submitted_at,
            position=position,
            started_at=handle._first_call_at,
        )


@dataclass(frozen=True)
class JobTiming:
    """How long one finished job ran (from its first pipeline call to the end of its last)."""

    model: str
    images: int
    priority: int
    run_s: float
    ended_at: float

    @classmethod
    def of(cls, handle: JobHandle, run_s: float) -> JobTiming:
        job = handle.job
        return cls(job.params.model, len(job.images), job.priority, run_s, time.monotonic())


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue at ``taken_at``: its jobs, its live workers and its recent timings."""

    taken_at: float
    workers: int  # workers still in service (jobs run on this many devices at once)
    running: tuple[JobSnapshot, ...]
    waiting: tuple[JobSnapshot, ...]  # in the order they would run if nothing else arrived
    recent: tuple[JobTiming, ...]  # oldest first


class RecentTimings:
    """The last ``size`` finished jobs' timings, oldest first; older ones are forgotten."""

    def __init__(self, size: int = RECENT_TIMINGS) -> None:
        if size < 1:
            raise ValueError(f"`size` must be at least 1, got {size}.")
        self._kept: deque[JobTiming] = deque(maxlen=size)

    def add(self, timing: JobTiming) -> None:
        self._kept.append(timing)

    def all(self) -> tuple[JobTiming, ...]:
        return tuple(self._kept)
