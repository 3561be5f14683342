"""The commands that build datasets: ``collect`` (Spotify search, seed 000), ``export-votes``
(the bot's winners), ``synthetic``, and seed 003's ``caption`` and ``clip-filter``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from training.commands.common import bot_database, print_dropped


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
    parser.add_argument(
        ACK_FLAG,
        dest="acknowledged",
        action="store_true",
        help="you have read the warning above and take that decision",
    )
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


def run_export(argv: list[str]) -> int:
    from training.export import export_votes

    parser = argparse.ArgumentParser(
        prog="python -m training export-votes",
        description="Write every closed vote's winning cover and its prompt as an image folder "
        "with metadata.jsonl, ready for 'python -m training --data'.",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="the bot's SQLite file or postgresql:// URL (default: $COVER_DB_URL, else "
        "$COVER_DB_PATH or data/playlist-cover.db)",
    )
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    args = parser.parse_args(argv)
    db = args.db or bot_database()
    result = export_votes(db, args.out)
    print(f"Exported {result.exported} winning covers to {result.folder}.")
    print_dropped(result.malformed, result.superseded)
    if result.missing:
        print(
            f"{len(result.missing)} winner image(s) no longer exist and were left out.",
            file=sys.stderr,
        )
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
    parser.add_argument(
        "--covers",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        default=defaults.covers,
        help=f"cover images per split (default {' '.join(map(str, defaults.covers))})",
    )
    parser.add_argument(
        "--generic",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        default=defaults.generic,
        help=f"generic images per split (default {' '.join(map(str, defaults.generic))})",
    )
    args = parser.parse_args(argv)
    if min(*args.covers, *args.generic) < 0:
        raise ValueError("image counts must be 0 or more.")
    sizes = DatasetSizes(covers=tuple(args.covers), generic=tuple(args.generic))
    summary = write_dataset(args.out, sizes=sizes, seed=args.seed, size=args.size)
    print(f"Wrote {summary['written']} images to {args.out} in {summary['seconds']:.1f} s.")
    return 0


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
    parser.add_argument(
        "folder", type=Path, help="image folder (an existing metadata.jsonl gives the titles)"
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_CAPTION_MODEL,
        help=f"hub id or folder (default {DEFAULT_CAPTION_MODEL})",
    )
    parser.add_argument(
        "--titles",
        choices=TITLE_MODES,
        default=defaults.titles,
        help="merge: '<title>, <caption>'; keep: titled images keep their title; replace: the caption only (default merge)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"images per model call (default {defaults.batch_size})",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=defaults.max_new_tokens,
        help=f"longest caption in tokens (default {defaults.max_new_tokens})",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    config = CaptionConfig(
        args.folder,
        model=args.model,
        titles=args.titles,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
    )
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
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"lowest cosine kept (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="CLIP hub id or folder (default openai/clip-vit-large-patch14)",
    )
    parser.add_argument("--caption-column", default="text", help="caption column (default text)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"pairs per model call (default {defaults.batch_size})",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=defaults.examples,
        help="pairs shown on each side of the cut (default 5)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    config = FilterConfig(
        args.data,
        args.out,
        threshold=args.threshold,
        model=args.model,
        caption_column=args.caption_column,
        batch_size=args.batch_size,
        examples=args.examples,
        device=args.device,
    )
    result = filter_pairs(config, log_line=print)
    speed = f" at {result.images_per_second:.2f} images/s" if result.images_per_second else ""
    print(
        f"Scored {result.pairs} pairs{speed}; kept {result.kept} in {result.out}. Report: {result.report}"
    )
    return 0
