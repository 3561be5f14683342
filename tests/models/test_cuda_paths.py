"""The CUDA paths, checked on the CPU where a CPU can show them (issue 39).

No GPU has run this code yet; each test here pins down one defect a read of the CUDA paths
found, with a stand-in for the part only a GPU has (a fake device hook, a stub runner raising
CUDA's own error messages, a device name)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from models.jobs import GenerationParams, ImageSpec, NoControl
from models.optimize import Optimizations
from models.runner import DiffusersRunner


def embedded(steps: int = 2, **changes: Any) -> GenerationParams:
    base = {"model": "embedded", "width": 64, "height": 64, "steps": steps, "guidance": 7.5}
    return GenerationParams(**{**base, **changes})


SPECS = [ImageSpec(f"night drive playlist cover image {n}", "blurry", seed=n) for n in range(2)]


@pytest.fixture
def runner(cache_dir: Path, embedded_model_dir: Path) -> DiffusersRunner:
    return DiffusersRunner(device="cpu", cache_dir=cache_dir, optimizations=Optimizations())


# -- 1. the prompt-embedding cache holds tensors, not autograd graphs -------------------------


def test_cached_prompt_embeddings_carry_no_autograd_graph(runner: DiffusersRunner) -> None:
    """encode_prompt runs outside the pipeline's no_grad; with the text encoder's parameters
    requiring grad, each cached row would keep the encoder's activations alive (GBs on a GPU
    once the cache is full)."""
    runner(embedded(), SPECS, NoControl())
    pipe = runner._loaded[runner.loaded[0]]
    assert any(p.requires_grad for p in pipe.text_encoder.parameters())  # the risky setting
    [cache] = runner._embeddings.values()
    tensors = [t for pair in cache.values() for t in pair if t is not None]
    assert len(tensors) == 2 * len(SPECS)  # positive and negative per prompt
    for tensor in tensors:
        assert not tensor.requires_grad and tensor.grad_fn is None


# -- 8. same seed, same noise, whatever the device ---------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_generators_are_cpu_generators_whatever_the_device(
    runner: DiffusersRunner, device: str
) -> None:
    """CUDA's random numbers differ from the CPU's for one seed: a reroll, a resume or a Ray
    worker on another device would make other covers from the same seed."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    on_cpu = runner._generators([7, 8])
    runner.device = device  # only the label: the generators must not depend on it
    elsewhere = runner._generators([7, 8])
    assert [g.device.type for g in elsewhere] == ["cpu", "cpu"]
    shape = (2, 4, 8, 8)  # (B, C, h, w): the initial latents of two images
    first = randn_tensor(shape, generator=on_cpu, device=torch.device("cpu"))
    second = randn_tensor(shape, generator=elsewhere, device=torch.device("cpu"))
    assert torch.equal(first, second)


# -- 10. CUDA's other out-of-memory errors, and errors that break the device -------------------


class CudaFailingRunner:
    """A stub runner that raises CUDA's own wording as torch does (a RuntimeError): ``oom``
    above ``fits`` images, and ``sticky`` on its first ``sticky_calls`` calls."""

    def __init__(self, *, oom: str = "", fits: int = 1, sticky: str = "", sticky_calls: int = 0):
        self.oom, self.fits, self.sticky, self.sticky_calls = oom, fits, sticky, sticky_calls
        self.calls: list[int] = []
        self.restarts = 0

    def __call__(self, params, specs, control):
        from PIL import Image

        from models.jobs import GeneratedImage

        self.calls.append(len(specs))
        if self.sticky and len(self.calls) <= self.sticky_calls:
            raise RuntimeError(self.sticky)
        if self.oom and len(specs) > self.fits:
            raise RuntimeError(self.oom)
        return [GeneratedImage(spec, Image.new("RGB", (8, 8)), spec.seed) for spec in specs]


class RestartableRunner(CudaFailingRunner):
    def restart(self) -> None:  # as a Ray runner does: a new process, a new CUDA context
        self.restarts += 1


def stub_job(user: str, images: int):
    from models.jobs import GenerationJob

    specs = tuple(ImageSpec(f"{user}#{i}", seed=i) for i in range(images))
    params = GenerationParams(model="stub", width=8, height=8, steps=1, guidance=1.0)
    return GenerationJob(user_id=user, params=params, images=specs)


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    ],
)
async def test_out_of_memory_as_a_plain_runtime_error_splits_the_batch(message: str) -> None:
    from models.queue import GenerationQueue

    runner = CudaFailingRunner(oom=message, fits=1)
    async with GenerationQueue(runner, max_batch=4) as queue:
        result = await asyncio.wait_for(queue.submit(stub_job("alice", 4)).result(), 5)
    assert len(result.images) == 4
    assert runner.calls == [4, 2, 1, 1, 2, 1, 1]


STICKY = "CUDA error: an illegal memory access was encountered"


async def test_a_sticky_cuda_error_replaces_the_worker_and_the_job_goes_on() -> None:
    from models.queue import GenerationQueue

    runner = RestartableRunner(sticky=STICKY, sticky_calls=1)
    async with GenerationQueue(runner, max_batch=4) as queue:
        result = await asyncio.wait_for(queue.submit(stub_job("alice", 2)).result(), 5)
        assert runner.restarts == 1 and runner.calls == [2, 2]
        assert len(result.images) == 2 and queue.worker_names == ("generator",)
        later = await asyncio.wait_for(queue.submit(stub_job("bob", 1)).result(), 5)
        assert len(later.images) == 1  # the replaced worker keeps serving


async def test_a_sticky_cuda_error_without_restart_hands_the_batch_on(caplog) -> None:
    """A local device cannot get a new CUDA context in this process: its worker leaves, and
    its batch runs elsewhere instead of every later job failing on the broken device."""
    from models.queue import GenerationQueue

    broken = CudaFailingRunner(sticky="CUDA error: device-side assert triggered", sticky_calls=99)
    broken.device = "cuda:0"
    healthy = CudaFailingRunner()
    healthy.device = "cuda:1"
    async with GenerationQueue([broken, healthy], max_batch=4) as queue:
        handles = [queue.submit(stub_job(user, 2)) for user in ("alice", "bob", "carol")]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 5)
        assert all(len(r.images) == 2 for r in results)
        assert queue.worker_names == ("generator/cuda:1",)
    assert broken.calls == [2] or broken.calls == [4]  # one call, then it left
    assert "restart the bot" in caplog.text


def test_the_runner_reports_cuda_failures_in_the_queues_terms() -> None:
    from models.jobs import DeviceBroken, OutOfMemory
    from models.runner import _out_of_memory_as_ours

    with pytest.raises(OutOfMemory), _out_of_memory_as_ours("cpu"):
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate")
    with pytest.raises(DeviceBroken), _out_of_memory_as_ours("cpu"):
        raise RuntimeError(STICKY)
    with pytest.raises(RuntimeError, match="shapes"), _out_of_memory_as_ours("cpu"):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


class BreaksOncePerMarker:
    """A runner for a Ray actor: its first call anywhere hits a sticky CUDA error (and leaves
    ``marker`` behind); calls after that, in whichever process, succeed."""

    def __init__(self, marker: str) -> None:
        self.marker = Path(marker)
        self.device = "cpu"

    def __call__(self, params, specs, control):
        import os

        from PIL import Image

        from models.jobs import GeneratedImage

        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            raise RuntimeError(STICKY)
        return [GeneratedImage(spec, Image.new("RGB", (8, 8)), os.getpid()) for spec in specs]


async def test_a_ray_worker_with_a_broken_device_is_replaced_by_a_new_process(
    ray_local, tmp_path: Path
) -> None:
    import functools
    import os

    from models.queue import GenerationQueue
    from models.ray_workers import WorkerSpec, start_workers

    ray_local.cloudpickle.register_pickle_by_value(__import__(__name__))
    marker = tmp_path / "broke"
    spec = WorkerSpec(
        functools.partial(BreaksOncePerMarker, str(marker)), num_gpus=0, num_cpus=0.25
    )
    [runner] = start_workers(spec, count=1, name="fragile")
    first_actor = runner.actor
    try:
        async with GenerationQueue(runner, max_batch=2) as queue:
            result = await asyncio.wait_for(queue.submit(stub_job("alice", 2)).result(), 60)
        broken_pid = int(marker.read_text())
        assert {image.seed for image in result.images} - {broken_pid, os.getpid()}  # a new pid
        assert runner.actor is not first_actor
    finally:
        ray_local.kill(runner.actor)


# -- 7. DeepFloyd IF takes the whole device, and gives it back when stage I fails -------------


class FailingStage:
    """Stands in for IF's stage I: encodes, then fails mid-call (a cancel, an error)."""

    def encode_prompt(self, prompts, **kwargs):
        return None, None

    def __call__(self, **kwargs):
        raise RuntimeError("stage I failed")


def test_switching_to_if_clears_every_cache_and_a_failed_stage_one_is_freed(
    runner: DiffusersRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner(embedded(), SPECS, NoControl())  # an SD pipeline and its prompt embeddings
    runner._img2img[runner.loaded[0]] = object()  # and its image-to-image form
    assert runner._embeddings and runner._img2img
    events: list[str] = []
    monkeypatch.setattr(runner, "_load_if_stage", lambda *a, **k: FailingStage())
    monkeypatch.setattr(runner, "_free_memory", lambda: events.append("freed"))
    if_params = GenerationParams("deepfloyd-if", 256, 256, steps=2, guidance=7.0)
    with pytest.raises(RuntimeError, match="stage I failed"):
        runner(if_params, SPECS[:1], NoControl())
    # Nothing of the SD model stays on the device: not its pipeline, embeddings or img2img form.
    assert (runner.loaded, runner._embeddings, runner._img2img) == ([], {}, {})
    assert events == ["freed", "freed"]  # before stage I loads, and after it failed


# -- 4. a Ray started here and the in-process workers never share a GPU -----------------------


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch reports two CUDA devices (nothing touches them: runners load lazily)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """models.ray_workers without Ray: a Ray started on this machine puts one actor on each
    of its GPUs, as Ray's own GPU assignment does."""
    import torch

    import models.ray_workers as ray_workers

    started: list[Any] = []

    def start_workers(spec, *, count, **kwargs):
        assert count == 0  # one per GPU of the cluster
        runners = [
            ray_workers.RayRunner(None, name=f"ray{i}", device=f"cuda:{i}")
            for i in range(torch.cuda.device_count())
        ]
        started.extend(runners)
        return runners

    monkeypatch.setattr(ray_workers, "connect", lambda address, **options: False)
    monkeypatch.setattr(ray_workers, "start_workers", start_workers)
    monkeypatch.setattr(ray_workers.RayWorkers, "close", lambda self: None)
    return started


def test_a_local_ray_and_local_devices_never_take_one_gpu_twice(
    two_gpus: None, fake_ray: list[Any], tmp_path: Path
) -> None:
    from bot.app.runners import build_runners
    from bot.app.settings import Settings
    from models.errors import NoWorkers

    settings = Settings(_env_file=None, cache_dir=tmp_path, ray_address="local")  # type: ignore[call-arg]
    runners, release = build_runners(settings)
    release()
    gpus = [runner.device for runner in runners if runner.device.startswith("cuda")]
    assert sorted(gpus) == ["cuda:0", "cuda:1"]  # each once: the Ray actors have them
    assert fake_ray and all(runner in runners for runner in fake_ray)
    # Naming a GPU for an in-process worker too is refused, with what to change.
    with pytest.raises(NoWorkers, match="COVER_DEVICES"):
        build_runners(settings.model_copy(update={"devices": "cuda:0"}))
    # A cluster elsewhere has GPUs of its own: the local ones still get their workers.
    remote = settings.model_copy(update={"ray_address": "ray://head:10001"})
    runners, release = build_runners(remote)
    release()
    assert len([r for r in runners if r.device.startswith("cuda")]) == 4


# -- 5. the stage clock waits for the GPU before reading the time -----------------------------


def test_the_stage_clock_synchronises_cuda_at_every_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CUDA kernels run asynchronously: without a synchronize the UNet's and decoder's time
    is charged to whatever next waits for the GPU (post-processing's copy to the CPU)."""
    import types

    import torch

    from modeltools.benchmark.stages import StageClock

    synced: list[Any] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    unet = torch.nn.Linear(2, 2)
    pipe = types.SimpleNamespace(
        device=torch.device("cuda:1"),  # what a pipeline on the second GPU reports
        unet=unet,
        vae=types.SimpleNamespace(decode=lambda latents: latents),
        image_processor=types.SimpleNamespace(postprocess=lambda pixels: pixels),
    )
    with StageClock(pipe) as clock:
        unet(torch.zeros(1, 2))
        pipe.vae.decode(1)
        pipe.image_processor.postprocess(2)
        times = clock.times()
    assert times.calls["UNet"] == times.calls["decoder"] == 1
    # start, then before and after each of the three stages, then the final reading
    assert len(synced) == 1 + 2 * 3 + 1
    assert set(synced) == {torch.device("cuda:1")}


def test_the_stage_clock_on_a_cpu_synchronises_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import torch

    from modeltools.benchmark.stages import StageClock

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: pytest.fail("synced"))
    unet = torch.nn.Linear(2, 2)
    with StageClock(types.SimpleNamespace(device=torch.device("cpu"), unet=unet)) as clock:
        unet(torch.zeros(1, 2))
    assert clock.times().calls["UNet"] == 1


# -- 6. --compare's baseline is what the docs say it is ---------------------------------------


def test_the_baseline_loads_in_float32_on_a_gpu_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs call the baseline a pipeline as diffusers loads it, in float32; loading it in
    the preset's half precision on CUDA credited the baseline with one of our optimisations."""
    import models.registry
    from modeltools.benchmark.run import load_baseline

    asked: dict[str, Any] = {}
    monkeypatch.setattr(models.registry, "load_pipeline", lambda model, **kw: asked.update(kw))
    load_baseline("sd15-random", device="cuda", cache_dir=Path("."), allow_downloads=False)
    assert asked["half_precision"] is False and asked["device"] == "cuda"


async def test_the_comparison_labels_its_baseline_and_keeps_each_sides_memory_its_own(
    runner: DiffusersRunner,
) -> None:
    from models.queue import GenerationQueue
    from models.registry import resolve_model
    from modeltools.benchmark.run import load_baseline, run_comparison, weights_bytes
    from modeltools.benchmark.workload import Workload

    params = embedded(steps=1)
    pipe = load_baseline(
        resolve_model("embedded"), device="cpu", cache_dir=runner.cache_dir, allow_downloads=False
    )
    assert weights_bytes(pipe) == sum(
        t.numel() * t.element_size()
        for m in (pipe.unet, pipe.vae, pipe.text_encoder)
        for t in [*m.parameters(), *m.buffers()]
    )
    async with GenerationQueue(runner, max_batch=2) as queue:
        comparison = await run_comparison(
            pipe, queue, params, device="cpu", workloads=[Workload.concurrent(1, 1)], repeats=1
        )
    assert comparison.baseline.setup.endswith("float32")
    assert "float32" in comparison.table()
    for side in (comparison.baseline, comparison.ours):
        assert side.memory_kind.endswith("less the other side's weights")


# -- 9. the peak table tells H100 variants apart -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),  # SXM
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_the_peak_table_picks_the_variant(
    monkeypatch: pytest.MonkeyPatch, name: str, peak: float | None
) -> None:
    import torch

    from modeltools.benchmark.flops import peak_tflops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_tflops("cuda:0") == peak
    assert peak_tflops("cpu") is None


# -- 11. a NaN image is reported as NaN, not as the safety checker's doing --------------------


def test_a_nan_image_is_logged_as_nan_not_as_safety_blocked(
    runner: DiffusersRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """Half precision can overflow (the UNet or the VAE) into NaN, which turns into a black
    picture; calling it the safety checker's verdict sends people after the wrong cause."""
    import logging

    import torch

    runner.black_retries = 0
    runner(embedded(steps=1), SPECS[:1], NoControl())
    pipe = runner._loaded[runner.loaded[0]]
    hook = pipe.vae.decoder.register_forward_hook(
        lambda module, args, out: torch.full_like(out, float("nan"))
    )
    try:
        with caplog.at_level(logging.WARNING, logger="models.runner"):
            [image] = runner(embedded(steps=1), SPECS[:1], NoControl())
    finally:
        hook.remove()
    assert image.blocked  # never handed over as a cover
    assert "NaN" in caplog.text and "not a safety" in caplog.text


# -- 11. the image refuses to start on the CPU unless told to -----------------------------------


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({}, True),  # a GPU image that sees no GPU: the driver or --gpus all is missing
        ({"COVER_DEVICE": "cpu"}, False),
        ({"COVER_DEVICES": "cpu"}, False),
        ({"COVER_DEVICES": "none"}, False),  # Ray workers elsewhere do the work
        ({"COVER_EXPECT_GPU": "0"}, False),
        ({"COVER_DEVICES": "cuda:0"}, True),
    ],
)
def test_a_gpu_image_without_a_gpu_fails_loudly(
    env: dict[str, str], refused: bool, tmp_path: Path
) -> None:
    from models.device_check import problems

    found = problems(env, cuda_available=False, torch_cuda="12.8", data_dir=tmp_path)
    assert bool(found) is refused
    if refused:
        assert "--gpus all" in found[0] and "12.8" in found[0] and "COVER_DEVICE=cpu" in found[0]
    assert problems(env, cuda_available=True, torch_cuda="12.8", data_dir=tmp_path) == []


def test_an_unwritable_data_volume_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.device_check as check

    blocked = tmp_path / "file"  # we are root here: modes stop nothing, a file in the way does
    blocked.write_text("")
    assert check._writable(tmp_path) and not check._writable(blocked / "data")
    monkeypatch.setattr(check, "_writable", lambda folder: False)
    [found] = check.problems({}, cuda_available=True, torch_cuda=None, data_dir=tmp_path)
    assert "chown -R 10001:10001" in found and "named volume" in found
    env = {"COVER_DATA_DIR": str(tmp_path), "COVER_EXPECT_GPU": "0"}
    assert check.main(["true"], env=env) == 1  # refused before the command runs
    assert check.main([], env=env) == 2


# -- the GPU check script, dry-run on the CPU ---------------------------------------------------


def test_the_gpu_check_script_runs_dry_on_the_cpu(
    tmp_path: Path, cache_dir: Path, embedded_model_dir: Path
) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT_DIR": str(tmp_path),
        "COVER_CACHE_DIR": str(cache_dir),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["bash", str(root / "scripts" / "gpu-check.sh"), "--dry-run"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(tmp_path.glob("compare-cpu-*.md"))
    assert list(tmp_path.glob("prompt-cache-memory-cpu-*.json"))
    assert "gpu-check: done" in done.stderr


# -- 3. compiled buckets do not run out silently ------------------------------------------------


def test_the_recompile_limit_covers_buckets_devices_and_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch._dynamo

    from models.optimize import BATCH_BUCKETS

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    Optimizations(compile=True).allow_recompiles(devices=4, models=2)
    assert torch._dynamo.config.recompile_limit >= len(BATCH_BUCKETS) * 4 * 2
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    Optimizations().allow_recompiles(devices=4, models=2)  # eager: nothing to recompile
    assert torch._dynamo.config.recompile_limit == 8
