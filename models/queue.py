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

Its parts: models/handles.py (one job as its submitter sees it: status, events, handle),
models/lanes.py (waiting jobs, and which go together), models/workers.py (the runner's side:
workers, the control a call runs with, and how the worker threads meet the event loop),
models/snapshot.py (a read-only copy of the queue and its recent jobs' timings, for estimates).

No exception ends a worker but :class:`~models.jobs.WorkerLost` (its device is gone) and its
own cancellation, BaseExceptions included: runner errors fail the jobs of that call, out-of-memory
(also CUDA's allocation failures that arrive as a plain RuntimeError) splits the call in halves
(a single image that still does not fit fails only its job), and a bug of our own is logged and fails the jobs it was
working on. torch is never imported here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence

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
from models.handles import (
    Failed,
    Finished,
    JobHandle,
    JobStatus,
    Preview,
    Progress,
    Queued,
    QueueEvent,
    Started,
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
)
from models.lanes import Slot, Waiting, Work, companions
from models.snapshot import JobSnapshot, JobTiming, QueueSnapshot, RecentTimings
from models.workers import (
    MAX_WORKER_LOSSES,
    Call,
    Control,
    Worker,
    device_failure,
    internal_error_message,
    is_own_cancellation,
    lost_too_often_message,
    out_of_memory_message,
    pinned_to_lost_message,
    runner_failed_message,
    worker_names,
)

__all__ = [
    "Failed",
    "Finished",
    "GenerationQueue",
    "JobHandle",
    "JobStatus",
    "Preview",
    "Progress",
    "QueueEvent",
    "QueueSnapshot",
    "Queued",
    "Started",
]

log = logging.getLogger(__name__)


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
            Worker(worker_name, each)
            for worker_name, each in zip(worker_names(name, runners), runners, strict=True)
        ]
        self._waiting = Waiting()  # jobs not yet running, by priority and user
        self._timings = RecentTimings()  # how long recent finished jobs ran, for estimates
        self._orphans: deque[Work] = deque()  # work whose worker was lost, oldest first
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
            worker.start(self._loop, self._work(worker))

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
            worker.stop()

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
        return len(self._waiting)

    @property
    def running(self) -> tuple[JobHandle, ...]:
        """The jobs the workers are running now."""
        return tuple(
            h for worker in self._workers for h in worker.running if h.status is JobStatus.RUNNING
        )

    @property
    def closed(self) -> bool:
        return self._closing

    def snapshot(self) -> QueueSnapshot:
        """A read-only copy of what waits and runs now, with the recent jobs' timings (for
        ``/queue``: models/snapshot.py). Call it on the queue's event loop."""
        # Work a lost worker left behind runs again on the next free worker: still running.
        orphaned = [h for w in self._orphans for h in w.unit if h.status is JobStatus.RUNNING]
        return QueueSnapshot(
            taken_at=time.monotonic(),
            workers=len(self.worker_names),
            running=tuple(JobSnapshot.of(h, None) for h in [*self.running, *orphaned]),
            waiting=tuple(JobSnapshot.of(h, h._position) for h in self._waiting.in_order()),
            recent=self._timings.all(),
        )

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
        handle = JobHandle(job, time.monotonic(), position_of=self.position_of, cancel=self._cancel)
        self._waiting.push(handle)
        log.info(
            "Queue %s: job %s accepted: user %s, %d image(s), priority %d, %s",
            self.name,
            handle.id[:8],
            job.user_id,
            len(job.images),
            job.priority,
            job.label or job.params.model,
        )
        self._waiting.publish_positions()
        self._wakeup.set()
        return handle

    # -- bookkeeping (event loop only) --------------------------------------------------

    def _active_jobs(self, user_id: str) -> int:
        waiting = sum(1 for h in self._waiting.in_order() if h.job.user_id == user_id)
        return waiting + sum(1 for h in self.running if h.job.user_id == user_id)

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
            self._waiting.remove(handle)
        handle._settle(outcome)
        if isinstance(outcome, JobResult):
            self._timings.add(JobTiming.of(handle, outcome.run_s))
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
            self._waiting.publish_positions()
        return True

    def _abort(self) -> None:
        """Fail every waiting and running job with :class:`QueueClosed`; stop the runners."""
        self._aborting = True
        orphaned = [h for work in self._orphans for h in work.unit]
        self._orphans.clear()
        for handle in [*self._waiting.in_order(), *self.running, *orphaned]:
            self._end(handle, QueueClosed())

    def _should_stop(self, handles: Sequence[JobHandle]) -> bool:
        """Whether a runner call for ``handles`` should stop; asked from the worker's thread."""
        if self._aborting:
            return True
        now = time.monotonic()
        # Check the deadline here too, not only the loop's timer: the loop may be busy.
        return all(h._status is not JobStatus.RUNNING or now >= h._deadline for h in handles)

    def _time_out(self, handle: JobHandle) -> None:
        if handle.status is JobStatus.RUNNING:
            self._end(handle, JobTimedOut(self.job_timeout_s))

    # -- the workers --------------------------------------------------------------------

    async def _work(self, worker: Worker) -> None:
        log.info("Queue %s: worker started", worker.name)
        while (work := await self._next_work(worker)) is not None:
            worker.running = work.unit
            try:
                stopped = await self._run_work(worker, work)
                if stopped is not None:
                    replaced = stopped is Call.BROKEN and await worker.restart(self._loop)
                    self._lose(worker, work, replaced=replaced)
                    if not replaced:
                        return
            except BaseException as error:  # a bug of ours; close's own cancellation ends us
                if is_own_cancellation(error):
                    raise
                log.exception("Queue %s: internal error while running %s", worker.name, work.unit)
                for handle in work.unit:
                    self._end(handle, GenerationFailed(internal_error_message(handle)))
            finally:
                worker.running = []
                self._wakeup.set()  # an idle worker waiting to close may now stop
        log.info("Queue %s: worker stopped", worker.name)

    async def _next_work(self, worker: Worker) -> Work | None:
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

    def _take_unit(self, worker: Worker | None = None) -> Work | None:
        """Take the next job in fair order that ``worker`` may run (jobs pinned to another
        worker wait for it) and the waiting jobs that can share its calls; None if there is
        none (which jobs go together: :func:`models.lanes.companions`).
        """
        name = worker.name if worker is not None else None
        order = [h for h in self._waiting.in_order() if h.job.worker in (None, name)]
        if not order:
            return None
        unit = companions(order, self.max_batch)
        assert self._loop is not None
        first_call = min(sum(len(handle.job.images) for handle in unit), self.max_batch)
        for handle in unit:
            self._waiting.remove(handle, served=True)
            handle._status = JobStatus.RUNNING
            handle._deadline = time.monotonic() + self.job_timeout_s
            handle._timer = self._loop.call_later(self.job_timeout_s, self._time_out, handle)
            handle._publish(Started(first_call))
        self._waiting.publish_positions()
        return Work.of(unit, self.max_batch)

    async def _run_work(self, worker: Worker, work: Work) -> Call | None:
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
            if outcome in (Call.LOST, Call.BROKEN):
                work.chunks.appendleft(chunk)
                return outcome
            if outcome is Call.DONE:
                continue
            if len(chunk) == 1:
                handle = chunk[0][0]
                self._end(handle, GenerationFailed(out_of_memory_message(handle, params)))
            else:
                half = len(chunk) // 2
                work.chunks.extendleft([chunk[half:], chunk[:half]])  # the first half runs first

        for handle in work.unit:
            if handle.status is JobStatus.RUNNING:  # every call is over, yet images are missing
                log.error(
                    "Queue %s: job %s ended its calls without all images", worker.name, handle
                )
                self._end(handle, GenerationFailed(internal_error_message(handle)))
        return None

    def _lose(self, worker: Worker, work: Work, *, replaced: bool = False) -> None:
        """``worker`` is gone (or ``replaced`` by a fresh runner, and stays): hand its work to
        the workers left, or fail everything if none is left."""
        worker.lost = not replaced
        live = [h for h in work.unit if h.status is JobStatus.RUNNING]
        for handle in live:
            handle._losses += 1
            if handle._losses > MAX_WORKER_LOSSES:
                self._end(handle, GenerationFailed(lost_too_often_message(handle)))
        left = [w for w in self._workers if not w.lost]
        if worker.lost:  # jobs that may run on it alone would wait for ever
            for handle in [h for h in self._waiting.in_order() if h.job.worker == worker.name]:
                self._end(handle, GenerationFailed(pinned_to_lost_message(handle, worker.name)))
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
        for handle in list(self._waiting.in_order()):
            self._end(handle, self._no_workers)

    async def _call(self, worker: Worker, params: GenerationParams, chunk: list[Slot]) -> Call:
        """One runner call for ``chunk`` on ``worker``; stores the images or ends the jobs that
        failed. Says whether the call ran out of memory (the caller splits it) or lost its
        worker (the caller hands the chunk on)."""
        assert self._loop is not None
        handles = list(dict.fromkeys(handle for handle, _ in chunk))
        specs = [handle.job.images[index] for handle, index in chunk]
        control = Control(
            self._loop, handles, chunk, should_stop=lambda: self._should_stop(handles)
        )
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
            return Call.DONE
        except WorkerLost as error:
            log.warning("Queue %s: lost its worker during a call: %s", worker.name, error)
            return Call.BROKEN if isinstance(error, DeviceBroken) else Call.LOST
        except CoverError as error:  # e.g. ModelUnavailable: already a sentence for the user
            for handle in handles:
                self._end(handle, error)
            return Call.DONE
        except BaseException as error:
            # Anything else the runner raises fails this call's jobs, BaseExceptions too
            # (SystemExit, KeyboardInterrupt, a library's abort, a CancelledError raised in
            # the runner's thread): only our own task being cancelled (close's timeout) ends
            # the worker. tests/models/test_queue.py raises each of them from a runner.
            if is_own_cancellation(error):
                raise
            if (outcome := device_failure(error, worker.name, len(specs))) is not None:
                return outcome
            log.error(
                "Queue %s: the runner failed on jobs %s",
                worker.name,
                [h.id[:8] for h in handles],
                exc_info=error,
            )
            for handle in handles:
                self._end(handle, GenerationFailed(runner_failed_message(handle, error)))
            return Call.DONE

        if not isinstance(images, Sequence) or len(images) != len(specs):
            count = len(images) if isinstance(images, Sequence) else type(images).__name__
            log.error(
                "Queue %s: the runner returned %s image(s) for %d", worker.name, count, len(specs)
            )
            for handle in handles:
                self._end(handle, GenerationFailed(internal_error_message(handle)))
            return Call.DONE
        self._collect(chunk, images, ended=time.monotonic(), worker=worker.name)
        return Call.DONE

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
                self._end(handle, GenerationFailed(internal_error_message(handle)))

    def __repr__(self) -> str:
        return (
            f"<GenerationQueue {self.name} waiting={self.pending_count} "
            f"running={len(self.running)} workers={len(self.worker_names)} closed={self._closing}>"
        )
