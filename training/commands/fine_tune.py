"""``python -m training`` (the fine-tune, one flag per TrainConfig field), ``styles`` and
``style-study`` (one model per style, seed 003)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path

from training.commands.common import add_field, quiet_diffusers, shown
from training.config import DEFAULT_PRESET, INFERRED, PRESETS, SEED000_WARNING, TrainConfig


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Fine-tune a Stable Diffusion model the way the seed papers did: a full "
        "fine-tune (optionally with EMA) or LoRA. Other commands: 'python -m training collect' "
        "(a playlist-cover dataset from Spotify search) and 'python -m training export-votes' "
        "(the bot's voted winners as a dataset); add --help to either.",
        epilog=presets_table(),
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
        add_field(parser, spec, hints[spec.name])
    return parser


def presets_table() -> str:
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
            shown(PRESETS[n][key]) + ("†" if (n, key) in INFERRED else "*")
            if key in PRESETS[n]
            else shown(defaults[key])
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
    ]
    return "\n".join(lines)


def run_train(argv: list[str]) -> int:
    from training.config import config_from_preset
    from training.train import train

    args = vars(train_parser().parse_args(argv))
    config = config_from_preset(args.pop("preset"), **args)
    quiet_diffusers()
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
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_STYLE_PRESET,
        help=f"training parameters to start from (default {DEFAULT_STYLE_PRESET}, the paper's)",
    )
    parser.add_argument("--styles", help="comma-separated style folders to train (default all)")
    parser.add_argument(
        "--test-share", type=float, default=0.2, help="share held out per style (default 0.2)"
    )
    parser.add_argument(
        "--split-seed", type=int, default=0, help="seed of the hold-out split (default 0)"
    )
    hints = typing.get_type_hints(TrainConfig)
    for spec in dataclasses.fields(TrainConfig):
        if spec.name not in ("data", "out", "resume"):
            add_field(parser, spec, hints[spec.name])
    args = vars(parser.parse_args(argv))
    own = ("data", "out", "preset", "styles", "test_share", "split_seed")
    loop = {name: args.pop(name) for name in own}
    styles = [s.strip() for s in loop["styles"].split(",") if s.strip()] if loop["styles"] else None
    config = StyleLoopConfig(
        loop["data"],
        loop["out"],
        preset=loop["preset"],
        train=args,
        styles=styles,
        test_share=loop["test_share"],
        split_seed=loop["split_seed"],
    )
    quiet_diffusers()
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
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="images per pipeline call"
    )
    parser.add_argument("--seed", type=int, default=0, help="prompt i uses seed+i (default 0)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=defaults.bootstrap,
        help="bootstrap resamples (0: no intervals)",
    )
    parser.add_argument(
        "--fid-resamples",
        type=int,
        default=defaults.fid_resamples,
        help="FID half-samples for its interval (0: none)",
    )
    parser.add_argument(
        "--inception", metavar="FILE", help="Inception-v3 TorchScript file (as python -m eval)"
    )
    parser.add_argument(
        "--clip-model",
        default=DEFAULT_CLIP_MODEL,
        help=f"CLIP for the CLIP score (default {DEFAULT_CLIP_MODEL})",
    )
    parser.add_argument("--no-clip", action="store_true", help="skip the CLIP score")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--cache-dir", type=Path, help="project cache (embedded model, features)")
    args = parser.parse_args(argv)
    find_inception(args.inception)  # before any generation, as python -m eval study
    device = pick_device(args.device)
    config = StyleStudyConfig(
        args.runs,
        limit=args.limit,
        size=args.size,
        steps=args.steps,
        guidance=args.guidance,
        batch_size=args.batch_size,
        seed=args.seed,
        bootstrap=args.bootstrap,
        fid_resamples=args.fid_resamples,
        device=args.device,
        cache_dir=args.cache_dir,
    )
    quiet_diffusers()
    study_styles(
        config,
        load_extractor=lambda: load_inception(args.inception, device=device),
        load_clip=None if args.no_clip else lambda: load_clip(args.clip_model, device=device),
        log_line=lambda line: print(line, flush=True),
    )
    print((args.runs / "study" / "report.md").read_text(encoding="utf-8"), end="")
    return 0
