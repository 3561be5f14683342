"""The generation queue with a fake runner: ordering, batching, limits and every way a job ends.

The fake runner is ours and records what it was asked; the queue under test is the real one,
with its real worker thread and event-loop hand-off. Every wait is guarded, so a bug fails a
test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from PIL import Image

from models.errors import (
    GenerationFailed,
    JobCancelled,
    JobTimedOut,
    ModelUnavailable,
    NoWorkers,
    PendingLimitReached,
    QueueClosed,
    QueueFull,
)
from models.jobs import (
    GeneratedImage,
    GenerationJob,
    GenerationParams,
    ImageSpec,
    OutOfMemory,
    RunControl,
    RunInterrupted,
    WorkerLost,
)
from models.queue import Failed, Finished, GenerationQueue, JobHandle, Progress, Queued, Started

GUARD_S = 5.0  # no test waits longer than this for anything

A = GenerationParams(model="tiny", width=8, height=8, steps=3, guidance=1.0)
B = GenerationParams(model="other", width=8, height=8, steps=3, guidance=1.0)


class FakeRunner:
    """A runner that records its calls and can be held at a gate, paused mid-run (still
    calling ``control.step``, so it stays interruptible), run out of memory above a batch
    size, or crash on a prompt containing "crash"."""

    def __init__(self, *, steps: int = 3, oom_above: int | None = None) -> None:
        self.steps = steps
        self.oom_above = oom_above
        self.calls: list[tuple[GenerationParams, list[str]]] = []
        self.interrupted = 0
        self.returned = 0
        self.entered = threading.Event()  # set when a call begins
        self.gate = threading.Event()  # a call waits here (not stepping) until it is set
        self.gate.set()
        self.resume = threading.Event()  # cleared: a call keeps stepping at step 1 until set
        self.resume.set()

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]:
        prompts = [spec.prompt for spec in specs]
        self.calls.append((params, prompts))
        self.entered.set()
        if not self.gate.wait(GUARD_S):
            raise RuntimeError("test gate never opened")
        if any("crash" in prompt for prompt in prompts):
            raise RuntimeError("runner exploded")
        if self.oom_above is not None and len(specs) > self.oom_above:
            raise OutOfMemory(f"{len(specs)} images do not fit")
        try:
            self._denoise(control)
        except RunInterrupted:
            self.interrupted += 1
            raise
        self.returned += 1
        return [GeneratedImage(spec, Image.new("RGB", (8, 8)), spec.seed) for spec in specs]

    def _denoise(self, control: RunControl) -> None:
        give_up = time.monotonic() + GUARD_S
        for step in range(1, self.steps + 1):
            control.step(step, self.steps)
            while not self.resume.wait(0.002):
                if time.monotonic() > give_up:
                    raise RuntimeError("test never resumed the runner")
                control.step(step, self.steps)


def job(
    user: str, name: str, images: int = 1, params: GenerationParams = A, priority: int = 0
) -> GenerationJob:
    specs = tuple(ImageSpec(f"{name}#{i}", seed=i) for i in range(images))
    return GenerationJob(user_id=user, params=params, images=specs, priority=priority, label=name)


def ran(runner: FakeRunner) -> list[str]:
    """Job names in the order their images were generated."""
    names: list[str] = []
    for _, prompts in runner.calls:
        for prompt in prompts:
            name = prompt.split("#")[0]
            if not names or names[-1] != name:
                names.append(name)
    return names


def call_sizes(runner: FakeRunner) -> list[int]:
    return [len(prompts) for _, prompts in runner.calls]


async def wait_all(*handles: JobHandle) -> list:
    return await asyncio.wait_for(
        asyncio.gather(*(h.result() for h in handles), return_exceptions=True), GUARD_S
    )


async def started_queue(runner, **kwargs) -> GenerationQueue:
    queue = GenerationQueue(runner, **{"max_per_user": 10, **kwargs})
    await queue.start()
    return queue


async def hold_worker(queue: GenerationQueue, runner: FakeRunner) -> JobHandle:
    """Occupy the worker with a blocker job (params B) so that the next submissions all wait
    together; ``runner.gate.set()`` lets it go."""
    runner.gate.clear()
    runner.entered.clear()
    blocker = queue.submit(job("blocker", "blocker", params=B))
    assert await asyncio.to_thread(runner.entered.wait, GUARD_S)
    return blocker


async def entered(runner: FakeRunner) -> None:
    assert await asyncio.to_thread(runner.entered.wait, GUARD_S)


# -- order -----------------------------------------------------------------------------------


async def test_fifo_per_user_and_round_robin_between_users():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=1)
    blocker = await hold_worker(queue, runner)
    handles = [queue.submit(job("alice", f"a{i}")) for i in range(4)]
    handles.append(queue.submit(job("bob", "b0")))
    handles.append(queue.submit(job("carol", "c0")))
    handles.append(queue.submit(job("bob", "b1")))
    assert [queue.position_of(h) for h in handles] == [1, 4, 6, 7, 2, 3, 5]
    runner.gate.set()
    results = await wait_all(blocker, *handles)
    assert not any(isinstance(r, Exception) for r in results)
    assert ran(runner) == ["blocker", "a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    await queue.close()


async def test_jobs_submitted_before_start_wait_for_it():
    runner = FakeRunner()
    queue = GenerationQueue(runner, max_batch=1, max_per_user=5)
    handles = [queue.submit(job("alice", "a0")), queue.submit(job("alice", "a1"))]
    handles.append(queue.submit(job("bob", "b0")))
    assert queue.pending_count == 3 and runner.calls == []
    await queue.start()
    await wait_all(*handles)
    assert ran(runner) == ["a0", "b0", "a1"]
    await queue.close()


async def test_priority_jobs_wait_for_users_and_never_ride_along():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    bench = queue.submit(job("admin", "bench", params=A, priority=1))
    first = queue.submit(job("u0", "u0", params=A))
    second = queue.submit(job("u1", "u1", params=B))
    assert [queue.position_of(h) for h in (first, second, bench)] == [1, 2, 3]
    runner.gate.set()
    await wait_all(blocker, bench, first, second)
    # bench has u0's params and would fit its call, but u1 (priority 0) still waited then.
    assert ran(runner) == ["blocker", "u0", "u1", "bench"]
    assert call_sizes(runner) == [1, 1, 1, 1]
    await queue.close()


# -- batching --------------------------------------------------------------------------------


async def test_equal_params_share_one_call_up_to_max_batch():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    same = [queue.submit(job(f"user{i}", f"s{i}", images=4)) for i in range(3)]
    different = queue.submit(job("dave", "d", images=2, params=B))
    runner.gate.set()
    results = await wait_all(blocker, *same, different)
    # blocker; s0+s1 merged; s2 alone (8 is the cap); d has other params than s2.
    assert call_sizes(runner) == [1, 8, 4, 2]
    assert [p.model for p, _ in runner.calls] == ["other", "tiny", "tiny", "other"]
    assert results[1].batch_sizes == (8,) and results[3].batch_sizes == (4,)
    # Results are split back per job, in the job's own order.
    for n, result in enumerate(results[1:4]):
        assert [img.spec.prompt for img in result.images] == [f"s{n}#{i}" for i in range(4)]
        assert result.job_id == same[n].id
    await queue.close()


async def test_batching_takes_later_jobs_that_still_fit():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    handles = [
        queue.submit(job("x", "x", images=6)),
        queue.submit(job("y", "y", images=4)),  # 6 + 4 > 8: waits for the next call
        queue.submit(job("z", "z", images=2)),  # 6 + 2 fits
    ]
    runner.gate.set()
    await wait_all(blocker, *handles)
    assert runner.calls[1][1] == [f"x#{i}" for i in range(6)] + ["z#0", "z#1"]
    assert call_sizes(runner) == [1, 8, 4]
    await queue.close()


async def test_a_job_larger_than_max_batch_is_split_and_completes_once():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=3)
    handle = queue.submit(job("alice", "big", images=7))
    events = handle.events()
    result = await asyncio.wait_for(handle.result(), GUARD_S)
    assert call_sizes(runner) == [3, 3, 1]
    assert [i.spec.prompt for i in result.images] == [f"big#{i}" for i in range(7)]
    assert result.batch_sizes == (3, 3, 1)
    seen = [event async for event in events]
    assert [e for e in seen if isinstance(e, Started)] == [Started(3)]  # started once
    assert sum(isinstance(e, Finished) for e in seen) == 1
    await queue.close()


# -- limits ----------------------------------------------------------------------------------


async def test_bound_and_per_user_limit():
    runner = FakeRunner()
    queue = GenerationQueue(runner, max_pending=3, max_per_user=2)
    await queue.start()
    blocker = await hold_worker(queue, runner)  # running: does not count as waiting
    first = queue.submit(job("alice", "a0"))
    queue.submit(job("alice", "a1"))
    with pytest.raises(PendingLimitReached, match="2 cover jobs"):
        queue.submit(job("alice", "a2"))
    queue.submit(job("bob", "b0"))
    with pytest.raises(QueueFull, match=r"full \(3 jobs"):
        queue.submit(job("carol", "c0"))
    assert queue.pending_count == 3 and queue.running == (blocker,)
    runner.gate.set()
    await asyncio.wait_for(first.result(), GUARD_S)
    queue.submit(job("alice", "a2"))  # a finished job frees the user's slot
    await asyncio.wait_for(queue.close(), GUARD_S)
    assert blocker.status == "done"


async def test_running_jobs_count_against_the_per_user_limit():
    runner = FakeRunner()
    queue = GenerationQueue(runner, max_per_user=1)
    await queue.start()
    blocker = await hold_worker(queue, runner)
    with pytest.raises(PendingLimitReached, match="1 cover job waiting"):
        queue.submit(job("blocker", "again"))
    blocker.cancel()  # a cancelled job frees the slot at once
    queue.submit(job("blocker", "again"))
    runner.gate.set()
    await asyncio.wait_for(queue.close(), GUARD_S)


def test_bad_settings_and_empty_jobs_are_refused():
    runner = FakeRunner()
    with pytest.raises(ValueError, match="max_batch"):
        GenerationQueue(runner, max_batch=0)
    with pytest.raises(ValueError, match="job_timeout_s"):
        GenerationQueue(runner, job_timeout_s=0)
    queue = GenerationQueue(runner)
    with pytest.raises(ValueError, match="images"):
        queue.submit(GenerationJob(user_id="alice", params=A, images=()))


# -- cancelling ------------------------------------------------------------------------------


async def test_cancel_waiting_and_running_jobs():
    runner = FakeRunner()
    runner.resume.clear()
    queue = await started_queue(runner, max_batch=1)
    running = queue.submit(job("alice", "run"))
    waiting = queue.submit(job("bob", "wait"))
    await entered(runner)
    assert queue.position_of(waiting) == 1
    assert waiting.cancel() is True
    assert queue.pending_count == 0 and queue.position_of(waiting) is None
    assert running.cancel() is True
    assert running.cancel() is False  # already ended
    for handle in (waiting, running):
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(handle.result(), GUARD_S)
        assert handle.status == "cancelled"
    runner.resume.set()
    after = queue.submit(job("carol", "after"))
    await asyncio.wait_for(after.result(), GUARD_S)
    assert runner.interrupted == 1  # the running call stopped at its next step
    assert ran(runner) == ["run", "after"]  # the waiting job never ran
    await queue.close()


async def test_cancelling_one_job_of_a_batch_keeps_the_others():
    runner = FakeRunner()
    runner.resume.clear()
    queue = await started_queue(runner, max_batch=8)
    dropped = queue.submit(job("alice", "x", images=2))
    kept = queue.submit(job("bob", "y", images=2))
    await entered(runner)
    assert set(queue.running) == {dropped, kept}
    dropped.cancel()
    assert queue.running == (kept,)
    runner.resume.set()
    result = await asyncio.wait_for(kept.result(), GUARD_S)
    assert [i.spec.prompt for i in result.images] == ["y#0", "y#1"]
    assert call_sizes(runner) == [4] and runner.interrupted == 0
    with pytest.raises(JobCancelled):
        await dropped.result()
    await queue.close()


# -- failures --------------------------------------------------------------------------------


async def test_out_of_memory_splits_the_batch():
    runner = FakeRunner(oom_above=2)
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    handles = [queue.submit(job(f"user{i}", f"j{i}", images=4)) for i in range(2)]
    runner.gate.set()
    results = await wait_all(blocker, *handles)
    assert [[i.spec.prompt for i in r.images] for r in results[1:]] == [
        [f"j{n}#{i}" for i in range(4)] for n in range(2)
    ]
    # 8 → OOM; 4 → OOM, 2, 2; 4 → OOM, 2, 2: four calls did the work.
    assert call_sizes(runner) == [1, 8, 4, 2, 2, 4, 2, 2]
    assert runner.returned == 5  # the blocker and the four calls of 2
    assert results[1].batch_sizes == (2, 2)
    await queue.close()


async def test_out_of_memory_at_one_image_fails_only_that_job():
    class OutOfMemoryError(RuntimeError):  # what torch.cuda raises, matched by its name
        pass

    class PickyRunner(FakeRunner):
        def __call__(self, params, specs, control):
            if any("huge" in s.prompt for s in specs):
                self.calls.append((params, [s.prompt for s in specs]))
                raise OutOfMemoryError("CUDA out of memory")
            return super().__call__(params, specs, control)

    runner = PickyRunner()
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    huge = queue.submit(job("alice", "huge"))
    fine = queue.submit(job("bob", "fine", images=3))
    runner.gate.set()
    results = await wait_all(blocker, huge, fine)
    assert isinstance(results[1], GenerationFailed)
    assert "ran out of GPU memory even at batch size 1" in str(results[1])
    assert [i.spec.prompt for i in results[2].images] == ["fine#0", "fine#1", "fine#2"]
    assert call_sizes(runner) == [1, 4, 2, 1, 1, 2]
    await queue.close()


async def test_a_crashing_runner_fails_its_batch_and_the_worker_lives_on(caplog):
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    crash = queue.submit(job("alice", "crash"))
    neighbour = queue.submit(job("bob", "neighbour"))  # same call as the crash
    runner.gate.set()
    results = await wait_all(blocker, crash, neighbour)
    for error in results[1:]:
        assert isinstance(error, GenerationFailed) and "RuntimeError" in str(error)
    assert "runner exploded" in caplog.text  # logged with its traceback
    for handle in (crash, neighbour):  # and each job's end, by queue and job
        assert f"Queue generator: job {handle.id[:8]} failed: " in caplog.text
    ids = [crash.id[:8], neighbour.id[:8]]
    assert f"Queue generator: the runner failed on jobs {ids}" in caplog.text
    fine = queue.submit(job("alice", "fine"))
    assert len((await asyncio.wait_for(fine.result(), GUARD_S)).images) == 1
    await queue.close()


async def test_cover_errors_from_the_runner_reach_the_job_as_they_are():
    refusal = ModelUnavailable("The model 'x' is not cached here.")

    def runner(params, specs, control):
        raise refusal

    queue = await started_queue(runner)
    handle = queue.submit(job("alice", "a"))
    with pytest.raises(ModelUnavailable) as caught:
        await asyncio.wait_for(handle.result(), GUARD_S)
    assert caught.value is refusal
    await queue.close()


async def test_a_runner_returning_the_wrong_number_of_images_fails_cleanly(caplog):
    answers = iter([[], None])

    def runner(params, specs, control):
        images = next(answers)
        return images if images is not None else [GeneratedImage(s, None, s.seed) for s in specs]

    queue = await started_queue(runner)
    broken = queue.submit(job("alice", "a"))
    with pytest.raises(GenerationFailed, match=f"job {broken.id[:8]} failed on our side"):
        await asyncio.wait_for(broken.result(), GUARD_S)
    assert "Queue generator: the runner returned 0 image(s) for 1" in caplog.text
    fine = queue.submit(job("alice", "b"))
    assert len((await asyncio.wait_for(fine.result(), GUARD_S)).images) == 1
    await queue.close()


# -- time limits -----------------------------------------------------------------------------


async def test_job_timeout_interrupts_the_run():
    runner = FakeRunner()
    runner.resume.clear()  # steps forever until interrupted
    queue = await started_queue(runner, job_timeout_s=0.05)
    handle = queue.submit(job("alice", "slow"))
    with pytest.raises(JobTimedOut, match=r"0\.05 s"):
        await asyncio.wait_for(handle.result(), GUARD_S)
    assert handle.status == "failed"
    await asyncio.wait_for(queue.close(), GUARD_S)  # the worker got its call back
    assert runner.interrupted == 1


async def test_a_runner_that_ignores_control_still_times_the_job_out():
    runner = FakeRunner()
    runner.gate.clear()  # blocks without calling control.step
    queue = await started_queue(runner, job_timeout_s=0.05)
    slow = queue.submit(job("alice", "slow"))
    with pytest.raises(JobTimedOut, match=r"longer than 0\.05 s"):
        await asyncio.wait_for(slow.result(), GUARD_S)
    assert runner.returned == 0 and runner.interrupted == 0  # the result did not wait for it
    runner.gate.set()
    fine = queue.submit(job("bob", "fine"))
    assert len((await asyncio.wait_for(fine.result(), GUARD_S)).images) == 1
    assert runner.interrupted == 1  # its first step after the gate saw the job had ended
    await queue.close()


# -- events ----------------------------------------------------------------------------------


async def test_events_tell_the_whole_story():
    runner = FakeRunner(steps=3)
    queue = await started_queue(runner, max_batch=1)
    blocker = await hold_worker(queue, runner)
    first = queue.submit(job("alice", "first"))
    second = queue.submit(job("bob", "second"))
    events = second.events()
    first.cancel()  # second moves up from position 2 to 1
    runner.gate.set()
    result = await asyncio.wait_for(second.result(), GUARD_S)
    seen = await asyncio.wait_for(_collect(events), GUARD_S)
    assert seen == [
        Queued(2),
        Queued(1),
        Started(1),
        Progress(1, 3),
        Progress(2, 3),
        Progress(3, 3),
        Finished(result),
    ]
    assert result.wait_s > 0 and result.run_s >= 0 and result.batch_sizes == (1,)
    # A late subscriber still learns how it ended, and nothing else.
    assert await _collect(second.events()) == [Finished(result)]
    await wait_all(blocker)
    await queue.close()


async def test_a_late_subscriber_first_gets_the_current_state():
    runner = FakeRunner()
    runner.resume.clear()
    queue = await started_queue(runner, max_batch=1)
    running = queue.submit(job("alice", "a"))
    waiting = queue.submit(job("bob", "b"))
    await entered(runner)
    assert await asyncio.wait_for(anext(waiting.events()), GUARD_S) == Queued(1)
    late = running.events()
    assert await asyncio.wait_for(anext(late), GUARD_S) == Started(1)
    assert isinstance(await asyncio.wait_for(anext(late), GUARD_S), Progress)
    runner.resume.set()
    await wait_all(running, waiting)
    await queue.close()


async def _collect(events) -> list:
    return [event async for event in events]


# -- shutting down ---------------------------------------------------------------------------


async def test_close_with_drain_finishes_the_work():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=1)
    handles = [queue.submit(job(f"u{i}", f"j{i}")) for i in range(3)]
    await asyncio.wait_for(queue.close(drain=True), GUARD_S)
    assert all(h.status == "done" for h in handles)
    with pytest.raises(QueueClosed):
        queue.submit(job("late", "late"))
    await asyncio.wait_for(queue.close(), GUARD_S)  # idempotent


async def test_close_without_drain_fails_waiting_and_interrupts_running():
    runner = FakeRunner()
    runner.resume.clear()
    queue = await started_queue(runner, max_batch=1)
    running = queue.submit(job("alice", "running"))
    waiting = queue.submit(job("bob", "waiting"))
    events = waiting.events()
    await entered(runner)
    await asyncio.wait_for(queue.close(drain=False), GUARD_S)
    for handle in (running, waiting):
        with pytest.raises(QueueClosed):
            await handle.result()
    seen = await asyncio.wait_for(_collect(events), GUARD_S)
    assert seen[:2] == [Queued(2), Queued(1)] and isinstance(seen[-1], Failed)
    assert isinstance(seen[-1].error, QueueClosed)
    assert len(runner.calls) == 1 and runner.interrupted == 1
    with pytest.raises(QueueClosed):
        queue.submit(job("carol", "late"))


async def test_close_timeout_fails_what_is_left(caplog):
    runner = FakeRunner()
    runner.gate.clear()  # a call that never steps: only the timeout ends the close
    queue = await started_queue(runner)
    stuck = queue.submit(job("alice", "stuck"))
    await entered(runner)
    await asyncio.wait_for(queue.close(timeout_s=0.05), GUARD_S)
    # close() returned only once every worker task had stopped (a mutation run found this).
    assert stuck.done
    assert all(worker.task is not None and worker.task.done() for worker in queue._workers)
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(stuck.result(), GUARD_S)
    # close's own cancellation of a worker is not taken for a bug of ours (a mutation sample
    # found this unchecked)
    assert "internal error" not in caplog.text
    runner.gate.set()  # let the thread finish; its next step is interrupted


async def test_a_queue_closed_before_it_started_fails_its_jobs():
    queue = GenerationQueue(FakeRunner())
    waiting = queue.submit(job("alice", "a"))
    await queue.close()
    with pytest.raises(QueueClosed):
        await asyncio.wait_for(waiting.result(), GUARD_S)
    with pytest.raises(QueueClosed):
        await queue.start()


async def test_context_manager_drains_on_a_clean_exit():
    runner = FakeRunner()
    async with GenerationQueue(runner) as queue:
        handle = queue.submit(job("alice", "a", images=2))
    assert handle.status == "done" and queue.closed


# -- under load ------------------------------------------------------------------------------


async def test_many_users_at_once_nothing_lost_or_duplicated():
    runner = FakeRunner(steps=1)
    queue = await started_queue(runner, max_pending=100, max_per_user=5, max_batch=8)
    handles = [
        queue.submit(job(f"user{u}", f"u{u}j{j}", images=4)) for u in range(6) for j in range(5)
    ]
    results = await wait_all(*handles)
    for handle, result in zip(handles, results, strict=True):
        assert [i.spec.prompt for i in result.images] == [
            f"{handle.job.label}#{i}" for i in range(4)
        ]
    prompts = [p for _, ps in runner.calls for p in ps]
    assert len(prompts) == len(set(prompts)) == 6 * 5 * 4
    assert max(call_sizes(runner)) == 8
    await queue.close()


class PreviewingRunner(FakeRunner):
    """Sends one preview per image after step 1, each image's colour telling whose it is."""

    def _denoise(self, control: RunControl) -> None:
        control.step(1, 2)
        colours = [(index * 40, 0, 0) for index in range(len(self.calls[-1][1]))]
        control.preview(1, [Image.new("RGB", (4, 4), colour) for colour in colours])
        control.step(2, 2)


async def test_previews_reach_each_job_with_its_own_images():
    runner = PreviewingRunner()
    async with GenerationQueue(runner, max_batch=8) as queue:
        first = queue.submit(job("u1", "first", images=2))
        second = queue.submit(job("u2", "second", images=3))
        seen: dict[str, list] = {"first": [], "second": []}

        async def watch(name: str, handle: JobHandle) -> None:
            async for event in handle.events():
                if type(event).__name__ == "Preview":
                    seen[name].append(event)

        await asyncio.gather(watch("first", first), watch("second", second))
    [prompts] = [p for _, p in runner.calls]
    assert prompts == ["first#0", "first#1", "second#0", "second#1", "second#2"]  # one call
    [preview_1] = seen["first"]
    [preview_2] = seen["second"]
    assert preview_1.step == 1

    def reds(event) -> list[int]:
        return [image.getpixel((0, 0))[0] for image in event.images]

    assert reds(preview_1) == [0, 40]  # the call's first two images are the first job's
    assert reds(preview_2) == [80, 120, 160]


# -- several workers (one per device or remote worker) --------------------------------------


class LosingRunner(FakeRunner):
    """A runner whose device goes away: its first call that reaches ``lose_at`` steps raises
    :class:`WorkerLost` (as models/ray_workers.py does for a dead actor)."""

    def __init__(self, *, device: str, lose: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.device = device
        self.lose = lose

    def __call__(self, params, specs, control):
        if self.lose:
            self.calls.append((params, [spec.prompt for spec in specs]))
            self.entered.set()
            if not self.gate.wait(GUARD_S):
                raise RuntimeError("test gate never opened")
            raise WorkerLost(f"{self.device} went away")
        return super().__call__(params, specs, control)


async def test_batches_go_to_whichever_worker_is_free():
    first, second = FakeRunner(), FakeRunner()
    first.gate.clear()  # the first worker is held on its first call
    queue = await started_queue([first, second], max_batch=4)
    try:
        assert queue.worker_names == ("generator/0", "generator/1")
        held = queue.submit(job("alice", "a1", images=4))
        await entered(first)
        others = [queue.submit(job(user, f"{user}1", images=2)) for user in ("bob", "carol")]
        # bob and carol share one call (4 images) on the second worker while the first is held.
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in others)), GUARD_S)
        assert [r.workers for r in results] == [("generator/1",), ("generator/1",)]
        assert held.status == "running"
        first.gate.set()
        assert (await asyncio.wait_for(held.result(), GUARD_S)).workers == ("generator/0",)
    finally:
        first.gate.set()
        await queue.close()


async def test_a_lost_worker_hands_its_batch_to_another_and_no_job_is_lost(caplog):
    doomed = LosingRunner(device="cuda:0")
    doomed.gate.clear()
    healthy = LosingRunner(device="cuda:1", lose=False)
    healthy.gate.clear()
    queue = await started_queue([doomed, healthy], max_batch=2)
    try:
        assert queue.worker_names == ("generator/cuda:0", "generator/cuda:1")
        handles = [queue.submit(job(user, f"{user}1", images=2)) for user in ("alice", "bob")]
        await entered(doomed)
        await entered(healthy)
        doomed.gate.set()  # its call fails with WorkerLost; the batch waits for the healthy one
        await asyncio.sleep(0.05)
        assert not any(h.done for h in handles)
        healthy.gate.set()
        results = await wait_all(*handles)
        assert all(isinstance(r, type(results[0])) and r.images for r in results)
        assert sorted(r.workers for r in results) == [("generator/cuda:1",)] * 2
        assert queue.worker_names == ("generator/cuda:1",)
        assert "Queue generator/cuda:0: worker lost; 1 worker(s) left; 1 job(s) move on" in (
            caplog.text
        )
        # Later jobs still run, on the worker that is left.
        later = queue.submit(job("carol", "c1"))
        assert (await asyncio.wait_for(later.result(), GUARD_S)).workers == ("generator/cuda:1",)
    finally:
        doomed.gate.set()
        healthy.gate.set()
        await queue.close()


async def test_losing_the_last_worker_fails_every_job_with_a_clear_message():
    only = LosingRunner(device="cuda:0")
    queue = await started_queue(only)
    try:
        running = queue.submit(job("alice", "a1"))
        waiting = queue.submit(job("bob", "b1"))
        apart = queue.submit(job("dave", "d1", params=B))  # other params: never in that batch
        outcomes = await wait_all(running, waiting, apart)
        assert all(isinstance(o, NoWorkers) for o in outcomes)
        assert "No generator is available right now" in str(outcomes[0])
        with pytest.raises(NoWorkers):
            queue.submit(job("carol", "c1"))
    finally:
        await asyncio.wait_for(queue.close(), GUARD_S)


async def test_a_batch_that_kills_every_worker_it_meets_is_stopped():
    runners = [LosingRunner(device=f"cuda:{i}") for i in range(4)]
    queue = await started_queue(runners)
    try:
        [outcome] = await wait_all(queue.submit(job("alice", "a1")))
        assert isinstance(outcome, GenerationFailed) and "lost its worker 3 times" in str(outcome)
        assert [len(r.calls) for r in runners].count(1) == 3  # it took three workers down
        assert len(queue.worker_names) == 1
    finally:
        await asyncio.wait_for(queue.close(), GUARD_S)


async def test_close_with_drain_waits_for_work_a_lost_worker_left():
    doomed = LosingRunner(device="a")
    doomed.gate.clear()
    healthy = FakeRunner()
    queue = await started_queue([doomed, healthy])
    handle = queue.submit(job("alice", "a1"))
    await entered(doomed)
    closing = asyncio.create_task(queue.close())
    await asyncio.sleep(0.05)  # the idle healthy worker must not stop while doomed is busy
    doomed.gate.set()
    await asyncio.wait_for(closing, GUARD_S)
    assert (await handle.result()).workers == ("generator/1",)


def test_a_queue_needs_a_runner():
    with pytest.raises(ValueError, match="at least one runner"):
        GenerationQueue([])


class _RunnerAbort(BaseException):
    """Not an Exception: what a library's own abort signal (or a stray SystemExit) looks like."""


@pytest.mark.parametrize(
    "raised",
    [
        SystemExit(3),
        KeyboardInterrupt(),
        GeneratorExit(),
        _RunnerAbort("torn down"),
        asyncio.CancelledError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_runner_raising_a_base_exception_fails_only_that_job(raised):
    """A BaseException from the runner thread – even a CancelledError the worker did not ask
    for – fails that call's jobs; the worker lives on and runs the next job."""

    def runner(params, specs, control):
        if any("boom" in spec.prompt for spec in specs):
            raise raised
        return [GeneratedImage(spec, Image.new("RGB", (8, 8)), spec.seed) for spec in specs]

    queue = await started_queue(runner)
    boom = queue.submit(job("alice", "boom"))
    (error,) = await wait_all(boom)
    assert isinstance(error, GenerationFailed), error
    assert type(raised).__name__ in str(error)
    after = queue.submit(job("bob", "after"))
    assert len((await asyncio.wait_for(after.result(), GUARD_S)).images) == 1
    await asyncio.wait_for(queue.close(), GUARD_S)


# -- what a mutation run found untested (issue 15) -------------------------------------------


async def test_a_user_whose_waiting_jobs_all_left_rejoins_at_the_back():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=1)
    blocker = await hold_worker(queue, runner)
    gone = [queue.submit(job("alice", f"a{i}")) for i in range(2)]
    others = [queue.submit(job("bob", "b")), queue.submit(job("carol", "c"))]
    for handle in gone:
        assert handle.cancel()
    back = queue.submit(job("alice", "a-again"))
    assert [queue.position_of(h) for h in (*others, back)] == [1, 2, 3]
    runner.gate.set()
    await wait_all(blocker, *others, back)
    assert ran(runner) == ["blocker", "b", "c", "a-again"]
    await queue.close()


async def test_a_deadline_is_kept_while_the_event_loop_is_too_busy_to_run_its_timer():
    runner = FakeRunner(steps=1000)
    runner.resume.clear()  # the call keeps stepping until the deadline stops it
    queue = await started_queue(runner, job_timeout_s=0.1)
    handle = queue.submit(job("alice", "slow"))
    await entered(runner)
    time.sleep(0.6)  # block the loop: its timeout timer cannot fire, only the step check can
    busy_until = time.monotonic()
    assert runner.interrupted == 1  # stopped by the worker thread while the loop was blocked
    with pytest.raises(JobTimedOut):
        await asyncio.wait_for(handle.result(), GUARD_S)
    assert time.monotonic() >= busy_until
    await queue.close()


async def test_a_late_subscriber_gets_the_latest_progress_not_the_first():
    runner = FakeRunner(steps=3)
    queue = await started_queue(runner)
    runner.resume.clear()  # the call sits at step 1 until released
    handle = queue.submit(job("alice", "a"))
    early = handle.events()
    seen = [await asyncio.wait_for(anext(early), GUARD_S) for _ in range(3)]
    assert seen[1:] == [Started(1), Progress(1, 3)]
    late = handle.events()
    replay = [await asyncio.wait_for(anext(late), GUARD_S) for _ in range(2)]
    assert replay == [Started(1), Progress(1, 3)]  # the state now: started, at step 1
    runner.resume.set()
    await wait_all(handle)
    after = [event async for event in handle.events()]
    assert len(after) == 1 and isinstance(after[0], Finished)  # a finished job: its end only
    await queue.close()


async def test_a_subscriber_that_stops_reading_is_forgotten():
    runner = FakeRunner()
    runner.gate.clear()
    queue = await started_queue(runner)
    handle = queue.submit(job("alice", "a"))
    events = handle.events()
    await asyncio.wait_for(anext(events), GUARD_S)
    assert len(handle._inboxes) == 1
    await events.aclose()  # e.g. a Discord status task cancelled mid-way
    assert handle._inboxes == []
    runner.gate.set()
    await wait_all(handle)
    await queue.close()


async def test_wait_and_run_times_are_measured_from_submission_and_calls():
    class Slow(FakeRunner):
        def __call__(self, params, specs, control):
            time.sleep(0.15)
            return super().__call__(params, specs, control)

    runner = Slow()
    queue = await started_queue(runner, max_batch=1)
    submitted = time.monotonic()
    first = queue.submit(job("alice", "first"))
    second = queue.submit(job("bob", "second"))
    results = await wait_all(first, second)
    elapsed = time.monotonic() - submitted
    one, two = results
    assert one.wait_s < 0.1 and one.run_s >= 0.15
    assert two.wait_s >= 0.15  # it waited for the first job's whole call
    assert two.run_s >= 0.15 and two.wait_s + two.run_s <= elapsed
    await queue.close()


async def test_cancelling_a_finished_job_changes_nothing():
    queue = await started_queue(FakeRunner())
    handle = queue.submit(job("alice", "a"))
    [result] = await wait_all(handle)
    assert handle.cancel() is False
    assert handle.status == "done" and await handle.result() == result
    await queue.close()


async def test_the_log_tells_a_jobs_life_by_worker_and_job(caplog):
    """What an operator reads: which worker started, took which job with how many images, how
    long it waited and ran, and when the queue closed and its worker stopped."""
    caplog.set_level("INFO", logger="models.queue")
    queue = await started_queue(FakeRunner(), name="gpu")
    handle = queue.submit(job("alice", "late night", images=2, priority=1))
    await wait_all(handle)
    await queue.close()
    await queue.close()  # a second close says nothing more
    lines = [r.getMessage() for r in caplog.records if r.name == "models.queue"]
    short = handle.id[:8]
    expected = [
        "Queue gpu: worker started",
        f"Queue gpu: job {short} accepted: user alice, 2 image(s), priority 1, late night",
        f"Queue gpu: running 2 image(s) for 1 job(s) ['{short}']",
        f"Queue gpu: job {short} done: 2 image(s), waited",
        "Queue gpu: closing (draining)",
        "Queue gpu: worker stopped",
    ]
    for want in expected:
        assert sum(line.startswith(want) for line in lines) == 1, (want, lines)
    done = next(line for line in lines if line.startswith(f"Queue gpu: job {short} done"))
    assert ", ran " in done and " s, calls [2]" in done


async def test_a_cancellation_is_logged_with_the_state_it_ended(caplog):
    caplog.set_level("INFO", logger="models.queue")
    runner = FakeRunner()
    queue = await started_queue(runner)
    blocker = await hold_worker(queue, runner)
    waiting = queue.submit(job("alice", "a"))
    waiting.cancel()
    assert f"Queue generator: job {waiting.id[:8]} cancelled while queued" in caplog.text
    runner.gate.set()
    await wait_all(blocker)
    await queue.close()


async def test_the_default_queue_holds_64_waiting_jobs():
    runner = FakeRunner()
    queue = GenerationQueue(runner, max_per_user=100)  # not started: everything waits
    for n in range(64):
        queue.submit(job("alice", f"j{n}"))
    with pytest.raises(QueueFull):
        queue.submit(job("bob", "one too many"))
    await queue.close(drain=False)


async def test_starting_twice_keeps_one_worker_per_runner():
    runner = FakeRunner()
    runner.gate.clear()
    queue = GenerationQueue(runner, max_batch=1, max_per_user=5)
    await queue.start()
    await queue.start()  # idempotent: a second worker would take the second job at once
    first, second = queue.submit(job("alice", "a")), queue.submit(job("bob", "b"))
    await entered(runner)
    await asyncio.sleep(0.1)
    assert len(runner.calls) == 1 and second.position == 1
    runner.gate.set()
    await wait_all(first, second)
    await queue.close()


# -- jobs pinned to a worker (warm-ups must reach every device) ----------------------------------


def pinned(user: str, name: str, worker: str, images: int = 1) -> GenerationJob:
    specs = tuple(ImageSpec(f"{name}#{i}", seed=i) for i in range(images))
    return GenerationJob(user_id=user, params=A, images=specs, label=name, worker=worker)


async def test_a_pinned_job_waits_for_its_own_worker_while_the_other_is_free():
    first, second = FakeRunner(), FakeRunner()
    first.gate.clear()  # the first worker is held; the second is free all along
    queue = await started_queue([first, second], max_batch=4)
    try:
        held = queue.submit(job("alice", "a1"))
        await entered(first)
        mine = queue.submit(pinned("warm", "w0", "generator/0"))
        free = queue.submit(job("bob", "b1"))
        # bob's job runs on the free worker; the pinned one does not ride along with it.
        assert (await asyncio.wait_for(free.result(), GUARD_S)).workers == ("generator/1",)
        await asyncio.sleep(0.05)
        assert mine.status == "queued"
        first.gate.set()
        assert (await asyncio.wait_for(mine.result(), GUARD_S)).workers == ("generator/0",)
        await asyncio.wait_for(held.result(), GUARD_S)
        assert "w0" not in ran(second)
    finally:
        first.gate.set()
        await queue.close()


async def test_a_job_pinned_to_no_such_worker_is_refused_and_to_a_lost_one_ends():
    doomed = LosingRunner(device="cuda:0")
    doomed.gate.clear()
    healthy = LosingRunner(device="cuda:1", lose=False)
    healthy.gate.clear()
    queue = await started_queue([doomed, healthy], max_batch=2)
    try:
        with pytest.raises(ValueError, match="not a live worker of this queue"):
            queue.submit(pinned("warm", "x", "generator/cuda:7"))
        first = queue.submit(job("alice", "a1"))
        await entered(doomed)
        second = queue.submit(job("bob", "b1"))
        await entered(healthy)
        # Both workers busy: a job for cuda:0 waits; then cuda:0 is lost under it.
        waiting = queue.submit(pinned("warm", "w0", "generator/cuda:0"))
        doomed.gate.set()
        with pytest.raises(GenerationFailed, match="was to run on worker generator/cuda:0"):
            await asyncio.wait_for(waiting.result(), GUARD_S)
        healthy.gate.set()
        await wait_all(first, second)
    finally:
        doomed.gate.set()
        healthy.gate.set()
        await queue.close()


async def test_the_bots_warm_up_compiles_every_bucket_on_every_worker(tmp_path):
    """bot/app/cover.py ``warm_up`` with a compiled UNet: each worker runs each bucket itself,
    even when one worker is free long before the other."""
    from bot.app.cover import CoverService
    from bot.app.settings import Settings
    from bot.app.storage import Storage

    first, second = FakeRunner(), FakeRunner()
    settings = Settings(_env_file=None, optimizations="compile=on", default_model="embedded",
                        db_path=tmp_path / "db.sqlite")  # fmt: skip
    queue = await started_queue([first, second], max_batch=4)
    try:
        with Storage(settings.db_path) as storage:
            service = CoverService(settings, queue, storage)
            await asyncio.wait_for(service.warm_up(priority=9), GUARD_S)
    finally:
        await queue.close()
    assert call_sizes(first) == call_sizes(second) == [1, 2, 4]  # the buckets up to max_batch
