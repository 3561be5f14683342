"""Our torch UNet beside OpenVINO's in one run: ``python -m modeltools.benchmark.cpu --unet-runtime``.

For each preset, two of our runners differ in the UNet's runtime only (``--opt`` plus
``unet_runtime=torch`` or ``unet_runtime=openvino``; both in bfloat16 where ``cpu_bfloat16``
takes it, which is OpenVINO's inference precision then too):

    load each (the OpenVINO side exports the UNet on its first load: its seconds are shown)
    one untimed cover each (OpenVINO compiles for the cover's static shapes there)
    torch, openvino, openvino, torch, torch, openvino, … --repeats covers each, in pairs
        whose order alternates, so both sides see the same drift of a shared machine and
        neither always runs right after the other; a StageClock (stages.py) on each cover
    the UNet's FLOPs per cover (flops.py), its achieved FLOP/s on each side against this
        CPU's peak for the dtype (cpu_peak.py) and against a large matrix product's

Medians with the range of the runs; the gain is the torch UNet's median over OpenVINO's, and
the per-pair gains (run i of torch over run i of OpenVINO) give its range.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeltools.benchmark.cpu_peak import CpuPeak
from modeltools.benchmark.stages import StageClock, StageTimes
from modeltools.benchmark.workload import DEFAULT_PROMPT, preset_params, spread

CANDIDATES = 4  # images in one cover
SIDES = ("torch", "openvino")


@dataclass(frozen=True)
class RuntimeComparison:
    model: str
    steps: int
    native_steps: int
    guidance: float
    size: int
    repeats: int
    optimizations: str
    dtype: str  # what both UNets compute in
    load_s: dict[str, float]  # per side: loading, with the OpenVINO export if it ran
    export_ran: bool  # whether this run exported the UNet (else it came from the cache)
    runs: dict[str, tuple[StageTimes, ...]]  # per side, in order
    unet_flop_per_cover: float

    def unet_s(self, side: str) -> list[float]:
        return [run.seconds["UNet"] for run in self.runs[side]]

    def cover_s(self, side: str) -> list[float]:
        return [run.total_s for run in self.runs[side]]

    @property
    def unet_gain(self) -> float:
        return statistics.median(self.unet_s("torch")) / statistics.median(self.unet_s("openvino"))

    @property
    def pair_gains(self) -> list[float]:
        return [t / o for t, o in zip(self.unet_s("torch"), self.unet_s("openvino"), strict=True)]

    def achieved(self, side: str) -> float:
        """The UNet's FLOP/s on ``side``: its FLOPs per cover over its median seconds."""
        return self.unet_flop_per_cover / statistics.median(self.unet_s(side))

    def to_json(self, peak: CpuPeak, matmul: float) -> dict[str, Any]:
        return {
            "model": self.model,
            "steps": self.steps,
            "native_steps": self.native_steps,
            "guidance": self.guidance,
            "size": self.size,
            "candidates": CANDIDATES,
            "repeats": self.repeats,
            "optimizations": self.optimizations,
            "dtype": self.dtype,
            "load_s": dict(self.load_s),
            "export_ran": self.export_ran,
            "runs": {side: [r.to_json() for r in runs] for side, runs in self.runs.items()},
            "unet_s": {side: self.unet_s(side) for side in SIDES},
            "cover_s": {side: self.cover_s(side) for side in SIDES},
            "unet_gain_openvino_over_torch": self.unet_gain,
            "pair_gains": self.pair_gains,
            "unet_flop_per_cover": self.unet_flop_per_cover,
            "achieved_gflops": {side: self.achieved(side) / 1e9 for side in SIDES},
            "share_of_peak": {side: self.achieved(side) / peak.flops(self.dtype) for side in SIDES},
            "share_of_matmul": {side: self.achieved(side) / matmul for side in SIDES},
        }

    def table(self, peak: CpuPeak, matmul: float) -> str:
        few = (
            f" (the preset runs {self.native_steps}; few here to fit the run)"
            if self.steps < self.native_steps
            else ""
        )
        top = peak.flops(self.dtype)
        lines = [
            f"{self.model} · {self.size}x{self.size} px · {self.steps} step(s){few} · guidance "
            f"{self.guidance:g} · one cover of {CANDIDATES} images · {self.dtype} · n = "
            f"{self.repeats} alternating covers per side, median [min–max]",
            f"both: {self.optimizations}",
            "",
            "| UNet runtime | UNet s per cover | cover s | UNet GFLOP/s | of peak | of matmul |",
            "|---|---|---|---|---|---|",
        ]
        for side in SIDES:
            unet, cover, achieved = self.unet_s(side), self.cover_s(side), self.achieved(side)
            lines.append(
                f"| {side} | {spread(unet)} | {spread(cover)} | {achieved / 1e9:.0f} | "
                f"{achieved / top:.0%} | {achieved / matmul:.0%} |"
            )
        gains = self.pair_gains
        lines += [
            "",
            f"OpenVINO's UNet vs torch's: {self.unet_gain:.2f}× (pairs: "
            f"{min(gains):.2f}–{max(gains):.2f}×; above 1 OpenVINO is faster)",
            f"UNet work per cover: {self.unet_flop_per_cover / 1e12:.2f} TFLOP "
            "(torch.utils.flop_counter, modeltools/benchmark/flops.py)",
            "loading: "
            + ", ".join(f"{side} {self.load_s[side]:.0f} s" for side in SIDES)
            + (" (OpenVINO's includes exporting the UNet)" if self.export_ran else " (cached IR)"),
        ]
        return "\n".join(lines)


def compare_unet_runtimes(
    model: str,
    *,
    steps: int | None,
    repeats: int,
    optimizations: Any,
    cache_dir: Path,
    size: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    say: Callable[[str], None] = print,
) -> RuntimeComparison:
    """Torch's UNet vs OpenVINO's for one ``model`` (see the module docstring)."""
    import torch

    from models.jobs import ImageSpec, NoControl
    from models.registry import resolve_model
    from models.runner import DiffusersRunner
    from modeltools.benchmark.flops import unet_flop_per_image

    params = preset_params(model, steps=steps, size=size)
    spec = resolve_model(model)
    runners: dict[str, Any] = {}
    pipes: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    exports = sorted((cache_dir / "openvino").glob("unet-*.xml"))
    for side in SIDES:
        say(f"cpu: {model}: loading with unet_runtime={side}")
        began = time.perf_counter()
        runners[side] = DiffusersRunner(
            device="cpu",
            cache_dir=cache_dir,
            optimizations=optimizations.replace(f"unet_runtime={side}"),
        )
        pipes[side] = runners[side].pipeline(params)
        load_s[side] = time.perf_counter() - began
        gc.collect()  # the export's float32 copy of the UNet
    export_ran = sorted((cache_dir / "openvino").glob("unet-*.xml")) != exports
    if type(pipes["openvino"].unet).__name__ != "OpenVinoUNet":
        raise RuntimeError(f"{model}: the OpenVINO side runs {type(pipes['openvino'].unet)}")
    dtype = str(pipes["torch"].unet.dtype).removeprefix("torch.")
    with torch.no_grad():
        flop = unet_flop_per_image(pipes["torch"], params) * CANDIDATES

    def cover(side: str, text: str) -> StageTimes:
        specs = [ImageSpec(text, "", seed=k) for k in range(CANDIDATES)]
        with StageClock(pipes[side]) as clock:
            runners[side](params, specs, NoControl())
            return clock.times()

    for side in SIDES:  # untimed: OpenVINO compiles for this shape, oneDNN picks kernels
        say(f"cpu: {model}: warm-up {side}: {cover(side, f'{prompt} 0').total_s:.1f} s")
    runs: dict[str, list[StageTimes]] = {side: [] for side in SIDES}
    for attempt in range(1, repeats + 1):
        # Torch first in odd pairs, OpenVINO first in even ones: neither always follows the other.
        for side in SIDES if attempt % 2 else SIDES[::-1]:
            runs[side].append(cover(side, f"{prompt} {attempt}"))
            times = runs[side][-1]
            say(
                f"cpu: {model}: run {attempt}/{repeats} {side}: {times.total_s:.1f} s "
                f"(UNet {times.seconds['UNet']:.1f} s)"
            )
    return RuntimeComparison(
        model=model,
        steps=params.steps,
        native_steps=spec.steps,
        guidance=params.guidance,
        size=params.width,
        repeats=repeats,
        optimizations=optimizations.describe(),
        dtype=dtype,
        load_s=load_s,
        export_ran=export_ran,
        runs={side: tuple(r) for side, r in runs.items()},
        unet_flop_per_cover=flop,
    )
