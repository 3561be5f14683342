"""``python -m modeltools.benchmark``: arguments, a queue of its own, the table and the files."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from models.errors import CoverError, ModelUnavailable
from models.jobs import GenerationParams
from models.optimize import Optimizations
from modeltools.benchmark.files import write_comparison, write_report
from modeltools.benchmark.report import BenchmarkReport, Comparison
from modeltools.benchmark.run import load_baseline, run_comparison, run_queue_benchmark
from modeltools.benchmark.workload import Workload


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr and exit status 2 (argparse prints its usage too)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _size(text: str) -> int:
    value = _positive(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 px, got {value}")
    return value


def _request_counts(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected request counts like 1,4,8 (whole numbers, at least 1), got {text!r}"
        )
    return [int(part) for part in parts]


def default_cache_dir() -> Path:
    """The project cache, as the bot's settings choose it (``COVER_CACHE_DIR``, else
    ``~/.cache/playlist-cover``); replicated here because ``models`` never imports ``bot``."""
    explicit = os.environ.get("COVER_CACHE_DIR")
    return Path(explicit).expanduser() if explicit else Path.home() / ".cache" / "playlist-cover"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m modeltools.benchmark",
        description="Measure images/s and latency of a model through the generation queue, "
        "print a table and write a JSON report and a bar chart.",
    )
    parser.add_argument("--model", default="embedded", help="registry name or diffusers folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--devices",
        help="several devices, one queue worker each, e.g. cuda:0,cuda:1 or auto (every CUDA "
        "device); the table then adds each device's share (overrides --device)",
    )
    parser.add_argument("--steps", type=_positive, help="denoising steps (default: the model's)")
    parser.add_argument("--size", type=_size, help="image side in px (default: the model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument(
        "--workloads",
        type=_request_counts,
        default=[1, 4, 8],
        help="concurrent requests per workload, comma-separated (default: 1,4,8)",
    )
    parser.add_argument("--images", type=_positive, default=4, help="images per request (4)")
    parser.add_argument("--max-batch", type=_positive, default=8, help="images per call (8)")
    parser.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks"), help="report folder (docs/benchmarks)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="project cache with the embedded model (default: $COVER_CACHE_DIR or "
        "~/.cache/playlist-cover, as the bot)",
    )
    parser.add_argument(
        "--allow-downloads", action="store_true", help="fetch hub models missing from the cache"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the baseline (one plain diffusers call per request, in turn) in the "
        "same process and print both side by side",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=3,
        help="with --compare: runs of each workload per side, alternating, median kept (3)",
    )
    parser.add_argument(
        "--opt",
        type=_optimizations,
        default=Optimizations(),
        metavar="NAME=VALUE,...",
        help="switch optimisations of our side, e.g. channels_last=off,compile=on "
        "(names: half_precision, sdpa, channels_last, compile, vae_slicing_from, "
        "vae_tiling_from, prompt_cache, previews_every, cpu_bfloat16=auto|on|off, "
        "decoder=auto|full|tiny, decoder_runtime=torch|openvino|onnx)",
    )
    parser.add_argument(
        "--stages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time one more cover stage by stage (text encoder, UNet, decoder, safety checker, "
        "post-processing) and print it under the table (default: on)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def _optimizations(text: str) -> Optimizations:
    try:
        return Optimizations().replace(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modeltools.benchmark``: exit 0 with the table on stdout and the two written
    paths after it; 2 for bad arguments (including an unknown model or device); 1 when the
    run fails with a :class:`~models.errors.CoverError`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from models.queue import GenerationQueue
    from models.registry import quiet_libraries, resolve_model
    from models.runner import DiffusersRunner

    quiet_libraries()
    # 1. Arguments that only the registry and torch can check.
    try:
        model = resolve_model(args.model)
        if args.compare and model.kind == "if":
            parser.error(
                f"--compare needs one diffusers pipeline; {model.name} runs two stages, "
                "which the queue side already calls plainly: run it without --compare."
            )
        from models.registry import local_devices

        devices = local_devices(args.devices) if args.devices else [args.device]
        runners = [
            DiffusersRunner(
                device=device,
                cache_dir=args.cache_dir or default_cache_dir(),
                allow_downloads=args.allow_downloads,
                optimizations=args.opt,
            )
            for device in devices
        ]
    except ModelUnavailable as error:
        parser.error(str(error))
    runner = runners[0]  # the baseline of --compare runs on the first device
    device = ", ".join(r.device for r in runners)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    size = args.size or model.native_size
    params = GenerationParams(
        model=args.model,
        width=size,
        height=size,
        steps=args.steps or model.steps,
        guidance=model.guidance if args.guidance is None else args.guidance,
    )
    workloads = [Workload.concurrent(n, args.images) for n in args.workloads]

    def say(line: str) -> None:
        print(f"benchmark: {line}", file=sys.stderr, flush=True)

    # 2. A queue of our own, big enough for the largest workload plus the warm-up.
    async def run() -> tuple[BenchmarkReport, Comparison | None]:
        async with GenerationQueue(
            runners,
            max_pending=max(w.requests for w in workloads) + 1,
            max_per_user=1,
            max_batch=args.max_batch,
            job_timeout_s=3600.0,  # a big model on a CPU is slow, not stuck
            name=runner.device if len(runners) == 1 else "bench",
        ) as queue:
            if not args.compare:
                report = await run_queue_benchmark(
                    queue,
                    params,
                    device=device,
                    workloads=workloads,
                    progress=say,
                    stages=args.stages,
                )
                return report, None
            # 3. Side by side: a plain pipeline of its own for the baseline.
            pipe = load_baseline(
                model,
                device=runner.device,
                cache_dir=runner.cache_dir,
                allow_downloads=args.allow_downloads,
            )
            comparison = await run_comparison(
                pipe,
                queue,
                params,
                device=runner.device,
                workloads=workloads,
                repeats=args.repeats,
                optimizations=args.opt.describe(),
                progress=say,
            )
            return comparison.ours, comparison

    try:
        report, comparison = asyncio.run(run())
    except CoverError as error:
        print(f"{parser.prog}: {error}", file=sys.stderr)
        return 1

    # 4. Show it and keep it.
    print(report.table())
    for path in write_report(report, args.out):
        print(path)
    if comparison is not None:
        print()
        print(comparison.table())
        command = "python -m modeltools.benchmark " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        for path in write_comparison(comparison, args.out, command):
            print(path)
    return 0
