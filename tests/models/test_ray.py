"""Remote workers on a real local Ray (models/ray_workers.py) running the embedded pipeline.

One Ray instance serves the whole session (``ray_local`` in tests/conftest.py) and two actors
are shared by this module; tests that need an actor of their own (the one the fault test kills,
the bot's) start it and stop it. Every wait is guarded so that a bug fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import pytest

import models.ray_workers
from models.errors import JobCancelled, JobTimedOut, NoWorkers
from models.jobs import GenerationJob, GenerationParams, ImageSpec, OutOfMemory
from models.optimize import Optimizations
from models.queue import GenerationQueue, JobHandle, Preview, Progress
from models.ray_workers import RayRunner, WorkerSpec, start_workers
from models.registry import resolve_model
from models.runner import DiffusersRunner

GUARD_S = 120.0  # an actor's first call imports diffusers and loads the pipeline (~8 s here)
EMBEDDED = resolve_model("embedded")
PARAMS = GenerationParams(
    "embedded", EMBEDDED.native_size, EMBEDDED.native_size, EMBEDDED.steps, EMBEDDED.guidance
)
LONG = GenerationParams("embedded", 64, 64, 400, 4.0)  # ~10 s of steps: long enough to stop
FAULT = dataclasses.replace(LONG, steps=30)  # a batch lasts a second or two: time to kill it


class ProbeRunner(DiffusersRunner):
    """The real diffusers runner, except that a batch of more than two images whose first
    prompt starts with "too big" runs out of memory, as a batch on a small GPU would."""

    def __call__(self, params, specs, control):
        if len(specs) > 2 and specs[0].prompt.startswith("too big"):
            raise OutOfMemory(f"{len(specs)} images do not fit (test)")
        return super().__call__(params, specs, control)


def probe_spec(cache_dir: Path) -> WorkerSpec:
    return WorkerSpec(
        make_runner=functools.partial(
            ProbeRunner,
            device="cpu",
            cache_dir=cache_dir,
            optimizations=Optimizations(previews_every=5),
        ),
        num_gpus=0,
        num_cpus=0.5,  # of the instance's 2 logical CPUs: room for the shared two and more
        torch_threads=1,
    )


@pytest.fixture(scope="module")
def ray_runners(ray_local, cache_dir: Path, embedded_model_dir: Path):
    """Two actors holding the embedded pipeline, loaded before the first test uses them."""
    # ProbeRunner lives in this test module, which Ray's workers cannot import: send it whole.
    ray_local.cloudpickle.register_pickle_by_value(__import__(__name__))
    runners = start_workers(probe_spec(cache_dir), count=2, name="shared")
    warm = [r.actor.run.remote(PARAMS, [ImageSpec("warm up")]) for r in runners]
    ray_local.get(warm, timeout=GUARD_S)
    yield runners
    for runner in runners:
        ray_local.kill(runner.actor)


def job(user: str, prompt: str, images: int = 4, params: GenerationParams = PARAMS):
    specs = tuple(ImageSpec(f"{prompt} {i}", seed=i) for i in range(images))
    return GenerationJob(user_id=user, params=params, images=specs, label=prompt)


async def events_of(handle: JobHandle) -> list:
    return [event async for event in handle.events()]


async def test_jobs_spread_over_both_workers_with_progress_previews_and_the_same_images(
    ray_runners, cache_dir
):
    async with GenerationQueue(ray_runners, max_batch=4, max_per_user=4) as queue:
        handles = [queue.submit(job(user, f"{user} mix")) for user in ("alice", "bob")]
        watched = [asyncio.create_task(events_of(h)) for h in handles]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), GUARD_S)
        events = await asyncio.gather(*watched)

    # One 4-image call each, on different workers.
    assert sorted(w for r in results for w in r.workers) == list(queue.worker_names)
    assert [r.batch_sizes for r in results] == [(4,), (4,)]
    for stream in events:
        steps = [e.step for e in stream if isinstance(e, Progress)]
        assert steps[-1] == PARAMS.steps and steps == sorted(steps)
        previews = [e for e in stream if isinstance(e, Preview)]
        assert previews and all(len(p.images) == 4 for p in previews)

    # Across the boundary an image is what the in-process runner makes from the same seed
    # (torch's thread count may move a pixel by one level, not more).
    local = DiffusersRunner(device="cpu", cache_dir=cache_dir)
    from models.jobs import NoControl

    [here] = local(PARAMS, [results[0].images[2].spec], NoControl())
    there = np.asarray(results[0].images[2].image, dtype=np.int16)
    assert np.abs(np.asarray(here.image, dtype=np.int16) - there).max() <= 2
    other = np.asarray(results[0].images[3].image, dtype=np.int16)
    assert np.abs(other - there).mean() > 2  # a different seed is a different picture


async def test_out_of_memory_on_a_worker_splits_the_batch(ray_runners):
    async with GenerationQueue(ray_runners[:1], max_batch=4) as queue:
        result = await asyncio.wait_for(queue.submit(job("alice", "too big")).result(), GUARD_S)
    assert result.batch_sizes == (2, 2) and len(result.images) == 4


@pytest.mark.parametrize("how", ["cancel", "deadline"])
async def test_cancel_and_deadline_stop_the_remote_call(ray_runners, how):
    async with GenerationQueue(
        ray_runners[:1], job_timeout_s=3.0 if how == "deadline" else 600.0
    ) as queue:
        long = queue.submit(job("alice", "long", images=1, params=LONG))
        async for event in long.events():
            if isinstance(event, Progress) and event.step >= 5:
                break
        if how == "cancel":
            long.cancel()
        stopped_at = time.monotonic()
        outcome = await asyncio.wait_for(
            asyncio.gather(long.result(), return_exceptions=True), GUARD_S
        )
        assert isinstance(outcome[0], JobCancelled if how == "cancel" else JobTimedOut)
        # The actor stopped too: the next job starts at once, not after the 400 steps.
        after = queue.submit(job("bob", "after", images=1))
        result = await asyncio.wait_for(after.result(), GUARD_S)
    assert result.workers == ("generator",)
    assert result.wait_s < 3.0, f"the worker stayed busy {result.wait_s:.1f} s after the stop"
    assert time.monotonic() - stopped_at < 8.0


async def test_an_actor_killed_mid_batch_loses_no_job(ray_local, ray_runners, cache_dir):
    [victim] = start_workers(probe_spec(cache_dir), count=1, name="victim")
    survivor = ray_runners[0]
    async with GenerationQueue([victim, survivor], max_batch=2) as queue:
        handles = [
            queue.submit(job(f"user{i}", f"fault {i}", images=2, params=FAULT)) for i in range(3)
        ]
        # Wait until the victim is denoising a batch, then kill its process.
        victim_name = queue.worker_names[0]
        deadline = time.monotonic() + GUARD_S
        while not any(isinstance(h._state[-1], Progress) for h in queue._workers[0].running):
            assert time.monotonic() < deadline, "the victim never started a batch"
            await asyncio.sleep(0.05)
        ray_local.kill(victim.actor)
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), GUARD_S)
        assert queue.worker_names == (f"generator/{survivor.name}",)
    assert all(len(r.images) == 2 for r in results)
    assert {w for r in results for w in r.workers} == {f"generator/{survivor.name}"}
    assert victim_name == f"generator/{victim.name}"


def test_no_worker_that_fits_is_a_clear_message_not_a_hang(ray_local, cache_dir):
    gpu_spec = WorkerSpec(functools.partial(DiffusersRunner, device="cpu", cache_dir=cache_dir))
    started = time.monotonic()
    with pytest.raises(NoWorkers, match=r"not ready after 1 s.*1 GPU"):
        start_workers(gpu_spec, count=1, start_timeout_s=1.0)
    with pytest.raises(NoWorkers, match="has 0 GPU"):
        start_workers(gpu_spec, count=0)
    assert time.monotonic() - started < 10


def test_without_ray_installed_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # import ray → ImportError
    with pytest.raises(NoWorkers, match=r"pip install -e '\.\[ray\]' in the project's checkout"):
        models.ray_workers.import_ray()


# -- the bot's /cover through Ray, built from its settings --------------------------------


async def test_the_bots_cover_goes_through_a_ray_worker_and_shutdown_stops_it(
    ray_local, fake_spotify, tmp_path, cache_dir, embedded_model_dir
):
    from tests.e2e.test_discord import EXAMPLES
    from tests.fakes.discord import FakeDiscord, FakeUser
    from tests.fakes.harness import bot_settings, cover_post, running_bot

    stored = fake_spotify.add_snapshot(EXAMPLES / "late-night-drive.json")
    async with FakeDiscord() as discord:
        settings = bot_settings(
            discord,
            fake_spotify,
            tmp_path,
            cache_dir,
            devices="none",  # nothing in-process: every image must come from the actor
            ray_address="local",  # Ray already runs in this process (ray_local): joined as is
            ray_workers=1,
            ray_gpus_per_worker=0,
            ray_cpus_per_worker=0.25,
            ray_torch_threads=1,
        )
        async with running_bot(settings, discord) as bot:
            [runner] = bot.queue.runners
            assert isinstance(runner, RayRunner) and bot.device == runner.name
            link = f"https://open.spotify.com/playlist/{stored.meta['id']}"
            interaction = await discord.slash(
                FakeUser(1001, "alice"), "cover", playlist=link, count=2
            )
            post = await cover_post(discord, interaction)
            assert [a.filename for a in post.attachments] == [
                "cover-1.png",
                "cover-2.png",
                "sheet.png",
            ]
            assert any(e.startswith("Generating") for e in interaction.original.edits)
            [row] = bot.storage._rows("SELECT status FROM requests")
            assert row["status"] == "done"
        # The bot killed its actor on the way out; the session's Ray itself lives on.
        with pytest.raises(ray_local.exceptions.RayActorError):
            ray_local.get(runner.actor.describe.remote(), timeout=30)
        assert ray_local.is_initialized()
