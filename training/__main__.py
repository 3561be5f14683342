"""``python -m training``: fine-tune (full with EMA, or LoRA) and build datasets.

    python -m training --preset seed001 --data DIR --base embedded --out runs/x [--method lora]
    python -m training collect --out DIR --i-accept-spotify-terms-risk
    python -m training export-votes --out DIR
    python -m training export-pairs --out DIR [--min-margin N] [--since DATE] [--until DATE]
    python -m training dpo --data PAIRS --base embedded --out runs/dpo [--beta B] [--method full]
    python -m training dpo-miniature [--out runs/dpo-miniature]   (the DPO proof, ~20 min on 2 cores)
    python -m training miniature [--out runs/miniature] [--ship] [--publish DIR]   (the whole study, 46 min on one core)
    python -m training synthetic --out DIR       (just the synthetic dataset)
    python -m training pretrain --data DIR --out DIR   (just the from-scratch base model)
    python -m training caption DIR [--titles merge|keep|replace]   (BLIP captions → metadata.jsonl)
    python -m training clip-filter DIR --out DIR [--threshold 0.2] (drop pairs CLIP says don't match)
    python -m training styles --data ROOT --out runs/styles [train flags]  (one model per ROOT/<style>)
    python -m training style-study --runs runs/styles   (every style's model on every style's test split)

The same module runs under ``accelerate launch -m training …`` for several GPUs or nodes.
Heavy libraries are imported only by the command that needs them, so ``--help`` is instant.
Every expected failure is one line starting with ``error:`` and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from training.config import DEFAULT_PRESET, INFERRED, PRESETS, SEED000_WARNING, TrainConfig

COMMANDS = (
    "train",
    "collect",
    "export-votes",
    "export-pairs",
    "dpo",
    "kto",
    "dpo-miniature",
    "miniature",
    "synthetic",
    "pretrain",
    "caption",
    "clip-filter",
    "styles",
    "style-study",
)


# -- the training command: one flag per TrainConfig field --------------------------------------


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Fine-tune a Stable Diffusion model the way the seed papers did: a full "
        "fine-tune (optionally with EMA) or LoRA. Other commands: 'python -m training collect' "
        "(a playlist-cover dataset from Spotify search) and 'python -m training export-votes' "
        "(the bot's voted winners as a dataset); add --help to either.",
        epilog=_presets_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help=f"the seed paper whose parameters to start from (default: {DEFAULT_PRESET}); "
        "every flag below overrides it",
    )
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        _add_field(parser, spec, hints[spec.name])
    return parser


def _add_field(
    parser: argparse.ArgumentParser,
    spec: dataclasses.Field,
    hint: Any,
    presets: dict[str, dict[str, Any]] = PRESETS,
) -> None:
    flag = "--" + spec.name.replace("_", "-")
    default = spec.default if spec.default is not dataclasses.MISSING else []
    text = spec.metadata["help"]
    # What a run gets: each preset's own value where it sets one (the default preset first).
    given = {name: values[spec.name] for name, values in presets.items() if spec.name in values}
    if given:
        cells = [
            f"{name} {_shown(given.get(name, default))}"
            for name in [DEFAULT_PRESET, *sorted(set(PRESETS) - {DEFAULT_PRESET})]
        ]
        text += f" [{', '.join(cells)}]"
    elif isinstance(default, bool):
        text += f" [default {'on' if default else 'off'}]"
    elif default not in ("", None, []):
        text += f" [default {default}]"
    # SUPPRESS: only flags actually given override the preset.
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": text}
    base = _flag_type(hint)
    if base is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(base) is typing.Literal:
        parser.add_argument(flag, choices=typing.get_args(base), **kwargs)
    elif typing.get_origin(base) is list:
        parser.add_argument(flag, nargs="+", metavar="TEXT", **kwargs)
    else:
        parser.add_argument(flag, type=base, metavar=spec.name.split("_")[-1].upper(), **kwargs)


def _flag_type(hint: Any) -> Any:
    """What a flag's text is parsed as: the type itself, ``X`` for an optional ``X | None``
    (argparse calls ``type`` on the text, and a union is not callable)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "-" if value is None else str(value)


def _presets_table() -> str:
    """Each preset's actual value of every option any preset sets (its own, or the default it
    keeps), so the table says what a run gets."""
    keys = sorted({k for values in PRESETS.values() for k in values})
    names = sorted(PRESETS)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    width = max(len(k) for k in keys) + 2
    lines = [
        "presets (the value a run with each preset gets; * = set by the paper, else the default):",
        "",
    ]
    lines.append("  " + "option".ljust(width) + "".join(n.ljust(12) for n in names))
    for key in keys:
        cells = [
            _shown(PRESETS[n][key]) + ("†" if (n, key) in INFERRED else "*")
            if key in PRESETS[n]
            else _shown(defaults[key])
            for n in names
        ]
        lines.append(
            "  " + key.replace("_", "-").ljust(width) + "".join(c.ljust(12) for c in cells)
        )
    lines += [
        "",
        "warning: " + SEED000_WARNING,
        "",
        "examples:",
        "  python -m training --preset seed001 --data dataset/ --base embedded --out runs/full",
        "  python -m training --preset seed001 --method lora --lora-rank 8 --data dataset/ --out runs/lora",
        "  accelerate launch --multi_gpu --num_processes 4 -m training --preset seed001 --data dataset/ --base sd15 --out runs/sd15",
    ]  # fmt: skip
    return "\n".join(lines)


def run_train(argv: list[str]) -> int:
    from training.config import config_from_preset
    from training.train import train

    args = vars(train_parser().parse_args(argv))
    config = config_from_preset(args.pop("preset"), **args)
    _quiet_diffusers()
    result = train(config)
    report = result.report
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return 0  # one report per machine is plenty
    peak = report["peak_gpu_memory_bytes"] or report["peak_process_rss_bytes"]
    kind = "GPU memory allocated" if report["peak_gpu_memory_bytes"] else "process RSS"
    seconds = report["seconds_per_step"]
    print(
        f"Trained {report['steps']} steps ({report['method']}, {report['images_per_step']} "
        f"images/step) on {report['device']}: {seconds:.3f} s/step "
        f"({report['images_per_second']:.2f} images/s), peak {kind} {peak / 2**30:.2f} GiB, "
        f"final loss {report['final_loss']:.4f}."
    )
    print(f"Report: {result.out_dir / 'training_report.json'}")
    if config.method == "lora":
        print(
            f"LoRA: {result.output}\nUse it: python -m bot cover <playlist> --model {config.base} --lora {result.output}"
        )
    else:
        print(
            f"Model: {result.output}\nUse it: python -m bot cover <playlist> --model {result.output}"
        )
    return 0


# -- collect -----------------------------------------------------------------------------------


def collect_parser() -> argparse.ArgumentParser:
    from training.collect import ACK_FLAG, TERMS_WARNING, CollectConfig

    defaults = CollectConfig(out=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m training collect",
        description="Build a playlist-cover dataset from Spotify search the way seed 000 did: "
        "genre/mood keywords and random 3-letter prefixes, no mosaics, templates or "
        "Spotify-owned playlists, de-duplicated by id and by perceptual hash, split 80/10/10 by "
        "playlist id, resumable. Needs SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET.\n\n"
        + TERMS_WARNING,
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="dataset folder (created; an existing one is continued)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=defaults.queries,
        help=f"search queries in the plan (default {defaults.queries})",
    )
    parser.add_argument(
        "--pages-per-query",
        type=int,
        default=defaults.pages_per_query,
        help=f"result pages of 10 per query (default {defaults.pages_per_query})",
    )
    parser.add_argument(
        "--keyword-share",
        type=float,
        default=defaults.keyword_share,
        help="share of keyword queries; the rest are random prefixes (default 0.4)",
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="fixes the query plan (default 0)"
    )
    parser.add_argument(
        "--max-playlists", type=int, default=None, help="stop once this many covers are kept"
    )
    parser.add_argument(
        "--hash-distance",
        type=int,
        default=defaults.hash_distance,
        help=f"covers within this many dHash bits are duplicates (default {defaults.hash_distance})",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=defaults.max_wait_s,
        help=f"longest Retry-After waited out, seconds (default {defaults.max_wait_s:.0f}); a longer one stops the run, resumable",
    )
    parser.add_argument(ACK_FLAG, dest="acknowledged", action="store_true", help="you have read the warning above and take that decision")  # fmt: skip
    return parser


def run_collect(argv: list[str], *, sleep: Any = None) -> int:
    from training.collect import TERMS_WARNING, CollectConfig, CollectError, Collector

    args = collect_parser().parse_args(argv)
    if not args.acknowledged:
        print(f"error: {TERMS_WARNING}", file=sys.stderr)
        return 2
    for name in ("queries", "pages_per_query"):
        if getattr(args, name) < 1:
            raise CollectError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}."
            )
    from bot.app.settings import Settings

    settings = Settings()
    client_id, secret = settings.require_spotify()
    config = CollectConfig(
        out=args.out,
        queries=args.queries,
        pages_per_query=args.pages_per_query,
        keyword_share=args.keyword_share,
        seed=args.seed,
        max_playlists=args.max_playlists,
        hash_distance=args.hash_distance,
        max_wait_s=args.max_wait,
    )
    collector = Collector(
        config,
        client_id=client_id,
        client_secret=secret.get_secret_value(),
        api_base=settings.spotify_api_base,
        token_url=settings.spotify_token_url,
        **({"sleep": sleep} if sleep is not None else {}),
    )
    print(TERMS_WARNING.rpartition(". To go ahead")[0] + ".", file=sys.stderr)
    try:
        stats = collector.run()
    except KeyboardInterrupt:
        print(f"Interrupted; {collector.kept} covers kept. Run the same command to continue.")
        return 130
    splits = ", ".join(f"{s} {n}" for s, n in sorted(stats.splits.items()))
    skipped = ", ".join(f"{k} {n}" for k, n in sorted(stats.skipped.items())) or "none"
    state = "done" if stats.finished else "stopped"
    print(
        f"{state}: {stats.kept} covers in {args.out} ({splits}); this run read {stats.pages} pages, skipped: {skipped}."
    )
    return 0


# -- export-votes ------------------------------------------------------------------------------


def run_export(argv: list[str]) -> int:
    from training.export import export_votes

    parser = argparse.ArgumentParser(
        prog="python -m training export-votes",
        description="Write every closed vote's winning cover and its prompt as an image folder "
        "with metadata.jsonl, ready for 'python -m training --data'.",
    )
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help="the bot's SQLite file (default: $COVER_DB_PATH or data/playlist-cover.db)",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")  # fmt: skip
    args = parser.parse_args(argv)
    db = args.db or Path(os.environ.get("COVER_DB_PATH") or "data/playlist-cover.db")
    result = export_votes(db, args.out)
    print(f"Exported {result.exported} winning covers to {result.folder}.")
    _print_dropped(result.malformed, result.superseded)
    if result.missing:
        print(
            f"{len(result.missing)} winner image(s) no longer exist and were left out.",
            file=sys.stderr,
        )
    return 0


# -- the miniature study and its parts -----------------------------------------------------------


def run_miniature_command(argv: list[str]) -> int:
    from training.miniature import MiniatureConfig

    defaults = MiniatureConfig()
    parser = argparse.ArgumentParser(
        prog="python -m training miniature",
        description="Reproduce the seeds' fine-tuning study in miniature, offline, on a CPU: a "
        "synthetic cover dataset, a tiny Stable Diffusion pretrained from scratch on a generic "
        "domain (the baseline), three fine-tunes on the covers (full with the text encoder, "
        "full with it frozen, LoRA), the baseline and each arm trained --train-seeds times, "
        "chosen between on the "
        "validation split, then FID/KID/prompt-following of all of them on the test split with "
        "paired differences and the spread over training seeds. docs/miniature.md has the "
        "committed results and their wall time (46.0 min on one core of a shared 2-core "
        "machine with OMP_NUM_THREADS=1); "
        "each finished stage is kept, so rerunning continues.",
    )
    parser.add_argument("--out", type=Path, default=defaults.out, help=f"run folder (default {defaults.out})")  # fmt: skip
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
        help=f"train the baseline and each fine-tune arm this many times (default {defaults.train_seeds}; "
        "--quick: 2): the table shows the mean ± spread over them",
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

    from training.miniature import MiniatureConfig, best_finetune, publish, run_miniature, ship

    if args.ship and args.quick:
        raise ValueError("--ship with --quick would ship a smoke-test model; drop one of them.")
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    make = MiniatureConfig.quick if args.quick else MiniatureConfig
    config = make(out=args.out, seed=args.seed)
    config.device = args.device
    if args.train_seeds is not None:
        if args.train_seeds < 1:
            raise ValueError(f"--train-seeds must be at least 1, got {args.train_seeds}.")
        config.train_seeds = args.train_seeds
    _quiet_diffusers()
    summary = run_miniature(config, log=lambda line: print(line, flush=True))
    print((args.out / "study" / "report.md").read_text(encoding="utf-8"), end="")
    minutes = summary["total_seconds"] / 60
    print(f"Reproduction: {minutes:.1f} min of stage time; results in {args.out}/study/.")
    if args.ship:
        folder = ship(config, summary)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"Shipped the {best_finetune(summary)} (chosen on validation) as the embedded model: {folder} ({size / 1e6:.1f} MB).")  # fmt: skip
    if args.publish:
        written = publish(config, args.publish)
        print(f"Published {len(written)} files into {args.publish}.")
    return 0


def run_synthetic(argv: list[str]) -> int:
    from training.synthetic import DatasetSizes, write_dataset

    defaults = DatasetSizes()
    parser = argparse.ArgumentParser(
        prog="python -m training synthetic",
        description="Write the synthetic playlist-cover dataset (covers whose genre, activity, "
        "mood and era words set their palette, composition, motif and texture) and a generic "
        "shapes domain, as image folders with metadata.jsonl and train/validation/test splits.",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    parser.add_argument("--size", type=int, default=64, help="image size in px (default 64)")
    parser.add_argument("--covers", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=defaults.covers, help=f"cover images per split (default {' '.join(map(str, defaults.covers))})")  # fmt: skip
    parser.add_argument("--generic", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=defaults.generic, help=f"generic images per split (default {' '.join(map(str, defaults.generic))})")  # fmt: skip
    args = parser.parse_args(argv)
    if min(*args.covers, *args.generic) < 0:
        raise ValueError("image counts must be 0 or more.")
    sizes = DatasetSizes(covers=tuple(args.covers), generic=tuple(args.generic))
    summary = write_dataset(args.out, sizes=sizes, seed=args.seed, size=args.size)
    print(f"Wrote {summary['written']} images to {args.out} in {summary['seconds']:.1f} s.")
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
        parser.add_argument(flag, type=_flag_type(hints[spec.name]), default=spec.default, help=f"default {spec.default}")  # fmt: skip
    config = PretrainConfig(**vars(parser.parse_args(argv)))
    _quiet_diffusers()
    result = pretrain(config, log=lambda line: print(line, flush=True))
    print(f"Model: {result.model} ({result.report['seconds']['total'] / 60:.1f} min)")
    return 0


# -- the data pipeline of seed 003: caption, CLIP filter ---------------------------------------


def run_caption(argv: list[str]) -> int:
    from training.caption import DEFAULT_CAPTION_MODEL, TITLE_MODES, CaptionConfig, caption_folder

    defaults = CaptionConfig(folder=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m training caption",
        description="Caption every image of a folder that has no caption yet with a "
        "transformers captioning model and write DIR/metadata.jsonl (file_name, text, title, "
        "caption). Batched and resumable: captions are appended to DIR/captions.jsonl as they "
        "come, so a stopped run continues. The model must be in the local Hugging Face cache "
        "(`python -m bot models pull blip`).",
    )
    parser.add_argument("folder", type=Path, help="image folder (an existing metadata.jsonl gives the titles)")  # fmt: skip
    parser.add_argument("--model", default=DEFAULT_CAPTION_MODEL, help=f"hub id or folder (default {DEFAULT_CAPTION_MODEL})")  # fmt: skip
    parser.add_argument("--titles", choices=TITLE_MODES, default=defaults.titles, help="merge: '<title>, <caption>'; keep: titled images keep their title; replace: the caption only (default merge)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"images per model call (default {defaults.batch_size})")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, help=f"longest caption in tokens (default {defaults.max_new_tokens})")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    config = CaptionConfig(args.folder, model=args.model, titles=args.titles,
                           batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                           device=args.device)  # fmt: skip
    result = caption_folder(config, log_line=print)
    speed = f" at {result.images_per_second:.2f} images/s" if result.images_per_second else ""
    print(
        f"Captioned {result.captioned} image(s){speed}, reused {result.reused}; "
        f"{result.images} rows in {result.metadata}."
    )
    return 0


def run_clip_filter(argv: list[str]) -> int:
    from training.clip_filter import DEFAULT_THRESHOLD, FilterConfig, filter_pairs

    defaults = FilterConfig(data=Path("."), out=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m training clip-filter",
        description="Score every image/caption pair with CLIP (the model eval's CLIP score "
        "uses) and keep those with cosine similarity at or above --threshold (seed 003: 0.2). "
        "Writes OUT/metadata.jsonl with the kept images, OUT/clip_scores.jsonl and "
        "OUT/clip_filter_report.md/.json (histogram, the pairs at the cut).",
    )
    parser.add_argument("data", type=Path, help="image folder with metadata.jsonl")
    parser.add_argument("--out", type=Path, required=True, help="folder for the kept set")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help=f"lowest cosine kept (default {DEFAULT_THRESHOLD})")  # fmt: skip
    parser.add_argument("--model", default=None, help="CLIP hub id or folder (default openai/clip-vit-large-patch14)")  # fmt: skip
    parser.add_argument("--caption-column", default="text", help="caption column (default text)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"pairs per model call (default {defaults.batch_size})")  # fmt: skip
    parser.add_argument("--examples", type=int, default=defaults.examples, help="pairs shown on each side of the cut (default 5)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    config = FilterConfig(args.data, args.out, threshold=args.threshold, model=args.model,
                          caption_column=args.caption_column, batch_size=args.batch_size,
                          examples=args.examples, device=args.device)  # fmt: skip
    result = filter_pairs(config, log_line=print)
    speed = f" at {result.images_per_second:.2f} images/s" if result.images_per_second else ""
    print(f"Scored {result.pairs} pairs{speed}; kept {result.kept} in {result.out}. Report: {result.report}")  # fmt: skip
    return 0


# -- one model per style (seed 003) ----------------------------------------------------------------


def run_styles(argv: list[str]) -> int:
    from training.styles import DEFAULT_STYLE_PRESET, StyleLoopConfig, train_styles

    parser = argparse.ArgumentParser(
        prog="python -m training styles",
        description="Train one model (or LoRA, --method lora) per style folder the way seed 003 "
        "retrained SD 1.5 per artist: ROOT/<style>/ is an image folder with metadata.jsonl (or "
        "train/ and test/ splits); a fixed share is held out for 'python -m training "
        "style-study'. Finished styles are skipped on a rerun, an interrupted one resumes.",
    )
    parser.add_argument("--data", type=Path, required=True, help="ROOT: one subfolder per style")
    parser.add_argument("--out", type=Path, required=True, help="run folder (OUT/<style>/...)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_STYLE_PRESET, help=f"training parameters to start from (default {DEFAULT_STYLE_PRESET}, the paper's)")  # fmt: skip
    parser.add_argument("--styles", help="comma-separated style folders to train (default all)")
    parser.add_argument("--test-share", type=float, default=0.2, help="share held out per style (default 0.2)")  # fmt: skip
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the hold-out split (default 0)")  # fmt: skip
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        if spec.name not in ("data", "out", "resume"):
            _add_field(parser, spec, hints[spec.name])
    args = vars(parser.parse_args(argv))
    own = ("data", "out", "preset", "styles", "test_share", "split_seed")
    loop = {name: args.pop(name) for name in own}
    styles = [s.strip() for s in loop["styles"].split(",") if s.strip()] if loop["styles"] else None
    config = StyleLoopConfig(loop["data"], loop["out"], preset=loop["preset"], train=args,
                             styles=styles, test_share=loop["test_share"],
                             split_seed=loop["split_seed"])  # fmt: skip
    _quiet_diffusers()
    summary = train_styles(config, log_line=lambda line: print(line, flush=True))
    for name, record in sorted(summary["styles"].items()):
        print(f"{name}: {record['output']}")
    print(f"Next: python -m training style-study --runs {loop['out']}")
    return 0


def run_style_study(argv: list[str]) -> int:
    from eval.clip_score import DEFAULT_CLIP_MODEL, load_clip
    from eval.features import find_inception, load_inception
    from models.registry import pick_device
    from training.styles import StyleStudyConfig, study_styles

    defaults = StyleStudyConfig(out=Path("."))
    parser = argparse.ArgumentParser(
        prog="python -m training style-study",
        description="Compare the models of 'python -m training styles': on each style's held-out "
        "images, eval's study of the base model and every style's model (FID, KID, CLIP "
        "score), then one matrix – a style's own model should win its column. Writes "
        "RUNS/study/report.md and matrix.json; rerunning resumes.",
    )
    parser.add_argument("--runs", type=Path, required=True, help="the styles command's --out")
    parser.add_argument("--limit", type=int, help="test prompts per style (default all)")
    parser.add_argument("--size", type=int, help="image size in px (default: each model's)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: each model's)")
    parser.add_argument("--guidance", type=float, help="guidance scale (default: each model's)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per pipeline call")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="prompt i uses seed+i (default 0)")
    parser.add_argument("--bootstrap", type=int, default=defaults.bootstrap, help="bootstrap resamples (0: no intervals)")  # fmt: skip
    parser.add_argument("--fid-resamples", type=int, default=defaults.fid_resamples, help="FID half-samples for its interval (0: none)")  # fmt: skip
    parser.add_argument("--inception", metavar="FILE", help="Inception-v3 TorchScript file (as python -m eval)")  # fmt: skip
    parser.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, help=f"CLIP for the CLIP score (default {DEFAULT_CLIP_MODEL})")  # fmt: skip
    parser.add_argument("--no-clip", action="store_true", help="skip the CLIP score")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--cache-dir", type=Path, help="project cache (embedded model, features)")
    args = parser.parse_args(argv)
    find_inception(args.inception)  # before any generation, as python -m eval study
    device = pick_device(args.device)
    config = StyleStudyConfig(
        args.runs, limit=args.limit, size=args.size, steps=args.steps, guidance=args.guidance,
        batch_size=args.batch_size, seed=args.seed, bootstrap=args.bootstrap,
        fid_resamples=args.fid_resamples, device=args.device,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    _quiet_diffusers()
    study_styles(
        config,
        load_extractor=lambda: load_inception(args.inception, device=device),
        load_clip=None if args.no_clip else lambda: load_clip(args.clip_model, device=device),
        log_line=lambda line: print(line, flush=True),
    )
    print((args.runs / "study" / "report.md").read_text(encoding="utf-8"), end="")
    return 0


def _quiet_diffusers() -> None:
    from models.registry import quiet_libraries

    quiet_libraries()  # loading bars; training has its own


# -- preference pairs and Diffusion-DPO (docs/dpo.md) ------------------------------------------


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
    parser.add_argument("--db", type=Path, default=None,
                        help="the bot's SQLite file (default: $COVER_DB_PATH or data/playlist-cover.db)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="pairs folder to write")
    parser.add_argument("--min-margin", type=int, default=1,
                        help="least votes by which the winner beat the loser (default 1: a single vote counts)")  # fmt: skip
    parser.add_argument("--since", type=moment, default=None, help="votes closed at or after this (UTC unless given)")  # fmt: skip
    parser.add_argument("--until", type=moment, default=None, help="votes closed before this")
    parser.add_argument("--guild", default=None, help="one server's votes only (its id)")
    args = parser.parse_args(argv)
    db = args.db or Path(os.environ.get("COVER_DB_PATH") or "data/playlist-cover.db")
    result = export_pairs(db, args.out, min_margin=args.min_margin, since=args.since,
                          until=args.until, guild_id=args.guild)  # fmt: skip
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items())) or "none"
    print(f"Exported {result.pairs} pairs from {result.votes} votes to {result.folder} "
          f"(candidates without a pair: {skipped}).")  # fmt: skip
    _print_dropped(result.malformed, result.superseded)
    if result.missing:
        print(f"{len(result.missing)} image(s) no longer exist or are not images; their pairs "
              "were left out.",
              file=sys.stderr)  # fmt: skip
    return 0


def _print_dropped(malformed: int, superseded: int) -> None:
    """The rows an export left out, counted (training/export.py says why each is dropped)."""
    if malformed:
        print(f"{malformed} vote(s) had malformed rows in the database and were skipped.",
              file=sys.stderr)  # fmt: skip
    if superseded:
        print(f"{superseded} earlier post(s) of a request posted again were left out "
              "(the last closed post of a request counts).", file=sys.stderr)  # fmt: skip


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
            _add_field(parser, spec, hints[spec.name], presets={})
    return parser


def run_dpo(argv: list[str], objective: str = "dpo") -> int:
    from training.dpo import DPOConfig, train_dpo

    config = DPOConfig(**vars(dpo_parser(objective).parse_args(argv)), objective=objective)
    _quiet_diffusers()
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
        print(f"LoRA: {result.output}\nUse it: python -m bot cover <playlist> --model "
              f"{config.base} --lora {result.output}")  # fmt: skip
    else:
        print(f"Model: {result.output}")
    return 0


def run_dpo_miniature(argv: list[str]) -> int:
    from training.dpo_miniature import main as miniature_main

    return miniature_main(argv)


# -- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("training").setLevel(logging.INFO)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    try:
        if command == "collect":
            return run_collect(argv)
        if command == "export-votes":
            return run_export(argv)
        if command == "export-pairs":
            return run_export_pairs(argv)
        if command in ("dpo", "kto"):
            return run_dpo(argv, command)
        if command == "dpo-miniature":
            return run_dpo_miniature(argv)
        if command == "miniature":
            return run_miniature_command(argv)
        if command == "synthetic":
            return run_synthetic(argv)
        if command == "pretrain":
            return run_pretrain(argv)
        if command == "caption":
            return run_caption(argv)
        if command == "clip-filter":
            return run_clip_filter(argv)
        if command == "styles":
            return run_styles(argv)
        if command == "style-study":
            return run_style_study(argv)
        return run_train(argv)
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
