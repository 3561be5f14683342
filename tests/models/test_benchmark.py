"""The generation benchmark: its maths, its runs through the real queue with a fake runner
(numbers, batching, priority, errors, cancelling), its table/chart/files, and one real CLI run on
the embedded tiny model.

As in tests/models/test_queue.py the queue is the real one and only the runner is ours; every wait is
guarded, so a bug fails a test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import GenerationFailed, QueueFull
from models.jobs import (
    GeneratedImage,
    GenerationJob,
    GenerationParams,
    ImageSpec,
    JobResult,
    RunControl,
)
from models.queue import GenerationQueue
from modeltools.benchmark import (
    CUDA_MEMORY,
    DEFAULT_PROMPT,
    DEFAULT_WORKLOADS,
    SAMPLED_RSS,
    TABLE_LIMIT,
    BenchmarkReport,
    MemoryProbe,
    Workload,
    WorkloadResult,
    images_per_worker,
    main,
    percentile,
    pipeline_calls,
    read_rss_bytes,
    render_chart,
    run_queue_benchmark,
    write_report,
)

GUARD_S = 10.0  # no test waits longer than this for anything
ROOT = Path(__file__).resolve().parents[2]
PARAMS = GenerationParams(model="tiny", width=8, height=8, steps=2, guidance=1.0)
MiB = 2**20


class FakeRunner:
    """Records each call's specs, sleeps a little per call and per image, returns small images.
    It can be held at ``gate`` (``entered`` is set when a call begins) and can crash on a seed."""

    def __init__(self, *, crash_on_seed: int | None = None) -> None:
        self.crash_on_seed = crash_on_seed
        self.calls: list[list[ImageSpec]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]:
        self.calls.append(list(specs))
        self.entered.set()
        if not self.gate.wait(GUARD_S):
            raise RuntimeError("test gate never opened")
        if any(spec.seed == self.crash_on_seed for spec in specs):
            raise RuntimeError("runner exploded")
        for step in range(1, params.steps + 1):
            time.sleep(0.002 + 0.0005 * len(specs))
            control.step(step, params.steps)
        return [
            GeneratedImage(spec, Image.new("RGB", (params.width, params.height)), spec.seed)
            for spec in specs
        ]

    @property
    def sizes(self) -> list[int]:
        return [len(specs) for specs in self.calls]

    @property
    def prompts(self) -> list[str]:
        """The prompt of each call's first image, in call order."""
        return [specs[0].prompt for specs in self.calls]


async def started_queue(runner: FakeRunner, **kwargs) -> GenerationQueue:
    queue = GenerationQueue(runner, **{"max_pending": 64, **kwargs})
    await queue.start()
    return queue


async def bench(queue: GenerationQueue, **kwargs) -> BenchmarkReport:
    return await asyncio.wait_for(
        run_queue_benchmark(queue, PARAMS, device="cpu", **kwargs), GUARD_S
    )


def sample_report(workloads: Sequence[Workload] = DEFAULT_WORKLOADS) -> BenchmarkReport:
    results = tuple(
        WorkloadResult(
            workload=w,
            images=w.requests * w.images_per_request,
            wall_s=0.5 * (i + 1),
            images_per_s=w.requests * w.images_per_request / (0.5 * (i + 1)),
            latency_p50_s=0.3 * (i + 1),
            latency_p95_s=0.45 * (i + 1),
            batch_sizes=(8,) * i or (4,),
        )
        for i, w in enumerate(workloads)
    )
    return BenchmarkReport(
        model="embedded",
        device="cpu",
        width=128,
        height=128,
        steps=2,
        guidance=7.5,
        results=results,
        peak_memory_bytes=734 * MiB,
        memory_kind=SAMPLED_RSS,
        torch_version="2.13.0+cpu",
        started_at="2026-01-02T03:04:05+00:00",
        total_s=4.25,
        max_batch=8,
    )


# -- maths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([7.0], 0, 7.0),
        ([7.0], 50, 7.0),
        ([7.0], 95, 7.0),
        ([1.0, 2.0], 0, 1.0),
        ([1.0, 2.0], 50, 1.5),
        ([1.0, 2.0], 95, 1.95),
        ([1.0, 2.0], 100, 2.0),
        ([3.0, 1.0, 5.0, 2.0, 4.0], 0, 1.0),  # unsorted input
        ([3.0, 1.0, 5.0, 2.0, 4.0], 50, 3.0),
        ([3.0, 1.0, 5.0, 2.0, 4.0], 95, 4.8),  # p = 4 * 0.95 = 3.8 → 4 + 0.8 * (5 - 4)
        ([3.0, 1.0, 5.0, 2.0, 4.0], 100, 5.0),
        ([30.0, 0.0, 20.0, 10.0], 25, 7.5),  # p = 0.75 → 0 + 0.75 * 10
    ],
)
def test_percentile_analytic_cases(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_agrees_with_numpy_and_leaves_its_input_alone():
    rng = random.Random(3)
    for n in (1, 2, 3, 10, 101):
        values = [rng.uniform(-5, 5) for _ in range(n)]
        before = list(values)
        for q in (0, 12.5, 50, 95, 99, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q))
        assert values == before


def test_percentile_refuses_empty_input_and_bad_q():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="`q`"):
        percentile([1.0], 101)


def result(images: int, sizes: tuple[int, ...]) -> JobResult:
    spec = ImageSpec("p")
    return JobResult("id", (GeneratedImage(spec, None, 0),) * images, 0.0, 0.0, sizes)


def test_pipeline_calls_are_counted_once_however_many_jobs_shared_them():
    assert pipeline_calls([result(4, (4,))]) == (4,)
    assert pipeline_calls([result(4, (8,))] * 4) == (8, 8)  # four jobs, two calls of 8
    assert pipeline_calls([result(6, (8,)), result(2, (8,)), result(4, (4,))]) == (8, 4)
    assert pipeline_calls([result(7, (3, 3, 1))]) == (3, 3, 1)  # one job in chunks
    assert pipeline_calls([]) == ()


def test_images_per_worker_counts_each_call_for_its_worker():
    def on(images: int, sizes: tuple[int, ...], workers: tuple[str, ...]) -> JobResult:
        return JobResult("id", result(images, sizes).images, 0.0, 0.0, sizes, workers)

    assert images_per_worker([on(4, (4,), ("gpu0",)), on(4, (8,), ("gpu1",))]) == (
        ("gpu0", 4),
        ("gpu1", 4),
    )
    # A job in chunks on two workers (one was lost in between), and one without workers.
    assert images_per_worker([on(6, (4, 2), ("gpu0", "gpu1")), result(2, (2,))]) == (
        ("gpu0", 4),
        ("gpu1", 2),
    )


async def test_several_workers_are_reported_per_device_and_in_total():
    queue = await started_queue([FakeRunner(), FakeRunner()], max_batch=4)
    try:
        report = await bench(queue, workloads=[Workload.concurrent(4)])
    finally:
        await queue.close()
    [row] = report.results
    assert sum(count for _, count in row.per_worker) == row.images == 16
    # Four calls at once: while one worker's call runs, the other takes the next.
    assert sorted(name for name, _ in row.per_worker) == ["generator/0", "generator/1"]
    assert "per device: generator/" in report.table()
    assert BenchmarkReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_workload_names_and_checks():
    assert tuple(Workload.concurrent(n) for n in (1, 4, 8)) == DEFAULT_WORKLOADS
    with pytest.raises(ValueError, match="requests"):
        Workload("none", 0)
    with pytest.raises(ValueError, match="images_per_request"):
        Workload("empty", 1, 0)


# -- runs through the queue ------------------------------------------------------------------


async def test_report_numbers_and_batching_from_a_fake_runner():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=8)
    report = await bench(queue)
    await queue.close()

    assert [r.workload for r in report.results] == list(DEFAULT_WORKLOADS)
    assert [r.images for r in report.results] == [4, 16, 32]
    for r in report.results:
        assert r.images_per_s == pytest.approx(r.images / r.wall_s)
        assert 0 < r.latency_p50_s <= r.latency_p95_s <= r.wall_s
    # The queue merged concurrent requests into calls of max_batch images.
    assert [r.batch_sizes for r in report.results] == [(4,), (8, 8), (8, 8, 8, 8)]
    assert runner.sizes == [1, 4, 8, 8, 8, 8, 8, 8]  # the warm-up first, not counted
    assert {spec.prompt for call in runner.calls for spec in call} == {DEFAULT_PROMPT}
    assert report.total_s >= sum(r.wall_s for r in report.results)
    assert (report.model, report.device, report.width, report.steps) == ("tiny", "cpu", 8, 2)
    assert report.max_batch == 8
    assert report.memory_kind == SAMPLED_RSS and report.peak_memory_bytes > 10 * MiB
    assert report.torch_version == importlib.metadata.version("torch")


async def test_a_smaller_max_batch_shows_in_the_batch_sizes():
    runner = FakeRunner()
    queue = await started_queue(runner, max_batch=4)
    report = await bench(queue, workloads=[Workload("3 x 2", 3, 2)], warmup=False)
    await queue.close()
    assert report.results[0].images == 6
    assert report.results[0].batch_sizes == (4, 2)
    assert runner.sizes == [4, 2]  # no warm-up call
    # Every request has its own user and its own seeds.
    assert sorted(spec.seed for call in runner.calls for spec in call) == list(range(6))


async def test_users_jobs_run_before_the_benchmarks_waiting_ones():
    runner = FakeRunner()
    runner.gate.clear()
    queue = await started_queue(runner, max_batch=4)  # one benchmark request per call
    task = asyncio.create_task(
        bench(queue, workloads=[Workload("3 x 4", 3, 4)], warmup=False, prompt="bench")
    )
    assert await asyncio.to_thread(runner.entered.wait, GUARD_S)  # request 0 is running
    user = queue.submit(
        GenerationJob(user_id="alice", params=PARAMS, images=(ImageSpec("user"),), priority=0)
    )
    runner.gate.set()
    await asyncio.wait_for(user.result(), GUARD_S)
    report = await task
    await queue.close()
    assert runner.prompts == ["bench", "user", "bench", "bench"]
    assert report.results[0].images == 12  # the user's image is not counted


async def test_a_refused_submission_propagates_and_leaves_no_benchmark_job():
    runner = FakeRunner()
    queue = await started_queue(runner, max_pending=3)
    with pytest.raises(QueueFull):
        await bench(queue, workloads=[Workload("too many", 5, 1)])
    await asyncio.sleep(0.05)  # the worker would have taken a leftover job by now
    assert queue.pending_count == 0 and queue.running == ()
    assert runner.sizes == [1]  # the warm-up only
    await queue.close()


async def test_a_failed_job_cancels_the_rest_and_propagates():
    runner = FakeRunner(crash_on_seed=4)  # the first image of request 1
    queue = await started_queue(runner, max_batch=4)
    with pytest.raises(GenerationFailed, match="RuntimeError"):
        await bench(queue, workloads=[Workload("4 x 4", 4, 4)], warmup=False)
    await asyncio.sleep(0.05)
    assert queue.pending_count == 0 and queue.running == ()
    # The worker may already have started request 2 (its call is then interrupted); request 3
    # was still waiting when the benchmark cancelled it.
    assert [call[0].seed for call in runner.calls][:2] == [0, 4]
    assert 12 not in [call[0].seed for call in runner.calls]
    await queue.close()


async def test_cancelling_the_benchmark_takes_its_jobs_out_of_the_queue():
    runner = FakeRunner()
    runner.gate.clear()
    queue = await started_queue(runner, max_batch=4)
    task = asyncio.create_task(bench(queue, workloads=[Workload("3 x 4", 3, 4)], warmup=False))
    assert await asyncio.to_thread(runner.entered.wait, GUARD_S)
    assert queue.pending_count == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.pending_count == 0 and queue.running == ()
    runner.gate.set()
    await asyncio.wait_for(queue.close(), GUARD_S)
    assert len(runner.calls) == 1


async def test_no_workloads_is_a_value_error():
    queue = await started_queue(FakeRunner())
    with pytest.raises(ValueError, match="workloads"):
        await bench(queue, workloads=[])
    await queue.close()


def test_the_rss_probe_keeps_the_peak_it_sampled():
    before = read_rss_bytes()
    assert before is not None and before > 0
    probe = MemoryProbe("cpu", interval_s=0.002)
    block = bytearray(b"\x01") * (64 * MiB)  # written, so its pages are resident
    time.sleep(0.1)
    del block  # freed: only a sample taken meanwhile can know the peak
    time.sleep(0.02)
    peak, kind = probe.stop()
    assert kind == SAMPLED_RSS
    assert peak >= before + 48 * MiB
    assert read_rss_bytes() < peak


# -- presenting ------------------------------------------------------------------------------


def test_table_names_every_workload_and_fits_a_discord_message():
    report = sample_report()
    table = report.table()
    assert len(table) < TABLE_LIMIT
    for r in report.results:
        assert r.workload.name in table
    assert "embedded on cpu" in table and "128x128" in table and "2 steps" in table
    assert "734 MiB" in table and SAMPLED_RSS in table
    assert "8+8" in table  # the batches of the third workload
    widths = {len(line) for line in table.splitlines()[1:-1]}  # header row and workload rows
    assert max(widths) - min(widths) <= 24  # columns line up; only "batches" is ragged


def test_table_stays_short_with_many_workloads():
    many = [Workload(f"workload number {n} with a long name", n) for n in range(1, 61)]
    table = sample_report(many).table()
    assert len(table) < TABLE_LIMIT
    assert "more workload(s) in the JSON" in table
    assert "peak memory" in table


def test_chart_is_an_image_of_the_requested_size_with_something_on_it():
    chart = render_chart(sample_report(), width=640, height=360)
    assert chart.mode == "RGB" and chart.size == (640, 360)
    pixels = np.asarray(chart)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    # The bars are drawn to scale: the tallest bar (last workload) reaches highest.
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 80) & (pixels[..., 2] < 130)
    columns = np.where(green.any(axis=0))[0]
    thirds = np.array_split(np.arange(640), 3)
    tops = [np.where(green[:, cols].any(axis=1))[0].min() for cols in thirds]
    assert len(columns) > 0 and tops[2] < tops[1] < tops[0]
    assert render_chart(sample_report()).size == (800, 450)


def test_write_report_round_trips_and_never_overwrites(tmp_path):
    report = sample_report()
    json_path, png_path = write_report(report, tmp_path / "out")
    assert json_path.name == "benchmark-20260102T030405Z.json" and png_path.suffix == ".png"
    data = json.loads(json_path.read_text())
    assert data == report.to_json()
    assert BenchmarkReport.from_json(data) == report
    with Image.open(png_path) as image:
        image.verify()
    again = write_report(report, tmp_path / "out")
    assert again[0] != json_path and again[0].exists() and json_path.exists()


# -- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--workloads", "1,x"], "--workloads"),
        (["--workloads", "0"], "--workloads"),
        (["--steps", "0"], "--steps"),
        (["--size", "100"], "multiple of 8"),
        (["--model", "no-such-model"], "Unknown model"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, complaint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and complaint in error


def test_importing_the_module_does_not_import_torch():
    code = "import sys, modeltools.benchmark; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_cli_on_the_embedded_model(tmp_path, cache_dir, embedded_model_dir):
    out = tmp_path / "benchmarks"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeltools.benchmark",
            "--steps",
            "2",
            "--workloads",
            "1,2",
            "--out",
            str(out),
            "--cache-dir",
            str(cache_dir),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        # One torch thread: on a small, shared CPU two threads that wait for each other's
        # barrier run 2-5x slower as soon as another process wants a core.
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "lone request" in done.stdout and "2 concurrent x 4" in done.stdout
    json_path, png_path = (Path(line) for line in done.stdout.strip().splitlines()[-2:])
    assert json_path.parent == out and png_path.suffix == ".png"
    report = BenchmarkReport.from_json(json.loads(json_path.read_text()))
    from models.registry import resolve_model

    native = resolve_model("embedded").native_size  # the benchmark runs at the model's own size
    assert (report.model, report.device, report.width, report.steps) == (
        "embedded",
        "cpu",
        native,
        2,
    )
    assert [r.images for r in report.results] == [4, 8]
    assert [r.batch_sizes for r in report.results] == [(4,), (8,)]
    for r in report.results:
        assert r.wall_s > 0 and r.images_per_s > 0 and 0 < r.latency_p50_s <= r.latency_p95_s
    assert report.peak_memory_bytes > 0 and report.total_s > 0
    with Image.open(png_path) as image:
        assert image.size == (800, 450)


@pytest.mark.gpu
async def test_cuda_peak_memory_on_the_embedded_model(cache_dir, embedded_model_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from models.runner import DiffusersRunner

    runner = DiffusersRunner(device="cuda", cache_dir=cache_dir)
    params = GenerationParams(model="embedded", width=128, height=128, steps=2, guidance=7.5)
    async with GenerationQueue(runner) as queue:
        report = await run_queue_benchmark(
            queue, params, device=runner.device, workloads=[Workload.concurrent(2)]
        )
    assert report.memory_kind == CUDA_MEMORY and report.peak_memory_bytes > 0
