"""The queue's read-only snapshot and its record of how long recent jobs ran (models/snapshot.py)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from models.snapshot import JobTiming, RecentTimings
from tests.models.queue_helpers import GUARD_S, B, FakeRunner, job, started_queue, wait_all


async def until(condition) -> None:
    async with asyncio.timeout(GUARD_S):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_snapshot_shows_running_and_waiting_jobs_in_run_order():
    runner = FakeRunner()
    runner.gate.clear()
    queue = await started_queue(runner, max_batch=1)
    try:
        first = queue.submit(job("alice", "a1", images=2, params=B))
        await until(lambda: queue.running)
        second = queue.submit(job("alice", "a2"))
        third = queue.submit(job("bob", "b1", images=3))
        upkeep = queue.submit(job("bench", "x", priority=1))
        snapshot = queue.snapshot()
        assert [j.job_id for j in snapshot.running] == [first.id]
        # In the order they would run: people's jobs by turn, the priority-1 job last.
        assert [j.job_id for j in snapshot.waiting] == [second.id, third.id, upkeep.id]
        assert [j.position for j in snapshot.waiting] == [1, 2, 3]
        running = snapshot.running[0]
        summary = (running.user_id, running.model, running.images, running.position)
        assert summary == ("alice", "other", 2, None)
        assert running.started_at is not None and running.started_at >= running.submitted_at
        assert snapshot.waiting[0].started_at is None
        assert snapshot.waiting[2].priority == 1
        assert snapshot.workers == 1 and snapshot.recent == ()
        with pytest.raises(dataclasses.FrozenInstanceError):
            snapshot.waiting[0].position = 9  # type: ignore[misc]
        runner.gate.set()
        await wait_all(first, second, third, upkeep)
        after = queue.snapshot()
        assert after.running == () and after.waiting == ()
        timed = [(t.model, t.images, t.priority) for t in after.recent]
        assert timed == [("other", 2, 0), ("tiny", 1, 0), ("tiny", 3, 0), ("tiny", 1, 1)]
        assert all(t.run_s >= 0 for t in after.recent)
        assert [t.run_s for t in after.recent] == [
            (await h.result()).run_s for h in (first, second, third, upkeep)
        ]
    finally:
        await queue.close()


async def test_failed_and_cancelled_jobs_are_not_timed():
    runner = FakeRunner()
    queue = await started_queue(runner)
    try:
        crashed = queue.submit(job("alice", "crash"))
        await wait_all(crashed)
        runner.gate.clear()
        held = queue.submit(job("alice", "held", params=B))
        cancelled = queue.submit(job("bob", "cancelled"))
        cancelled.cancel()
        runner.gate.set()
        await wait_all(held)
        assert [t.model for t in queue.snapshot().recent] == ["other"]
    finally:
        await queue.close()


def test_the_record_keeps_only_the_most_recent():
    record = RecentTimings(size=3)
    for n in range(5):
        record.add(JobTiming(f"m{n}", 1, 0, float(n), float(n)))
    assert [t.model for t in record.all()] == ["m2", "m3", "m4"]
    with pytest.raises(ValueError, match="`size` must be at least 1"):
        RecentTimings(size=0)
