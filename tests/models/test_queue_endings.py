"""The generation queue with a fake runner: every way a job ends – cancelled, failed, out of
memory, timed out, the queue closed – and what the log says of it.

As in tests/models/test_queue.py the queue is the real one and the runner is ours
(tests/models/queue_helpers.py); every wait is guarded.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from PIL import Image

from models.errors import GenerationFailed, JobCancelled, JobTimedOut, ModelUnavailable, QueueClosed
from models.jobs import GeneratedImage
from models.queue import Failed, GenerationQueue, Queued
from tests.models.queue_helpers import (
    GUARD_S,
    FakeRunner,
    _collect,
    call_sizes,
    entered,
    hold_worker,
    job,
    ran,
    started_queue,
    wait_all,
)

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


async def test_cancelling_a_finished_job_changes_nothing():
    queue = await started_queue(FakeRunner())
    handle = queue.submit(job("alice", "a"))
    [result] = await wait_all(handle)
    assert handle.cancel() is False
    assert handle.status == "done" and await handle.result() == result
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


# -- the log ---------------------------------------------------------------------------------


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
