"""The queue at its edges, where an independent mutation sample found it untested (issue 36):
a batch filled to exactly ``max_batch``, a deadline met to the tick, a runner that stops on its
own, and an idle worker during a close that does not drain. Each test names the mutant it was
seen to kill.

Deadlines are checked against a clock the test sets (``models.queue.time`` swapped for it), so
"exactly at the deadline" is exact; the event loop's own timer runs on real time and is set far
off, so only the queue's checks against that clock can end a job here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytest
from PIL import Image

import models.queue
from models.errors import GenerationFailed, JobTimedOut, NoWorkers, QueueClosed
from models.jobs import (
    DeviceBroken,
    GeneratedImage,
    GenerationJob,
    GenerationParams,
    ImageSpec,
    RunControl,
    RunInterrupted,
)
from models.queue import GenerationQueue, JobHandle, Started

GUARD_S = 5.0  # no test waits longer than this for anything
TIMEOUT_S = 100.0  # job_timeout_s: the loop's timer never fires during a test
START = 1000.0  # the test clock's reading when a job starts
DEADLINE = START + TIMEOUT_S
PARAMS = GenerationParams(model="tiny", width=8, height=8, steps=1, guidance=1.0)

Act = Callable[[RunControl], None]  # what a runner call does before it returns its images


class Runner:
    """Runs ``act(control)`` for each call (in the worker's thread), then returns an image per
    spec; records the prompts of every call and whether ``control.step`` interrupted it."""

    def __init__(self, act: Act = lambda control: None) -> None:
        self.act = act
        self.calls: list[list[str]] = []
        self.interrupted_at_step = 0
        self.gate = threading.Event()  # a call waits here until the test sets it
        self.gate.set()
        self.entered = threading.Event()

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]:
        self.calls.append([spec.prompt for spec in specs])
        self.entered.set()
        if not self.gate.wait(GUARD_S):
            raise RuntimeError("test gate never opened")
        self.act(control)
        return [GeneratedImage(spec, Image.new("RGB", (8, 8)), spec.seed) for spec in specs]

    def step(self, control: RunControl) -> None:
        try:
            control.step(1, 1)
        except RunInterrupted:
            self.interrupted_at_step += 1
            raise


def job(user: str, name: str, images: int = 1) -> GenerationJob:
    specs = tuple(ImageSpec(f"{name}#{i}", seed=i) for i in range(images))
    return GenerationJob(user_id=user, params=PARAMS, images=specs, label=name)


async def outcome(handle: JobHandle) -> object:
    try:
        return await asyncio.wait_for(handle.result(), GUARD_S)
    except Exception as error:  # the CoverError the job ended with
        return error


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The queue's clock, at START until a runner moves it."""
    fake = SimpleNamespace(now=START)
    monkeypatch.setattr(models.queue, "time", SimpleNamespace(monotonic=lambda: fake.now))
    return fake


# -- a batch at exactly its cap --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "calls"),
    [
        ((2, 2, 1), [["a#0", "a#1", "b#0", "b#1"], ["c#0"]]),  # 2 + 2 = 4: full, c waits
        ((3, 2, 1), [["a#0", "a#1", "a#2", "c#0"], ["b#0", "b#1"]]),  # 3 + 2 > 4; 3 + 1 fits
    ],
)
async def test_a_batch_is_filled_to_exactly_max_batch_and_never_past_it(sizes, calls):
    """Kills: ``images + len(other) <= self.max_batch`` → ``<`` in ``_take_unit`` (a batch
    stops one short of its cap), and any change that lets it pass the cap. (``images >=
    self.max_batch`` → ``>`` is equivalent: at the cap no job of ≥ 1 image fits.)"""
    runner = Runner()
    queue = GenerationQueue(runner, max_batch=4, max_per_user=5)
    names = "abc"
    handles = [queue.submit(job(f"u{n}", names[n], k)) for n, k in enumerate(sizes)]
    events = handles[0].events()
    await queue.start()
    results = {name: await outcome(h) for name, h in zip(names, handles, strict=True)}
    await queue.close()
    assert runner.calls == calls
    for call in calls:
        for name in {prompt[0] for prompt in call}:
            assert results[name].batch_sizes == (len(call),)
    assert Started(4) in [e async for e in events]  # the call's size, as the job was told


# -- deadlines to the tick -------------------------------------------------------------------


async def run_one(runner: Runner, images: int = 1, max_batch: int = 8) -> tuple[object, Runner]:
    queue = GenerationQueue(runner, job_timeout_s=TIMEOUT_S, max_batch=max_batch)
    await queue.start()
    result = await outcome(queue.submit(job("alice", "a", images)))
    await asyncio.wait_for(queue.close(), GUARD_S)
    return result, runner


async def test_a_step_at_the_deadline_stops_the_run(clock):
    """Kills: ``now >= h._deadline`` → ``>`` in ``_Control._should_stop`` (the run would go on
    to its end at the deadline instead of stopping there)."""

    def act(control: RunControl) -> None:
        clock.now = DEADLINE
        runner.step(control)

    runner = Runner(act)
    result, _ = await run_one(runner)
    assert isinstance(result, JobTimedOut)
    assert runner.interrupted_at_step == 1


async def test_a_step_before_the_deadline_goes_on(clock):
    def act(control: RunControl) -> None:
        clock.now = DEADLINE - 0.001
        runner.step(control)

    runner = Runner(act)
    result, _ = await run_one(runner)
    assert len(result.images) == 1 and runner.interrupted_at_step == 0


@pytest.mark.parametrize(
    ("moment", "ending"),
    [(DEADLINE, JobTimedOut), (DEADLINE + 1.0, JobTimedOut), (DEADLINE - 0.001, GenerationFailed)],
)
async def test_a_runner_that_stops_on_its_own_is_judged_by_the_deadline(clock, moment, ending):
    """A runner may raise RunInterrupted unasked (models/runner.py does when its own checks
    fire): at or past the deadline that is the job's time-out, before it a failure on our side.
    Kills: deleting ``self._end_interrupted(handles)`` in ``_call`` and ``now >=
    handle._deadline`` → ``>`` in ``_end_interrupted``."""

    def act(control: RunControl) -> None:
        clock.now = moment
        raise RunInterrupted("stopped by the runner")

    result, _ = await run_one(Runner(act))
    assert type(result) is ending


async def test_an_interrupted_call_ends_its_job_before_the_next_call(clock):
    """A job of two calls whose first call is interrupted ends there: its second call never
    runs. Kills: deleting ``self._end_interrupted(handles)`` in ``_call`` (the job then ran on
    and failed only after every call)."""

    def act(control: RunControl) -> None:
        raise RunInterrupted("stopped by the runner")

    runner = Runner(act)
    result, _ = await run_one(runner, images=2, max_batch=1)
    assert isinstance(result, GenerationFailed) and "on our side" in str(result)
    assert runner.calls == [["a#0"]]


@pytest.mark.parametrize(("moment", "finished"), [(DEADLINE, False), (DEADLINE - 0.001, True)])
async def test_images_returned_at_the_deadline_are_too_late(clock, moment, finished):
    """Kills: ``ended >= handle._deadline`` → ``>`` in ``_collect``."""

    def act(control: RunControl) -> None:
        clock.now = moment

    result, _ = await run_one(Runner(act))
    assert isinstance(result, JobTimedOut) != finished


# -- closing without draining ----------------------------------------------------------------


async def test_close_without_drain_stops_an_idle_worker_at_once():
    """One worker is in a call that never steps, the other idle: the idle one stops as soon as
    the close begins, and the running job ends with QueueClosed. Kills: ``self._aborting =
    True`` → ``False`` in ``_abort`` (the idle worker then waited for the busy one's call, as
    in a draining close)."""
    runners = [Runner(), Runner()]
    for runner in runners:
        runner.gate.clear()
    queue = GenerationQueue(runners)
    await queue.start()
    running = queue.submit(job("alice", "a"))
    for _ in range(int(GUARD_S / 0.01)):
        if any(r.entered.is_set() for r in runners):
            break
        await asyncio.sleep(0.01)
    busy = next(r for r in runners if r.entered.is_set())
    idle = next(r for r in runners if r is not busy)
    idle.gate.set()
    closing = asyncio.create_task(queue.close(drain=False))
    try:
        assert isinstance(await outcome(running), QueueClosed)
        await asyncio.sleep(0.1)
        [idle_worker] = [w for w in queue._workers if w.runner is idle]
        assert idle_worker.task is not None and idle_worker.task.done()
        assert not closing.done()  # the busy call has not come back
    finally:
        busy.gate.set()
        await asyncio.wait_for(closing, GUARD_S)
    assert idle.calls == []


# -- a bug of our own (found by the project's sample, tests.mutation_sample) --------------------


async def test_a_bug_of_ours_fails_the_jobs_it_was_running_with_a_sentence(monkeypatch):
    """The queue's own code raising mid-work ends the jobs with the 'failed on our side'
    sentence, and the worker lives on. Kills ``GenerationFailed(_internal_error_message(…))`` →
    ``GenerationFailed(None)`` in ``_work``."""
    queue = GenerationQueue(Runner())

    def broken(*args, **kwargs) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(queue, "_collect", broken)
    await queue.start()
    handle = queue.submit(job("alice", "a"))
    result = await outcome(handle)
    assert isinstance(result, GenerationFailed)
    assert f"job {handle.id[:8]} failed on our side" in str(result)
    monkeypatch.undo()
    assert len((await outcome(queue.submit(job("bob", "b")))).images) == 1
    await asyncio.wait_for(queue.close(), GUARD_S)


async def test_calls_that_end_without_every_image_fail_the_job_with_a_sentence(monkeypatch, caplog):
    """Every call over, an image still missing: the job fails at once, not hangs, with the
    sentence that names it, and the worker carries on (no internal error of the worker loop).
    Kills ``GenerationFailed(_internal_error_message(…))`` → ``GenerationFailed(None)`` at the
    end of ``_run_work``, and its ``_internal_error_message(handle)`` → ``(None)`` (which failed
    there and was caught by the worker loop)."""
    queue = GenerationQueue(Runner())
    monkeypatch.setattr(queue, "_collect", lambda *args, **kwargs: None)  # images dropped
    await queue.start()
    handle = queue.submit(job("alice", "a"))
    result = await outcome(handle)
    assert isinstance(result, GenerationFailed) and "failed on our side" in str(result)
    assert f"job {handle.id[:8]}" in str(result)
    assert "ended its calls without all images" in caplog.text
    assert "internal error" not in caplog.text
    assert queue.closed is False
    await asyncio.wait_for(queue.close(), GUARD_S)
    assert queue.closed is True


async def test_a_runner_returning_too_few_images_is_not_logged_as_our_bug(caplog):
    """The wrong number of images fails the job through its own branch, not the safety net
    for our bugs. Kills ``self._end(handle, GenerationFailed(…))`` → ``self._end(
    GenerationFailed(…))`` in ``_call`` (a TypeError the safety net then caught)."""
    queue = GenerationQueue(lambda params, specs, control: [])
    await queue.start()
    result = await outcome(queue.submit(job("alice", "a")))
    await asyncio.wait_for(queue.close(), GUARD_S)
    assert isinstance(result, GenerationFailed) and "failed on our side" in str(result)
    assert "the runner returned 0 image(s) for 1" in caplog.text
    assert "internal error" not in caplog.text


# -- a broken device's runner restarted in place ------------------------------------------------


class RestartingRunner(Runner):
    """Its first call fails as a broken device does; ``restart()`` (as a Ray runner has) records
    the thread it ran on, as every call does."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []  # "call" or "restart", with the thread's name

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]:
        self.threads.append(f"call {threading.current_thread().name}")
        if len(self.threads) == 1:
            raise DeviceBroken("a sticky CUDA error")
        return super().__call__(params, specs, control)

    def restart(self) -> None:
        self.threads.append(f"restart {threading.current_thread().name}")


async def test_a_broken_device_is_restarted_on_its_own_thread_and_the_job_goes_on():
    """The runner's ``restart()`` runs once, in the worker's own thread (where its calls run),
    and the same worker finishes the job. Kills the restart looked up under another name, its
    ``is None`` test negated, it run on the loop's default executor or without the function, the
    ``is _Call.BROKEN`` test negated, and ``_restart(None)``."""
    runner = RestartingRunner()
    async with GenerationQueue(runner, max_batch=4) as queue:
        result = await outcome(queue.submit(job("alice", "a", images=2)))
        assert queue.worker_names == ("generator",)
    assert not isinstance(result, Exception)
    assert [image.spec.prompt for image in result.images] == ["a#0", "a#1"]
    assert [entry.split()[0] for entry in runner.threads] == ["call", "restart", "call"]
    assert len({entry.split()[1] for entry in runner.threads}) == 1  # one thread for all three
    assert runner.threads[0].split()[1].startswith("gen-")


async def test_a_runner_that_cannot_be_restarted_loses_its_worker():
    """``restart()`` itself fails: the worker is lost, not kept with its broken runner, and the
    job, with no worker left, ends with :class:`NoWorkers`. Kills ``return False`` → ``True`` after a
    failed restart."""

    class Unrestartable(RestartingRunner):
        def restart(self) -> None:
            super().restart()
            raise RuntimeError("no new process")

    runner = Unrestartable()
    async with GenerationQueue(runner, max_batch=4) as queue:
        result = await outcome(queue.submit(job("alice", "a")))
        assert queue.worker_names == ()
    assert isinstance(result, NoWorkers)
    assert [entry.split()[0] for entry in runner.threads] == ["call", "restart"]
