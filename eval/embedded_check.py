"""Judge an embedded-model candidate by what the synthetic rules know (issue 29).

    python -m eval.embedded_check --model shipped --data runs/data --split validation \
        --count 48 --out runs/check/shipped

For the first ``count`` prompts of a split (prompt i with seed i, 20 DPM-Solver++ steps,
guidance 4, at the model's native size) it measures, each with its n and a 95% interval:

* palette: genre → palette (:mod:`eval.prompt_following`), centroids of the split's real covers;
* composition: activity → composition (:mod:`eval.composition`), a classifier fitted on the
  train covers; its accuracy on the split's real covers is the ceiling;
* the decoder's grid: :func:`eval.upscale_check.grid_ratio` at the VAE's downsampling factor;
* KID to the split's real covers (Inception-v3), both sides at 64 px so that a 64 px and a
  128 px model are compared on what they draw, not on their resolution (sharpness is judged
  separately, :mod:`eval.upscale_check`).

``--data`` holds ``covers/{train,validation,test}`` drawn at 64 px (``--data``) and the model's
outputs are reduced to 64 px for KID only. Intervals cover test sampling of one trained model:
a candidate trained once has no seed spread to add.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eval.composition import (
    CompositionClassifier,
    activity_labels,
    composition_following,
    features_of,
)
from eval.metrics import bootstrap
from eval.prompt_following import histograms, prompt_following
from eval.upscale_check import grid_ratio

# The embedded preset's own sampling (models/presets.py), what the bot paints with.
STEPS = 20
GUIDANCE = 4.0
KID_SIZE = 64  # px: the size both sides of KID are compared at (see the module docstring)


def read_rows(folder: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    rows = [
        json.loads(line)
        for line in (folder / "metadata.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return [folder / row["file_name"] for row in rows], rows


def load_pipeline(model: str) -> Any:
    """The shipped package (``shipped``), another package folder or a diffusers folder, float32
    on the CPU."""
    from diffusers import StableDiffusionPipeline

    from models.embedded import PACKAGED, embedded_scheduler, from_package, packaged_info

    if model == "shipped":
        return from_package(PACKAGED)
    if packaged_info(Path(model)) is not None:  # a package folder, e.g. an earlier release's
        return from_package(Path(model))
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    pipe.scheduler = embedded_scheduler()  # training folders carry the DDPM scheduler's config
    return pipe


def render(
    pipe: Any,
    prompts: list[str],
    seeds: list[int],
    *,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
) -> list[Image.Image]:
    """``prompts[i]`` with seed ``seeds[i]`` at the model's native size, as the embedded preset
    paints (its steps and guidance unless told otherwise)."""
    import torch

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return pipe(
        prompts,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=size,
        width=size,
    ).images


def generate(
    pipe: Any,
    prompts: list[str],
    folder: Path,
    *,
    batch: int = 8,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
) -> list[Path]:
    """Image i of ``prompts`` with seed i into ``folder`` (kept: a rerun skips it)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.png" for i in range(len(prompts))]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    pipe.set_progress_bar_config(disable=True)
    for start in range(0, len(missing), batch):
        chunk = missing[start : start + batch]
        images = render(pipe, [prompts[i] for i in chunk], chunk, steps=steps, guidance=guidance)
        for i, image in zip(chunk, images, strict=True):
            image.save(paths[i])
    return paths


def reconstruct(vae: Any, paths: list[Path], folder: Path) -> list[Path]:
    """Each real cover encoded (its latent mean) and decoded by ``vae``: what a UNet that
    painted the covers' latents exactly would show, so the figures measured on these are the
    best any UNet on this VAE can reach."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with torch.no_grad():
        for path in paths:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1
            batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]
            decoded = vae.decode(vae.encode(batch).latent_dist.mean).sample[0].clamp(-1, 1)
            image = ((decoded.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
            target = folder / path.name
            Image.fromarray(image).save(target)
            out.append(target)
    return out


def at_kid_size(paths: list[Path], folder: Path) -> list[Path]:
    """Copies reduced to :data:`KID_SIZE` (BOX: an area average, no ringing)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = folder / path.name
        if not target.is_file():
            with Image.open(path) as image:
                image.convert("RGB").resize((KID_SIZE, KID_SIZE), Image.Resampling.BOX).save(target)
        out.append(target)
    return out


def check(args: argparse.Namespace) -> dict[str, Any]:
    from eval.features import cached_features, load_inception
    from eval.study import kid_estimate

    data = Path(args.data) / "covers"
    out = Path(args.out)
    classifier_file = Path(args.classifier)
    if classifier_file.is_file():
        classifier = CompositionClassifier.load(classifier_file)
    else:  # fitted once on the train covers and kept
        train_paths, train_rows = read_rows(data / "train")
        classifier = CompositionClassifier.fit(
            features_of(train_paths), activity_labels(train_rows)
        )
        classifier_file.parent.mkdir(parents=True, exist_ok=True)
        classifier.save(classifier_file)
    real_paths, rows = read_rows(data / args.split)
    count = min(args.count, len(rows))
    prompts = [row["text"] for row in rows[:count]]
    pipe = load_pipeline(args.model)
    if args.reconstruct:  # the decoder's own floor: the split's real covers through the VAE
        generated = reconstruct(pipe.vae, real_paths[:count], out / "images")
    else:
        generated = generate(
            pipe, prompts, out / "images", steps=args.steps, guidance=args.guidance
        )

    real_hist = histograms(real_paths)
    genres = [row["genre"] for row in rows]
    palette = prompt_following(real_hist, genres, histograms(generated), genres[:count])
    activities = activity_labels(rows)
    composition = composition_following(classifier, features_of(generated), activities[:count])
    ceiling = composition_following(classifier, features_of(real_paths), activities)

    inception = load_inception(args.inception)
    cache = Path(args.cache)
    real_features = cached_features(
        at_kid_size(real_paths, cache / f"real-{args.split}"), inception, cache
    )
    fake_features = cached_features(at_kid_size(generated, out / "kid"), inception, None)
    kid, _ = kid_estimate(real_features, fake_features, resamples=200, seed=0)
    period = pipe.vae_scale_factor
    grids = []
    for path in generated:
        with Image.open(path) as image:
            grids.append(grid_ratio(image, period))
    grid = bootstrap(lambda v: float(v.mean()), (np.array(grids),), resamples=400, seed=0)

    result = {
        "model": args.model if args.model == "shipped" else Path(args.model).name,
        "split": args.split,
        "generated": count,
        "real": len(rows),
        "native_size": pipe.unet.config.sample_size * pipe.vae_scale_factor,
        "steps": args.steps,
        "guidance": args.guidance,
        "reconstructed": bool(args.reconstruct),
        "palette": palette.as_dict(),
        "composition": composition.as_dict(),
        "composition_ceiling": ceiling.as_dict(),
        "kid": {"value": kid.value, "low": kid.low, "high": kid.high},
        "grid": {"period": period, "value": grid.value, "low": grid.low, "high": grid.high},
    }
    (out / "check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.embedded_check", description=__doc__)
    parser.add_argument("--model", required=True, help="'shipped' or a diffusers folder")
    parser.add_argument("--data", required=True, help="synthetic dataset at 64 px (covers/...)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--out", required=True)
    parser.add_argument("--classifier", default="runs/composition-classifier.json")
    parser.add_argument("--cache", default="runs/check-cache")
    parser.add_argument("--inception", default=None)
    parser.add_argument(
        "--reconstruct",
        action="store_true",
        help="score the split's real covers through the model's VAE instead (the decoder's floor)",
    )
    parser.add_argument("--steps", type=int, default=STEPS, help=f"sampler steps (default {STEPS})")
    parser.add_argument(
        "--guidance", type=float, default=GUIDANCE, help=f"guidance scale (default {GUIDANCE})"
    )
    args = parser.parse_args(argv)
    result = check(args)

    def show(name: str, block: dict[str, Any]) -> str:
        a = block["accuracy"]
        return f"{name} {a['value']:.1%} ({a['low']:.1%} – {a['high']:.1%}), null {block['chance']:.1%}"

    print(
        show("palette", result["palette"]), "| ceiling", f"{result['palette']['real_ceiling']:.1%}"
    )
    print(
        show("composition", result["composition"]),
        "|",
        show("ceiling", result["composition_ceiling"]),
    )
    kid = result["kid"]
    print(
        f"KID x10^3 {kid['value'] * 1e3:.2f} ({kid['low'] * 1e3:.2f} – {kid['high'] * 1e3:.2f}), n = {result['generated']} / {result['real']}"
    )
    g = result["grid"]
    print(
        f"grid every {g['period']} px {g['value']:.3f} ({g['low']:.3f} – {g['high']:.3f}) (1 = none)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
