"""The CPU's peak (modeltools/benchmark/cpu_peak.py) and the side-by-side UNet benchmark
(modeltools/benchmark/unet_runtime.py) on sd-turbo's stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.optimize import Optimizations
from modeltools.benchmark.cpu_peak import CpuPeak, beyond_peak, cpu_peak, flops_per_cycle

ZEN4 = {"fma", "avx", "avx2", "avx512f", "avx512_bf16"}  # this development CPU's (AMD EPYC)
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile"}


@pytest.mark.parametrize(
    ("flags", "vendor", "family", "float32", "bfloat16"),
    [
        # AMD family 19h (Zen 4): 512-bit instructions on 256-bit pipes: 2 × 8 lanes × 2.
        (ZEN4, "AuthenticAMD", 25, 32, 64),
        # The same flags on Intel (Cooper Lake): full 512-bit pipes, VDPBF16PS 4 FLOPs a lane.
        (ZEN4, "GenuineIntel", 6, 64, 128),
        (SAPPHIRE_RAPIDS, "GenuineIntel", 6, 64, 2048),  # AMX: 1,024 multiply-adds a cycle
        ({"fma", "avx", "avx2"}, "GenuineIntel", 6, 32, 32),  # bfloat16 emulated: float32's
        ({"avx"}, "GenuineIntel", 6, 32, 32),  # no FMA: a multiply pipe and an add pipe
        (set(), "", 0, 16, 16),  # SSE only: 128 bits
        ({"fma", "avx2", "avx512f"}, "AuthenticAMD", 26, 64, 64),  # Zen 5: full width
    ],
)
def test_flops_per_cycle_follow_the_flags(
    flags: set[str], vendor: str, family: int, float32: int, bfloat16: int
) -> None:
    assert flops_per_cycle(flags, vendor=vendor, family=family) == {
        "float32": float32,
        "bfloat16": bfloat16,
    }


def test_the_peak_is_cores_times_clock_times_flops_per_cycle(tmp_path: Path) -> None:
    peak = CpuPeak("x", 2, 2.5, "test", {"float32": 32, "bfloat16": 64}, ("avx512f",))
    assert peak.flops("float32") == 2 * 2.5e9 * 32 == 160e9
    assert peak.flops("bfloat16") == 320e9
    assert "2 cores × 2.50 GHz" in peak.assumptions and "160 GFLOP/s float32" in peak.line()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel name\t: AMD EPYC\n"
        "cpu MHz\t\t: 2596.144\nflags\t\t: fpu fma avx avx2 avx512f avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu\n",
        encoding="utf-8",
    )
    read = cpu_peak(str(cpuinfo))
    assert read.model == "AMD EPYC" and read.per_cycle == {"float32": 32, "bfloat16": 64}
    assert read.flags == ("fma", "avx", "avx2", "avx512f", "avx512_bf16")
    assert read.clock_ghz > 0 and read.cores >= 1
    assert cpu_peak(str(cpuinfo), clock_ghz=3.7).clock_ghz == 3.7
    assert beyond_peak(peak, {"float32": 100e9, "bfloat16": 300e9}) is None
    warning = beyond_peak(peak, {"float32": 100e9, "bfloat16": 343e9})
    assert warning and "beat the computed bfloat16 peak" in warning


def test_the_unet_runtime_comparison_times_both_unets_in_turn(
    turbo_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeltools.benchmark.unet_runtime import compare_unet_runtimes

    monkeypatch.setenv("HF_HUB_CACHE", str(turbo_hub))
    said: list[str] = []
    result = compare_unet_runtimes(
        "sd-turbo",
        steps=1,
        repeats=2,
        optimizations=Optimizations(decoder="tiny"),
        cache_dir=tmp_path,
        size=64,
        say=said.append,
    )
    runs = [line.split(": ", 2)[2].split(":")[0] for line in said if ": run " in line]
    assert runs == ["run 1/2 torch", "run 1/2 openvino", "run 2/2 openvino", "run 2/2 torch"]
    assert result.export_ran and result.dtype == "float32"  # a tiny UNet: bfloat16 stays off
    assert all(run.calls["UNet"] == 1 for side in result.runs.values() for run in side)
    assert result.unet_flop_per_cover > 0 and len(result.pair_gains) == 2
    peak = CpuPeak("x", 2, 2.5, "test", {"float32": 32, "bfloat16": 64}, ())
    table = result.table(peak, matmul=50e9)
    assert "| torch |" in table and "| openvino |" in table and "OpenVINO's UNet vs" in table
    data = result.to_json(peak, 50e9)
    assert data["share_of_peak"]["torch"] == pytest.approx(
        result.achieved("torch") / peak.flops("float32")
    )


def test_the_first_candidate_is_timed_both_ways(
    turbo_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeltools.benchmark.first_candidate import measure_first_candidate

    monkeypatch.setenv("HF_HUB_CACHE", str(turbo_hub))
    said: list[str] = []
    result = measure_first_candidate(
        "sd-turbo",
        steps=1,
        repeats=2,
        optimizations=Optimizations(decoder="tiny"),
        cache_dir=tmp_path,
        size=64,
        say=said.append,
    )
    assert [line.split(": ")[2] for line in said] == [
        "run 1/2 whole",
        "run 1/2 split",
        "run 2/2 whole",
        "run 2/2 split",
    ]
    assert result.first_s["whole"] == result.cover_s["whole"]  # one call: all at once
    assert all(
        0 < first < cover
        for first, cover in zip(result.first_s["split"], result.cover_s["split"], strict=True)
    )
    assert "| split (1 + 3) |" in result.table()
