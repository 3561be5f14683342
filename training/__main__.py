"""``python -m training``: fine-tune (full with EMA, or LoRA) and build datasets.

    python -m training --preset seed001 --data DIR --base embedded --out runs/x [--method lora]
    python -m training collect --out DIR --i-accept-spotify-terms-risk
    python -m training export-votes --out DIR
    python -m training export-pairs --out DIR [--min-margin N] [--since DATE] [--until DATE]
    python -m training dpo --data PAIRS --base embedded --out runs/dpo [--beta B] [--method full]
    python -m training kto --data PAIRS --base embedded --out runs/kto   (likes and dislikes, no pairs)
    python -m training dpo-miniature [--out runs/dpo-miniature] [--seeds 3]   (the DPO/KTO proof)
    python -m training miniature [--out runs/miniature] [--baseline DIR] [--plan] [--ship]
        (the whole study; --baseline: every arm fine-tunes one fixed checkpoint; --plan: minutes)
    python -m training synthetic --out DIR       (just the synthetic dataset)
    python -m training pretrain --data DIR --out DIR   (just the from-scratch base model)
    python -m training.converge --data DIR --out DIR [--init-from shipped]   (the embedded default)
    python -m training.decoder --data DIR --out DIR   (its decoder, the encoder frozen)
    python -m training caption DIR [--titles merge|keep|replace]   (BLIP captions → metadata.jsonl)
    python -m training clip-filter DIR --out DIR [--threshold 0.2] (drop pairs CLIP says don't match)
    python -m training styles --data ROOT --out runs/styles [train flags]  (one model per ROOT/<style>)
    python -m training style-study --runs runs/styles   (every style's model on every style's test split)

The same module runs under ``accelerate launch -m training …`` for several GPUs or nodes.
Heavy libraries are imported only by the command that needs them, so ``--help`` is instant.
Every expected failure is one line starting with ``error:`` and exit status 1.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import partial

from training.commands import datasets, fine_tune, preferences, studies

# Each command's parser and handler live in training/commands/, by area.
COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": fine_tune.run_train,
    "collect": datasets.run_collect,
    "export-votes": datasets.run_export,
    "export-pairs": preferences.run_export_pairs,
    "dpo": partial(preferences.run_dpo, objective="dpo"),
    "kto": partial(preferences.run_dpo, objective="kto"),
    "dpo-miniature": preferences.run_dpo_miniature,
    "miniature": studies.run_miniature_command,
    "synthetic": datasets.run_synthetic,
    "pretrain": studies.run_pretrain,
    "caption": datasets.run_caption,
    "clip-filter": datasets.run_clip_filter,
    "styles": fine_tune.run_styles,
    "style-study": fine_tune.run_style_study,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    try:
        return COMMANDS[command](argv)
    except SystemExit:
        raise  # argparse's --help and usage errors, before the except below imports anything
    except _user_errors() as error:  # evaluated only when something was raised
        print(f"error: {error}", file=sys.stderr)
        return 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions whose message is meant for the user; anything else keeps its traceback."""
    from eval.features import InceptionUnavailable
    from models.errors import CoverError  # an unknown model, missing credentials, ...
    from training.collect import CollectError
    from training.config import TrainingError
    from training.data import DatasetError

    return (
        TrainingError,
        DatasetError,
        CollectError,
        CoverError,
        InceptionUnavailable,
        FileNotFoundError,
        ValueError,
    )


if __name__ == "__main__":
    sys.exit(main())
