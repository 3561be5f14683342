"""What the queue's tests share: a fake runner that records its calls and can be held,
paused, run out of memory or crash, the jobs they submit and the guarded waits they use
(tests/models/test_queue*.py, tests/models/test_queue_snapshot.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

from PIL import Image

from models.jobs import (
    GeneratedImage,
    GenerationJob,
    GenerationParams,
    ImageSpec,
    OutOfMemory,
    RunControl,
    RunInterrupted,
)
from models.queue import GenerationQueue, JobHandle

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


async def _collect(events) -> list:
    return [event async for event in events]
