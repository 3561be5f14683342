"""The runners a queue feeds: one diffusers runner per local device, and Ray actors on a
cluster (models/ray_workers.py), built from the settings."""

from __future__ import annotations

import functools
from collections.abc import Callable

from bot.app.settings import Settings
from models.errors import NoWorkers
from models.jobs import Runner


def build_runner(settings: Settings, *, device: str | None = None) -> Runner:
    """The diffusers runner the settings describe (device, cache, optimisation switches)."""
    return _runner_factory(settings, device or settings.device)()


def _runner_factory(settings: Settings, device: str) -> Callable[[], Runner]:
    """How to build that runner: a picklable partial, so a Ray actor can build it remotely."""
    from models.optimize import Optimizations
    from models.registry import quiet_libraries
    from models.runner import DiffusersRunner

    quiet_libraries()
    return functools.partial(
        DiffusersRunner,
        device=device,
        cache_dir=settings.cache_dir,
        allow_downloads=settings.allow_downloads,
        black_retries=settings.black_retries,
        optimizations=Optimizations().replace(settings.optimizations),
    )


def build_runners(settings: Settings) -> tuple[list[Runner], Callable[[], None]]:
    """Every runner the queue should feed, and what releases them at shutdown.

    1. One diffusers runner per local device (``COVER_DEVICES``; ``COVER_DEVICE`` when that is
       left at ``auto``, so ``--device`` and old settings keep their meaning).
    2. With ``COVER_RAY_ADDRESS``: join the cluster and start one actor per GPU (or
       ``COVER_RAY_WORKERS``), each building the same runner on its own node
       (models/ray_workers.py). Ray is imported only here. A Ray started here (``local``)
       puts an actor on every GPU of this machine, so the in-process workers take none.
    No runner at all is a :class:`~models.errors.NoWorkers` with the settings to change.
    """
    from models.registry import local_devices

    requested = settings.devices
    if requested.strip().lower() == "auto" and settings.device.strip().lower() != "auto":
        requested = settings.device
    use_ray = settings.ray_address is not None
    devices = local_devices(requested, cuda_only=use_ray)
    if (settings.ray_address or "").strip().lower() == "local":
        devices = _beside_local_ray(devices, requested)
    runners = [build_runner(settings, device=device) for device in devices]
    release: Callable[[], None] = lambda: None  # noqa: E731 (nothing to release locally)
    if use_ray:
        from models.ray_workers import RayWorkers, WorkerSpec, connect, start_workers

        assert settings.ray_address is not None
        owns_ray = connect(settings.ray_address)
        spec = WorkerSpec(
            # "auto" inside the actor: the GPU Ray gave it (CUDA_VISIBLE_DEVICES), else CPU.
            make_runner=_runner_factory(settings, "auto"),
            num_gpus=settings.ray_gpus_per_worker,
            num_cpus=settings.ray_cpus_per_worker,
            torch_threads=settings.ray_torch_threads,
        )
        try:
            remote = start_workers(
                spec, count=settings.ray_workers, start_timeout_s=settings.ray_start_timeout_s
            )
        except BaseException:
            RayWorkers([], owns_ray).close()
            raise
        runners.extend(remote)
        release = RayWorkers(remote, owns_ray).close
    if not runners:
        raise NoWorkers("COVER_DEVICES names no device here and COVER_RAY_ADDRESS is not set")
    return runners, release


def _beside_local_ray(devices: list[str], requested: str) -> list[str]:
    """The local devices left for in-process workers when Ray runs on this machine: Ray gives
    each of its actors one of this machine's GPUs, so a worker of ours on any of them would
    fight an actor for its memory. ``auto`` leaves them all to Ray; naming one is refused."""
    gpus = [device for device in devices if device.startswith("cuda")]
    if gpus and requested.strip().lower() != "auto":
        raise NoWorkers(
            f"COVER_RAY_ADDRESS=local gives every GPU of this machine to Ray actors, and "
            f"COVER_DEVICES names {', '.join(gpus)} too; set COVER_DEVICES=auto or none"
        )
    return [device for device in devices if not device.startswith("cuda")]
