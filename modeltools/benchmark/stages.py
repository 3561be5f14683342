"""Where one cover's time goes: text encoder, UNet steps, decoder, safety checker, post-processing.

    StageClock(pipe) ─► wraps the pipeline's parts in timers (forward hooks, wrapped methods)
        │  one pipeline call (a 4-candidate cover) runs as usual
        ▼
    StageTimes: seconds and calls per stage, exclusive (a stage inside another, such as the
    image conversion inside the safety checker's call, counts only for itself); "other" is the
    rest of the call (scheduler, noise, tensor glue, our runner's own work)

So the next optimisation is chosen from a measurement (issue 22). The clock counts whatever
runs through the pipeline while it is attached: on the bot's busy queue a user's job between
the benchmark's would be counted too, so :func:`measure_stages` runs its cover at a low
priority like the rest of the benchmark and says how many UNet calls it saw.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.jobs import GenerationParams, ImageSpec
from modeltools.benchmark.submit import job, submit_and_wait

if TYPE_CHECKING:
    from models.queue import GenerationQueue

STAGES = ("text encoder", "UNet", "decoder", "safety checker", "post-processing", "other")


@dataclass(frozen=True)
class StageTimes:
    """Seconds and calls per stage of :data:`STAGES` for one pipeline call (or the median of
    several: :meth:`median`); ``total_s`` is the whole call."""

    seconds: dict[str, float]
    calls: dict[str, int]
    total_s: float

    @classmethod
    def median(cls, runs: Sequence[StageTimes]) -> StageTimes:
        """Per stage, the median over ``runs`` (so the stages need not add up exactly)."""
        if not runs:
            raise ValueError("`runs` is empty: a median needs at least one StageTimes.")
        return cls(
            seconds={s: statistics.median(r.seconds.get(s, 0.0) for r in runs) for s in STAGES},
            calls=dict(runs[0].calls),
            total_s=statistics.median(r.total_s for r in runs),
        )

    def to_json(self) -> dict[str, Any]:
        return {"seconds": dict(self.seconds), "calls": dict(self.calls), "total_s": self.total_s}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageTimes:
        return cls(dict(data["seconds"]), dict(data["calls"]), data["total_s"])

    def lines(self) -> list[str]:
        """One line per stage that took time or was called: seconds, share, calls."""
        total = max(self.total_s, 1e-9)
        out = []
        for stage in STAGES:
            seconds, calls = self.seconds.get(stage, 0.0), self.calls.get(stage, 0)
            if stage != "other" and not calls:
                out.append(f"  {stage:<16} –  (not in this pipeline or cached)")
                continue
            count = f" ({calls} call{'s' if calls != 1 else ''})" if stage != "other" else ""
            out.append(f"  {stage:<16} {seconds:7.2f} s {seconds / total:4.0%}{count}")
        return out


@dataclass
class _Frame:
    stage: str
    began: float
    inner: float = 0.0  # seconds spent in stages nested inside this one


@dataclass
class StageClock:
    """Attach to ``pipe`` with ``with StageClock(pipe) as clock:``; read :meth:`times` after
    each pipeline call. Only calls on the thread that runs them are timed per stage; the
    wall time between :meth:`start` and :meth:`times` is ``total_s``.

    On a CUDA device every reading of the clock first waits for the GPU
    (``torch.cuda.synchronize``): kernels are queued asynchronously, so otherwise a stage is
    charged only for queuing its work, and its GPU time lands on the next stage that waits
    for a result (post-processing's copy to the CPU). The waits cost a little overlap; this
    clock is for finding where time goes, the queue benchmark's figures are taken without it.
    """

    pipe: Any
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    _stack: threading.local = field(default_factory=threading.local)
    _undo: list[Callable[[], None]] = field(default_factory=list)
    _began: float = 0.0
    _sync: Callable[[], None] | None = None

    def __enter__(self) -> StageClock:
        pipe = self.pipe
        self._sync = _cuda_sync(pipe)
        # 1. Modules: forward hooks around their calls.
        for stage, name in (("text encoder", "text_encoder"), ("UNet", "unet")):
            module = getattr(pipe, name, None)
            module = getattr(module, "_orig_mod", module)  # a compiled UNet: its eager module
            if module is not None:
                self._hook_module(stage, module)
        if getattr(pipe, "safety_checker", None) is not None:
            self._wrap(pipe, "run_safety_checker", "safety checker")
        # 2. Methods: wrapped on the instance, the class's own restored on exit.
        if getattr(pipe, "vae", None) is not None:
            self._wrap(pipe.vae, "decode", "decoder")
        if getattr(pipe, "image_processor", None) is not None:
            self._wrap(pipe.image_processor, "postprocess", "post-processing")
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def start(self) -> None:
        """Zero the counters and start the wall clock (before each call to be timed)."""
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.calls = dict.fromkeys(STAGES, 0)
        self._began = self._now()

    def times(self) -> StageTimes:
        """What was counted since :meth:`start`; "other" is the wall time no stage took."""
        total = self._now() - self._began
        seconds = dict(self.seconds)
        seconds["other"] = max(0.0, total - sum(v for k, v in seconds.items() if k != "other"))
        return StageTimes(seconds, dict(self.calls), total)

    # -- timing ----------------------------------------------------------------------------

    def _enter(self, stage: str) -> None:
        stack = self._frames()
        stack.append(_Frame(stage, self._now()))

    def _leave(self) -> None:
        stack = self._frames()
        if not stack:
            return  # a hook attached mid-call: nothing to close
        frame = stack.pop()
        elapsed = self._now() - frame.began
        self.seconds[frame.stage] = self.seconds.get(frame.stage, 0.0) + elapsed - frame.inner
        self.calls[frame.stage] = self.calls.get(frame.stage, 0) + 1
        if stack:
            stack[-1].inner += elapsed

    def _now(self) -> float:
        """The clock, once the device has finished what was queued on it."""
        if self._sync is not None:
            self._sync()
        return time.perf_counter()

    def _frames(self) -> list[_Frame]:
        if not hasattr(self._stack, "frames"):
            self._stack.frames = []
        return self._stack.frames

    def _hook_module(self, stage: str, module: Any) -> None:
        before = module.register_forward_pre_hook(lambda *_: self._enter(stage))
        after = module.register_forward_hook(lambda *_: self._leave())
        self._undo += [before.remove, after.remove]

    def _wrap(self, owner: Any, method: str, stage: str) -> None:
        original = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._enter(stage)
            try:
                return original(*args, **kwargs)
            finally:
                self._leave()

        setattr(owner, method, timed)
        self._undo.append(lambda: delattr(owner, method))


def _cuda_sync(pipe: Any) -> Callable[[], None] | None:
    """What waits for ``pipe``'s CUDA device; None elsewhere (a CPU computes synchronously)."""
    device = getattr(pipe, "device", None)
    if getattr(device, "type", None) != "cuda":
        return None
    import torch  # the pipeline is on CUDA: torch is loaded

    return lambda: torch.cuda.synchronize(device)


async def measure_stages(
    queue: GenerationQueue,
    params: GenerationParams,
    *,
    prompt: str,
    images: int = 4,
    priority: int = 1,
) -> StageTimes | None:
    """One ``images``-candidate cover through ``queue`` with a :class:`StageClock` on the
    runner's loaded pipeline; None where the runner has no pipeline to show (a test's fake
    runner, DeepFloyd IF's two stages, a Ray worker in another process)."""
    pipeline_for = getattr(queue.runner, "loaded_pipeline", None)
    pipe = pipeline_for(params) if pipeline_for is not None else None
    if pipe is None:
        return None
    specs = tuple(ImageSpec(prompt, "", seed=10_000 + k) for k in range(images))
    with StageClock(pipe) as clock:
        await submit_and_wait(queue, [job("benchmark-stages", params, specs, priority)])
        return clock.times()
