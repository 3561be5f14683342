#!/usr/bin/env bash
# The first GPU run, in one go (issue 39): every CUDA path that no CPU can check, its figures
# written under docs/benchmarks/ (OUT_DIR). Run it as soon as a GPU is lent:
#   scripts/gpu-check.sh             on the GPU: about 10 minutes on one H100
#   scripts/gpu-check.sh --dry-run   the same steps on the CPU, tiny (CI runs this)
# 1. sd15-random --compare in fp16, compile off, then on (Triton, bucket warm-up);
# 2. GPU memory after 300 distinct prompts (the prompt-embedding cache must hold no graphs);
# 3. two-device placement, when two GPUs are visible;
# 4. one DeepFloyd IF cover, when its gated weights are in the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT_DIR=${OUT_DIR:-docs/benchmarks}
if [[ "${1:-}" == "--dry-run" ]]; then
    device=cpu model=embedded sizes=(--size 64 --steps 2) workloads=1 repeats=1 prompts=5
    compiled=""  # compiling on a 2-core CPU takes minutes: the GPU run does it
else
    device=cuda model=sd15-random sizes=() workloads=1,4,8 repeats=3 prompts=300
    compiled=yes
fi
mkdir -p "$OUT_DIR"
say() { echo "gpu-check: $*" >&2; }

say "1. $model --compare, half precision, compile off"
"$PYTHON" -m modeltools.benchmark --compare --model "$model" --device "$device" "${sizes[@]}" \
    --workloads "$workloads" --repeats "$repeats" --out "$OUT_DIR" \
    --opt half_precision=on,compile=off
if [[ -n "$compiled" ]]; then
    say "1b. $model --compare, half precision, compile on"
    "$PYTHON" -m modeltools.benchmark --compare --model "$model" --device "$device" \
        --workloads "$workloads" --repeats "$repeats" --out "$OUT_DIR" \
        --opt half_precision=on,compile=on
fi

say "2. memory after $prompts distinct prompts"
"$PYTHON" - "$device" "$model" "$prompts" "$OUT_DIR" "${sizes[@]}" <<'PY'
import json, sys, time
from pathlib import Path

from modeltools.benchmark.cli import default_cache_dir
from modeltools.benchmark.memory import read_rss_bytes
from models.jobs import GenerationParams, ImageSpec, NoControl
from models.registry import resolve_model
from models.runner import DiffusersRunner

device, name, count, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
spec = resolve_model(name)
side = 64 if "--size" in sys.argv else spec.native_size
params = GenerationParams(name, side, side, steps=1, guidance=spec.guidance)
runner = DiffusersRunner(device=device, cache_dir=default_cache_dir())

def used() -> int:
    if runner.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    return read_rss_bytes() or 0

runner(params, [ImageSpec("warm up", seed=0)], NoControl())
before = used()
for n in range(count):
    runner(params, [ImageSpec(f"distinct prompt number {n}", seed=n)], NoControl())
after = used()
figures = {"device": runner.device, "model": name, "prompts": count, "bytes_before": before,
           "bytes_after": after, "per_prompt_bytes": (after - before) / count}
path = out / f"prompt-cache-memory-{runner.device.replace(':', '')}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
path.write_text(json.dumps(figures, indent=2) + "\n")
print(path)
print(json.dumps(figures))
PY

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
if [[ "$gpus" -ge 2 ]]; then
    say "3. two devices: one queue worker each"
    "$PYTHON" -m modeltools.benchmark --model "$model" --devices auto --workloads 8 --out "$OUT_DIR"
else
    say "3. skipped: $gpus CUDA device(s) visible"
fi

if "$PYTHON" -c "import sys; from models.registry import hub_cached; sys.exit(not hub_cached('DeepFloyd/IF-I-XL-v1.0'))"; then
    say "4. one DeepFloyd IF cover"
    "$PYTHON" -m modeltools.benchmark --model deepfloyd-if --device "$device" --workloads 1 \
        --images 1 --out "$OUT_DIR"
else
    say "4. skipped: DeepFloyd IF is not in the cache (python -m bot models pull deepfloyd-if)"
fi
say "done; figures in $OUT_DIR"
