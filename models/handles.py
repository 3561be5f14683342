"""One job as its submitter sees it: where it is (:class:`JobStatus`), what happens to it (the
events, from ``Queued`` to the final ``Finished`` or ``Failed``) and its :class:`JobHandle`.

The handle is made by :meth:`models.queue.GenerationQueue.submit`. Its underscored fields and
methods belong to the queue, which writes them while the job runs and ends it through
``_settle`` exactly once; a submitter uses the public ones.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.errors import CoverError, JobCancelled
from models.jobs import GeneratedImage, GenerationJob, JobResult

if TYPE_CHECKING:
    from PIL import Image


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """The job waits; ``position`` 1 runs next. Sent again whenever the position changes."""

    position: int


@dataclass(frozen=True)
class Started:
    """The job left the queue; ``batch_size`` is the images in its first pipeline call."""

    batch_size: int


@dataclass(frozen=True)
class Progress:
    """Denoising step ``step`` of ``total`` of the pipeline call the job is in."""

    step: int
    total: int


@dataclass(frozen=True)
class Preview:
    """Rough pictures of the job's images at ``step`` (only from runners that make them)."""

    step: int
    images: tuple[Image.Image, ...]


@dataclass(frozen=True)
class Finished:
    """The job's images are ready (final event)."""

    result: JobResult


@dataclass(frozen=True)
class Failed:
    """The job ended without images: cancelled, timed out, failed or closed (final event)."""

    error: CoverError


QueueEvent = Queued | Started | Progress | Preview | Finished | Failed
_FINAL_EVENTS = (Finished, Failed)


class JobStatus(enum.StrEnum):
    """Where a job is. A ``StrEnum``: ``handle.status == "done"`` works."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # timed out, closed, or the generator failed
    CANCELLED = "cancelled"


_ENDED = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})


class JobHandle:
    """The submitter's view of one job: its status, events, result, and a way to cancel it.

    Created by :meth:`GenerationQueue.submit`; use it on the queue's event loop only.
    """

    def __init__(
        self,
        job: GenerationJob,
        submitted_at: float,
        *,
        position_of: Callable[[JobHandle], int | None],
        cancel: Callable[[JobHandle], bool],
    ) -> None:
        self.id: str = uuid.uuid4().hex
        self.job: GenerationJob = job
        self._position_of = position_of  # the queue's, which knows whether the job still waits
        self._cancel = cancel
        self._status = JobStatus.QUEUED
        self._outcome: JobResult | CoverError | None = None
        self._ended = asyncio.Event()
        # What a late subscriber is told first: the last Queued, or Started (+ last Progress),
        # or the final event.
        self._state: tuple[QueueEvent, ...] = ()
        self._inboxes: list[asyncio.Queue[QueueEvent]] = []
        self._position: int | None = None
        # Written by the queue while the job runs. The worker thread reads _status and
        # _deadline (plain attribute reads; the loop is their only writer).
        self._submitted_at = submitted_at  # on the queue's clock, as are the times below
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._first_call_at: float | None = None
        self._last_call_end: float | None = None
        self._images: list[GeneratedImage | None] = [None] * len(job.images)
        self._batch_sizes: list[int] = []
        self._workers: list[str] = []  # the worker of each call, beside _batch_sizes
        self._losses = 0  # how often a worker was lost under this job (MAX_WORKER_LOSSES)

    @property
    def status(self) -> JobStatus:
        return self._status

    @property
    def done(self) -> bool:
        """True once the job has ended, whichever way."""
        return self._status in _ENDED

    @property
    def position(self) -> int | None:
        """1 = runs next; None once it runs or has ended."""
        return self._position_of(self)

    def cancel(self) -> bool:
        """Cancel the job. A waiting job leaves the queue at once; a running one ends now with
        :class:`JobCancelled` and its images are dropped (its batch goes on if other jobs in it
        still want theirs, otherwise the runner is interrupted at its next step).
        Returns False if the job had already ended."""
        return self._cancel(self)

    async def result(self) -> JobResult:
        """Wait for the job's images; raises the :class:`CoverError` it ended with instead."""
        await self._ended.wait()
        if isinstance(self._outcome, JobResult):
            return self._outcome
        assert self._outcome is not None
        raise self._outcome

    def events(self) -> AsyncIterator[QueueEvent]:
        """A new subscription: first the current state (e.g. the last ``Queued``), then every
        event as it happens; it ends after the final :class:`Finished` or :class:`Failed`."""
        inbox: asyncio.Queue[QueueEvent] = asyncio.Queue()
        for event in self._state:
            inbox.put_nowait(event)
        if not self.done:
            self._inboxes.append(inbox)
        return self._read(inbox)

    async def _read(self, inbox: asyncio.Queue[QueueEvent]) -> AsyncIterator[QueueEvent]:
        try:
            while True:
                event = await inbox.get()
                yield event
                if isinstance(event, _FINAL_EVENTS):
                    return
        finally:
            if inbox in self._inboxes:
                self._inboxes.remove(inbox)

    def _publish(self, event: QueueEvent) -> None:
        if self.done:
            return  # a late Progress from the worker thread after the job ended
        if isinstance(event, Progress) and self._state and isinstance(self._state[0], Started):
            self._state = (self._state[0], event)
        else:
            self._state = (event,)
        for inbox in self._inboxes:
            inbox.put_nowait(event)

    def _settle(self, outcome: JobResult | CoverError) -> None:
        """End the job once: status, outcome, final event, waiters woken."""
        final: QueueEvent
        if isinstance(outcome, JobResult):
            final = Finished(outcome)
            status = JobStatus.DONE
        else:
            final = Failed(outcome)
            status = JobStatus.CANCELLED if isinstance(outcome, JobCancelled) else JobStatus.FAILED
        self._publish(final)
        self._status = status
        self._outcome = outcome
        self._inboxes = []  # each got the final event; their readers stop there
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ended.set()

    def _result(self) -> JobResult:
        first = self._first_call_at if self._first_call_at is not None else time.monotonic()
        last = self._last_call_end if self._last_call_end is not None else first
        images = tuple(image for image in self._images if image is not None)
        return JobResult(
            job_id=self.id,
            images=images,
            wait_s=first - self._submitted_at,
            run_s=last - first,
            batch_sizes=tuple(self._batch_sizes),
            workers=tuple(self._workers),
        )

    def __repr__(self) -> str:
        return f"<JobHandle {self.id[:8]} user={self.job.user_id!r} {self._status}>"
