"""The optimisation switches (models/optimize.py), the runner using them, and the side-by-side
benchmark against the plain-diffusers baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.jobs import GenerationParams, ImageSpec
from models.optimize import Optimizations
from models.runner import DiffusersRunner

ROOT = Path(__file__).resolve().parents[2]


class NoControl:
    def step(self, step: int, total: int) -> None:
        pass


def params(steps: int = 4) -> GenerationParams:
    return GenerationParams(model="embedded", width=64, height=64, steps=steps, guidance=7.5)


SPECS = [
    ImageSpec(f"rainy day lofi study playlist cover image {n}", "blurry", seed=n) for n in range(3)
]


# -- the switches ----------------------------------------------------------------------------


def test_switches_parse_and_describe() -> None:
    tuned = Optimizations().replace("channels_last=off, compile=on,vae_slicing_from=4")
    assert (tuned.channels_last, tuned.compile, tuned.vae_slicing_from) == (False, True, 4)
    assert tuned.sdpa and tuned.prompt_cache == 256  # untouched
    assert "compile" in tuned.describe() and "channels_last" not in tuned.describe()
    assert Optimizations.plain().describe() == "none"
    assert Optimizations().replace("") == Optimizations()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("turbo=on", "Unknown optimisation 'turbo'"),
        ("sdpa=maybe", "`sdpa` takes on or off"),
        ("prompt_cache=lots", "`prompt_cache` takes a whole number"),
    ],
)
def test_bad_switches_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Optimizations().replace(text)


def test_compiled_batches_are_padded_to_buckets() -> None:
    compiled = Optimizations(compile=True)
    assert [compiled.bucket(n) for n in (1, 3, 5, 8, 9, 40)] == [1, 4, 8, 8, 16, 40]
    assert Optimizations().bucket(5) == 5  # eager: no padding


# -- the runner with them ----------------------------------------------------------------------


def test_optimised_runner_makes_the_plain_runners_images(
    cache_dir: Path, embedded_model_dir: Path
) -> None:
    """Optimisations change speed, not pictures: same seeds, same images (to float noise)."""
    plain = DiffusersRunner(device="cpu", cache_dir=cache_dir, optimizations=Optimizations.plain())
    tuned = DiffusersRunner(device="cpu", cache_dir=cache_dir, optimizations=Optimizations())
    a = plain(params(), SPECS, NoControl())
    b = tuned(params(), SPECS, NoControl())
    for x, y in zip(a, b, strict=True):
        diff = np.abs(np.asarray(x.image, np.int16) - np.asarray(y.image, np.int16))
        assert diff.mean() < 1.0 and diff.max() <= 8
    different = np.abs(np.asarray(a[0].image, np.int16) - np.asarray(a[1].image, np.int16))
    assert different.mean() > 5  # the comparison can tell images apart


def test_prompt_cache_skips_the_text_encoder_for_known_prompts(
    cache_dir: Path, embedded_model_dir: Path
) -> None:
    runner = DiffusersRunner(device="cpu", cache_dir=cache_dir, optimizations=Optimizations())
    first = runner(params(2), SPECS[:2], NoControl())
    pipe = runner._loaded[runner.loaded[0]]
    calls: list[Any] = []
    hook = pipe.text_encoder.register_forward_hook(lambda *args: calls.append(args))
    try:
        again = runner(params(2), SPECS[:2], NoControl())
        assert calls == []  # both prompts (and the negative) came from the cache
        runner(params(2), SPECS[1:], NoControl())
        assert len(calls) == 2  # one new prompt: its text and its negative, in one call
    finally:
        hook.remove()
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))


def test_large_batches_decode_one_image_at_a_time(
    cache_dir: Path, embedded_model_dir: Path
) -> None:
    runner = DiffusersRunner(
        device="cpu",
        cache_dir=cache_dir,
        optimizations=Optimizations(vae_slicing_from=3, vae_tiling_from=128),
    )
    runner(params(1), SPECS[:2], NoControl())
    pipe = runner._loaded[runner.loaded[0]]
    assert not pipe.vae.use_slicing and not pipe.vae.use_tiling
    runner(params(1), SPECS, NoControl())
    assert pipe.vae.use_slicing and not pipe.vae.use_tiling
    big = GenerationParams(model="embedded", width=128, height=128, steps=1, guidance=7.5)
    runner(big, SPECS[:1], NoControl())
    assert pipe.vae.use_tiling and not pipe.vae.use_slicing


# -- side by side ------------------------------------------------------------------------------


def test_compare_runs_the_baseline_and_ours_in_one_process(
    tmp_path: Path, cache_dir: Path, embedded_model_dir: Path
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeltools.benchmark",
            "--compare",
            "--steps",
            "2",
            "--workloads",
            "1,2",
            "--images",
            "2",
            "--size",
            "64",
            "--out",
            str(tmp_path),
            "--cache-dir",
            str(cache_dir),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "speed-up" in done.stdout and "lone request" in done.stdout
    [compare_json] = tmp_path.glob("compare-*.json")
    data = json.loads(compare_json.read_text())
    assert len(data["speedups"]) == 2 and all(s > 0 for s in data["speedups"])
    assert data["baseline"]["setup"].startswith("baseline")
    assert [r["batch_sizes"] for r in data["baseline"]["results"]] == [[2], [2, 2]]
    assert data["ours"]["results"][1]["batch_sizes"] == [4]  # two requests, one call
    assert data["unet_tflop_per_image"] > 0
    [markdown] = tmp_path.glob("compare-*.md")
    assert "python -m modeltools.benchmark --compare" in markdown.read_text()


def test_unknown_switch_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modeltools.benchmark", "--opt", "turbo=on"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.endswith(
        "Unknown optimisation 'turbo'; known: half_precision, cpu_bfloat16, sdpa, channels_last, "
        "compile, vae_slicing_from, vae_tiling_from, prompt_cache, previews_every, decoder, "
        "decoder_runtime, unet_runtime."
    )


def test_the_median_run_is_kept() -> None:
    from modeltools.benchmark import Workload, WorkloadResult, median_run

    def run(rate: float) -> WorkloadResult:
        return WorkloadResult(Workload.concurrent(1), 4, 4 / rate, rate, 1.0, 1.0, (4,))

    assert median_run([run(3.0), run(1.0), run(2.0)]).images_per_s == 2.0
    assert median_run([run(4.0), run(1.0), run(3.0), run(2.0)]).images_per_s == 2.0
    assert median_run([run(5.0)]).images_per_s == 5.0


def test_the_gpu_benchmark_model_has_sd15s_shapes() -> None:
    """Built on the meta device (no memory, no time): the UNet has SD 1.5's 859.5M parameters
    and 768-wide cross-attention, the VAE downsamples 8x, the text encoder has 12 layers."""
    from models.embedded import build_sd15_architecture
    from models.registry import resolve_model

    pipe = build_sd15_architecture(device="meta")
    unet_params = sum(p.numel() for p in pipe.unet.parameters())
    assert 859_000_000 < unet_params < 860_000_000
    assert pipe.unet.config.cross_attention_dim == 768
    assert pipe.vae_scale_factor == 8
    assert pipe.text_encoder.config.num_hidden_layers == 12
    spec = resolve_model("sd15-random")
    assert spec.is_built_in_memory and not spec.is_embedded and spec.native_size == 512


class RecordingControl(NoControl):
    def __init__(self) -> None:
        self.previews: list[tuple[int, list[Any]]] = []

    def preview(self, step: int, images: Any) -> None:
        self.previews.append((step, list(images)))


def test_previews_every_n_steps_from_the_latents(cache_dir: Path, embedded_model_dir: Path) -> None:
    control = RecordingControl()
    runner = DiffusersRunner(
        device="cpu", cache_dir=cache_dir, optimizations=Optimizations(previews_every=2)
    )
    done = runner(params(5), SPECS, control)
    assert [step for step, _ in control.previews] == [2, 4]  # none at the last step
    for _, images in control.previews:
        # One per spec, a latent pixel per preview pixel: the size over the VAE's factor (8).
        side = params(5).width // 8
        assert [image.size for image in images] == [(side, side)] * 3
    assert len({np.asarray(i).tobytes() for i in control.previews[1][1]}) == 3  # each its own
    assert len(done) == 3

    quiet = RecordingControl()
    DiffusersRunner(device="cpu", cache_dir=cache_dir)(params(3), SPECS[:1], quiet)
    assert quiet.previews == []  # off by default
