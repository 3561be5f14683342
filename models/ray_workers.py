"""Remote workers on Ray: one actor per GPU, each holding its own runner, fed by our queue.

The queue (models/queue.py) stays the one place that orders, batches and ends jobs. Ray only
carries a batch to a machine with a free GPU and its images back:

    GenerationQueue ─ one worker per runner ─► RayRunner (blocks that worker's thread)
        │  actor.run.remote(params, specs) ─────────────► _Actor.run: the real runner (e.g.
        │                                                  DiffusersRunner) on the actor's GPU
        │  every POLL_S: actor.drain.remote(stop) ◄──────  its control queues Progress/Preview
        │     relays them to the queue's control;          and raises RunInterrupted once
        │     stop=True once the queue's control says       ``stop`` was set
        │     every job of the batch has ended
        ▼
    images, or the runner's own exception (OutOfMemory → the queue splits the batch; a sticky
    CUDA error → the queue calls restart(): a new actor, so a new process and CUDA context), or
    WorkerLost when the actor or its node died (→ the queue retries the batch elsewhere)

The actor is a threaded actor (``max_concurrency=2``): ``run`` holds one thread for the whole
pipeline call while ``drain`` answers on the other. Deadlines and cancellation stay with the
queue: its control raises RunInterrupted in our polling loop, and we pass that on as ``stop``.
LoRA selection and the prompt-embedding cache live in the actor's runner, as they do locally;
a LoRA path must therefore exist on the worker's machine too (docs/deployment.md).

Ray is an optional extra (``pip install -e '.[ray]'``): this module imports it only
inside :func:`connect` and :class:`RayRunner`, so ``import models`` never does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.errors import NoWorkers
from models.jobs import (
    GeneratedImage,
    GenerationParams,
    ImageSpec,
    RunControl,
    RunInterrupted,
    Runner,
    WorkerLost,
)

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often the driver asks an actor for progress: a tiny step takes ~50 ms here
INSTALL_HINT = "pip install -e '.[ray]' in the project's checkout"


def import_ray() -> Any:
    """Ray, or a message with the exact command that installs it."""
    try:
        import ray
    except ImportError as error:
        raise NoWorkers(
            f"COVER_RAY_ADDRESS is set but Ray is not installed here; run {INSTALL_HINT}"
        ) from error
    return ray


@dataclass(frozen=True)
class WorkerSpec:
    """What each actor asks the cluster for, and how it builds its runner.

    ``make_runner`` is called once inside the actor (it is pickled by Ray: a class or a
    ``functools.partial`` of one defined in an importable module, such as
    :class:`models.runner.DiffusersRunner`). ``torch_threads`` limits the actor's intra-op
    threads (0: torch's default); on a CPU-only node give each actor its share of the cores.
    """

    make_runner: Callable[[], Runner]
    num_gpus: float = 1.0
    num_cpus: float = 1.0
    torch_threads: int = 0


class _ActorControl:
    """The :class:`~models.jobs.RunControl` the runner sees inside the actor: it queues what
    happens for the driver's next ``drain`` and stops the call once the driver says so."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, int, Any]] = []
        self.stop = False

    def step(self, step: int, total: int) -> None:
        if self.stop:
            raise RunInterrupted("the driver asked this worker to stop")
        with self._lock:
            self._events.append(("step", step, total))

    def preview(self, step: int, images: Sequence[Image.Image]) -> None:
        with self._lock:
            self._events.append(("preview", step, list(images)))

    def take(self) -> list[tuple[str, int, Any]]:
        with self._lock:
            events, self._events = self._events, []
        return events


class _Actor:
    """The remote side: one runner on one device (Ray decorates this class in :func:`connect`)."""

    def __init__(self, spec: WorkerSpec) -> None:
        if spec.torch_threads:
            import torch

            torch.set_num_threads(spec.torch_threads)
        self._runner = spec.make_runner()
        self._control = _ActorControl()

    def describe(self) -> dict[str, Any]:
        """Where this actor runs (answers once the runner is built: the readiness check)."""
        import ray

        context = ray.get_runtime_context()
        return {
            "device": getattr(self._runner, "device", "?"),
            "node": context.get_node_id()[:8],
            "pid": os.getpid(),
            "loaded": list(getattr(self._runner, "loaded", [])),  # pipelines in memory
        }

    def run(self, params: GenerationParams, specs: Sequence[ImageSpec]) -> list[GeneratedImage]:
        self._control = _ActorControl()  # a fresh stop flag per call
        return self._runner(params, specs, self._control)

    def drain(self, stop: bool) -> list[tuple[str, int, Any]]:
        if stop:
            self._control.stop = True
        return self._control.take()


class RayRunner:
    """A :class:`~models.jobs.Runner` that runs each call on one Ray actor (see the module
    docstring). ``name`` shows in the queue's worker names and logs; ``spec`` is what the
    actor was started from, so that :meth:`restart` can start another."""

    def __init__(
        self, actor: Any, *, name: str, device: str = "?", spec: WorkerSpec | None = None
    ) -> None:
        self.actor = actor
        self.name = name
        self.device = device
        self.spec = spec

    def restart(self, start_timeout_s: float = 120.0) -> None:
        """Replace the actor with a new one from the same spec, after a sticky CUDA error left
        its process unable to use its GPU (the queue calls this; models/queue.py). Killing the
        old actor gives its GPU back to Ray first, so the new one can have it."""
        if self.spec is None:
            raise WorkerLost(f"Ray worker {self.name} has no spec to start a new actor from")
        ray = import_ray()
        ray.kill(self.actor)
        [fresh] = start_workers(self.spec, count=1, name=self.name, start_timeout_s=start_timeout_s)
        self.actor, self.device = fresh.actor, fresh.device
        log.warning("Ray worker %s replaced by a new actor on %s", self.name, self.device)

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]:
        ray = import_ray()
        try:
            pending = self.actor.run.remote(params, list(specs))
            stop = False
            while True:
                done, _ = ray.wait([pending], timeout=POLL_S)
                stop = self._relay(ray.get(self.actor.drain.remote(stop)), control) or stop
                if done:
                    return ray.get(pending)
        except ray.exceptions.RayTaskError as error:
            # The runner's own exception (OutOfMemory, RunInterrupted, a CoverError, a bug):
            # raise it as it is, so the queue treats it exactly as a local one.
            if isinstance(error.cause, BaseException):
                raise error.cause from None
            raise  # an exception Ray could not bring back: a runner failure all the same
        except (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError) as error:
            raise WorkerLost(f"Ray worker {self.name} died: {type(error).__name__}") from error

    @staticmethod
    def _relay(events: list[tuple[str, int, Any]], control: RunControl) -> bool:
        """Hand the actor's progress to the queue; True once the queue wants the call stopped."""
        for kind, step, payload in events:
            if kind == "preview":
                control.preview(step, payload)
                continue
            try:
                control.step(step, payload)
            except RunInterrupted:
                return True
        return False

    def __repr__(self) -> str:
        return f"<RayRunner {self.name} on {self.device}>"


@dataclass
class RayWorkers:
    """The actors this process started on a Ray cluster, as runners for the queue."""

    runners: list[RayRunner]
    owns_ray: bool  # we called ray.init, so we call ray.shutdown

    def close(self) -> None:
        ray = import_ray()
        for runner in self.runners:
            ray.kill(runner.actor)
        if self.owns_ray:
            ray.shutdown()


def start_workers(
    spec: WorkerSpec,
    *,
    count: int,
    name: str = "ray",
    start_timeout_s: float = 120.0,
) -> list[RayRunner]:
    """Start ``count`` actors on the Ray instance this process is connected to and wait until
    each has built its runner. ``count`` 0 means one per GPU the cluster has (``spec.num_gpus``
    each). An actor that cannot start (no resources, a failing constructor) within
    ``start_timeout_s`` is left out; none at all raises :class:`NoWorkers` with the reason."""
    ray = import_ray()
    if count < 0:
        raise ValueError(f"`count` must be 0 (one per GPU) or more, got {count}.")
    if count == 0:
        gpus = ray.cluster_resources().get("GPU", 0)
        count = int(gpus // spec.num_gpus) if spec.num_gpus else 0
        if count == 0:
            raise NoWorkers(
                f"the Ray cluster has {gpus:g} GPU(s), not enough for a worker of "
                f"{spec.num_gpus:g} GPU(s); set COVER_RAY_WORKERS"
            )
    actor_class = ray.remote(max_concurrency=2)(_Actor)  # run + drain at the same time
    actors = [
        actor_class.options(
            num_gpus=spec.num_gpus, num_cpus=spec.num_cpus, name=None, max_restarts=0
        ).remote(spec)
        for _ in range(count)
    ]
    refs = {actor.describe.remote(): (index, actor) for index, actor in enumerate(actors)}
    ready, not_ready = ray.wait(list(refs), num_returns=len(refs), timeout=start_timeout_s)
    runners: list[RayRunner] = []
    problems: list[str] = []
    for ref in ready:
        index, actor = refs[ref]
        try:
            where = ray.get(ref)
        except ray.exceptions.RayError as error:
            problems.append(f"worker {index}: {type(error).__name__}")
            log.error("Ray worker %d failed to start", index, exc_info=error)
            continue
        worker_name = f"{name}{index}@{where['node']}"
        log.info("Ray worker %s ready on %s (pid %s)", worker_name, where["device"], where["pid"])
        runners.append(RayRunner(actor, name=worker_name, device=where["device"], spec=spec))
    for ref in not_ready:
        index, actor = refs[ref]
        problems.append(f"worker {index} not ready after {start_timeout_s:g} s")
        ray.kill(actor)  # it would hold its place in the cluster's queue of actors
    if problems:
        log.warning("Ray workers left out: %s", "; ".join(problems))
    if not runners:
        raise NoWorkers(
            "no Ray worker started ("
            + "; ".join(problems)
            + f"; each asks for {spec.num_gpus:g} GPU and {spec.num_cpus:g} CPU)"
        )
    runners.sort(key=lambda runner: runner.name)
    return runners


def connect(address: str, **init_options: Any) -> bool:
    """Join the Ray cluster at ``address`` ("auto", "ray://host:10001", "host:6379", or "local"
    for a fresh instance on this machine). Returns True when this call started Ray (the caller
    then shuts it down); an already initialised Ray is reused."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, **init_options}
    if address != "local":
        options["address"] = address
    started = time.monotonic()
    ray.init(**options)
    log.info("Ray: connected to %s in %.1f s", address, time.monotonic() - started)
    return True
