"""One cover on a CPU at real size: ours (tuned runtime, fast decoder) vs one plain diffusers call.

``python -m modeltools.benchmark.cpu`` measures, for each preset it is given – by default the
real-size random-weight ones (models/embedded.py builds them; speed does not depend on the
weights' values), or a real preset whose weights are in the hub cache:

    plain: the pipeline as diffusers loads it, float32, full VAE, one call of 4 images
    ours:  our DiffusersRunner with --opt (by default the tiny decoder and the switches that
           won in docs/benchmarks/cpu-runtime-*.md), the same 4 images
    alternating plain, ours, plain, ours, ... --repeats times; medians, with n
    a StageClock on both (modeltools/benchmark/stages.py): where each side's seconds go
    the decoders compared: the last run's latents decoded by the full and the tiny decoder
    the limit line: our UNet's FLOP/s against this CPU's peak for its dtype (cpu_peak.py)

With ``--unet-runtime`` it compares our torch UNet with OpenVINO's instead
(modeltools/benchmark/unet_runtime.py) and writes ``cpu-unet-runtime-<time>.json`` and ``.md``.

and writes ``cpu-cover-<time>.json`` and ``.md`` (no machine paths). Real-size models on 2
cores are slow, so presets that need many steps run few here (``--sd15-steps``) and the table
says so; the UNet's cost is linear in the steps, so its per-step figure scales up.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.registry import RANDOM_ARCHITECTURES
from modeltools.benchmark.cli import default_cache_dir
from modeltools.benchmark.cpu_peak import CpuPeak, beyond_peak, cpu_peak, matmul_flops
from modeltools.benchmark.formatting import installed_version
from modeltools.benchmark.stages import StageClock, StageTimes
from modeltools.benchmark.workload import DEFAULT_PROMPT, preset_params

CANDIDATES = 4  # images in one cover


@dataclass(frozen=True)
class CoverComparison:
    model: str
    steps: int
    native_steps: int  # what the preset runs by default
    guidance: float
    size: int
    repeats: int
    optimizations: str
    plain: StageTimes  # medians
    ours: StageTimes
    plain_runs_s: tuple[float, ...]
    ours_runs_s: tuple[float, ...]
    decoder_mean_abs: float | None  # 0-255 pixel units, full vs tiny decoder, same latents
    decoder_psnr_db: float | None
    unet_flop_per_cover: float | None = None  # ours' UNet, torch.utils.flop_counter
    unet_dtype: str = "float32"  # what ours' UNet computes in
    peak_flops: float | None = None  # this CPU's peak for that dtype (cpu_peak.py)

    @property
    def unet_flops(self) -> float | None:
        """Ours' UNet's achieved FLOP/s: its FLOPs per cover over its median seconds."""
        seconds = self.ours.seconds.get("UNet", 0.0)
        if self.unet_flop_per_cover is None or seconds <= 0:
            return None
        return self.unet_flop_per_cover / seconds

    @property
    def speedup(self) -> float:
        return self.plain.total_s / self.ours.total_s

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "steps": self.steps,
            "native_steps": self.native_steps,
            "guidance": self.guidance,
            "size": self.size,
            "candidates": CANDIDATES,
            "repeats": self.repeats,
            "optimizations": self.optimizations,
            "plain": self.plain.to_json(),
            "ours": self.ours.to_json(),
            "plain_runs_s": list(self.plain_runs_s),
            "ours_runs_s": list(self.ours_runs_s),
            "speedup": self.speedup,
            "decoder_mean_abs_255": self.decoder_mean_abs,
            "decoder_psnr_db": self.decoder_psnr_db,
            "unet_flop_per_cover": self.unet_flop_per_cover,
            "unet_dtype": self.unet_dtype,
            "unet_gflops": self.unet_flops and self.unet_flops / 1e9,
            "peak_gflops": self.peak_flops and self.peak_flops / 1e9,
        }

    def table(self) -> str:
        few = (
            f" (the preset runs {self.native_steps}; few here to fit the run)"
            if self.steps < self.native_steps
            else ""
        )
        lines = [
            f"{self.model} · {self.size}x{self.size} px · {self.steps} step(s){few} · guidance "
            f"{self.guidance:g} · one cover of {CANDIDATES} images · median of {self.repeats} "
            "alternating runs per side",
            f"ours: {self.optimizations}",
            f"plain: {self.plain.total_s:.1f} s per cover (runs: {_runs(self.plain_runs_s)})",
            f"ours:  {self.ours.total_s:.1f} s per cover (runs: {_runs(self.ours_runs_s)})",
            f"speed-up: {self.speedup:.2f}x",
            *self._limit_line(),
            "where the time goes, plain:",
            *self.plain.lines(),
            "where the time goes, ours:",
            *self.ours.lines(),
        ]
        if self.decoder_mean_abs is not None:
            lines.append(
                f"tiny vs full decoder on the same latents: mean |difference| "
                f"{self.decoder_mean_abs:.1f}/255, PSNR {self.decoder_psnr_db:.1f} dB "
                + (
                    "(random weights: says nothing of quality, only that both decoded the "
                    "same input)"
                    if self.model in RANDOM_ARCHITECTURES
                    else "(the cached weights: how far the tiny decoder strays from the full one)"
                )
            )
        return "\n".join(lines)

    def _limit_line(self) -> list[str]:
        achieved = self.unet_flops
        if achieved is None or not self.peak_flops:
            return []
        return [
            f"ours' UNet: {self.unet_flop_per_cover / 1e12:.2f} TFLOP per cover, "
            f"{achieved / 1e9:.0f} GFLOP/s = {achieved / self.peak_flops:.0%} of this CPU's "
            f"{self.unet_dtype} peak ({self.peak_flops / 1e9:.0f} GFLOP/s)"
        ]


def _runs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def compare_cover(
    model: str,
    *,
    steps: int | None,
    repeats: int,
    optimizations: Any,
    cache_dir: Path,
    size: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    say: Callable[[str], None] = print,
    peak: CpuPeak | None = None,
) -> CoverComparison:
    """Plain vs ours for one ``model`` (see the module docstring)."""
    import torch

    from models.jobs import ImageSpec, NoControl
    from models.registry import load_pipeline, resolve_model
    from models.runner import DiffusersRunner
    from modeltools.benchmark.flops import unet_flop_per_image

    params = preset_params(model, steps=steps, size=size)
    spec = resolve_model(model)
    cache = cache_dir  # the project cache (the embedded model lives there)
    say(f"cpu: {model}: building the plain pipeline")
    plain = load_pipeline(spec, device="cpu", cache_dir=cache, half_precision=False)
    say(f"cpu: {model}: building ours ({optimizations.describe()})")
    runner = DiffusersRunner(device="cpu", cache_dir=cache, optimizations=optimizations)
    ours = runner.pipeline(params)

    def plain_call(prompt: str) -> None:
        plain(
            prompt=[prompt] * CANDIDATES,
            negative_prompt=[""] * CANDIDATES,
            generator=[torch.Generator("cpu").manual_seed(k) for k in range(CANDIDATES)],
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            width=params.width,
            height=params.height,
        )

    captured: list[Any] = []
    plain_runs: list[StageTimes] = []
    our_runs: list[StageTimes] = []
    for attempt in range(1, repeats + 1):
        # A new prompt each time, so our prompt cache saves only what it saves within one
        # cover (one text-encoder pass for the 4 candidates' shared prompt), not across runs.
        text = f"{prompt} {attempt}"
        specs = [ImageSpec(text, "", seed=k) for k in range(CANDIDATES)]
        for name, pipe, call, runs in (
            ("plain", plain, lambda text=text: plain_call(text), plain_runs),
            ("ours", ours, lambda specs=specs: runner(params, specs, NoControl()), our_runs),
        ):
            with StageClock(pipe) as clock, _capture_decoder_input(pipe, captured):
                call()
                runs.append(clock.times())
            say(f"cpu: {model}: run {attempt}/{repeats} {name}: {runs[-1].total_s:.1f} s")

    # The decoders side by side on the latents ours decoded last (one image: a full decode
    # at 512 px costs seconds here).
    mean_abs = psnr = None
    if type(ours.vae).__name__ == "AutoencoderTiny" and captured:
        with torch.no_grad():
            latents = captured[-1][:1]  # (1, 4, 64, 64), already divided by the tiny's factor 1
            raw = latents.float() * ours.vae.config.scaling_factor
            full = plain.vae.decode(raw / plain.vae.config.scaling_factor).sample
            tiny = ours.vae.decode((raw / ours.vae.config.scaling_factor).to(ours.vae.dtype))
            tiny = tiny.sample.float()
        mean_abs, psnr = pixel_distance(full, tiny)
    # Counted on plain's torch UNet: the same architecture as ours, which may run in OpenVINO.
    with torch.no_grad():
        flop = unet_flop_per_image(plain, params) * CANDIDATES
    dtype = str(ours.unet.dtype).removeprefix("torch.")
    result = CoverComparison(
        model=model,
        steps=params.steps,
        native_steps=spec.steps,
        guidance=params.guidance,
        size=params.width,
        repeats=repeats,
        optimizations=optimizations.describe(),
        plain=StageTimes.median(plain_runs),
        ours=StageTimes.median(our_runs),
        plain_runs_s=tuple(r.total_s for r in plain_runs),
        ours_runs_s=tuple(r.total_s for r in our_runs),
        decoder_mean_abs=mean_abs,
        decoder_psnr_db=psnr,
        unet_flop_per_cover=flop,
        unet_dtype=dtype,
        peak_flops=peak.flops(dtype) if peak is not None and dtype in peak.per_cycle else None,
    )
    return result


def pixel_distance(first: Any, second: Any) -> tuple[float, float]:
    """Two decoders' outputs (B, 3, H, W) in [-1, 1], as 8-bit pixels: the mean absolute
    difference (0-255) and the PSNR in dB, ``10 log10(255² / MSE)`` (infinite when equal)."""
    a = ((first.float().clamp(-1, 1) + 1) * 127.5).round()
    b = ((second.float().clamp(-1, 1) + 1) * 127.5).round()
    if a.shape != b.shape:
        raise ValueError(f"The outputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}.")
    mse = float(((a - b) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
    return float((a - b).abs().mean()), psnr


class _capture_decoder_input:
    """Keep each latents tensor the pipeline's decoder is given (for the decoder comparison)."""

    def __init__(self, pipe: Any, into: list[Any]) -> None:
        self.vae, self.into = pipe.vae, into

    def __enter__(self) -> None:
        decode = self._previous = self.vae.decode

        def keeping(latents: Any, *args: Any, **kwargs: Any) -> Any:
            self.into.append(latents.detach())
            return decode(latents, *args, **kwargs)

        self.vae.decode = keeping

    def __exit__(self, *exc: object) -> None:
        # The stage clock wrapped decode first: put its wrapper back for it to remove.
        self.vae.decode = self._previous


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (what ``uptime`` shows): how busy the machine
    was, since these figures come from shared machines."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _write(
    stem: Path,
    command: str,
    started: datetime,
    results: Sequence[Any],
    text: str,
    *,
    title: str,
    extra: dict[str, Any],
) -> None:
    info = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": command,
        "torch": installed_version("torch"),
        "diffusers": installed_version("diffusers"),
        **extra,
        "results": [r if isinstance(r, dict) else r.to_json() for r in results],
    }
    stem.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(
        f"# {title}, {started:%Y-%m-%d}\n\n```\n{command}\n```\n\n{text}\n", encoding="utf-8"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from models.optimize import Optimizations

    parser = argparse.ArgumentParser(prog="python -m modeltools.benchmark.cpu")
    parser.add_argument(
        "--models", default="sd-turbo-random,sd15-random", help="comma-separated presets"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating (3)")
    parser.add_argument("--sd15-steps", type=int, default=2, help="steps for sd15-random (2)")
    parser.add_argument(
        "--sd15-repeats", type=int, help="runs per side for sd15-random (default: --repeats)"
    )
    parser.add_argument("--opt", default="decoder=tiny", help="ours: Optimizations switches")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--unet-runtime",
        action="store_true",
        help="compare our torch UNet with OpenVINO's (both sides ours, --opt) instead of plain",
    )
    mode.add_argument(
        "--first-candidate",
        action="store_true",
        help="time the first candidate and the cover as one batch of 4 and as 1 then 3 (ours)",
    )
    parser.add_argument(
        "--clock-ghz", type=float, help="the CPU's clock for its peak (default: what it reports)"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.sd15_steps < 1:
        parser.error("--repeats and --sd15-steps must be at least 1")
    try:
        optimizations = Optimizations().replace(args.opt)
    except ValueError as error:
        parser.error(str(error))
    from models.registry import quiet_libraries

    quiet_libraries()
    # The runner's own lines (loading, the OpenVINO export's progress) beside ours on stderr.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = datetime.now(UTC)
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    kind = (
        "cpu-unet-runtime"
        if args.unet_runtime
        else "cpu-first-candidate"
        if args.first_candidate
        else "cpu-cover"
    )
    stem = args.out / f"{kind}-{started:%Y%m%dT%H%M%SZ}"
    command = "python -m modeltools.benchmark.cpu " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    # 1. The limit: this CPU's peak from its flags and clock, and a large matrix product's
    #    FLOP/s as the practical ceiling, both before any model loads.
    peak = cpu_peak(clock_ghz=args.clock_ghz)
    matmul = {dtype: matmul_flops(dtype) for dtype in peak.per_cycle}
    load_before = load_average()
    limit = [
        peak.line(),
        "a 2048² matrix product here: "
        + ", ".join(f"{dtype} {flops / 1e9:.0f} GFLOP/s" for dtype, flops in matmul.items()),
    ]
    warning = beyond_peak(peak, matmul)
    if warning:
        limit.append(warning)
    print("\n".join(limit), flush=True)
    results: list[Any] = []
    for name in filter(None, (n.strip() for n in args.models.split(","))):
        sd15 = name.startswith("sd15")
        steps = args.sd15_steps if sd15 else None
        repeats = (args.sd15_repeats or args.repeats) if sd15 else args.repeats
        if args.unet_runtime:
            from modeltools.benchmark.unet_runtime import compare_unet_runtimes

            result = compare_unet_runtimes(
                name,
                steps=steps,
                repeats=repeats,
                optimizations=optimizations,
                cache_dir=default_cache_dir(),
                say=say,
            )
            results.append(
                (
                    result.table(peak, matmul[result.dtype]),
                    result.to_json(peak, matmul[result.dtype]),
                )
            )
        elif args.first_candidate:
            from modeltools.benchmark.first_candidate import measure_first_candidate

            result = measure_first_candidate(
                name,
                steps=steps,
                repeats=repeats,
                optimizations=optimizations,
                cache_dir=default_cache_dir(),
                say=say,
            )
            results.append((result.table(), result.to_json()))
        else:
            result = compare_cover(
                name,
                steps=steps,
                repeats=repeats,
                optimizations=optimizations,
                cache_dir=default_cache_dir(),
                say=say,
                peak=peak,
            )
            results.append((f"```\n{result.table()}\n```", result.to_json()))
        text = "\n\n".join(table for table, _ in results)
        print(text, flush=True)
        machine = (
            f"Machine load (1, 5, 15 min) before: {load_before}; after this model: "
            f"{load_average()}. The load before is other processes' alone; during the run this "
            "benchmark keeps about as many cores busy as there are, so a load above the core "
            "count means other processes competed with it."
        )
        body = "\n\n".join([*limit, machine, text])
        title = (
            "Our torch UNet beside OpenVINO's on this CPU"
            if args.unet_runtime
            else "The first candidate of a cover on this CPU: 4 at once or 1 then 3"
            if args.first_candidate
            else "One cover on this CPU, ours vs plain diffusers"
        )
        extra = {
            "openvino": installed_version("openvino"),
            "cpu_peak": peak.to_json(),
            "matmul_gflops": {d: f / 1e9 for d, f in matmul.items()},
            "load_average_before": load_before,
            "load_average_after": load_average(),
        }
        # After each model: a slow run keeps what it measured.
        _write(stem, command, started, [j for _, j in results], body, title=title, extra=extra)
    print(stem.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
