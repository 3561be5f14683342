"""The generation queue with a fake runner: ordering, batching, limits, events and load.

The fake runner is ours (tests/models/queue_helpers.py) and records what it was asked; the
queue under test is the real one, with its real worker thread and event-loop hand-off. Every
wait is guarded, so a bug fails a test instead of hanging the suite. How a job ends is in
tests/models/test_queue_endings.py, several workers in tests/models/test_queue_workers.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from PIL import Image

from models.errors import PendingLimitReached, QueueFull
from models.jobs import GenerationJob, RunControl
from models.queue import Finished, GenerationQueue, JobHandle, Progress, Queued, Started
from tests.models.queue_helpers import (
    GUARD_S,
    A,
    B,
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


async def test_the_default_queue_holds_64_waiting_jobs():
    runner = FakeRunner()
    queue = GenerationQueue(runner, max_per_user=100)  # not started: everything waits
    for n in range(64):
        queue.submit(job("alice", f"j{n}"))
    with pytest.raises(QueueFull):
        queue.submit(job("bob", "one too many"))
    await queue.close(drain=False)


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
