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

and writes ``cpu-cover-<time>.json`` and ``.md`` (no machine paths). Real-size models on 2
cores are slow, so presets that need many steps run few here (``--sd15-steps``) and the table
says so; the UNet's cost is linear in the steps, so its per-step figure scales up.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.registry import RANDOM_ARCHITECTURES
from modeltools.benchmark.cli import default_cache_dir
from modeltools.benchmark.formatting import installed_version
from modeltools.benchmark.stages import StageClock, StageTimes
from modeltools.benchmark.workload import DEFAULT_PROMPT

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
) -> CoverComparison:
    """Plain vs ours for one ``model`` (see the module docstring)."""
    import torch

    from models.jobs import GenerationParams, ImageSpec, NoControl
    from models.registry import load_pipeline, resolve_model
    from models.runner import DiffusersRunner

    spec = resolve_model(model)
    params = GenerationParams(
        model=model,
        width=size or spec.native_size,
        height=size or spec.native_size,
        steps=steps or spec.steps,
        guidance=spec.guidance,
    )
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


def _write(
    stem: Path, command: str, started: datetime, results: Sequence[CoverComparison], text: str
) -> None:
    info = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": command,
        "torch": installed_version("torch"),
        "diffusers": installed_version("diffusers"),
        "results": [r.to_json() for r in results],
    }
    stem.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    stem.with_suffix(".md").write_text(
        f"# One cover on this CPU, ours vs plain diffusers, {started:%Y-%m-%d}\n\n"
        f"```\n{command}\n```\n\n```\n{text}\n```\n",
        encoding="utf-8",
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
    started = datetime.now(UTC)
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cpu-cover-{started:%Y%m%dT%H%M%SZ}"
    command = "python -m modeltools.benchmark.cpu " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    results: list[CoverComparison] = []
    for name in filter(None, (n.strip() for n in args.models.split(","))):
        sd15 = name.startswith("sd15")
        results.append(
            compare_cover(
                name,
                steps=args.sd15_steps if sd15 else None,
                repeats=(args.sd15_repeats or args.repeats) if sd15 else args.repeats,
                optimizations=optimizations,
                cache_dir=default_cache_dir(),
                say=say,
            )
        )
        text = "\n\n".join(r.table() for r in results)
        print(text, flush=True)
        _write(stem, command, started, results, text)  # after each model: a slow run keeps some
    print(stem.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
