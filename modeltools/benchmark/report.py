"""A benchmark's report and a side-by-side comparison: tables for Discord, files for the docs."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.jobs import GenerationParams
from modeltools.benchmark.formatting import (
    batches,
    byte_size,
    clip,
    installed_version,
    number,
    plain_json,
)
from modeltools.benchmark.stages import StageTimes
from modeltools.benchmark.workload import WorkloadResult

TABLE_LIMIT = 1500  # characters; a Discord message holds 2000, the table shares it with text


@dataclass(frozen=True)
class BenchmarkReport:
    model: str
    device: str
    width: int
    height: int
    steps: int
    guidance: float
    results: tuple[WorkloadResult, ...]
    peak_memory_bytes: int | None  # over the measured workloads, not the warm-up
    memory_kind: str  # what peak_memory_bytes is: CUDA_MEMORY, SAMPLED_RSS, LIFETIME_RSS, ...
    torch_version: str | None
    started_at: str  # ISO 8601, UTC
    total_s: float  # the whole run, warm-up included
    max_batch: int | None = None  # the queue's cap on images per pipeline call
    setup: str = "our queue"  # how the images were made (the baseline says so)
    stages: StageTimes | None = None  # one cover, stage by stage (modeltools/benchmark/stages.py)

    @classmethod
    def measured(
        cls,
        params: GenerationParams,
        device: str,
        results: Sequence[WorkloadResult],
        memory: tuple[int | None, str],
        started_at: datetime,
        began: float,
        *,
        max_batch: int | None = None,
        setup: str = "our queue",
    ) -> BenchmarkReport:
        """A report of a run that started at ``started_at`` (``began`` on perf_counter)."""
        return cls(
            model=params.model,
            device=device,
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance=params.guidance,
            results=tuple(results),
            peak_memory_bytes=memory[0],
            memory_kind=memory[1],
            torch_version=installed_version("torch"),
            started_at=started_at.isoformat(timespec="seconds"),
            total_s=time.perf_counter() - began,
            max_batch=max_batch,
            setup=setup,
        )

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON types (lists, not tuples): ``json.dumps`` takes it as is."""
        return plain_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchmarkReport:
        """The inverse of :meth:`to_json` (e.g. to compare with a report in docs/benchmarks)."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"results", "stages"}
        stages = data.get("stages")
        return cls(
            **{name: data[name] for name in fields if name in data},
            results=tuple(WorkloadResult.from_json(item) for item in data["results"]),
            stages=StageTimes.from_json(stages) if stages else None,
        )

    def table(self) -> str:
        """A fixed-width table for a Discord code block (under :data:`TABLE_LIMIT` characters):
        a header naming the setup, one row per workload, a footer with memory and totals."""
        header = clip(
            f"{self.model} on {self.device} · {self.width}x{self.height} px · "
            f"{self.steps} steps · guidance {self.guidance:g}"
            + (f" · max batch {self.max_batch}" if self.max_batch else ""),
            100,
        )
        name_width = min(28, max(len("workload"), *(len(r.workload.name) for r in self.results)))
        row = f"{{:<{name_width}}} {{:>6}} {{:>7}} {{:>7}} {{:>7}}  {{}}"
        columns = row.format("workload", "images", "img/s", "p50 s", "p95 s", "batches")
        rows = [
            row.format(
                clip(r.workload.name, name_width),
                r.images,
                number(r.images_per_s),
                number(r.latency_p50_s),
                number(r.latency_p95_s),
                clip(batches(r.batch_sizes), 24),
            )
            for r in self.results
        ]
        per_device = self.per_device_line()
        if self.stages is not None:  # where one cover's time went, before the totals
            lines = ["one cover, stage by stage:", *self.stages.lines()]
            per_device = "\n".join(lines) + "\n" + per_device
        footer = per_device + clip(
            f"peak memory {byte_size(self.peak_memory_bytes)} ({self.memory_kind}) · "
            f"total {self.total_s:.1f} s · torch {self.torch_version or 'not installed'}",
            120,
        )
        # Many workloads would overflow a message: keep the first ones, say how many are left.
        while rows:
            hidden = len(self.results) - len(rows)
            more = [f"… and {hidden} more workload(s) in the JSON"] if hidden else []
            text = "\n".join([header, columns, *rows, *more, footer])
            if len(text) < TABLE_LIMIT:
                return text
            rows.pop()
        return "\n".join([header, f"{len(self.results)} workload(s): see the JSON", footer])

    def per_device_line(self) -> str:
        """With several queue workers: each one's images and images/s over all workloads
        (the rows above are the totals), then a newline; else nothing."""
        images: defaultdict[str, int] = defaultdict(int)
        for result in self.results:
            for worker, count in result.per_worker:
                images[worker] += count
        if len(images) < 2:
            return ""
        wall = sum(result.wall_s for result in self.results)
        parts = [f"{w} {n} img ({number(n / wall)}/s)" for w, n in images.items()]
        return clip("per device: " + ", ".join(parts), 300) + "\n"


@dataclass(frozen=True)
class Comparison:
    """The same workloads run the baseline way and through our queue, in one process."""

    baseline: BenchmarkReport
    ours: BenchmarkReport
    optimizations: str  # Optimizations.describe() of our side
    unet_tflop_per_image: float | None = None
    peak_tflops: float | None = None  # the GPU's, when known
    repeats: int = 1  # runs per workload and side; each side's median run is kept

    def speedups(self) -> list[float]:
        return [
            ours.images_per_s / base.images_per_s
            for base, ours in zip(self.baseline.results, self.ours.results, strict=True)
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.to_json(),
            "ours": self.ours.to_json(),
            "optimizations": self.optimizations,
            "unet_tflop_per_image": self.unet_tflop_per_image,
            "peak_tflops": self.peak_tflops,
            "repeats": self.repeats,
            "speedups": self.speedups(),
        }

    def tflops(self, result: WorkloadResult) -> float | None:
        if self.unet_tflop_per_image is None:
            return None
        return result.images_per_s * self.unet_tflop_per_image

    def table(self) -> str:
        """Side by side: images/s and latency both ways, the speed-up, and the UNet's
        achieved TFLOP/s (and share of the GPU's peak, when known)."""
        head = self.ours
        lines = [
            f"{head.model} on {head.device} · {head.width}x{head.height} px · {head.steps} steps"
            f" · guidance {head.guidance:g} · max batch {head.max_batch}",
            f"ours: {self.optimizations} · median of {self.repeats} alternating run(s) per side",
            self.baseline.setup,
            f"{'workload':<18} {'base img/s':>10} {'ours img/s':>10} {'speed-up':>8} "
            f"{'base p50/p95 s':>15} {'ours p50/p95 s':>15} {'TFLOP/s':>8}",
        ]
        for base, ours, speedup in zip(
            self.baseline.results, self.ours.results, self.speedups(), strict=True
        ):
            achieved = self.tflops(ours)
            flops = "–" if achieved is None else f"{achieved:.3g}"
            if achieved is not None and self.peak_tflops:
                flops += f" ({achieved / self.peak_tflops:.0%})"
            lines.append(
                f"{clip(ours.workload.name, 18):<18} {number(base.images_per_s):>10} "
                f"{number(ours.images_per_s):>10} {speedup:>7.2f}x "
                f"{number(base.latency_p50_s) + '/' + number(base.latency_p95_s):>15} "
                f"{number(ours.latency_p50_s) + '/' + number(ours.latency_p95_s):>15} "
                f"{flops:>8}"
            )
        lines.append(
            f"peak memory: baseline {byte_size(self.baseline.peak_memory_bytes)}, "
            f"ours {byte_size(head.peak_memory_bytes)} ({head.memory_kind}) · "
            f"torch {head.torch_version or '?'}"
        )
        return "\n".join(lines)
