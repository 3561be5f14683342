"""Command line: ``python -m bot cover <playlist>``, ``python -m bot models`` and
``python -m bot db copy``.

Every :class:`~models.errors.CoverError` ends here as one line on stderr and exit status 1;
anything else is a bug: logged with its traceback and an id to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import uuid
from pathlib import Path

from pydantic import ValidationError

from bot.app.errors import InvalidOption
from bot.app.look import LOOK_STRENGTH
from bot.app.prompts import STYLES
from bot.app.request import VARIATION_STRENGTH
from models.errors import CoverError
from models.hub_guard import DEADLINE_S, STALL_BYTES, STALL_S

log = logging.getLogger("bot")

_MAX_ERROR_CHARS = 600  # one line, a few terminal rows; our own sentences are far shorter
# C0/C1 controls (ESC starts terminal sequences that can rewrite the screen or the title) and
# the bidirectional overrides that can make text read in another order than it is.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, limit: int | None = None) -> str:
    """``text`` fit for the terminal: control characters shown as ``?`` (prompts and playlist
    names come from files and from Spotify), cut to ``limit`` characters."""
    text = _UNPRINTABLE.sub("?", text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Turn a Spotify playlist into candidate cover art.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cover = commands.add_parser(
        "cover",
        help="generate candidate covers for a playlist and write them to disk",
        description=(
            "Read a playlist (a Spotify link, URI or id – needs SPOTIFY_CLIENT_ID and "
            "SPOTIFY_CLIENT_SECRET – or a snapshot file such as examples/playlists/*.json), "
            "build prompts, generate the candidates and write PNGs, Spotify-ready JPEGs "
            "(under 256 KB) and a 2x2 contact sheet."
        ),
    )
    cover.add_argument(
        "playlist",
        nargs="?",
        help="Spotify playlist link/URI/id, or a snapshot .json file (not needed with "
        "--variations-of)",
    )
    cover.add_argument(
        "--model", help="registry name or local diffusers folder (default: settings, 'auto')"
    )
    cover.add_argument("--lora", help="LoRA .safetensors file applied on top of the model")
    cover.add_argument("--count", type=int, default=4, help="number of candidates, 1-4 (default 4)")
    cover.add_argument(
        "--seed", type=int, help="base seed; candidate i uses seed+i (default: random, printed)"
    )
    cover.add_argument(
        "--out", type=Path, help="output folder (default: settings' output_dir, 'covers')"
    )
    cover.add_argument(
        "--prompt-style",
        choices=STYLES,
        default="seed",
        help="how prompts are written: 'seed' is the seed paper's '<title> playlist cover image'; "
        "'mix' gives each candidate a different style; 'expand' continues the seed prompt with "
        "a GPT-2 prompt model (`python -m bot models pull magicprompt`), 'auto' expands when "
        "that model is cached and mixes otherwise (default: seed)",
    )
    cover.add_argument(
        "--prompt",
        metavar="TEXT",
        help="paint with this prompt instead of one made from the playlist (every candidate; "
        "cleaned like any prompt and cut to CLIP's 77 tokens, at most 4,000 characters)",
    )
    cover.add_argument(
        "--title", action="store_true", help="set the playlist title onto the covers"
    )
    cover.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    cover.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (default: the model's)"
    )
    cover.add_argument(
        "--device", help="auto, cpu, cuda, cuda:N or mps (default: settings, 'auto')"
    )
    cover.add_argument(
        "--variations-of",
        metavar="PNG",
        help="make variations of this candidate (a candidate-N.png written by this command or "
        "the bot): its prompt and settings, new seeds, image-to-image from it",
    )
    cover.add_argument(
        "--from-current-cover",
        action="store_true",
        help="keep the playlist's look: start from its current cover on Spotify "
        "(image-to-image; needs a Spotify link)",
    )
    cover.add_argument(
        "--from-image",
        metavar="PATH",
        help="start from this JPEG or PNG instead (image-to-image, at most 5 MB)",
    )
    cover.add_argument(
        "--strength",
        type=float,
        help=f"how far from the picture, 0.05-1 (default {VARIATION_STRENGTH} with "
        f"--variations-of, {LOOK_STRENGTH} with --from-current-cover or --from-image)",
    )

    run = commands.add_parser(
        "run",
        help="run the Discord bot (needs DISCORD_TOKEN)",
        description="Connect to Discord (or the server in COVER_DISCORD_API_BASE / "
        "COVER_DISCORD_GATEWAY_URL) and serve /cover until stopped; with COVER_TOKEN_KEY set, "
        "also serve Spotify's OAuth callback for /spotify link. Without --shard-ids and "
        "--shard-count: one process for every server. docs/deployment.md says when to shard.",
    )
    run.add_argument(
        "--shard-ids",
        type=_shard_ids,
        help="connect only these shards, e.g. 0,1 (needs --shard-count; "
        "default $COVER_SHARD_IDS, or every shard); the processes of one bot must share "
        "one PostgreSQL database (COVER_DB_URL) and together run every shard exactly once",
    )
    run.add_argument(
        "--shard-count",
        type=int,
        help="the bot's total number of shards across all its processes "
        "(default $COVER_SHARD_COUNT; a server's shard is (server id >> 22) %% count)",
    )
    models = commands.add_parser(
        "models",
        help="list the model presets and what is cached; `models pull NAME` fetches one",
    )
    pulls = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    pull = pulls.add_parser(
        "pull",
        help="download what a preset's pipeline needs into the Hugging Face cache",
        description="Fetch exactly the files the pipeline loads (configs, tokenizer and one "
        "set of weights: safetensors, the fp16 variant when for CUDA) through huggingface_hub; "
        "an interrupted pull resumes. Gated repos (DeepFloyd IF) need HF_TOKEN or `hf auth login`.",
    )
    pull.add_argument(
        "name", help="preset name, e.g. sd-turbo, or a support model: blip, clip, magicprompt"
    )
    pull.add_argument(
        "--variant",
        choices=("auto", "fp16", "none"),
        default="auto",
        help="weights variant: auto = fp16 when for CUDA, full precision otherwise",
    )
    pull.add_argument(
        "--device", default="auto", help="the device the weights are for: auto, cpu, cuda"
    )
    pull.add_argument(
        "--no-tiny-decoder",
        dest="tiny_decoder",
        action="store_false",
        help="skip the preset's tiny decoder (TAESD, a few MB), which decoder=auto uses on a CPU",
    )
    pull.add_argument(
        "--deadline",
        type=_seconds,
        default=DEADLINE_S,
        metavar="SECONDS",
        help=f"give up on the whole pull after this long (default {DEADLINE_S:g})",
    )
    pull.add_argument(
        "--stall-timeout",
        type=_seconds,
        default=STALL_S,
        metavar="SECONDS",
        help=f"give up when under {STALL_BYTES} bytes arrive in this long (default {STALL_S:g})",
    )
    db = commands.add_parser("db", help="the bot's database: `db copy` moves it to PostgreSQL")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="SUBCOMMAND")
    copy = db_commands.add_parser(
        "copy",
        help="copy every table of a SQLite file into a PostgreSQL database",
        description="Copy requests, candidates, snapshots, cover posts, votes, linked accounts "
        "(their tokens still encrypted), uploads and community styles into PostgreSQL, then "
        "check each table's row count and checksum on both sides. Rows the target already has "
        "are kept, so running it again finishes a copy cut short. Then set COVER_DB_URL.",
    )
    copy.add_argument("sqlite_path", type=Path, help="the SQLite file, e.g. data/playlist-cover.db")
    copy.add_argument("postgres_url", help="postgresql://user:password@host:5432/database")
    return parser


def run_db(args: argparse.Namespace) -> int:
    from bot.app.storage.copy import copy_database
    from bot.app.storage.dialect import mask_password

    def progress(table: str, done: int, total: int) -> None:
        end = "\n" if done == total else ""
        print(f"\r{table}: {done}/{total} rows", end=end, file=sys.stderr, flush=True)

    tables = copy_database(args.sqlite_path, args.postgres_url, progress=progress)
    rows, new = sum(t.rows for t in tables), sum(t.inserted for t in tables)
    print(
        f"Copied {len(tables)} tables, {rows} rows ({new} new) from {args.sqlite_path} to "
        f"{mask_password(args.postgres_url)}; row counts and checksums match."
    )
    return 0


def _shard_ids(text: str) -> tuple[int, ...]:
    from bot.app.shards import parse_shard_ids

    try:
        return parse_shard_ids(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1e7:  # also nan
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text[:40]!r}")
    return value


async def run_cover(args: argparse.Namespace) -> int:
    from bot.app.files import check_output_folder
    from bot.app.look import MAX_START_BYTES, sniff_type
    from bot.app.request import CoverRequest
    from bot.app.settings import Settings
    from bot.app.wiring import build_app
    from models.queue import Progress, Queued
    from models.safe_files import read_bytes

    settings = Settings()
    if args.device:
        settings = settings.model_copy(update={"device": args.device})
    if args.playlist is None and args.variations_of is None:
        raise InvalidOption("give a playlist (or --variations-of a candidate PNG)")
    look, image = None, None
    if args.from_current_cover or args.from_image:
        look = "current" if args.from_current_cover else "attachment"
        image = (
            None if args.from_image is None else read_bytes(args.from_image, limit=MAX_START_BYTES)
        )
    if args.strength is None:
        args.strength = LOOK_STRENGTH if look else VARIATION_STRENGTH
    request = CoverRequest(
        playlist=args.playlist or "",
        variations_of=args.variations_of,
        strength=args.strength,
        look=look,
        image=image,
        image_type=None if image is None else sniff_type(image),
        model=args.model,
        lora=args.lora,
        count=args.count,
        seed=args.seed,
        style=args.prompt_style,
        prompts=(args.prompt,) if args.prompt is not None else (),
        title_overlay=args.title,
        steps=args.steps,
        guidance=args.guidance,
    )
    check_output_folder(Path(args.out or settings.output_dir))  # before minutes of work
    app = build_app(settings, linked_accounts=False)  # the command line links no accounts
    try:
        async with app.queue:
            job = await app.service.start(request)
            facts = job.facts
            kind = "metadata only" if not facts.items_readable else f"{len(facts.tracks)} tracks"
            print(
                f"Playlist: {printable(repr(facts.name))} ({kind}); model {printable(job.model.name)}, "
                f"{request.count} candidate(s), seed {job.prompts[0].seed}",
                file=sys.stderr,
            )
            if job.model.auto_reason:
                print(
                    f"Model: auto chose {job.model.name}: {job.model.auto_reason}.",
                    file=sys.stderr,
                )
            progress = asyncio.create_task(_print_progress(job, Queued, Progress))
            try:
                cover = await job.result(args.out)
            finally:
                progress.cancel()
    finally:
        app.close()

    for c in cover.candidates:
        text = printable(c.prompt.text)
        print(f"  {c.index}. [{c.prompt.style}] {text}  (seed {c.seed})", file=sys.stderr)
    if cover.notice:
        print(f"note: {cover.notice}", file=sys.stderr)
    print(f"Wrote {len(cover.candidates)} candidate(s) in {cover.out_dir}", file=sys.stderr)
    for c in cover.candidates:
        print(c.png_path)
        print(c.jpeg_path)
    print(cover.sheet_path)
    return 0


async def _print_progress(job, queued_type, progress_type) -> None:
    """One updating line on stderr while the job waits and runs."""
    last = None
    async for event in job.events():
        if isinstance(event, queued_type):
            line = f"queued, position {event.position}"
        elif isinstance(event, progress_type):
            line = f"generating: step {event.step}/{event.total}"
        else:
            continue
        if line != last and sys.stderr.isatty():
            print(f"\r{line:<40}", end="", file=sys.stderr, flush=True)
        last = line
    if last and sys.stderr.isatty():
        print(file=sys.stderr)


async def run_bot(args: argparse.Namespace) -> int:
    from bot.app.settings import Settings

    # The options stand in for COVER_SHARD_IDS / COVER_SHARD_COUNT (given ones only).
    layout = {
        name: getattr(args, name)
        for name in ("shard_ids", "shard_count")
        if getattr(args, name) is not None
    }
    settings = Settings(**layout)
    token = settings.require_discord_token()  # before anything heavy: a missing token is one line

    import discord

    from bot.client import build_bot

    bot = build_bot(settings)
    async with bot:
        try:
            await bot.start(token.get_secret_value())
        except discord.ConnectionClosed as closed:
            if closed.code != SHARDING_REQUIRED:
                raise
            advice = await _sharding_required(token.get_secret_value())
            print(f"error: {advice}", file=sys.stderr)
            return 1
    return 0


SHARDING_REQUIRED = 4011  # Discord's close code: too many servers on one connection


async def _sharding_required(token: str) -> str:
    """What to tell an operator whose bot Discord refused to serve on one connection, with
    the shard count Discord advises (``GET /gateway/bot``) when it answers. The bot closed its
    own HTTP session on the refusal: this asks with a new one."""
    import discord

    http = discord.http.HTTPClient(asyncio.get_running_loop())
    try:
        await http.static_login(token)
        advised, _, _ = await http.get_bot_gateway()
        count = f"{int(advised)} (what Discord advises now)"
    except (discord.DiscordException, OSError, RuntimeError, TypeError, ValueError):
        count = "N (one per 1,000 servers or so)"
    finally:
        await http.close()
    return (
        "Discord requires sharding: this bot is in too many servers for one gateway "
        f"connection. Run it with --shard-count {count}, in one process or spread over several "
        "with --shard-ids (docs/deployment.md, Shard processes)."
    )


# What each preset practically needs to run (docs/models.md, "Presets"); IF's two XL stages on a CPU
# take far too long for a request.
_DEVICE_NOTE = {
    "embedded": "CPU ok",
    "small-sd": "GPU advised, CPU slow",
    "sd15": "GPU advised, CPU slow",
    "sd-turbo": "CPU ok (1 step)",
    "deepfloyd-if": "CUDA GPU practically",
}


# What the listing says of a cached stand-in (modeltools/standins/, models/hub.py STANDIN_FIELD).
_STANDIN_NOTE = "stand-in, random weights: makes noise"


def run_models(args: argparse.Namespace | None = None) -> int:
    from models.hub import cache_state, pull
    from models.registry import PRESETS, RANDOM_ARCHITECTURES

    if args is not None and getattr(args, "models_command", None) == "pull":
        snapshots = pull(
            args.name,
            variant=args.variant,
            device=args.device,
            tiny_decoder=args.tiny_decoder,
            deadline_s=args.deadline,
            stall_s=args.stall_timeout,
        )
        for snapshot in snapshots:
            print(f"Cached {args.name} in {_short(snapshot)}")
        return 0
    width = max(len(name) for name in ("support", *PRESETS))  # the tables' name column
    print(
        f"{'name':<{width}} {'cached':<12} {'size':>9} {'native':>6} {'steps':>5}  "
        f"{'device':<22} where"
    )
    for preset in PRESETS.values():
        standin = False
        if preset.repo_id is None:
            cached, size, where = "built-in", "-", "-"
        else:
            states = cache_state(preset.name)
            if all(s.cached for s in states):
                standin = any(s.standin for s in states)
                cached = ("stand-in " if standin else "yes ") + "+".join(states[0].variants)
                size = _size(sum(s.size_on_disk for s in states))
                where = ", ".join(_short(s.snapshot) for s in states if s.snapshot)
            else:
                cached, size, where = "no", "-", "-"
        random = preset.name in RANDOM_ARCHITECTURES  # real shapes, random weights
        note = "CPU ok (noise)" if random else _DEVICE_NOTE.get(preset.name, "")
        line = (
            f"{preset.name:<{width}} {cached:<12} {size:>9} {preset.native_size:>4}px "
            f"{preset.steps:>5}  {note:<22} {where}"
        )
        if standin:
            line += f"  ({_STANDIN_NOTE}; auto skips it)"
        elif preset.kind == "if":
            line += "  (gated: accept the licence at https://huggingface.co/DeepFloyd/IF-I-XL-v1.0)"
        print(line)
    _list_support_models(width)
    return 0


def _list_support_models(width: int) -> None:
    """The captioner, CLIP and the prompt expander (models/support.py), and the tiny decoder
    TAESD: not generators, but pulled and cached the same way."""
    from models.hub import repo_state
    from models.presets import SUPPORT_MODELS
    from models.registry import TAESD

    print(f"\n{'support':<{width}} {'cached':<12} {'size':>9}  {'role':<22} where")
    rows = [(m.name, m.repo_id, m.role) for m in SUPPORT_MODELS.values()]
    rows.append(("taesd", TAESD, "tiny decoder (CPU)"))  # pulled with sd15, small-sd, sd-turbo
    for name, repo_id, role in rows:
        state = repo_state(repo_id)
        cached = ("stand-in" if state.standin else "yes") if state.cached else "no"
        size = _size(state.size_on_disk) if state.cached else "-"
        where = _short(state.snapshot) if state.cached else repo_id
        note = f"  ({_STANDIN_NOTE})" if state.cached and state.standin else ""
        print(f"{name:<{width}} {cached:<12} {size:>9}  {role:<22} {where}{note}")


def _short(path: Path | None) -> str:
    if path is None:
        return "-"
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if text.startswith(home + "/") else text


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A long-running bot logs what it does (INFO); one-shot commands stay quiet unless asked.
    verbosity = args.verbose + (1 if args.command == "run" else 0)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "cover":
            return asyncio.run(run_cover(args))
        if args.command == "run":
            return asyncio.run(run_bot(args))
        if args.command == "db":
            return run_db(args)
        return run_models(args)
    except CoverError as exc:
        print(f"error: {printable(str(exc), limit=_MAX_ERROR_CHARS)}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        print(f"error: invalid setting ({problems})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`python -m bot models | head`): not our failure. Point stdout
        # at nothing so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool cut off by a pipe
    except Exception:
        incident = uuid.uuid4().hex[:8]
        log.exception("unexpected error (incident %s)", incident)
        print(
            f"error: something went wrong on our side (incident {incident}); "
            "the traceback is in the log above.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
