"""The async generation queue: one worker per device, bounded, fair, batching.

    submit(job) ─► lane of its priority ─► per-user FIFO; users take turns (round-robin)
                                               │
    the first free worker (one per runner: a local device or a remote Ray actor) takes the
    next job in fair order and adds waiting jobs with equal params (same priority, first fit)
    up to ``max_batch`` images; work a lost worker left behind is taken before new jobs
                                               │
    runner(params, specs, control) in that worker's own thread ─► images split back per job
                                               │
    runner raised WorkerLost ─► the worker leaves; its batch (the images still missing)
                                goes to the next free worker; no worker left ─► NoWorkers
    a sticky CUDA error ─► the runner's restart() (a Ray actor: a new process) and the
                           worker stays; a runner without one leaves as for WorkerLost

A job ends exactly once, as one of: done (:class:`Finished`), cancelled, timed out, failed or
closed (:class:`Failed` with the :class:`~models.errors.CoverError` that says why). Subscribers
of :meth:`JobHandle.events` see ``Queued(position)`` whenever the position changes, then
``Started``, ``Progress(step, total)`` from the runner's :meth:`RunControl.step`, then the final
event.

Threads: everything here runs on the event loop except the runners and :class:`_Control.step`,
which run in each worker's own single thread. Those threads only *read* a job's status and
deadline and the queue's ``_aborting`` flag, and hand progress to the loop with
``loop.call_soon_threadsafe``; results come back through ``run_in_executor``'s future. A remote
runner (:mod:`models.ray_workers`) is the same kind of runner: it blocks its worker's thread
while the actor works and relays the actor's progress through the same ``control``.

No exception ends a worker but :class:`~models.jobs.WorkerLost` (its device is gone) and its
own cancellation, BaseExceptions included: runner errors fail the jobs of that call, out-of-memory
(also CUDA's allocation failures that arrive as a plain RuntimeError) splits the call in halves
(a single image that still does not fit fails only its job), and a bug of our own is logged and fails the jobs it was
working on. torch is never imported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

from models.errors import (
    CoverError,
    GenerationFailed,
    JobCancelled,
    JobTimedOut,
    NoWorkers,
    PendingLimitReached,
    QueueClosed,
    QueueFull,
)
from models.jobs import (
    DeviceBroken,
    GeneratedImage,
    GenerationJob,
    GenerationParams,
    JobResult,
    RunInterrupted,
    Runner,
    WorkerLost,
    is_broken_device,
    is_out_of_memory,
)

log = logging.getLogger(__name__)

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


# -- one job -------------------------------------------------------------------------------


class JobHandle:
    """The submitter's view of one job: its status, events, result, and a way to cancel it.

    Created by :meth:`GenerationQueue.submit`; use it on the queue's event loop only.
    """

    def __init__(self, queue: GenerationQueue, job: GenerationJob) -> None:
        self.id: str = uuid.uuid4().hex
        self.job: GenerationJob = job
        self._queue = queue
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
        self._submitted_at = time.monotonic()
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
        return self._queue.position_of(self)

    def cancel(self) -> bool:
        """Cancel the job. A waiting job leaves the queue at once; a running one ends now with
        :class:`JobCancelled` and its images are dropped (its batch goes on if other jobs in it
        still want theirs, otherwise the runner is interrupted at its next step).
        Returns False if the job had already ended."""
        return self._queue._cancel(self)

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


# -- waiting jobs --------------------------------------------------------------------------


class _Lane:
    """The waiting jobs of one priority: a FIFO per user; users take turns in dict order."""

    def __init__(self) -> None:
        self._users: OrderedDict[str, deque[JobHandle]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._users.values())

    def push(self, handle: JobHandle) -> None:
        # A user with nothing waiting joins at the back of the turn order.
        self._users.setdefault(handle.job.user_id, deque()).append(handle)

    def remove(self, handle: JobHandle, *, served: bool = False) -> None:
        """Take ``handle`` out; ``served`` sends its user to the back of the turn order."""
        user = handle.job.user_id
        jobs = self._users[user]
        jobs.remove(handle)
        if not jobs:
            del self._users[user]
        elif served:
            self._users.move_to_end(user)

    def fair_order(self) -> Iterator[JobHandle]:
        """Every waiting job, in the order they would run if nothing else arrived: each user's
        oldest, in turn order, then each user's second oldest, and so on."""
        queues = list(self._users.values())
        depth = max((len(jobs) for jobs in queues), default=0)
        for rank in range(depth):
            for jobs in queues:
                if rank < len(jobs):
                    yield jobs[rank]


# -- the runner's side ---------------------------------------------------------------------


class _Control:
    """The :class:`~models.jobs.RunControl` of one runner call; used from the worker thread."""

    def __init__(
        self,
        queue: GenerationQueue,
        loop: asyncio.AbstractEventLoop,
        handles: Sequence[JobHandle],
        chunk: Sequence[Slot] = (),
    ) -> None:
        self._queue = queue
        self._loop = loop
        self._handles = handles
        self._chunk = chunk

    def step(self, step: int, total: int) -> None:
        if self._should_stop():
            raise RunInterrupted("every job of this batch was cancelled, timed out or closed")
        try:
            self._loop.call_soon_threadsafe(self._queue._progress, self._handles, step, total)
        except RuntimeError as error:  # the event loop is closed: nobody waits for this call
            raise RunInterrupted("the event loop is gone") from error

    def preview(self, step: int, images: Sequence[Image.Image]) -> None:
        owners = [handle for handle, _ in self._chunk]
        if len(images) < len(owners):
            return  # a runner that padded nothing yet sent too few: not worth an error
        per_job: dict[JobHandle, list[Image.Image]] = {}
        for handle, image in zip(owners, images, strict=False):
            per_job.setdefault(handle, []).append(image)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is watching
            self._loop.call_soon_threadsafe(self._queue._preview, per_job, step)

    def _should_stop(self) -> bool:
        if self._queue._aborting:
            return True
        now = time.monotonic()
        # Check the deadline here too, not only the loop's timer: the loop may be busy.
        return all(h._status is not JobStatus.RUNNING or now >= h._deadline for h in self._handles)


Slot = tuple[JobHandle, int]  # one image: its job and the index of its spec in the job

# A job whose batch lost its worker this often fails instead of moving on: a batch that kills
# every worker it lands on (a poisoned input, a crashing driver) must not take them all down.
MAX_WORKER_LOSSES = 2


@dataclass
class _Work:
    """Jobs taken together and the runner calls they still need, first call first."""

    unit: list[JobHandle]
    chunks: deque[list[Slot]]


class _Worker:
    """One device slot: a runner, the single thread it runs in, the task feeding it, and the
    jobs it is running now. ``lost`` once its runner raised :class:`WorkerLost`."""

    def __init__(self, name: str, runner: Runner) -> None:
        self.name = name
        self.runner = runner
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task[None] | None = None
        self.running: list[JobHandle] = []  # the jobs it took last (some may have ended)
        self.lost = False

    def __repr__(self) -> str:
        return f"<worker {self.name}{' lost' if self.lost else ''}>"


def _worker_names(base: str, runners: Sequence[Runner]) -> list[str]:
    """``base`` for a single runner (logs read as before); else ``base/<device>`` or ``base/i``."""
    if len(runners) == 1:
        return [base]
    names = []
    for index, runner in enumerate(runners):
        label = getattr(runner, "name", None) or getattr(runner, "device", None) or str(index)
        name = f"{base}/{label}"
        names.append(name if name not in names else f"{name}#{index}")
    return names


# -- the queue -----------------------------------------------------------------------------


class GenerationQueue:
    """A bounded, fair, batching queue in front of one or more :class:`~models.jobs.Runner` objects.

    ``runner`` is one runner or a sequence of them, one per device (or remote worker); each
    gets a worker of its own and a batch goes to whichever is free first.

    - ``max_pending``: jobs waiting, all users together (more → :class:`QueueFull`);
    - ``max_per_user``: jobs one user may have waiting or running (→ :class:`PendingLimitReached`);
    - ``max_batch``: images in one runner call; waiting jobs with equal params are merged up to
      it, and a job with more images is split over several calls;
    - ``job_timeout_s``: a job's time limit from the moment it starts running (→ :class:`JobTimedOut`);
    - ``name``: the queue's name in logs and worker threads (with several runners each worker
      is ``name/<runner.name or runner.device>``).

    Order: lower ``priority`` first (a job with priority 1 runs only when no priority-0 job
    waits); within a priority users take turns, and each user's jobs run in submission order.

    Use it on one event loop: ``async with GenerationQueue(runner) as queue: ...``, or
    :meth:`start` and :meth:`close`. Jobs submitted before :meth:`start` wait for it.
    """

    def __init__(
        self,
        runner: Runner | Sequence[Runner],
        *,
        max_pending: int = 64,
        max_per_user: int = 2,
        max_batch: int = 8,
        job_timeout_s: float = 600.0,
        name: str = "generator",
    ) -> None:
        for argument, value in (
            ("max_pending", max_pending),
            ("max_per_user", max_per_user),
            ("max_batch", max_batch),
        ):
            if value < 1:
                raise ValueError(f"`{argument}` must be at least 1, got {value}.")
        if not job_timeout_s > 0:
            raise ValueError(f"`job_timeout_s` must be positive, got {job_timeout_s}.")
        runners = [runner] if callable(runner) else list(runner)
        if not runners:
            raise ValueError("`runner` is an empty sequence: give the queue at least one runner.")
        self.max_pending = max_pending
        self.max_per_user = max_per_user
        self.max_batch = max_batch
        self.job_timeout_s = job_timeout_s
        self.name = name
        self._workers = [
            _Worker(worker_name, each)
            for worker_name, each in zip(_worker_names(name, runners), runners, strict=True)
        ]
        self._lanes: dict[int, _Lane] = {}  # priority → waiting jobs
        self._orphans: deque[_Work] = deque()  # work whose worker was lost, oldest first
        self._no_workers: NoWorkers | None = None  # set once the last worker was lost
        self._closing = False  # no more submissions
        self._aborting = False  # stop the running call too (close without drain)
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start each worker's task and thread. Idempotent; :class:`QueueClosed` once closed."""
        if self._closing:
            raise QueueClosed()
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        for worker in self._workers:
            worker.executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"gen-{worker.name}"
            )
            worker.task = self._loop.create_task(self._work(worker), name=f"queue-{worker.name}")

    async def close(self, *, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop accepting jobs and let the worker end. Idempotent.

        ``drain=True`` runs the waiting jobs first; ``drain=False`` fails them with
        :class:`QueueClosed` at once, ends the running ones the same way and interrupts the
        runner at its next step. After ``timeout_s`` (None: no limit) whatever is left is
        failed with :class:`QueueClosed` and the worker is cancelled; a runner that never
        calls ``control.step`` may then keep the worker thread busy until it returns.
        """
        if not self._closing:
            log.info("Queue %s: closing (%s)", self.name, "draining" if drain else "not draining")
        self._closing = True
        if not drain:
            self._abort()
        self._wakeup.set()
        tasks = {worker.task for worker in self._workers if worker.task is not None}
        if not tasks:
            self._abort()  # never started: nothing would ever run the waiting jobs
        else:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
            if pending:
                log.warning(
                    "Queue %s: still busy after %g s of closing; failing what is left",
                    self.name,
                    timeout_s,
                )
                self._abort()
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        for worker in self._workers:
            if worker.executor is not None:
                worker.executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> GenerationQueue:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        # Leaving on an error (or a cancel) should not sit through everyone's queued jobs.
        await self.close(drain=exc_type is None)

    # -- what callers see ---------------------------------------------------------------

    @property
    def runner(self) -> Runner:
        """The first runner (the only one, unless the queue was given several)."""
        return self._workers[0].runner

    @property
    def runners(self) -> tuple[Runner, ...]:
        """Every runner, lost ones included, in the order given."""
        return tuple(worker.runner for worker in self._workers)

    @property
    def worker_names(self) -> tuple[str, ...]:
        """The names of the workers still in service (they appear in :attr:`JobResult.workers`)."""
        return tuple(worker.name for worker in self._workers if not worker.lost)

    @property
    def pending_count(self) -> int:
        """Jobs waiting to run (running jobs not included)."""
        return sum(len(lane) for lane in self._lanes.values())

    @property
    def running(self) -> tuple[JobHandle, ...]:
        """The jobs the workers are running now."""
        return tuple(
            h for worker in self._workers for h in worker.running if h.status is JobStatus.RUNNING
        )

    @property
    def closed(self) -> bool:
        return self._closing

    def position_of(self, handle: JobHandle) -> int | None:
        """1 = runs next; None if the job is not waiting (running or ended)."""
        return handle._position if handle.status is JobStatus.QUEUED else None

    def submit(self, job: GenerationJob) -> JobHandle:
        """Queue ``job`` and return its handle. Call it on the queue's event loop.

        Raises :class:`QueueClosed` after :meth:`close`, :class:`PendingLimitReached` when the
        user already has ``max_per_user`` jobs waiting or running, :class:`QueueFull` when
        ``max_pending`` jobs wait, :class:`NoWorkers` once every worker was lost, and
        ``ValueError`` for a job without images.
        """
        if self._closing:
            raise QueueClosed()
        if self._no_workers is not None:
            raise self._no_workers
        if not job.images:
            raise ValueError(f"`job.images` is empty for user {job.user_id!r}: ask for 1 or more.")
        if job.worker is not None and job.worker not in self.worker_names:
            raise ValueError(
                f"`job.worker` is {job.worker!r}, not a live worker of this queue: "
                f"{', '.join(self.worker_names)}."
            )
        if self._active_jobs(job.user_id) >= self.max_per_user:
            raise PendingLimitReached(self.max_per_user)
        if self.pending_count >= self.max_pending:
            raise QueueFull(self.max_pending)
        handle = JobHandle(self, job)
        self._lanes.setdefault(job.priority, _Lane()).push(handle)
        log.info(
            "Queue %s: job %s accepted: user %s, %d image(s), priority %d, %s",
            self.name,
            handle.id[:8],
            job.user_id,
            len(job.images),
            job.priority,
            job.label or job.params.model,
        )
        self._publish_positions()
        self._wakeup.set()
        return handle

    # -- bookkeeping (event loop only) --------------------------------------------------

    def _waiting_in_order(self) -> Iterator[JobHandle]:
        for priority in sorted(self._lanes):
            yield from self._lanes[priority].fair_order()

    def _active_jobs(self, user_id: str) -> int:
        waiting = sum(1 for h in self._waiting_in_order() if h.job.user_id == user_id)
        return waiting + sum(1 for h in self.running if h.job.user_id == user_id)

    def _unqueue(self, handle: JobHandle, *, served: bool = False) -> None:
        lane = self._lanes[handle.job.priority]
        lane.remove(handle, served=served)
        if not len(lane):
            del self._lanes[handle.job.priority]

    def _publish_positions(self) -> None:
        for position, handle in enumerate(self._waiting_in_order(), start=1):
            if handle._position != position:
                handle._position = position
                handle._publish(Queued(position))

    def _cancel(self, handle: JobHandle) -> bool:
        if handle.done:
            return False
        log.info("Queue %s: job %s cancelled while %s", self.name, handle.id[:8], handle.status)
        return self._end(handle, JobCancelled())

    def _end(self, handle: JobHandle, outcome: JobResult | CoverError) -> bool:
        """End ``handle`` with ``outcome`` unless it has ended already; every ending passes
        through here."""
        if handle.done:
            return False
        was_waiting = handle.status is JobStatus.QUEUED
        if was_waiting:
            self._unqueue(handle)
        handle._settle(outcome)
        if isinstance(outcome, JobResult):
            log.info(
                "Queue %s: job %s done: %d image(s), waited %.2f s, ran %.2f s, calls %s",
                self.name,
                handle.id[:8],
                len(outcome.images),
                outcome.wait_s,
                outcome.run_s,
                list(outcome.batch_sizes),
            )
        elif not isinstance(outcome, JobCancelled):
            # A failure on our side is the operator's (WARNING); any other (an uncached model, a
            # closed queue) is a sentence its owner reports to the user – the bot's reply, the
            # CLI's error line – so it is only noted here, not said twice.
            level = logging.WARNING if isinstance(outcome, GenerationFailed) else logging.INFO
            log.log(level, "Queue %s: job %s failed: %s", self.name, handle.id[:8], outcome)
        if was_waiting:
            self._publish_positions()
        return True

    def _abort(self) -> None:
        """Fail every waiting and running job with :class:`QueueClosed`; stop the runners."""
        self._aborting = True
        orphaned = [h for work in self._orphans for h in work.unit]
        self._orphans.clear()
        for handle in [*self._waiting_in_order(), *self.running, *orphaned]:
            self._end(handle, QueueClosed())

    def _progress(self, handles: Sequence[JobHandle], step: int, total: int) -> None:
        for handle in handles:
            if handle.status is JobStatus.RUNNING:
                handle._publish(Progress(step, total))

    def _preview(self, per_job: dict[JobHandle, list[Image.Image]], step: int) -> None:
        for handle, images in per_job.items():
            if handle.status is JobStatus.RUNNING:
                handle._publish(Preview(step, tuple(images)))

    def _time_out(self, handle: JobHandle) -> None:
        if handle.status is JobStatus.RUNNING:
            self._end(handle, JobTimedOut(self.job_timeout_s))

    # -- the workers --------------------------------------------------------------------

    async def _work(self, worker: _Worker) -> None:
        log.info("Queue %s: worker started", worker.name)
        while (work := await self._next_work(worker)) is not None:
            worker.running = work.unit
            try:
                stopped = await self._run_work(worker, work)
                if stopped is not None:
                    replaced = stopped is _Call.BROKEN and await self._restart(worker)
                    self._lose(worker, work, replaced=replaced)
                    if not replaced:
                        return
            except BaseException as error:  # a bug of ours; close's own cancellation ends us
                if _is_own_cancellation(error):
                    raise
                log.exception("Queue %s: internal error while running %s", worker.name, work.unit)
                for handle in work.unit:
                    self._end(handle, GenerationFailed(_internal_error_message(handle)))
            finally:
                worker.running = []
                self._wakeup.set()  # an idle worker waiting to close may now stop
        log.info("Queue %s: worker stopped", worker.name)

    async def _next_work(self, worker: _Worker) -> _Work | None:
        """The next work for ``worker`` when free, or None when it should stop."""
        while True:
            if self._aborting:
                return None
            if self._orphans:
                return self._orphans.popleft()
            if (unit := self._take_unit(worker)) is not None:
                return unit
            # Drained, unless a busy worker may still be lost and leave its work to us.
            if self._closing and not any(w.running for w in self._workers if not w.lost):
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def _take_unit(self, worker: _Worker | None = None) -> _Work | None:
        """Take the next job in fair order that ``worker`` may run (jobs pinned to another
        worker wait for it) and the waiting jobs that can share its calls; None if there is
        none.

        Companions have the same priority (so a benchmark never rides along while users'
        jobs wait), equal params and the same pin, and are taken first fit in fair order while
        the images stay within ``max_batch``. A job larger than ``max_batch`` runs alone, in
        chunks.
        """
        name = worker.name if worker is not None else None
        order = [h for h in self._waiting_in_order() if h.job.worker in (None, name)]
        if not order:
            return None
        head = order[0]
        unit, images = [head], len(head.job.images)
        for other in order[1:]:
            if images >= self.max_batch or other.job.priority != head.job.priority:
                break
            fits = images + len(other.job.images) <= self.max_batch
            same = other.job.params == head.job.params and other.job.worker == head.job.worker
            if fits and same:
                unit.append(other)
                images += len(other.job.images)

        assert self._loop is not None
        first_call = min(images, self.max_batch)
        for handle in unit:
            self._unqueue(handle, served=True)
            handle._status = JobStatus.RUNNING
            handle._deadline = time.monotonic() + self.job_timeout_s
            handle._timer = self._loop.call_later(self.job_timeout_s, self._time_out, handle)
            handle._publish(Started(first_call))
        self._publish_positions()
        slots = [(handle, index) for handle in unit for index in range(len(handle.job.images))]
        chunks = deque(slots[i : i + self.max_batch] for i in range(0, len(slots), self.max_batch))
        return _Work(unit, chunks)

    async def _run_work(self, worker: _Worker, work: _Work) -> _Call | None:
        """Run the calls of ``work`` on ``worker``; on out-of-memory, retry the two halves of
        that call one after the other. Returns LOST or BROKEN when the worker cannot go on
        (the call that was running is back at the front of ``work.chunks``), else None."""
        params = work.unit[0].job.params
        while work.chunks:
            # Images of jobs that ended meanwhile (cancelled, timed out, failed) are dropped.
            chunk = [slot for slot in work.chunks.popleft() if slot[0].status is JobStatus.RUNNING]
            if not chunk:
                continue
            outcome = await self._call(worker, params, chunk)
            if outcome in (_Call.LOST, _Call.BROKEN):
                work.chunks.appendleft(chunk)
                return outcome
            if outcome is _Call.DONE:
                continue
            if len(chunk) == 1:
                handle = chunk[0][0]
                self._end(
                    handle,
                    GenerationFailed(
                        f"Job {handle.id[:8]} ran out of GPU memory even at batch size 1 "
                        f"({params.width}x{params.height}, model {params.model!r})."
                    ),
                )
            else:
                half = len(chunk) // 2
                work.chunks.extendleft([chunk[half:], chunk[:half]])  # the first half runs first

        for handle in work.unit:
            if handle.status is JobStatus.RUNNING:  # every call is over, yet images are missing
                log.error(
                    "Queue %s: job %s ended its calls without all images", worker.name, handle
                )
                self._end(handle, GenerationFailed(_internal_error_message(handle)))
        return None

    async def _restart(self, worker: _Worker) -> bool:
        """After a sticky CUDA error: a fresh runner in ``worker``'s place, where its runner
        can make one (``restart()``; a Ray actor is replaced by a new process). True if so."""
        restart = getattr(worker.runner, "restart", None)
        if restart is None:
            # CUDA cannot reset a process's context: only a new process can use the GPU again.
            log.error(
                "Queue %s: its device failed with a sticky CUDA error and this process cannot "
                "use it again; restart the bot to bring the device back",
                worker.name,
            )
            return False
        assert self._loop is not None
        try:
            await self._loop.run_in_executor(worker.executor, restart)
        except Exception:
            log.exception("Queue %s: could not replace its failed runner", worker.name)
            return False
        log.warning("Queue %s: runner replaced after a sticky CUDA error", worker.name)
        return True

    def _lose(self, worker: _Worker, work: _Work, *, replaced: bool = False) -> None:
        """``worker`` is gone (or ``replaced`` by a fresh runner, and stays): hand its work to
        the workers left, or fail everything if none is left."""
        worker.lost = not replaced
        live = [h for h in work.unit if h.status is JobStatus.RUNNING]
        for handle in live:
            handle._losses += 1
            if handle._losses > MAX_WORKER_LOSSES:
                self._end(
                    handle,
                    GenerationFailed(
                        f"Job {handle.id[:8]} lost its worker {handle._losses} times; "
                        "it was stopped so that it cannot take more workers down."
                    ),
                )
        left = [w for w in self._workers if not w.lost]
        if worker.lost:  # jobs that may run on it alone would wait for ever
            for handle in [h for h in self._waiting_in_order() if h.job.worker == worker.name]:
                self._end(handle, GenerationFailed(
                    f"Job {handle.id[:8]} was to run on worker {worker.name}, which was lost."
                ))  # fmt: skip
        log.warning(
            "Queue %s: worker %s; %d worker(s) left; %d job(s) move on",
            worker.name,
            "replaced" if replaced else "lost",
            len(left),
            sum(h.status is JobStatus.RUNNING for h in work.unit),
        )
        if left:
            # The jobs stay RUNNING with their deadlines: time lost on the dead worker counts.
            self._orphans.append(work)
            self._wakeup.set()
            return
        self._no_workers = NoWorkers("every worker of this bot was lost; the log says why")
        for handle in [*work.unit, *(h for o in self._orphans for h in o.unit)]:
            self._end(handle, self._no_workers)
        self._orphans.clear()
        for handle in list(self._waiting_in_order()):
            self._end(handle, self._no_workers)

    async def _call(self, worker: _Worker, params: GenerationParams, chunk: list[Slot]) -> _Call:
        """One runner call for ``chunk`` on ``worker``; stores the images or ends the jobs that
        failed. Says whether the call ran out of memory (the caller splits it) or lost its
        worker (the caller hands the chunk on)."""
        assert self._loop is not None
        handles = list(dict.fromkeys(handle for handle, _ in chunk))
        specs = [handle.job.images[index] for handle, index in chunk]
        control = _Control(self, self._loop, handles, chunk)
        log.info(
            "Queue %s: running %d image(s) for %d job(s) %s",
            worker.name,
            len(specs),
            len(handles),
            [h.id[:8] for h in handles],
        )
        started = time.monotonic()
        for handle in handles:
            if handle._first_call_at is None:
                handle._first_call_at = started
        try:
            images = await self._loop.run_in_executor(
                worker.executor, worker.runner, params, specs, control
            )
        except RunInterrupted:
            self._end_interrupted(handles)
            return _Call.DONE
        except WorkerLost as error:
            log.warning("Queue %s: lost its worker during a call: %s", worker.name, error)
            return _Call.BROKEN if isinstance(error, DeviceBroken) else _Call.LOST
        except CoverError as error:  # e.g. ModelUnavailable: already a sentence for the user
            for handle in handles:
                self._end(handle, error)
            return _Call.DONE
        except BaseException as error:
            # Anything else the runner raises fails this call's jobs, BaseExceptions too
            # (SystemExit, KeyboardInterrupt, a library's abort, a CancelledError raised in
            # the runner's thread): only our own task being cancelled (close's timeout) ends
            # the worker. tests/models/test_queue.py raises each of them from a runner.
            if _is_own_cancellation(error):
                raise
            if is_broken_device(error):
                log.error(
                    "Queue %s: its device failed (a sticky CUDA error)", worker.name, exc_info=error
                )
                return _Call.BROKEN
            if is_out_of_memory(error):
                log.warning(
                    "Queue %s: out of GPU memory at %d image(s): %s", worker.name, len(specs), error
                )
                return _Call.OUT_OF_MEMORY
            log.error(
                "Queue %s: the runner failed on jobs %s",
                worker.name,
                [h.id[:8] for h in handles],
                exc_info=error,
            )
            for handle in handles:
                self._end(
                    handle,
                    GenerationFailed(
                        f"Generating the images of job {handle.id[:8]} failed "
                        f"({type(error).__name__}); the details are in the log."
                    ),
                )
            return _Call.DONE

        if not isinstance(images, Sequence) or len(images) != len(specs):
            count = len(images) if isinstance(images, Sequence) else type(images).__name__
            log.error(
                "Queue %s: the runner returned %s image(s) for %d", worker.name, count, len(specs)
            )
            for handle in handles:
                self._end(handle, GenerationFailed(_internal_error_message(handle)))
            return _Call.DONE
        self._collect(chunk, images, ended=time.monotonic(), worker=worker.name)
        return _Call.DONE

    def _collect(
        self, chunk: list[Slot], images: Sequence[GeneratedImage], ended: float, worker: str
    ) -> None:
        """Give each live job its images; finish the jobs that now have all of theirs."""
        for (handle, index), image in zip(chunk, images, strict=True):
            if handle.status is JobStatus.RUNNING:
                handle._images[index] = image
        for handle in dict.fromkeys(handle for handle, _ in chunk):
            if handle.status is not JobStatus.RUNNING:
                continue  # cancelled or timed out during the call: its images are dropped
            handle._last_call_end = ended
            handle._batch_sizes.append(len(chunk))
            handle._workers.append(worker)
            if ended >= handle._deadline:
                self._end(handle, JobTimedOut(self.job_timeout_s))
            elif all(image is not None for image in handle._images):
                self._end(handle, handle._result())

    def _end_interrupted(self, handles: Sequence[JobHandle]) -> None:
        """The runner stopped at our request (or on its own): tell each job why."""
        now = time.monotonic()
        for handle in handles:
            if handle.status is not JobStatus.RUNNING:
                continue
            if self._aborting:
                self._end(handle, QueueClosed())
            elif now >= handle._deadline:
                self._end(handle, JobTimedOut(self.job_timeout_s))
            else:  # the runner raised RunInterrupted although nobody asked it to stop
                self._end(handle, GenerationFailed(_internal_error_message(handle)))

    def __repr__(self) -> str:
        return (
            f"<GenerationQueue {self.name} waiting={self.pending_count} "
            f"running={len(self.running)} workers={len(self.worker_names)} closed={self._closing}>"
        )


class _Call(enum.Enum):
    """How one runner call ended, for :meth:`GenerationQueue._run_work`."""

    DONE = "done"  # images stored, or its jobs ended (failed, interrupted)
    OUT_OF_MEMORY = "out of memory"  # split it and try the halves
    LOST = "worker lost"  # run it on another worker
    BROKEN = "device broken"  # a sticky CUDA error: restart the runner, or as LOST


def _is_own_cancellation(error: BaseException) -> bool:
    """True when ``error`` is the worker task's own cancellation, not one the runner raised."""
    task = asyncio.current_task()
    return isinstance(error, asyncio.CancelledError) and task is not None and task.cancelling() > 0


def _internal_error_message(handle: JobHandle) -> str:
    return (
        f"Generating the images of job {handle.id[:8]} failed on our side; "
        "the details are in the log."
    )
