"""The in-process async generation queue: one worker per device, fair, bounded, batching.

    submit(job) ──► lanes (by priority) ──► per-user FIFO, users taken in turn (round-robin)
                                               │
        worker task: take the next job, add waiting jobs with equal params up to max_batch
                                               │
        runner(params, specs, control) in the queue's own thread ──► images back per job

Events for subscribers (:meth:`JobHandle.events`): ``Queued(position)`` whenever the position
changes, ``Started``, ``Progress(step, total)`` from the runner's step callback, then exactly
one of ``Finished`` or ``Failed``. Progress crosses from the worker thread to the event loop with
``loop.call_soon_threadsafe``; nothing else in here is touched from another thread except the
plain flags :class:`_Control` reads.

No exception escapes the worker: runner errors fail the jobs of that batch, out-of-memory splits
the batch in halves and retries (one image that still does not fit fails only its job), and a
bug in our own bookkeeping is logged and fails that batch. torch is never imported here.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from models.errors import (
    CoverError,
    GenerationFailed,
    JobCancelled,
    JobTimedOut,
    PendingLimitReached,
    QueueClosed,
    QueueFull,
)
from models.jobs import (
    GeneratedImage,
    GenerationJob,
    GenerationParams,
    JobResult,
    OutOfMemory,
    RunInterrupted,
    Runner,
)

log = logging.getLogger(__name__)


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    position: int  # 1 = runs next


@dataclass(frozen=True)
class Started:
    batch_size: int  # images in the pipeline call this job joined


@dataclass(frozen=True)
class Progress:
    step: int
    total: int


@dataclass(frozen=True)
class Finished:
    result: JobResult


@dataclass(frozen=True)
class Failed:
    error: CoverError


QueueEvent = Queued | Started | Progress | Finished | Failed
_FINAL = (Finished, Failed)


# -- one job -------------------------------------------------------------------------------


class JobHandle:
    """The submitter's view of one job: events, result, cancel."""

    def __init__(self, queue: GenerationQueue, job: GenerationJob) -> None:
        self.id = uuid.uuid4().hex
        self.job = job
        self._queue = queue
        self._future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        # Nobody may await a cancelled job's result; don't let asyncio call that an error.
        self._future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._subscribers: list[asyncio.Queue[QueueEvent]] = []
        self._last: QueueEvent | None = None
        self.status = "queued"  # queued → running → done | failed | cancelled
        self.cancel_requested = False
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.deadline: float | None = None
        self.unscheduled: deque[int] = deque(range(len(job.images)))  # spec indices not yet run
        self.images: dict[int, GeneratedImage] = {}
        self.batch_sizes: list[int] = []

    @property
    def done(self) -> bool:
        return self._future.done()

    @property
    def user_id(self) -> str:
        return self.job.user_id

    def cancel(self) -> bool:
        """Cancel the job: at once if it waits; a running batch drops its images. False if
        it had already ended."""
        return self._queue._cancel(self)

    async def result(self) -> JobResult:
        """The result, or the :class:`CoverError` the job ended with."""
        return await asyncio.shield(self._future)

    async def events(self) -> AsyncIterator[QueueEvent]:
        """Every event from now on, starting with the current state; ends after the last one."""
        inbox: asyncio.Queue[QueueEvent] = asyncio.Queue()
        if self._last is not None:
            inbox.put_nowait(self._last)
        if self._last is None or not isinstance(self._last, _FINAL):
            self._subscribers.append(inbox)
        try:
            while True:
                event = await inbox.get()
                yield event
                if isinstance(event, _FINAL):
                    return
        finally:
            if inbox in self._subscribers:
                self._subscribers.remove(inbox)

    def _emit(self, event: QueueEvent) -> None:
        if self.done and not isinstance(event, _FINAL):
            return
        self._last = event
        for inbox in self._subscribers:
            inbox.put_nowait(event)

    def _settle(self, status: str, outcome: JobResult | CoverError) -> bool:
        if self.done:
            return False
        self.status = status
        if isinstance(outcome, JobResult):
            self._future.set_result(outcome)
            self._emit(Finished(outcome))
        else:
            self._future.set_exception(outcome)
            self._emit(Failed(outcome))
        return True

    def __repr__(self) -> str:
        return f"<JobHandle {self.id[:8]} user={self.user_id} {self.status}>"


@dataclass
class _Lane:
    """Jobs of one priority: a FIFO per user and the order in which users take turns."""

    jobs: dict[str, deque[JobHandle]] = field(default_factory=dict)
    turn: deque[str] = field(default_factory=deque)

    def push(self, handle: JobHandle) -> None:
        if handle.user_id not in self.jobs:
            self.jobs[handle.user_id] = deque()
            self.turn.append(handle.user_id)
        self.jobs[handle.user_id].append(handle)

    def remove(self, handle: JobHandle) -> None:
        user_jobs = self.jobs.get(handle.user_id)
        if user_jobs is None or handle not in user_jobs:
            return
        user_jobs.remove(handle)
        if not user_jobs:
            del self.jobs[handle.user_id]
            self.turn.remove(handle.user_id)

    def heads(self) -> Iterator[JobHandle]:
        """Each user's oldest job, in turn order (only heads may run: per-user FIFO)."""
        for user in self.turn:
            yield self.jobs[user][0]

    def took_turn(self, user: str) -> None:
        """``user`` was served: to the back of the turn order."""
        if user in self.jobs and self.turn and user in self.turn:
            self.turn.remove(user)
            self.turn.append(user)

    def fair_order(self) -> Iterator[JobHandle]:
        """All waiting jobs in the order they would run if nothing else arrived."""
        queues = [self.jobs[user] for user in self.turn]
        for row in itertools.zip_longest(*queues):
            yield from (handle for handle in row if handle is not None)


class _Control:
    """The :class:`~models.jobs.RunControl` for one runner call (used from the worker thread)."""

    def __init__(self, queue: GenerationQueue, handles: Sequence[JobHandle]) -> None:
        self._queue = queue
        self._handles = handles
        self._loop = queue._loop

    def step(self, step: int, total: int) -> None:
        self._loop.call_soon_threadsafe(self._queue._progress, self._handles, step, total)
        if self.should_stop():
            raise RunInterrupted

    def should_stop(self) -> bool:
        if self._queue._aborting:
            return True
        now = time.monotonic()
        return all(
            h.cancel_requested or h.done or (h.deadline is not None and now > h.deadline)
            for h in self._handles
        )


Entry = tuple[JobHandle, int]  # (job, index of one of its images)


# -- the queue -----------------------------------------------------------------------------


class GenerationQueue:
    """Bounded, fair, batching queue in front of one device's runner.

    ``max_pending`` bounds the jobs waiting (all users), ``max_per_user`` the jobs one user may
    have waiting or running, ``max_batch`` the images in one runner call. ``job_timeout_s``
    counts from a job's first pipeline call.
    """

    def __init__(
        self,
        runner: Runner,
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
                raise ValueError(f"`{argument}` must be at least 1, got {value}")
        if job_timeout_s <= 0:
            raise ValueError(f"`job_timeout_s` must be positive, got {job_timeout_s}")
        self._runner = runner
        self.max_pending = max_pending
        self.max_per_user = max_per_user
        self.max_batch = max_batch
        self.job_timeout_s = job_timeout_s
        self.name = name
        self._lanes: dict[int, _Lane] = {}
        self._active: dict[str, int] = {}  # user → jobs waiting or running
        self._waiting = 0
        self._running: list[JobHandle] = []
        self._positions: dict[str, int] = {}
        self._closing = False
        self._aborting = False
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._worker is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"queue-{self.name}")
        self._worker = asyncio.create_task(self._work(), name=f"queue-{self.name}")

    async def close(self, *, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop taking jobs. ``drain``: finish the waiting ones; otherwise fail them with
        :class:`QueueClosed` and interrupt the running batch at its next step. Idempotent."""
        self._closing = True
        if not drain:
            self._aborting = True
            for lane in self._lanes.values():
                for handle in list(lane.fair_order()):
                    self._end(handle, "failed", QueueClosed())
        self._wakeup.set()
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker), timeout_s)
            except TimeoutError:
                log.warning(
                    "Queue %s did not stop within %s s; cancelling it", self.name, timeout_s
                )
                self._aborting = True
                self._worker.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> GenerationQueue:
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close(drain=exc_type is None)

    # -- submitting and cancelling ------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return self._waiting

    @property
    def running(self) -> tuple[JobHandle, ...]:
        return tuple(self._running)

    def position_of(self, handle: JobHandle) -> int | None:
        return self._positions.get(handle.id)

    def submit(self, job: GenerationJob) -> JobHandle:
        """Accept ``job`` or raise :class:`QueueClosed`, :class:`QueueFull` or
        :class:`PendingLimitReached`. Must be called on the queue's event loop."""
        if self._closing or self._worker is None:
            raise QueueClosed()
        if not job.images:
            raise ValueError("`job.images` is empty: a job must ask for at least one image")
        if self._active.get(job.user_id, 0) >= self.max_per_user:
            raise PendingLimitReached(self.max_per_user)
        if self._waiting >= self.max_pending:
            raise QueueFull(self.max_pending)
        handle = JobHandle(self, job)
        self._lanes.setdefault(job.priority, _Lane()).push(handle)
        self._waiting += 1
        self._active[job.user_id] = self._active.get(job.user_id, 0) + 1
        log.info(
            "Job %s accepted: user %s, %d image(s), %s",
            handle.id[:8],
            job.user_id,
            len(job.images),
            job.label or job.params.model,
        )
        self._update_positions()
        self._wakeup.set()
        return handle

    def _cancel(self, handle: JobHandle) -> bool:
        if handle.done:
            return False
        handle.cancel_requested = True  # a running batch sees this at its next step
        self._end(handle, "cancelled", JobCancelled())
        return True

    def _end(self, handle: JobHandle, status: str, outcome: JobResult | CoverError) -> None:
        """Settle ``handle`` once and release its place; every ending goes through here."""
        if not handle._settle(status, outcome):
            return
        lane = self._lanes.get(handle.job.priority)
        if lane is not None and handle.user_id in lane.jobs and handle in lane.jobs[handle.user_id]:
            lane.remove(handle)
            if handle.started_at is None:
                self._waiting -= 1
        left = self._active.get(handle.user_id, 1) - 1
        if left:
            self._active[handle.user_id] = left
        else:
            self._active.pop(handle.user_id, None)
        if isinstance(outcome, CoverError):
            log.info("Job %s %s: %s", handle.id[:8], status, outcome)
        self._update_positions()

    def _update_positions(self) -> None:
        waiting = [
            handle
            for priority in sorted(self._lanes)
            for handle in self._lanes[priority].fair_order()
            if handle.started_at is None
        ]
        positions = {handle.id: n for n, handle in enumerate(waiting, 1)}
        for handle in waiting:
            if self._positions.get(handle.id) != positions[handle.id]:
                handle._emit(Queued(positions[handle.id]))
        self._positions = positions

    def _progress(self, handles: Sequence[JobHandle], step: int, total: int) -> None:
        for handle in handles:
            handle._emit(Progress(step, total))

    # -- the worker ---------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._run_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of ours: never let it kill the worker
                log.exception("Queue %s: batch bookkeeping failed", self.name)
                for handle, _ in batch:
                    self._end(handle, "failed", GenerationFailed("Generation failed on our side."))
            finally:
                self._running = []

    def _next_batch(self) -> list[Entry]:
        """Take the next job in fair order, then more waiting jobs with equal params, up to
        ``max_batch`` images. Only each user's oldest job is eligible (per-user FIFO)."""
        if self._aborting:
            return []
        first = next((h for p in sorted(self._lanes) for h in self._lanes[p].heads()), None)
        if first is None:
            return []
        params = first.job.params
        batch: list[Entry] = []
        taken = True
        while taken and len(batch) < self.max_batch:
            taken = False
            for priority in sorted(self._lanes):
                lane = self._lanes[priority]
                for handle in list(lane.heads()):
                    if handle.job.params != params or len(batch) >= self.max_batch:
                        continue
                    self._take(lane, handle, batch)
                    taken = True
        return batch

    def _take(self, lane: _Lane, handle: JobHandle, batch: list[Entry]) -> None:
        """Move as many of ``handle``'s images as fit into ``batch``."""
        while handle.unscheduled and len(batch) < self.max_batch:
            batch.append((handle, handle.unscheduled.popleft()))
        if handle.started_at is None:
            handle.started_at = time.monotonic()
            handle.deadline = handle.started_at + self.job_timeout_s
            handle.status = "running"
            self._waiting -= 1
        lane.took_turn(handle.user_id)
        if not handle.unscheduled:
            lane.remove(handle)  # the rest of it is in this batch

    async def _run_batch(self, batch: list[Entry]) -> None:
        handles = list(dict.fromkeys(handle for handle, _ in batch))
        self._running = handles
        self._update_positions()
        params = batch[0][0].job.params
        log.info("Batch: %d job(s), %d image(s), model %s", len(handles), len(batch), params.model)
        for handle in handles:
            handle._emit(Started(len(batch)))
        await self._attempt(params, batch)

        now = time.monotonic()
        for handle in handles:
            if handle.done:
                continue
            if handle.deadline is not None and now > handle.deadline:
                self._end(handle, "failed", JobTimedOut(self.job_timeout_s))
            elif not handle.unscheduled and len(handle.images) == len(handle.job.images):
                result = JobResult(
                    job_id=handle.id,
                    images=tuple(handle.images[i] for i in range(len(handle.job.images))),
                    wait_s=(handle.started_at or now) - handle.submitted_at,
                    run_s=now - (handle.started_at or now),
                    batch_sizes=tuple(handle.batch_sizes),
                )
                self._end(handle, "done", result)
            # else: more of its images wait in the lane for a later batch

    async def _attempt(self, params: GenerationParams, entries: list[Entry]) -> None:
        """One runner call; on out-of-memory, the halves one after the other."""
        entries = [(h, i) for h, i in entries if not h.done]
        if not entries:
            return
        handles = list(dict.fromkeys(handle for handle, _ in entries))
        specs = [handle.job.images[index] for handle, index in entries]
        assert self._loop is not None and self._executor is not None
        try:
            images = await self._loop.run_in_executor(
                self._executor, self._runner, params, specs, _Control(self, handles)
            )
        except RunInterrupted:
            for handle in handles:
                if self._aborting:
                    self._end(handle, "failed", QueueClosed())
                elif handle.deadline is not None and time.monotonic() > handle.deadline:
                    self._end(handle, "failed", JobTimedOut(self.job_timeout_s))
            return
        except Exception as exc:
            if _is_out_of_memory(exc):
                if len(entries) == 1:
                    self._end(
                        entries[0][0],
                        "failed",
                        GenerationFailed(
                            "The GPU ran out of memory even for a single image; try a smaller model."
                        ),
                    )
                    return
                log.warning("Out of memory at %d images; splitting the batch", len(entries))
                half = len(entries) // 2
                await self._attempt(params, entries[:half])
                await self._attempt(params, entries[half:])
                return
            if isinstance(exc, CoverError):
                error: CoverError = exc
            else:
                log.error("Runner failed on %d image(s)", len(entries), exc_info=exc)
                error = GenerationFailed(f"Generation failed ({type(exc).__name__}).")
            for handle in handles:
                self._end(handle, "failed", error)
            return
        if len(images) != len(entries):
            for handle in handles:
                self._end(
                    handle,
                    "failed",
                    GenerationFailed(
                        f"Generation failed: the runner returned {len(images)} images for {len(entries)}."
                    ),
                )
            return
        for (handle, index), image in zip(entries, images, strict=True):
            handle.images[index] = image
        for handle in handles:
            handle.batch_sizes.append(len(entries))


def _is_out_of_memory(exc: BaseException) -> bool:
    # torch.cuda.OutOfMemoryError, matched by name so this module never imports torch.
    return isinstance(exc, OutOfMemory) or type(exc).__name__ == "OutOfMemoryError"
