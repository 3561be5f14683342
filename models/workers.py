"""The runner's side of the queue (models/queue.py): a :class:`Worker` per device slot (its
runner, the single thread it runs in, the task feeding it), the :class:`Control` a runner call
reports progress through and is stopped by, and how one call ended (:class:`Call`).

Threads: the queue runs on the event loop; the runners and :class:`Control` run in each
worker's own single thread. That thread only *reads* a job's status and deadline and the
queue's abort flag, and hands progress to the loop with ``loop.call_soon_threadsafe``; results
come back through ``run_in_executor``'s future. A remote runner (:mod:`models.ray_workers`) is
the same kind of runner: it blocks its worker's thread while the actor works and relays the
actor's progress through the same ``control``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from models.handles import JobHandle, JobStatus, Preview, Progress
from models.jobs import (
    GenerationParams,
    RunInterrupted,
    Runner,
    is_broken_device,
    is_out_of_memory,
)
from models.lanes import Slot

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("models.queue")  # the queue's log: a worker's lines read as the queue's

# A job whose batch lost its worker this often fails instead of moving on: a batch that kills
# every worker it lands on (a poisoned input, a crashing driver) must not take them all down.
MAX_WORKER_LOSSES = 2


def publish_progress(handles: Sequence[JobHandle], step: int, total: int) -> None:
    """On the loop: step ``step`` of ``total`` to every job of the call still running."""
    for handle in handles:
        if handle.status is JobStatus.RUNNING:
            handle._publish(Progress(step, total))


def publish_preview(per_job: dict[JobHandle, list[Image.Image]], step: int) -> None:
    """On the loop: each running job's preview pictures at ``step``."""
    for handle, images in per_job.items():
        if handle.status is JobStatus.RUNNING:
            handle._publish(Preview(step, tuple(images)))


class Control:
    """The :class:`~models.jobs.RunControl` of one runner call; used from the worker thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handles: Sequence[JobHandle],
        chunk: Sequence[Slot] = (),
        *,
        should_stop: Callable[[], bool],
    ) -> None:
        self._should_stop = should_stop  # the queue's answer: aborting, or every job ended
        self._loop = loop
        self._handles = handles
        self._chunk = chunk

    def step(self, step: int, total: int) -> None:
        if self._should_stop():
            raise RunInterrupted("every job of this batch was cancelled, timed out or closed")
        try:
            self._loop.call_soon_threadsafe(publish_progress, self._handles, step, total)
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
            self._loop.call_soon_threadsafe(publish_preview, per_job, step)


class Worker:
    """One device slot: a runner, the single thread it runs in, the task feeding it, and the
    jobs it is running now. ``lost`` once its runner raised :class:`WorkerLost`."""

    def __init__(self, name: str, runner: Runner) -> None:
        self.name = name
        self.runner = runner
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task[None] | None = None
        self.running: list[JobHandle] = []  # the jobs it took last (some may have ended)
        self.lost = False

    def start(self, loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> None:
        """Its thread, and the task that feeds it (``work``) on ``loop``."""
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gen-{self.name}")
        self.task = loop.create_task(work, name=f"queue-{self.name}")

    def stop(self) -> None:
        """Its thread stops once the call it runs returns; calls not begun are dropped."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def restart(self, loop: asyncio.AbstractEventLoop) -> bool:
        """After a sticky CUDA error: a fresh runner in this worker's place, where its runner
        can make one (``restart()``; a Ray actor is replaced by a new process). True if so."""
        restart = getattr(self.runner, "restart", None)
        if restart is None:
            # CUDA cannot reset a process's context: only a new process can use the GPU again.
            log.error(
                "Queue %s: its device failed with a sticky CUDA error and this process cannot "
                "use it again; restart the bot to bring the device back",
                self.name,
            )
            return False
        try:
            await loop.run_in_executor(self.executor, restart)
        except Exception:
            log.exception("Queue %s: could not replace its failed runner", self.name)
            return False
        log.warning("Queue %s: runner replaced after a sticky CUDA error", self.name)
        return True

    def __repr__(self) -> str:
        return f"<worker {self.name}{' lost' if self.lost else ''}>"


def worker_names(base: str, runners: Sequence[Runner]) -> list[str]:
    """``base`` for a single runner (logs read as before); else ``base/<device>`` or ``base/i``."""
    if len(runners) == 1:
        return [base]
    names = []
    for index, runner in enumerate(runners):
        label = getattr(runner, "name", None) or getattr(runner, "device", None) or str(index)
        name = f"{base}/{label}"
        names.append(name if name not in names else f"{name}#{index}")
    return names


class Call(enum.Enum):
    """How one runner call ended, for :meth:`GenerationQueue._run_work`."""

    DONE = "done"  # images stored, or its jobs ended (failed, interrupted)
    OUT_OF_MEMORY = "out of memory"  # split it and try the halves
    LOST = "worker lost"  # run it on another worker
    BROKEN = "device broken"  # a sticky CUDA error: restart the runner, or as LOST


def is_own_cancellation(error: BaseException) -> bool:
    """True when ``error`` is the worker task's own cancellation, not one the runner raised."""
    task = asyncio.current_task()
    return isinstance(error, asyncio.CancelledError) and task is not None and task.cancelling() > 0


def internal_error_message(handle: JobHandle) -> str:
    return (
        f"Generating the images of job {handle.id[:8]} failed on our side; "
        "the details are in the log."
    )


def out_of_memory_message(handle: JobHandle, params: GenerationParams) -> str:
    return (
        f"Job {handle.id[:8]} ran out of GPU memory even at batch size 1 "
        f"({params.width}x{params.height}, model {params.model!r})."
    )


def lost_too_often_message(handle: JobHandle) -> str:
    return (
        f"Job {handle.id[:8]} lost its worker {handle._losses} times; "
        "it was stopped so that it cannot take more workers down."
    )


def runner_failed_message(handle: JobHandle, error: BaseException) -> str:
    return (
        f"Generating the images of job {handle.id[:8]} failed "
        f"({type(error).__name__}); the details are in the log."
    )


def pinned_to_lost_message(handle: JobHandle, worker: str) -> str:
    return f"Job {handle.id[:8]} was to run on worker {worker}, which was lost."


def device_failure(error: BaseException, worker: str, images: int) -> Call | None:
    """What a runner's exception says about its device, logged: :attr:`Call.BROKEN` for a
    sticky CUDA error (the runner restarts), :attr:`Call.OUT_OF_MEMORY` (the caller splits the
    call), or None: the jobs' own failure, which the caller ends."""
    if is_broken_device(error):
        log.error("Queue %s: its device failed (a sticky CUDA error)", worker, exc_info=error)
        return Call.BROKEN
    if is_out_of_memory(error):
        log.warning("Queue %s: out of GPU memory at %d image(s): %s", worker, images, error)
        return Call.OUT_OF_MEMORY
    return None
