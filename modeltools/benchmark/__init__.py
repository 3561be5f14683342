"""The generation benchmark: images per second and latency, measured through a GenerationQueue.

It goes through the same queue users go through, so what it measures is what they get: the
queue's batching of concurrent requests, its worker thread and the runner's real pipeline.

    warm-up job (loads the pipeline; not counted)
        │
    for each Workload: submit ``requests`` jobs at once ─► queue ─► runner
        │   per request: submit → result latency; per workload: first submit → last result
        │   peak memory: CUDA's allocator counter, or the process RSS sampled in a thread
        ▼
    BenchmarkReport ─► table() for Discord, render_chart() and write_report() for the docs

Two callers: the bot's admin ``/benchmark`` runs it on the bot's own, already running queue at a
low priority (users' jobs go first, so their work shows up in the numbers as waiting time), and
``python -m modeltools.benchmark`` builds a queue of its own. torch is imported lazily, and only for
CUDA's memory counters: the bot imports this module.

The package, one reason to change per file:

- ``workload.py``: what is measured (workloads, timed results) and the pure maths over them;
- ``submit.py``: benchmark jobs into a queue, and waiting for all of them;
- ``run.py``: running workloads through the queue, the plain-diffusers baseline, both alternating;
- ``stages.py``: where one cover's time goes, stage by stage;
- ``memory.py``: the peak-memory probe; ``flops.py``: the UNet's FLOPs and GPU peaks;
- ``report.py``: reports and comparisons as tables; ``chart.py``: the bar chart; ``files.py``:
  the JSON, chart and Markdown files they leave; ``formatting.py``: numbers and sizes as text;
- ``cli.py`` (and ``__main__.py``): ``python -m modeltools.benchmark``.
"""

from modeltools.benchmark.chart import render_chart
from modeltools.benchmark.cli import build_parser, default_cache_dir, main
from modeltools.benchmark.files import write_comparison, write_report
from modeltools.benchmark.flops import PEAK_TFLOPS, peak_tflops, unet_flop_per_image
from modeltools.benchmark.memory import (
    CUDA_MEMORY,
    LIFETIME_RSS,
    NOT_MEASURED,
    SAMPLED_RSS,
    MemoryProbe,
    read_rss_bytes,
)
from modeltools.benchmark.report import TABLE_LIMIT, BenchmarkReport, Comparison
from modeltools.benchmark.run import median_run, run_baseline, run_comparison, run_queue_benchmark
from modeltools.benchmark.workload import (
    DEFAULT_PROMPT,
    DEFAULT_WORKLOADS,
    Workload,
    WorkloadResult,
    images_per_worker,
    percentile,
    pipeline_calls,
)

__all__ = [
    "CUDA_MEMORY",
    "DEFAULT_PROMPT",
    "DEFAULT_WORKLOADS",
    "LIFETIME_RSS",
    "NOT_MEASURED",
    "PEAK_TFLOPS",
    "SAMPLED_RSS",
    "TABLE_LIMIT",
    "BenchmarkReport",
    "Comparison",
    "MemoryProbe",
    "Workload",
    "WorkloadResult",
    "build_parser",
    "default_cache_dir",
    "images_per_worker",
    "main",
    "median_run",
    "peak_tflops",
    "percentile",
    "pipeline_calls",
    "read_rss_bytes",
    "render_chart",
    "run_baseline",
    "run_comparison",
    "run_queue_benchmark",
    "unet_flop_per_image",
    "write_comparison",
    "write_report",
]
