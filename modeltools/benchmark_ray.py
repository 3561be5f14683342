"""The multi-worker benchmark: 1 vs 2 Ray workers, and what a batch costs through Ray.

    local Ray (``--cpus`` logical CPUs) ─► two actors, one torch thread each, pipeline loaded
        │
    throughput, ``--rounds`` rounds; each round runs every side once, in a rotated order
    (the machine is shared: alternating spreads its noise over all sides):
        in-process 1 thread · Ray 1 worker · Ray 2 workers
        each: ``--jobs`` jobs of ``--images`` images from different users at once ─► images/s
        │
    overhead: the same rounds with a runner that does no work (EchoRunner: tiny images and
    ``--steps`` progress reports), one 1-image job at a time, in-process vs one Ray worker ─►
    milliseconds per batch that are the queue's and Ray's own
        ▼
    medians with n and the spread (min–max) ─► table on stdout, ray-<time>.json and .md

``python -m modeltools.benchmark_ray --out docs/benchmarks`` (needs the ray extra). It starts and
stops a Ray of its own and builds the embedded model in the cache if it is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from models.jobs import GeneratedImage, GenerationJob, GenerationParams, ImageSpec, RunControl
from modeltools.benchmark import default_cache_dir
from modeltools.benchmark.submit import submit_and_wait

SIDES = ("in-process, 1 thread", "Ray, 1 worker", "Ray, 2 workers")
OVERHEAD_SIDES = ("in-process", "Ray")


class EchoRunner:
    """A runner without a model: reports ``params.steps`` steps and returns 8 px images, so
    the time a batch takes is the queue's (and Ray's) own."""

    device = "none"

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]:
        for step in range(1, params.steps + 1):
            control.step(step, params.steps)
        return [GeneratedImage(spec, Image.new("RGB", (8, 8)), spec.seed) for spec in specs]


@dataclass
class Samples:
    """Measurements of one side, in the order taken."""

    values: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        return {
            "n": len(self.values),
            "median": statistics.median(self.values),
            "min": min(self.values),
            "max": max(self.values),
        }


def _jobs(count: int, images: int, params: GenerationParams, tag: str) -> list[GenerationJob]:
    return [
        GenerationJob(
            user_id=f"bench-{i}",  # one user per job: the per-user limit does not bind
            params=params,
            images=tuple(
                ImageSpec(f"{tag} playlist cover image", seed=i * images + k) for k in range(images)
            ),
            label="benchmark",
        )
        for i in range(count)
    ]


async def _throughput(runners: Sequence[Any], jobs: list[GenerationJob], max_batch: int) -> float:
    """Images per second for ``jobs`` submitted at once to a queue over ``runners``."""
    from models.queue import GenerationQueue

    async with GenerationQueue(
        list(runners), max_pending=len(jobs), max_batch=max_batch, job_timeout_s=3600
    ) as queue:
        timed = await submit_and_wait(queue, jobs)
    elapsed = max(done for _, _, done in timed) - min(sent for sent, _, _ in timed)
    return sum(len(result.images) for _, result, _ in timed) / elapsed


async def _per_batch_ms(runner: Any, params: GenerationParams, calls: int) -> float:
    """Milliseconds from submit to result of a 1-image job, one job at a time (median)."""
    from models.queue import GenerationQueue

    times = []
    async with GenerationQueue(runner) as queue:
        for job in _jobs(calls, 1, params, "overhead"):
            [(sent, _, done)] = await submit_and_wait(queue, [job])
            times.append((done - sent) * 1000)
    return statistics.median(times)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modeltools.benchmark_ray",
        description="Throughput with 1 vs 2 Ray workers and the per-batch overhead of Ray, "
        "side by side in one run, on the embedded model.",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every side (5)")
    parser.add_argument("--jobs", type=int, default=8, help="jobs at once per throughput run (8)")
    parser.add_argument("--images", type=int, default=4, help="images per job (4)")
    parser.add_argument("--max-batch", type=int, default=4, help="images per call (4)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (20)")
    parser.add_argument("--overhead-calls", type=int, default=20, help="jobs per overhead run")
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs of the local Ray (2)")
    parser.add_argument(
        "--runner",
        choices=("embedded", "echo"),
        default="embedded",
        help="what the throughput sides run: the embedded model (default), or echo – no model, "
        "only the queue's and Ray's own work (a smoke run in seconds)",
    )
    parser.add_argument("--cache-dir", type=Path, help="project cache (default: the user's)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local instance
    import torch

    from models.embedded import ensure_embedded
    from models.ray_workers import WorkerSpec, connect, import_ray, start_workers
    from models.registry import resolve_model
    from models.runner import DiffusersRunner

    ray = import_ray()
    model = resolve_model("embedded")
    params = GenerationParams(
        "embedded", model.native_size, model.native_size, args.steps, model.guidance
    )
    if args.runner == "echo":
        make_runner: Any = EchoRunner
    else:
        cache_dir = args.cache_dir or default_cache_dir()
        ensure_embedded(cache_dir)
        make_runner = functools.partial(DiffusersRunner, device="cpu", cache_dir=cache_dir)
    say = functools.partial(print, file=sys.stderr, flush=True)

    # 1. Two actors with one torch thread each, and an in-process runner on one thread too.
    began = datetime.now(UTC)
    connect("local", num_cpus=args.cpus)
    try:
        spec = WorkerSpec(make_runner, num_gpus=0, num_cpus=1, torch_threads=1)
        actors = start_workers(spec, count=2, name="bench")
        echo = start_workers(WorkerSpec(EchoRunner, num_gpus=0, num_cpus=0), count=1, name="echo")
        torch.set_num_threads(1)
        local = make_runner()
        sides = {SIDES[0]: [local], SIDES[1]: actors[:1], SIDES[2]: actors}
        warm = _jobs(2, 1, params, "warm-up")
        asyncio.run(_throughput(actors, warm, 1))  # one call on each actor loads its pipeline
        asyncio.run(_throughput([local], warm[:1], 1))

        # 2. Rounds: every side once per round, the order rotated from round to round.
        throughput = {side: Samples() for side in SIDES}
        overhead = {side: Samples() for side in OVERHEAD_SIDES}
        overhead_runners = {"in-process": EchoRunner(), "Ray": echo[0]}
        for number in range(args.rounds):
            shift = number % len(SIDES)
            for side in SIDES[shift:] + SIDES[:shift]:
                jobs = _jobs(args.jobs, args.images, params, f"round {number}")
                value = asyncio.run(_throughput(sides[side], jobs, args.max_batch))
                throughput[side].values.append(value)
                say(f"round {number + 1}/{args.rounds}: {side}: {value:.2f} images/s")
            for side in OVERHEAD_SIDES[number % 2 :] + OVERHEAD_SIDES[: number % 2]:
                value = asyncio.run(
                    _per_batch_ms(overhead_runners[side], params, args.overhead_calls)
                )
                overhead[side].values.append(value)
                say(f"round {number + 1}/{args.rounds}: overhead {side}: {value:.1f} ms/batch")
    finally:
        ray.shutdown()

    # 3. Report.
    report = {
        "started_at": began.isoformat(timespec="seconds"),
        # The settings that shape the numbers; never a path of this machine.
        "command": (
            f"python -m modeltools.benchmark_ray --rounds {args.rounds} --jobs {args.jobs} "
            f"--images {args.images} --max-batch {args.max_batch} --steps {args.steps} "
            f"--overhead-calls {args.overhead_calls} --cpus {args.cpus} --runner {args.runner}"
        ),
        "machine": f"{os.cpu_count()} CPU cores, shared with other work; no GPU",
        "model": "embedded" if args.runner == "embedded" else "none (echo runner)",
        "params": {"size": params.width, "steps": params.steps, "guidance": params.guidance},
        "workload": {"jobs": args.jobs, "images_per_job": args.images, "max_batch": args.max_batch},
        "versions": {"ray": ray.__version__, "torch": torch.__version__},
        "throughput_images_per_s": {side: s.summary() for side, s in throughput.items()},
        "overhead_ms_per_batch": {side: s.summary() for side, s in overhead.items()},
        "raw": {
            "throughput": {side: s.values for side, s in throughput.items()},
            "overhead": {side: s.values for side, s in overhead.items()},
        },
    }
    table = render_table(report)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"ray-{began:%Y%m%dT%H%M%SZ}"
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    Path(f"{stem}.md").write_text(
        f"# Ray workers on this machine, {began:%Y-%m-%d}\n\n```\n{report['command']}\n```\n\n"
        f"```\n{table}\n```\n",
        encoding="utf-8",
    )
    print(f"{stem}.json\n{stem}.md")
    return 0


def render_table(report: dict[str, Any]) -> str:
    """The report as plain text: medians, spread and n per side, and the speed-ups."""
    lines = [
        f"{report['model']}, {report['params']['size']} px, {report['params']['steps']} steps; "
        f"{report['workload']['jobs']} jobs x {report['workload']['images_per_job']} images, "
        f"max batch {report['workload']['max_batch']}; {report['machine']}",
        "",
        f"{'throughput':<24}{'median img/s':>14}{'min-max':>16}{'n':>4}",
    ]
    through = report["throughput_images_per_s"]
    for side, s in through.items():
        lines.append(f"{side:<24}{s['median']:>14.2f}{s['min']:>9.2f}-{s['max']:<6.2f}{s['n']:>4}")
    one, two = through[SIDES[1]]["median"], through[SIDES[2]]["median"]
    lines.append(f"speed-up 2 vs 1 Ray worker (medians): {two / one:.2f}x")
    lines.append(f"Ray 1 worker vs in-process (medians): {one / through[SIDES[0]]['median']:.2f}x")
    lines += ["", f"{'overhead per batch':<24}{'median ms':>14}{'min-max':>16}{'n':>4}"]
    for side, s in report["overhead_ms_per_batch"].items():
        lines.append(f"{side:<24}{s['median']:>14.1f}{s['min']:>9.1f}-{s['max']:<6.1f}{s['n']:>4}")
    over = report["overhead_ms_per_batch"]
    lines.append(
        f"Ray adds (medians): {over['Ray']['median'] - over['in-process']['median']:.1f} ms "
        f"per batch ({report['params']['steps']} progress reports relayed)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
