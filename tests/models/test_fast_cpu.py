"""The fast CPU path (issue 22): the tiny decoder from the hub cache, previews through it, the
per-stage clock, the CPU cover comparison and the runtime-switch helpers.

Real diffusers pipelines throughout: sd-turbo's stand-in and TAESD's stand-in
(modeltools/standins/) in a hub cache of the module's own, at 64 px so a 2-core CPU runs them in
a second or two."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import pytest

from models.errors import ModelUnavailable
from models.jobs import GenerationParams, ImageSpec, NoControl
from models.optimize import Optimizations
from modeltools.benchmark.runtime import SwitchResult, alternate
from modeltools.benchmark.stages import STAGES, StageClock, StageTimes

PARAMS = GenerationParams(model="sd-turbo", width=64, height=64, steps=2, guidance=0.0)
SPECS = [ImageSpec("Quiet Afternoon playlist cover image", "", seed=k) for k in range(2)]


def test_the_decoder_switch_parses_and_refuses_bad_values() -> None:
    assert Optimizations().decoder == "auto" and Optimizations.plain().decoder == "full"
    assert Optimizations().replace("decoder=tiny").decoder == "tiny"
    assert "decoder=tiny" in Optimizations().replace("decoder=tiny").describe()
    with pytest.raises(ValueError, match=r"`decoder` takes auto, full, tiny, got 'small'"):
        Optimizations().replace("decoder=small")
    with pytest.raises(ValueError, match="`decoder` must be one of"):
        Optimizations(decoder="fast")


def test_auto_takes_the_tiny_decoder_on_a_cpu_only_where_there_is_one() -> None:
    auto = Optimizations()
    assert auto.wants_tiny_decoder(has_one=True, device="cpu")
    assert not auto.wants_tiny_decoder(has_one=True, device="cuda:0")
    assert not auto.wants_tiny_decoder(has_one=False, device="cpu")
    assert not Optimizations(decoder="full").wants_tiny_decoder(has_one=True, device="cpu")


def test_tiny_decoder_loads_from_the_hub_cache_and_decodes(runner_for) -> None:
    runner = runner_for("decoder=tiny")
    images = runner(PARAMS, SPECS, NoControl())
    assert type(runner.pipeline(PARAMS).vae).__name__ == "AutoencoderTiny"
    assert [g.image.size for g in images] == [(64, 64)] * 2
    full = runner_for("decoder=full")
    full_images = full(PARAMS, SPECS, NoControl())
    assert type(full.pipeline(PARAMS).vae).__name__ == "AutoencoderKL"
    # Same latents, another decoder: the pictures differ.
    assert images[0].image.tobytes() != full_images[0].image.tobytes()


def test_auto_falls_back_to_the_full_decoder_without_taesd_but_tiny_says_why(
    hub_without_taesd: Path, tmp_path: Path
) -> None:
    from models.runner import DiffusersRunner

    auto = DiffusersRunner(device="cpu", cache_dir=tmp_path, optimizations=Optimizations())
    assert type(auto.pipeline(PARAMS).vae).__name__ == "AutoencoderKL"
    tiny = DiffusersRunner(
        device="cpu", cache_dir=tmp_path, optimizations=Optimizations(decoder="tiny")
    )
    with pytest.raises(ModelUnavailable, match=r"hf download madebyollin/taesd"):
        tiny.pipeline(PARAMS)


def test_a_preset_without_a_tiny_decoder_is_named(tmp_path: Path) -> None:
    from models.registry import load_tiny_decoder, resolve_model

    with pytest.raises(ModelUnavailable, match="The model embedded has no tiny decoder"):
        load_tiny_decoder(resolve_model("embedded"), device="cpu", dtype=None)


def test_previews_are_decoded_by_the_tiny_decoder_when_it_is_loaded(runner_for) -> None:
    class Keep(NoControl):
        def __init__(self) -> None:
            self.sizes: list[tuple[int, int]] = []

        def preview(self, step: int, images) -> None:
            self.sizes += [image.size for image in images]

    for switches, size in (("decoder=tiny", (64, 64)), ("decoder=full", (8, 8))):
        control = Keep()
        runner = runner_for(f"{switches},previews_every=1")
        runner(PARAMS, SPECS, control)
        # Tiny decoder: full-size pictures; full VAE: the linear map, one pixel per latent.
        assert control.sizes == [size] * 2, switches


def test_the_stage_clock_counts_each_part_once_per_call(runner_for) -> None:
    runner = runner_for("decoder=tiny,prompt_cache=0")
    pipe = runner.pipeline(PARAMS)
    with StageClock(pipe) as clock:
        runner(PARAMS, SPECS, NoControl())
        times = clock.times()
    assert times.calls["UNet"] == PARAMS.steps  # one batched call per step, no guidance
    assert times.calls["decoder"] == 1 and times.calls["text encoder"] >= 1
    assert times.calls["post-processing"] == 1 and times.calls["safety checker"] == 0
    assert sum(times.seconds[s] for s in STAGES) == pytest.approx(times.total_s, rel=1e-6)
    assert all(times.seconds[s] >= 0 for s in STAGES)
    # Detached: the pipeline's own methods are back, nothing is counted any more.
    assert "decode" not in vars(pipe.vae) and "postprocess" not in vars(pipe.image_processor)
    runner(PARAMS, SPECS, NoControl())
    assert clock.calls["UNet"] == PARAMS.steps


def test_stage_times_median_and_lines() -> None:
    def run(unet: float) -> StageTimes:
        seconds = dict.fromkeys(STAGES, 0.0) | {"UNet": unet, "decoder": 1.0}
        return StageTimes(seconds, {"UNet": 1, "decoder": 1}, unet + 1.0)

    median = StageTimes.median([run(3.0), run(1.0), run(2.0)])
    assert median.seconds["UNet"] == 2.0 and median.total_s == 3.0
    lines = "\n".join(median.lines())
    assert "UNet" in lines and "67%" in lines and "safety checker   –" in lines
    assert StageTimes.from_json(median.to_json()) == median
    with pytest.raises(ValueError, match="`runs` is empty"):
        StageTimes.median([])


def test_the_queue_benchmark_reports_stages(runner_for) -> None:
    from models.queue import GenerationQueue
    from modeltools.benchmark import Workload, run_queue_benchmark

    runner = runner_for("decoder=tiny")

    async def go():
        async with GenerationQueue(runner, max_pending=4, max_per_user=1) as queue:
            return await run_queue_benchmark(
                queue, PARAMS, device="cpu", workloads=[Workload("one", 1, 2)], stages=True
            )

    report = asyncio.run(go())
    assert report.stages is not None and report.stages.calls["UNet"] == PARAMS.steps
    assert "one cover, stage by stage:" in report.table()
    assert type(report).from_json(report.to_json()).stages == report.stages


def test_the_cpu_cover_comparison_times_both_sides_and_compares_decoders(
    turbo_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modeltools.benchmark.cpu import compare_cover, pixel_distance

    monkeypatch.setenv("HF_HUB_CACHE", str(turbo_hub))
    result = compare_cover(
        "sd-turbo",
        steps=1,
        repeats=2,
        optimizations=Optimizations(decoder="tiny"),
        cache_dir=tmp_path,
        size=64,
        say=lambda line: None,
    )
    assert len(result.plain_runs_s) == len(result.ours_runs_s) == 2
    assert result.plain.calls["decoder"] == result.ours.calls["decoder"] == 1
    assert result.decoder_mean_abs is not None and result.decoder_mean_abs > 0
    assert "speed-up" in result.table()
    # The caveat belongs to the random-weight presets only; cached weights measure a real gap.
    assert "random weights" not in result.table()
    assert "random weights" in dataclasses.replace(result, model="sd-turbo-random").table()

    import torch

    same = torch.zeros(1, 3, 4, 4)
    assert pixel_distance(same, same) == (0.0, math.inf)
    assert pixel_distance(same - 1, same + 3)[0] == 255.0  # -1 → 0; 3 is clamped to 1 → 255
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_distance(same, torch.zeros(1, 3, 8, 8))


def test_alternate_runs_both_sides_in_turn_and_takes_medians() -> None:
    order: list[str] = []
    base, other = alternate(lambda: order.append("b"), lambda: order.append("o"), 3)
    assert order == ["b", "o"] * 4  # one untimed call each, then three timed in turn
    assert base >= 0 and other >= 0
    assert SwitchResult("c", "s", 2.0, 1.0, 3).verdict() == "wins"
    assert SwitchResult("c", "s", 1.0, 2.0, 3).verdict() == "loses"
    assert SwitchResult("c", "s", 1.0, 1.01, 3).verdict() == "no gain"


def test_the_random_presets_tiny_decoder_paints_visible_noise() -> None:
    """Issue 31, point 7: random TAESD weights decoded any latents to murk of mean ~4/255, which
    the black check (models/postprocess.py) now rejects; the presets promise noise."""
    import numpy as np
    import torch
    from PIL import Image

    from models.embedded import build_tiny_decoder_architecture
    from models.postprocess import is_black

    tiny = build_tiny_decoder_architecture().eval()
    with torch.no_grad():
        pixels = tiny.decode(torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)))
    rgb = ((pixels.sample[0] / 2 + 0.5).clamp(0, 1) * 255).round().byte()  # (3, H, W)
    image = Image.fromarray(rgb.permute(1, 2, 0).numpy())
    assert not is_black(image)
    values = np.asarray(image, dtype=np.float64)
    assert 64 < values.mean() < 192 and values.std() > 25  # grey noise, not a flat picture


def test_the_real_size_presets_have_sd_turbo_and_taesd_shapes() -> None:
    from models.embedded import build_sd_turbo_architecture, build_tiny_decoder_architecture
    from models.registry import BUILT_IN, resolve_model

    pipe = build_sd_turbo_architecture(device="meta")  # shapes only, nothing allocated
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    assert 865_000_000 < unet_params < 866_000_000  # SD 2.1's UNet: 865.9M
    assert pipe.unet.config.cross_attention_dim == 1024
    assert pipe.unet.config.use_linear_projection
    assert pipe.text_encoder.config.num_hidden_layers == 23
    assert pipe.text_encoder.config.hidden_act == "gelu"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    tiny = build_tiny_decoder_architecture(device="meta")
    assert 2_000_000 < sum(p.numel() for p in tiny.parameters()) < 2_600_000  # TAESD: 2.4M
    spec = resolve_model("sd-turbo-random")
    assert spec.is_built_in_memory and (spec.steps, spec.guidance) == (1, 0.0)
    assert spec.tiny_decoder == BUILT_IN
    assert resolve_model("sd-turbo").tiny_decoder == "madebyollin/taesd"


def test_cpu_bfloat16_parses_on_off_and_auto() -> None:
    assert Optimizations().cpu_bfloat16 == "auto" and Optimizations.plain().cpu_bfloat16 == "off"
    for text, value in (("on", "on"), ("true", "on"), ("0", "off"), ("AUTO", "auto")):
        assert Optimizations().replace(f"cpu_bfloat16={text}").cpu_bfloat16 == value
    assert "cpu_bfloat16=auto" in Optimizations().describe()
    assert "cpu_bfloat16" not in Optimizations.plain().describe()
    with pytest.raises(ValueError, match=r"`cpu_bfloat16` takes auto, on, off, got 'maybe'"):
        Optimizations().replace("cpu_bfloat16=maybe")


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    from models.optimize import cpu_has_native_bfloat16

    def cpu(flags: str) -> str:
        path = tmp_path / f"cpuinfo-{len(flags)}"
        path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
        return str(path)

    assert cpu_has_native_bfloat16(cpu("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni"))
    assert cpu_has_native_bfloat16(cpu("fpu avx2 amx_tile amx_bf16 amx_int8"))
    assert not cpu_has_native_bfloat16(cpu("fpu sse2 avx2 avx512f avx512bw"))  # emulated only
    assert not cpu_has_native_bfloat16(str(tmp_path / "no-such-file"))


def test_auto_takes_bfloat16_for_a_real_size_unet_on_a_bf16_cpu_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from models import optimize

    small = torch.nn.Linear(10, 10)  # 110 parameters, on the CPU
    auto, on, off = (Optimizations(cpu_bfloat16=v) for v in ("auto", "on", "off"))
    monkeypatch.setattr(optimize, "cpu_has_native_bfloat16", lambda: True)
    assert not auto.bfloat16_on_cpu(small)  # too small to be worth it
    assert on.bfloat16_on_cpu(small) and not off.bfloat16_on_cpu(small)
    monkeypatch.setattr(optimize, "BFLOAT16_FROM", 100)
    assert auto.bfloat16_on_cpu(small)
    monkeypatch.setattr(optimize, "cpu_has_native_bfloat16", lambda: False)
    assert not auto.bfloat16_on_cpu(small)  # a CPU that would emulate it
    with torch.device("meta"):
        elsewhere = torch.nn.Linear(10, 10)
    assert not on.bfloat16_on_cpu(elsewhere)  # never off a CPU


def test_cpu_bfloat16_on_runs_the_pipeline_in_bfloat16(runner_for) -> None:
    import torch

    runner = runner_for("decoder=tiny,cpu_bfloat16=on")
    images = runner(PARAMS, SPECS, NoControl())
    pipe = runner.pipeline(PARAMS)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    assert [made.image.size for made in images] == [(64, 64)] * 2
    auto = runner_for("decoder=tiny")  # the stand-in's UNet is far below BFLOAT16_FROM
    assert auto.pipeline(PARAMS).unet.dtype == torch.float32
