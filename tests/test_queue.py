"""The generation queue with a fake runner: ordering, batching, limits and every way a job ends.

The fake runner is ours and records what it was asked; the queue under test is the real one,
with its real worker thread and event-loop hand-off.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from PIL import Image

from models.errors import (
    GenerationFailed,
    JobCancelled,
    JobTimedOut,
    ModelUnavailable,
    PendingLimitReached,
    QueueClosed,
    QueueFull,
)
from models.jobs import GeneratedImage, GenerationJob, GenerationParams, ImageSpec, OutOfMemory
from models.queue import Failed, Finished, GenerationQueue, Progress, Queued, Started

GUARD_S = 5.0  # no test waits longer than this for anything: a bug fails, it never hangs

A = GenerationParams(model="tiny", width=8, height=8, steps=3, guidance=1.0)
B = GenerationParams(model="other", width=8, height=8, steps=3, guidance=1.0)


class FakeRunner:
    """Records calls; optionally blocks until released, OOMs above a size, or crashes."""

    def __init__(
        self, *, steps: int = 3, oom_above: int | None = None, crash_on: str | None = None
    ):
        self.calls: list[tuple[GenerationParams, list[str]]] = []
        self.steps = steps
        self.oom_above = oom_above
        self.crash_on = crash_on
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.step_delay = 0.0

    def __call__(self, params, specs: Sequence[ImageSpec], control) -> list[GeneratedImage]:
        prompts = [s.prompt for s in specs]
        self.calls.append((params, prompts))
        self.entered.set()
        if not self.gate.wait(GUARD_S):
            raise RuntimeError("test gate never opened")
        if self.crash_on and any(self.crash_on in p for p in prompts):
            raise RuntimeError("runner exploded")
        if self.oom_above is not None and len(specs) > self.oom_above:
            raise OutOfMemory()
        for step in range(1, self.steps + 1):
            if self.step_delay:
                threading.Event().wait(self.step_delay)
            control.step(step, self.steps)
        return [GeneratedImage(s, Image.new("RGB", (8, 8)), s.seed) for s in specs]


def job(user: str, name: str, images: int = 1, params: GenerationParams = A, priority: int = 0):
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


async def wait_all(*handles):
    return await asyncio.wait_for(
        asyncio.gather(*(h.result() for h in handles), return_exceptions=True), GUARD_S
    )


async def started_queue(runner, **kwargs) -> GenerationQueue:
    queue = GenerationQueue(runner, **{"max_per_user": 10, **kwargs})
    await queue.start()
    return queue


async def hold_worker(queue: GenerationQueue, runner: FakeRunner):
    """Occupy the worker with a blocker job so that the next submissions all wait together."""
    runner.gate.clear()
    runner.entered.clear()
    blocker = queue.submit(job("blocker", "blocker", params=B))
    assert await asyncio.to_thread(runner.entered.wait, GUARD_S)
    return blocker


async def test_fifo_per_user_and_round_robin_between_users():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=1)
    blocker = await hold_worker(queue, runner)
    handles = [queue.submit(job("alice", f"a{i}")) for i in range(4)]
    handles.append(queue.submit(job("bob", "b0")))
    handles.append(queue.submit(job("carol", "c0")))
    handles.append(queue.submit(job("bob", "b1")))
    runner.gate.set()
    results = await wait_all(blocker, *handles)
    assert not any(isinstance(r, Exception) for r in results)
    assert ran(runner) == ["blocker", "a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    await queue.close()


async def test_equal_params_share_one_call_up_to_max_batch():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    same = [queue.submit(job(f"user{i}", f"s{i}", images=4)) for i in range(3)]
    different = queue.submit(job("dave", "d", images=2, params=B))
    runner.gate.set()
    results = await wait_all(blocker, *same, different)
    sizes = [len(prompts) for _, prompts in runner.calls]
    assert sizes == [1, 8, 4, 2]  # blocker; s0+s1 merged; s2 alone (cap 8); d with other params
    assert {p.model for p, _ in runner.calls[1:3]} == {"tiny"}
    assert results[1].batch_sizes == (8,) and results[3].batch_sizes == (4,)
    assert [img.spec.prompt for img in results[2].images] == [f"s1#{i}" for i in range(4)]
    await queue.close()


async def test_a_job_larger_than_max_batch_is_split_and_completes_once():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=3)
    handle = queue.submit(job("alice", "big", images=4))
    result = await asyncio.wait_for(handle.result(), GUARD_S)
    assert [len(p) for _, p in runner.calls] == [3, 1]
    assert [i.spec.prompt for i in result.images] == [f"big#{i}" for i in range(4)]
    assert result.batch_sizes == (3, 1)
    await queue.close()


async def test_priority_jobs_wait_for_users():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=1)
    blocker = await hold_worker(queue, runner)
    low = queue.submit(job("admin", "bench", params=B, priority=1))
    users = [queue.submit(job(f"u{i}", f"u{i}", params=B)) for i in range(2)]
    runner.gate.set()
    await wait_all(blocker, low, *users)
    assert ran(runner) == ["blocker", "u0", "u1", "bench"]
    await queue.close()


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
    with pytest.raises(QueueFull, match="full"):
        queue.submit(job("carol", "c0"))
    assert queue.pending_count == 3
    runner.gate.set()
    await asyncio.wait_for(first.result(), GUARD_S)
    queue.submit(job("alice", "a2"))  # a finished job frees the user's slot
    await queue.close()
    assert blocker.status == "done"


async def test_cancel_waiting_and_running_jobs():
    runner = FakeRunner(steps=50)
    runner.step_delay = 0.01
    queue = await started_queue(runner, max_batch=1)
    running = queue.submit(job("alice", "run"))
    waiting = queue.submit(job("bob", "wait"))
    assert await asyncio.to_thread(runner.entered.wait, GUARD_S)
    assert waiting.cancel() is True
    assert running.cancel() is True
    assert running.cancel() is False  # already ended
    for handle in (waiting, running):
        with pytest.raises(JobCancelled):
            await asyncio.wait_for(handle.result(), GUARD_S)
    after = queue.submit(job("carol", "after"))
    await asyncio.wait_for(after.result(), GUARD_S)
    assert ran(runner) == ["run", "after"]  # the waiting job never ran
    await queue.close()


async def test_out_of_memory_splits_the_batch():
    runner = FakeRunner(oom_above=2)
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    handles = [queue.submit(job(f"user{i}", f"j{i}", images=4)) for i in range(2)]
    runner.gate.set()
    results = await wait_all(blocker, *handles)
    assert all(len(r.images) == 4 for r in results[1:])
    assert [len(p) for _, p in runner.calls] == [1, 8, 4, 2, 2, 4, 2, 2]
    assert results[1].batch_sizes == (2, 2)
    await queue.close()


async def test_out_of_memory_at_one_image_fails_only_that_job():
    class PickyRunner(FakeRunner):
        def __call__(self, params, specs, control):
            if any("huge" in s.prompt for s in specs):
                self.calls.append((params, [s.prompt for s in specs]))
                raise type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory")
            return super().__call__(params, specs, control)

    runner = PickyRunner()
    queue = await started_queue(runner, max_batch=8)
    blocker = await hold_worker(queue, runner)
    huge = queue.submit(job("alice", "huge"))
    fine = queue.submit(job("bob", "fine", images=3))
    runner.gate.set()
    results = await wait_all(blocker, huge, fine)
    assert isinstance(results[1], GenerationFailed) and "memory" in str(results[1])
    assert len(results[2].images) == 3
    await queue.close()


async def test_a_crashing_runner_fails_its_batch_and_the_worker_lives_on(caplog):
    runner = FakeRunner(crash_on="boom")
    queue = await started_queue(runner, max_batch=1)
    crash = queue.submit(job("alice", "boom"))
    with pytest.raises(GenerationFailed, match="RuntimeError"):
        await asyncio.wait_for(crash.result(), GUARD_S)
    assert "runner exploded" in caplog.text  # logged with its traceback
    fine = queue.submit(job("alice", "fine"))
    assert len((await asyncio.wait_for(fine.result(), GUARD_S)).images) == 1


async def test_cover_errors_from_the_runner_reach_the_job_as_they_are():
    def runner(params, specs, control):
        raise ModelUnavailable("model 'x' is not cached")

    queue = await started_queue(runner)
    handle = queue.submit(job("alice", "a"))
    with pytest.raises(ModelUnavailable, match="not cached"):
        await asyncio.wait_for(handle.result(), GUARD_S)
    await queue.close()


async def test_job_timeout_interrupts_the_run():
    runner = FakeRunner(steps=1000)
    runner.step_delay = 0.005
    queue = await started_queue(runner, job_timeout_s=0.1)
    handle = queue.submit(job("alice", "slow"))
    with pytest.raises(JobTimedOut, match=r"0\.1 s"):
        await asyncio.wait_for(handle.result(), GUARD_S)
    await queue.close()


async def test_events_tell_the_whole_story():
    runner = FakeRunner(steps=3)
    queue = await started_queue(runner, max_batch=1)
    blocker = await hold_worker(queue, runner)
    first = queue.submit(job("alice", "first"))
    second = queue.submit(job("bob", "second"))
    events: list = []

    async def collect():
        async for event in second.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0)
    first.cancel()  # second moves up from position 2 to 1
    runner.gate.set()
    await wait_all(blocker, second)
    await asyncio.wait_for(collector, GUARD_S)
    assert events[0] == Queued(2) and events[1] == Queued(1)
    assert events[2] == Started(1)
    assert events[3:6] == [Progress(1, 3), Progress(2, 3), Progress(3, 3)]
    assert isinstance(events[6], Finished) and len(events) == 7
    # A late subscriber still learns how it ended.
    late = [event async for event in second.events()]
    assert len(late) == 1 and isinstance(late[0], Finished)
    await queue.close()


async def test_close_with_drain_finishes_the_work():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=1)
    handles = [queue.submit(job(f"u{i}", f"j{i}")) for i in range(3)]
    await asyncio.wait_for(queue.close(drain=True), GUARD_S)
    assert all(h.status == "done" for h in handles)
    with pytest.raises(QueueClosed):
        queue.submit(job("late", "late"))
    await queue.close()  # idempotent


async def test_close_without_drain_fails_waiting_and_interrupts_running():
    runner = FakeRunner(steps=1000)
    runner.step_delay = 0.005
    queue = await started_queue(runner, max_batch=1)
    running = queue.submit(job("alice", "running"))
    waiting = queue.submit(job("bob", "waiting"))
    events = []

    async def collect():
        async for event in waiting.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    assert await asyncio.to_thread(runner.entered.wait, GUARD_S)
    await asyncio.wait_for(queue.close(drain=False), GUARD_S)
    for handle in (running, waiting):
        with pytest.raises(QueueClosed):
            await handle.result()
    await asyncio.wait_for(collector, GUARD_S)
    assert isinstance(events[-1], Failed) and isinstance(events[-1].error, QueueClosed)
    assert len(runner.calls) == 1


async def test_many_users_at_once_nothing_lost_or_duplicated():
    runner = FakeRunner(steps=1)
    queue = await started_queue(runner, max_pending=100, max_per_user=5, max_batch=8)
    handles = [
        queue.submit(job(f"user{u}", f"u{u}j{j}", images=4)) for u in range(6) for j in range(5)
    ]
    results = await wait_all(*handles)
    assert all(len(r.images) == 4 for r in results)
    prompts = [p for _, ps in runner.calls for p in ps]
    assert len(prompts) == len(set(prompts)) == 6 * 5 * 4
    await queue.close()
