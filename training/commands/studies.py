"""``python -m training miniature`` (the seeds' fine-tuning study in miniature) and its
``pretrain`` stage on its own."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from training.commands.common import flag_type, quiet_diffusers


def run_miniature_command(argv: list[str]) -> int:
    from training.miniature_config import BUDGET_MINUTES, MiniatureConfig

    defaults = MiniatureConfig()
    parser = argparse.ArgumentParser(
        prog="python -m training miniature",
        description="Reproduce the seeds' fine-tuning study in miniature, offline, on a CPU: a "
        "synthetic cover dataset, a baseline (fixed with --baseline, else a tiny Stable "
        "Diffusion pretrained here from scratch on a generic domain once per training seed), "
        "three fine-tunes on the covers (full with the text encoder, full with it frozen, "
        "LoRA; each arm's learning rate chosen on the validation split, EMA for all), each "
        "trained --train-seeds times, then the declared primary test (baseline -> full "
        "fine-tune, KID) and FID/KID/prompt-following of all of them on the test split with "
        "paired differences under Holm. docs/miniature.md has the design, the budget and the "
        "committed results; each finished stage is kept, so rerunning continues.",
    )
    parser.add_argument(
        "--out", type=Path, default=defaults.out, help=f"run folder (default {defaults.out})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke-test-sized run (4 minutes on 2 shared CPU cores in the test suite, with "
        "a small stand-in for the Inception network; longer with the real one); its numbers "
        "mean nothing",
    )
    parser.add_argument(
        "--train-seeds",
        type=int,
        default=None,
        help=f"train each fine-tune arm (and a baseline pretrained here) this many times "
        f"(default {defaults.train_seeds}; --quick: 2): the table shows the mean ± spread",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a fixed pretrained diffusers folder that never saw a cover (a `python -m "
        "training.converge --cover-steps 0` generic snapshot): every arm and seed is "
        "fine-tuned from it, the baseline arm is it, and the study runs at its resolution; "
        "without it the study pretrains its own baseline once per training seed",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"fine-tunes run at once, one process and one torch thread each (default "
        f"{defaults.workers}); the results are the same for any number",
    )
    parser.add_argument(
        "--no-ema",
        action="store_true",
        help="no EMA of the weights for any arm (default: one for every arm, LoRA included)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print the stages with their estimated minutes and stop; a plan over "
        f"{BUDGET_MINUTES:g} min is refused unless --over-budget is given",
    )
    parser.add_argument(
        "--over-budget",
        action="store_true",
        help=f"run (or plan) even when the estimate is over {BUDGET_MINUTES:g} min",
    )
    parser.add_argument("--fresh", action="store_true", help="delete --out first and start over")
    parser.add_argument(
        "--ship",
        action="store_true",
        help="afterwards, make the arm with the lowest KID on the validation split (its first "
        "seed) the embedded default model (writes models/assets/embedded/ in this checkout)",
    )
    parser.add_argument(
        "--publish",
        type=Path,
        metavar="DIR",
        help="afterwards, copy the results (summary, reports, charts, every training run's "
        "report) into DIR with paths relative to --out; the committed study uses docs/miniature",
    )
    args = parser.parse_args(argv)
    return _miniature(args)


def _miniature(args: argparse.Namespace) -> int:
    import shutil
    import sys

    from training.miniature import MiniatureConfig, best_finetune, publish, run_miniature, ship
    from training.miniature_config import BUDGET_MINUTES, check_config, plan, plan_text

    if args.ship and args.quick:
        raise ValueError("--ship with --quick would ship a smoke-test model; drop one of them.")
    make = MiniatureConfig.quick if args.quick else MiniatureConfig
    config = make(out=args.out, seed=args.seed)
    config.device = args.device
    config.baseline = args.baseline
    config.ema = not args.no_ema
    if args.train_seeds is not None:
        if args.train_seeds < 1:
            raise ValueError(f"--train-seeds must be at least 1, got {args.train_seeds}.")
        config.train_seeds = args.train_seeds
    if args.workers is not None:
        config.workers = args.workers
    check_config(config)
    # The budget: the estimate first, and no run past the hour unless asked for.
    stages = plan(config)
    minutes = sum(stage.minutes for stage in stages)
    if args.plan or (minutes > BUDGET_MINUTES and not args.quick):
        print(plan_text(stages))
    if minutes > BUDGET_MINUTES and not args.over_budget and not args.quick:
        print(
            f"The plan is estimated at {minutes:.1f} min, over the {BUDGET_MINUTES:g}-minute "
            "budget: shrink it (--train-seeds, --workers 2) or pass --over-budget.",
            file=sys.stderr,
        )
        return 2
    if args.plan:
        return 0
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    quiet_diffusers()
    summary = run_miniature(config, log=lambda line: print(line, flush=True))
    print((args.out / "study" / "report.md").read_text(encoding="utf-8"), end="")
    wall = summary["total_wall_seconds"] / 60
    print(f"Reproduction: {wall:.1f} min of wall time; results in {args.out}/study/.")
    if args.ship:
        folder = ship(config, summary)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(
            f"Shipped the {best_finetune(summary)} (chosen on validation) as the embedded model: {folder} ({size / 1e6:.1f} MB)."
        )
    if args.publish:
        written = publish(config, args.publish)
        print(f"Published {len(written)} files into {args.publish}.")
    return 0


def run_pretrain(argv: list[str]) -> int:
    from training.pretrain import PretrainConfig, pretrain

    parser = argparse.ArgumentParser(
        prog="python -m training pretrain",
        description="Train the embedded model's architecture from scratch on an image folder: "
        "the VAE, then the UNet and CLIP text encoder together (the miniature study's baseline).",
    )
    parser.add_argument("--data", required=True, help="image folder with metadata.jsonl")
    parser.add_argument("--out", required=True, help="run folder; the model lands in OUT/model")
    hints = typing.get_type_hints(PretrainConfig)
    for spec in dataclasses.fields(PretrainConfig):
        if spec.name in ("data", "out"):
            continue
        flag = "--" + spec.name.replace("_", "-")
        parser.add_argument(
            flag,
            type=flag_type(hints[spec.name]),
            default=spec.default,
            help=f"default {spec.default}",
        )
    config = PretrainConfig(**vars(parser.parse_args(argv)))
    quiet_diffusers()
    result = pretrain(config, log=lambda line: print(line, flush=True))
    print(f"Model: {result.model} ({result.report['seconds']['total'] / 60:.1f} min)")
    return 0
