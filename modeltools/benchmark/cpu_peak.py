"""What this CPU can compute at most: its peak FLOP/s per dtype, from what the machine reports.

    peak = cores × clock × FLOPs per cycle per core (for the dtype)

FLOPs per cycle per core come from the CPU's flags (:func:`flops_per_cycle`), under these
assumptions, which :attr:`CpuPeak.assumptions` repeats in every report:

- two vector FMA pipes per core (every x86 core since Haswell and Zen 1), each doing one
  fused multiply-add (2 FLOPs) per float32 lane per cycle; without ``fma``, a multiply and an
  add pipe: the same 2 FLOPs per lane;
- lanes: the vector width the flags allow (``avx512f`` 512 bits, ``avx2``/``avx`` 256, else
  128) over 32 bits – except on AMD family 19h (Zen 3, Zen 4), whose pipes are 256 bits wide
  and run a 512-bit instruction as two halves;
- bfloat16: ``amx_bf16`` gives AMX's 1,024 multiply-adds per cycle per core (2,048 FLOPs);
  ``avx512_bf16`` gives ``VDPBF16PS``, two bfloat16 products summed into each float32 lane
  (4 FLOPs per lane per pipe); without either, bfloat16 is converted to float32 and computed
  as float32, so its peak is float32's;
- the clock is the highest the machine reports: ``cpuinfo_max_freq`` or ``lscpu``'s max MHz;
  a VM that exposes neither gives only ``/proc/cpuinfo``'s ``cpu MHz`` (the nominal clock),
  and a boost above it would make the real peak higher and every share of it lower.

The peak is a ceiling no network reaches: memory traffic, non-matmul layers (normalisation,
activation, softmax) and single-threaded glue take their share. :func:`matmul_flops` measures
the practical ceiling beside it: one large matrix product in the same dtype.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AMD_HALF_WIDTH_FAMILIES = frozenset({0x19})  # Zen 3 and Zen 4: 256-bit FMA pipes
FMA_PIPES = 2


def flops_per_cycle(
    flags: set[str] | frozenset[str], *, vendor: str = "", family: int = 0
) -> dict[str, int]:
    """Peak FLOPs per cycle per core for ``float32`` and ``bfloat16``, from the CPU's
    ``flags`` (as in ``/proc/cpuinfo``), ``vendor`` (``GenuineIntel``, ``AuthenticAMD``) and
    ``family`` (decimal, as ``/proc/cpuinfo`` gives it), under the module's assumptions:

        float32  = 2 pipes × lanes × 2               (lanes = datapath bits / 32)
        bfloat16 = 2 048                              with amx_bf16
                 = 2 pipes × lanes × 4                with avx512_bf16
                 = float32                            otherwise
    """
    width = 512 if "avx512f" in flags else 256 if {"avx2", "avx"} & flags else 128
    if vendor == "AuthenticAMD" and family in AMD_HALF_WIDTH_FAMILIES:
        width = min(width, 256)
    lanes = width // 32
    float32 = FMA_PIPES * lanes * 2
    if "amx_bf16" in flags:
        bfloat16 = 2 * 1024
    elif "avx512_bf16" in flags:
        bfloat16 = FMA_PIPES * lanes * 4
    else:
        bfloat16 = float32
    return {"float32": float32, "bfloat16": bfloat16}


@dataclass(frozen=True)
class CpuPeak:
    model: str
    cores: int  # the cores this process may use
    clock_ghz: float
    clock_source: str  # where the clock came from (see the module docstring)
    per_cycle: dict[str, int]  # FLOPs per cycle per core, by dtype
    flags: tuple[str, ...]  # the flags the figure rests on

    def flops(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype`` ("float32" or "bfloat16") on :attr:`cores` cores."""
        return self.cores * self.clock_ghz * 1e9 * self.per_cycle[dtype]

    @property
    def assumptions(self) -> str:
        return (
            f"{self.cores} cores × {self.clock_ghz:.2f} GHz ({self.clock_source}) × FLOPs per "
            f"cycle per core (float32 {self.per_cycle['float32']}, bfloat16 "
            f"{self.per_cycle['bfloat16']}) from the flags {', '.join(self.flags) or 'none'}: "
            "2 FMA pipes per core, AVX-512 run as two 256-bit halves on AMD Zen 3/4, bfloat16 "
            "by VDPBF16PS (4 FLOPs per float32 lane) or AMX (2,048 per cycle) "
            "(modeltools/benchmark/cpu_peak.py)"
        )

    def line(self) -> str:
        return (
            f"this CPU's peak: {self.flops('float32') / 1e9:.0f} GFLOP/s float32, "
            f"{self.flops('bfloat16') / 1e9:.0f} GFLOP/s bfloat16 ({self.model}; "
            f"{self.assumptions})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cores": self.cores,
            "clock_ghz": self.clock_ghz,
            "clock_source": self.clock_source,
            "flops_per_cycle_per_core": dict(self.per_cycle),
            "flags": list(self.flags),
            "peak_gflops": {d: self.flops(d) / 1e9 for d in self.per_cycle},
        }


RELEVANT_FLAGS = ("fma", "avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_peak(cpuinfo: str = "/proc/cpuinfo", *, clock_ghz: float | None = None) -> CpuPeak:
    """:class:`CpuPeak` of this machine, read from ``cpuinfo``, sysfs and ``lscpu``;
    ``clock_ghz`` overrides the clock (a VM's known boost clock, which it does not report)."""
    text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    first = text.split("\n\n", 1)[0]  # the first processor's block

    def field(name: str) -> str:
        match = re.search(rf"^{name}\s*:\s*(.*)$", first, re.MULTILINE)
        return match.group(1).strip() if match else ""

    flags = set(field("flags").split())
    source = "given"
    if clock_ghz is None:
        clock_ghz, source = _max_clock_ghz()
    if clock_ghz is None:
        clock_ghz, source = (
            float(field("cpu MHz") or 0) / 1000,
            "/proc/cpuinfo's cpu MHz: no max reported",
        )
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    return CpuPeak(
        model=field("model name") or "unknown CPU",
        cores=cores,
        clock_ghz=clock_ghz,
        clock_source=source,
        per_cycle=flops_per_cycle(
            flags, vendor=field("vendor_id"), family=int(field("cpu family") or 0)
        ),
        flags=tuple(flag for flag in RELEVANT_FLAGS if flag in flags),
    )


def _max_clock_ghz() -> tuple[float | None, str]:
    sysfs = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    try:
        return int(sysfs.read_text()) / 1e6, "cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None, ""
    match = re.search(r"^CPU max MHz:\s*([\d.]+)", out, re.MULTILINE)
    return (float(match.group(1)) / 1000, "lscpu's CPU max MHz") if match else (None, "")


def beyond_peak(peak: CpuPeak, matmul: dict[str, float]) -> str | None:
    """A warning where a measured matrix product beats the computed peak: the cores then run
    faster than the clock read (a boost the VM does not report), and every share of the peak
    reads high; None where the peak holds."""
    over = [dtype for dtype, flops in matmul.items() if flops > peak.flops(dtype)]
    if not over:
        return None
    return (
        f"the matrix product beat the computed {' and '.join(over)} peak: these cores run "
        f"faster than {peak.clock_ghz:.2f} GHz ({peak.clock_source}), so shares of the peak "
        "read high (--clock-ghz gives the real clock where it is known)"
    )


def matmul_flops(dtype: str, *, side: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` ``side``² matrix products in ``dtype`` through torch
    (oneDNN): the practical ceiling of the dense layers that make most of a UNet's work."""
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(side, side).to(kind), torch.randn(side, side).to(kind)
    a @ b  # the first call sets up oneDNN's kernel
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2 * side**3 / best
