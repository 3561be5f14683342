"""Which CPU runtime switches win here: each one timed against the same module without it.

``python -m modeltools.benchmark.runtime`` builds sd-turbo's real-size UNet, SD's full VAE decoder
and TAESD's tiny decoder with random weights (models/embedded.py; speed does not depend on the
weights' values), then times each switch alternately with its baseline, ``--repeats`` times
each, and keeps the medians:

    UNet, 1 image, 64x64 latents (512 px):  channels_last · explicit attention · bfloat16
    full decoder, 1 image, 512 px:          channels_last · bfloat16
    tiny decoder, 4 images, 512 px:         channels_last · bfloat16 · torch.compile ·
                                            1 intra-op thread · 2 workers x 1 thread ·
                                            ONNX Runtime and OpenVINO (their extras)
                                            against eager and both tuned torch decoders

The winners are what :class:`models.optimize.Optimizations` switches on for a CPU; the table
lands in docs/benchmarks/ beside the end-to-end comparison. Compiling the 865M UNet takes many
minutes on 2 cores, so ``torch.compile`` is measured on the tiny decoder only (said in the
table); ONNX Runtime likewise, as exporting the UNet alone takes longer than the whole run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modeltools.benchmark.formatting import installed_version


@dataclass(frozen=True)
class SwitchResult:
    component: str  # e.g. "UNet (sd-turbo, 1 image, 512 px)"
    switch: str  # e.g. "channels_last"
    baseline_s: float  # median seconds per call without the switch
    switched_s: float  # median seconds per call with it
    repeats: int  # calls per side (alternating)
    note: str = ""

    @property
    def speedup(self) -> float:
        return self.baseline_s / self.switched_s

    def verdict(self) -> str:
        """Kept only where it wins by more than the noise of a shared machine (5%)."""
        return "wins" if self.speedup > 1.05 else "loses" if self.speedup < 0.95 else "no gain"


def alternate(
    baseline: Callable[[], Any], switched: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Median seconds of ``baseline`` and ``switched``, called in turn ``repeats`` times each
    after one untimed call of each (so both sides see the same drift of a busy machine)."""
    baseline()
    switched()
    base, other = [], []
    for _ in range(repeats):
        for fn, times in ((baseline, base), (switched, other)):
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    return statistics.median(base), statistics.median(other)


PARTS = ("unet", "full", "tiny")  # the three groups of the module docstring


def measure(
    repeats: int = 2, *, parts: Sequence[str] = PARTS, say: Callable[[str], None] = print
) -> list[SwitchResult]:
    """The switches of the module docstring for ``parts``, in its order."""

    import torch

    torch.set_grad_enabled(False)
    threads = torch.get_num_threads()
    results: list[SwitchResult] = []

    def record(component: str, switch: str, base: Callable, other: Callable, note: str = ""):
        say(f"runtime: {component}: {switch}")
        b, o = alternate(base, other, repeats)
        results.append(SwitchResult(component, switch, b, o, repeats, note))
        say(f"runtime:   {b:.2f} s -> {o:.2f} s ({b / o:.2f}x)")

    def decode(module: Any, dtype: Any = torch.float32, batch: int = 1) -> Callable[[], Any]:
        z = torch.randn(batch, 4, 64, 64).to(dtype)  # (B, 4, 64, 64)
        return lambda: module.decode(z)

    if "unet" in parts:
        _unet_switches(record)
    if "full" in parts:
        _full_decoder_switches(record, decode)
    if "tiny" in parts:
        _tiny_decoder_switches(record, decode, threads, say)
    return results


def _unet_switches(record: Callable[..., None]) -> None:
    import copy

    import torch
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from models.embedded import build_sd_turbo_architecture

    # 1. The UNet at real size, one image, one step's pass (sd-turbo: no guidance, batch 1).
    unet = build_sd_turbo_architecture().unet.eval()
    name = "UNet (sd-turbo, 1 image, 512 px)"
    latents = torch.randn(1, 4, 64, 64)  # (B, 4, H/8, W/8)
    context = torch.randn(1, 77, 1024)  # (B, tokens, width)
    step = torch.tensor([999])

    def unet_call(module: Any = unet, dtype: Any = torch.float32) -> Callable[[], Any]:
        return lambda: module(latents.to(dtype), step, encoder_hidden_states=context.to(dtype))

    unet_cl = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    record(name, "channels_last", unet_call(), unet_call(unet_cl))
    del unet_cl
    unet_explicit = copy.deepcopy(unet)
    unet_explicit.set_attn_processor(AttnProcessor())
    unet.set_attn_processor(AttnProcessor2_0())
    record(name, "explicit attention instead of SDPA", unet_call(), unet_call(unet_explicit))
    del unet_explicit
    unet_bf16 = copy.deepcopy(unet).to(torch.bfloat16)
    record(name, "bfloat16", unet_call(), unet_call(unet_bf16, torch.bfloat16))
    del unet_bf16, unet


def _full_decoder_switches(record: Callable[..., None], decode: Callable[..., Any]) -> None:
    import copy

    import torch

    from models.embedded import sd_vae_architecture

    # 2. The full decoder at 512 px, one image.
    vae = sd_vae_architecture().eval()
    name = "full decoder (SD VAE, 1 image, 512 px)"

    vae_cl = copy.deepcopy(vae).to(memory_format=torch.channels_last)
    record(name, "channels_last", decode(vae), decode(vae_cl))
    del vae_cl
    vae_bf16 = copy.deepcopy(vae).to(torch.bfloat16)
    record(name, "bfloat16", decode(vae), decode(vae_bf16, torch.bfloat16))
    del vae_bf16, vae


def _tiny_decoder_switches(
    record: Callable[..., None], decode: Callable[..., Any], threads: int, say: Callable
) -> None:
    import copy

    import torch

    from models.embedded import build_tiny_decoder_architecture

    # 3. The tiny decoder at 512 px, a 4-candidate cover's batch.
    tiny = build_tiny_decoder_architecture().eval()
    name = "tiny decoder (TAESD, 4 images, 512 px)"
    record(
        name,
        "channels_last",
        decode(tiny, batch=4),
        decode(copy.deepcopy(tiny).to(memory_format=torch.channels_last), batch=4),
    )
    record(
        name,
        "bfloat16",
        decode(tiny, batch=4),
        decode(copy.deepcopy(tiny).to(torch.bfloat16), torch.bfloat16, batch=4),
    )
    try:
        compiled = copy.deepcopy(tiny)
        compiled.decoder = torch.compile(compiled.decoder, dynamic=False)
        record(
            name,
            "torch.compile (inductor)",
            decode(tiny, batch=4),
            decode(compiled, batch=4),
            "compile time not counted (its untimed first call)",
        )
    except Exception as error:  # no C compiler, inductor unsupported, ...
        say(f"runtime: torch.compile failed: {type(error).__name__}: {error}")
    one_thread = decode(tiny, batch=4)

    def single_threaded() -> None:
        torch.set_num_threads(1)
        try:
            one_thread()
        finally:
            torch.set_num_threads(threads)

    record(name, f"1 intra-op thread (of {threads})", decode(tiny, batch=4), single_threaded)
    halves = [torch.randn(2, 4, 64, 64) for _ in range(2)]  # (2, 4, 64, 64) per worker

    def two_workers() -> None:
        # Two queue workers of one thread each, each decoding half the batch at once.
        torch.set_num_threads(1)
        try:
            workers = [threading.Thread(target=tiny.decode, args=(z,)) for z in halves]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            torch.set_num_threads(threads)

    record(name, "2 workers x 1 thread", decode(tiny, batch=4), two_workers)
    _exported_rows(record, decode, tiny, name, say)


def _exported_rows(
    record: Callable[..., None], decode: Callable[..., Any], tiny: Any, name: str, say: Callable
) -> None:
    """ONNX Runtime and OpenVINO (models/exported_decoder.py, ``decoder_runtime``) against
    eager float32 torch and against the two tuned torch decoders the runner uses: float32 with
    channels-last (a CPU without bfloat16) and bfloat16 with channels-last (``cpu_bfloat16``).
    Each runtime is skipped, and said, where its extra is not installed."""
    import copy

    import torch

    from models.errors import ModelUnavailable
    from models.exported_decoder import onnx_decoder, openvino_decoder

    tuned = copy.deepcopy(tiny).to(memory_format=torch.channels_last)
    tuned_bf16 = copy.deepcopy(tuned).to(torch.bfloat16)

    def outside(make: Callable[[Path], Any]) -> Callable[[], Any] | None:
        with tempfile.TemporaryDirectory(prefix="taesd-export-") as folder:
            try:
                module = make(Path(folder))
            except ModelUnavailable as error:
                say(f"runtime: not measured: {error}")
                return None
        swapped = copy.deepcopy(tiny)
        swapped.decoder = module
        return decode(swapped, batch=4)

    onnx = outside(lambda folder: onnx_decoder(tiny, folder))
    if onnx is not None:
        note = f"onnxruntime {installed_version('onnxruntime')}"
        record(name, "ONNX Runtime vs eager float32", decode(tiny, batch=4), onnx, note)
        record(name, "ONNX Runtime vs float32 + channels_last", decode(tuned, batch=4), onnx, note)
        record(
            name,
            "ONNX Runtime vs bfloat16 + channels_last",
            decode(tuned_bf16, torch.bfloat16, batch=4),
            onnx,
            note,
        )
    for bfloat16, torch_side, label in (
        (False, decode(tuned, batch=4), "float32"),
        (True, decode(tuned_bf16, torch.bfloat16, batch=4), "bfloat16"),
    ):
        openvino = outside(lambda folder, b=bfloat16: openvino_decoder(tiny, folder, bfloat16=b))
        if openvino is not None:
            note = f"openvino {installed_version('openvino')}"
            record(name, f"OpenVINO {label} vs {label} + channels_last", torch_side, openvino, note)


def table(results: Sequence[SwitchResult]) -> str:
    lines = [
        f"{'component':<40} {'switch':<42} {'without s':>9} {'with s':>8} {'gain':>6}  verdict",
    ]
    for r in results:
        lines.append(
            f"{r.component:<40} {r.switch:<42} {r.baseline_s:>9.3f} {r.switched_s:>8.3f} "
            f"{r.speedup:>5.2f}x  {r.verdict()}" + (f" ({r.note})" if r.note else "")
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeltools.benchmark.runtime")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per side (2)")
    parser.add_argument("--parts", default=",".join(PARTS), help="unet,full,tiny (all)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts takes some of {', '.join(PARTS)}, got {args.parts!r}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    import torch

    started = datetime.now(UTC)
    results = measure(
        args.repeats, parts=parts, say=lambda line: print(line, file=sys.stderr, flush=True)
    )
    text = table(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu-runtime-{started:%Y%m%dT%H%M%SZ}"
    info = {
        "started_at": started.isoformat(timespec="seconds"),
        "torch": installed_version("torch"),
        "threads": torch.get_num_threads(),
        "results": [asdict(r) | {"speedup": r.speedup, "verdict": r.verdict()} for r in results],
    }
    stem.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(
        f"# CPU runtime switches, {started:%Y-%m-%d}\n\n```\npython -m modeltools.benchmark.runtime "
        f"--repeats {args.repeats} --parts {','.join(parts)}\n```\n\ntorch {info['torch']}, {info['threads']} threads, "
        f"median of {args.repeats} alternating calls per side.\n\n```\n{text}\n```\n",
        encoding="utf-8",
    )
    print(stem.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
