"""The generation queue with several fake runners (one per device or remote worker): batches
go to whichever is free, a lost worker hands its batch on, jobs pinned to a worker wait for it.

As in tests/models/test_queue.py the queue is the real one and the runners are ours
(tests/models/queue_helpers.py); every wait is guarded.
"""

from __future__ import annotations

import asyncio

import pytest

from models.errors import GenerationFailed, NoWorkers
from models.jobs import GenerationJob, ImageSpec, WorkerLost
from models.queue import GenerationQueue
from tests.models.queue_helpers import (
    GUARD_S,
    A,
    B,
    FakeRunner,
    call_sizes,
    entered,
    job,
    ran,
    started_queue,
    wait_all,
)

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
    settings = Settings(
        _env_file=None,
        optimizations="compile=on",
        default_model="embedded",
        db_path=tmp_path / "db.sqlite",
    )
    queue = await started_queue([first, second], max_batch=4)
    try:
        with Storage(settings.db_path) as storage:
            service = CoverService(settings, queue, storage)
            await asyncio.wait_for(service.warm_up(priority=9), GUARD_S)
    finally:
        await queue.close()
    assert call_sizes(first) == call_sizes(second) == [1, 2, 4]  # the buckets up to max_batch
