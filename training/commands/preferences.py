"""Preference training from the bot's votes (docs/dpo.md): ``export-pairs``, ``dpo``,
``kto`` and the ``dpo-miniature`` proof."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from pathlib import Path

from training.commands.common import add_field, bot_database, print_dropped, quiet_diffusers


def run_export_pairs(argv: list[str]) -> int:
    from datetime import datetime

    from training.export import export_pairs

    def moment(text: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not an ISO date or time (2026-12-01, 2026-12-01T18:00): {text!r}"
            ) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    from datetime import UTC

    parser = argparse.ArgumentParser(
        prog="python -m training export-pairs",
        description="Write every closed vote as preference pairs (winner, each loser, same "
        "prompt) with their images, for 'python -m training dpo'. Ties with the winner give no "
        "pair; docs/dpo.md states the whole rule.",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="the bot's SQLite file or postgresql:// URL (default: $COVER_DB_URL, else "
        "$COVER_DB_PATH or data/playlist-cover.db)",
    )
    parser.add_argument("--out", type=Path, required=True, help="pairs folder to write")
    parser.add_argument(
        "--min-margin",
        type=int,
        default=1,
        help="least votes by which the winner beat the loser (default 1: a single vote counts)",
    )
    parser.add_argument(
        "--since",
        type=moment,
        default=None,
        help="votes closed at or after this (UTC unless given)",
    )
    parser.add_argument("--until", type=moment, default=None, help="votes closed before this")
    parser.add_argument("--guild", default=None, help="one server's votes only (its id)")
    args = parser.parse_args(argv)
    db = args.db or bot_database()
    result = export_pairs(
        db,
        args.out,
        min_margin=args.min_margin,
        since=args.since,
        until=args.until,
        guild_id=args.guild,
    )
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items())) or "none"
    print(
        f"Exported {result.pairs} pairs from {result.votes} votes to {result.folder} "
        f"(candidates without a pair: {skipped})."
    )
    print_dropped(result.malformed, result.superseded)
    if result.missing:
        print(
            f"{len(result.missing)} image(s) no longer exist or are not images; their pairs "
            "were left out.",
            file=sys.stderr,
        )
    return 0


_PREFERENCE_DESCRIPTIONS = {
    "dpo": "Diffusion-DPO (Wallace et al., 2023) on preference pairs from "
    "'python -m training export-pairs'",
    "kto": "Diffusion-KTO (Li et al., 2024) on the voted candidates of an "
    "'python -m training export-pairs' folder: each with a vote liked, each without disliked",
}


def dpo_parser(objective: str = "dpo") -> argparse.ArgumentParser:
    """The parser of ``python -m training dpo`` and of ``kto``, one config for both."""
    from training.dpo import DPOConfig

    parser = argparse.ArgumentParser(
        prog=f"python -m training {objective}",
        description=f"{_PREFERENCE_DESCRIPTIONS[objective]}: LoRA by default (--method full for "
        "every weight), against the frozen base model as the reference. The LoRA goes to "
        "/cover with --lora or to a server with /community set (docs/dpo.md).",
    )
    hints = typing.get_type_hints(DPOConfig)
    for spec in dataclasses.fields(DPOConfig):
        if spec.name != "objective":  # the command says which
            add_field(parser, spec, hints[spec.name], presets={})
    return parser


def run_dpo(argv: list[str], objective: str = "dpo") -> int:
    from training.dpo import DPOConfig, train_dpo

    config = DPOConfig(**vars(dpo_parser(objective).parse_args(argv)), objective=objective)
    quiet_diffusers()
    result = train_dpo(config)
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return 0
    report = result.report
    examples = (
        f"{report['liked']} liked and {report['disliked']} disliked images"
        if objective == "kto"
        else f"{report['pairs']} pairs"
    )
    print(
        f"{objective.upper()}: {report['steps']} steps on {examples} ({report['method']}, "
        f"beta {report['beta']:g}) on {report['device']}: {report['seconds_per_step']:.3f} s/step, "
        f"final loss {report['final_loss']:.4f}."
    )
    print(f"Report: {result.out_dir / 'training_report.json'}")
    if config.method == "lora":
        print(
            f"LoRA: {result.output}\nUse it: python -m bot cover <playlist> --model "
            f"{config.base} --lora {result.output}"
        )
    else:
        print(f"Model: {result.output}")
    return 0


def run_dpo_miniature(argv: list[str]) -> int:
    from training.dpo_miniature import main as miniature_main

    return miniature_main(argv)
