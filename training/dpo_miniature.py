"""``python -m training dpo-miniature``: the vote → DPO → better covers loop, proven on a CPU.

    synthetic titles → embedded model → 4 candidates per request ─┐
      (requests, candidates, cover messages in a real SQLite file) │
    a simulated community with a hidden taste votes (cast_vote) ◄─┘ → close_vote
    → export-pairs of the first N closed votes (its --until option), N = 40, 80, 160, 320
    → python -m training dpo and kto on each, every one with S training seeds
    → held-out prompts, same image seeds, base vs DPO vs KTO vs the taste-free control

**The hidden taste** is :func:`training.dpo_taste.top_light`: the community likes covers lit from above – the
mean luminance of the top half minus that of the bottom half. The embedded model was trained on
synthetic covers whose rules say nothing about it (training/synthetic.py), so its candidates
vary in it only by chance, and the palette test of prompt following (eval/prompt_following.py:
colour histograms, blind to position) can't be helped or hurt by it directly – a drop there is
a real loss of prompt following, not the taste showing through.

**The community**: each request gets ``voters`` votes; voter v picks the candidate that
maximises taste / noise + Gumbel noise (a logit choice, Luce 1959), so they mostly but not
always agree with the taste; ``noise`` is half the spread (standard deviation) of the taste
over the first batch of candidates. Votes go through :class:`bot.app.storage.Storage` exactly as
the bot's reactions do, and the vote closes with the bot's own rule (most votes, tie → lower
number; :func:`bot.app.votes.pick_winner`).

**Measured** on held-out prompts (the synthetic test split), prompt i with seed
``HELD_OUT_SEED + i`` for every model: a model wins prompt i against another when its image has
more of the taste (ties count a half). Every trained arm (DPO or KTO at N votes, and the
control) is trained with ``seeds`` training seeds on the same votes; its win rate is the mean
over seeds of each seed's mean over prompts, with a **seed-aware interval**
(eval/metrics.py ``seed_aware_interval``: the spread over seeds and a bootstrap over prompts,
every seed resampled with the same prompts), n = seeds × held-out prompts. The headline is each
arm against the control of the same seed – what the taste added beyond changing the model at
all – and KTO against DPO at the same votes: which learns the taste faster per vote.
Quality: KID of base and of the largest-N DPO model against the real test covers, with the
paired difference (eval/metrics.py ``kid_replicates`` → eval/study.py ``difference``), and
prompt following (eval/prompt_following.py ``prompt_hits``) with the paired difference of hits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.dpo_miniature_report import report_markdown, write_chart, write_samples
from training.dpo_taste import choose, seed_aware_share, top_light, win_shares

HELD_OUT_SEED = 1_000_000
GUILD = "miniature-guild"
DOCS_FILES = ("results.json", "report.md", "chart.png", "samples.png", "community.json")


@dataclass
class MiniatureConfig:
    out: Path = Path("runs/dpo-miniature")
    vote_counts: tuple[int, ...] = (40, 80, 160, 320)
    voters: int = 5  # votes per request
    candidates: int = 4
    held_out: int = 80  # held-out prompts (n of the win rate)
    real_covers: int = 200  # real test covers for KID and prompt following
    steps: int = 100  # DPO steps per model
    batch_pairs: int = 8
    beta: float = 5000.0
    learning_rate: float = 2e-3
    lora_rank: int = 4
    seeds: int = 3  # training seeds of every trained arm (the votes are the same for all)
    objectives: tuple[str, ...] = ("dpo", "kto")
    resamples: int = 500
    inception: str | None = None
    seed: int = 0
    docs: Path | None = None  # copy the results here (docs/dpo/)
    timings: dict[str, float] = field(default_factory=dict)


# -- generation --------------------------------------------------------------------------------


def _pipeline(lora: Path | None, cache_dir: Path) -> Any:
    from models.registry import load_pipeline, resolve_model

    spec = resolve_model("embedded", lora=str(lora) if lora else None)
    pipe = load_pipeline(spec, device="cpu", cache_dir=cache_dir)
    return pipe, spec


def generate(
    pipe: Any,
    spec: Any,
    prompts: list[str],
    seeds: list[int],
    paths: list[Path],
    *,
    batch: int = 32,
) -> None:
    """Image i of ``prompts`` with seed ``seeds[i]`` into ``paths[i]`` (kept when it exists:
    a rerun continues). The embedded model's own steps and guidance, as /cover uses them."""
    import torch

    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        generators = [torch.Generator("cpu").manual_seed(seeds[i]) for i in chunk]
        with torch.no_grad():
            images = pipe(
                [prompts[i] for i in chunk],
                generator=generators,
                height=spec.native_size,
                width=spec.native_size,
                num_inference_steps=spec.steps,
                guidance_scale=spec.guidance,
            ).images
        for i, image in zip(chunk, images, strict=True):
            paths[i].parent.mkdir(parents=True, exist_ok=True)
            image.save(paths[i])


def _taste_of(path: Path) -> float:
    with Image.open(path) as image:
        return top_light(np.asarray(image.convert("RGB")))


# -- the stages --------------------------------------------------------------------------------


def simulate_community(config: MiniatureConfig, cache_dir: Path, log: Any) -> dict[str, Any]:
    """Requests, candidates, votes and closings through the bot's storage; returns the closing
    time of each vote (for --until) and the community's statistics."""
    from bot.app.prompts import Prompt
    from bot.app.records import CandidateRecord, StoredParams
    from bot.app.storage import Storage
    from bot.app.votes import pick_winner
    from training.synthetic import draw_example

    db_path = config.out / "community.db"
    state_path = config.out / "community.json"
    if state_path.is_file():
        return json.loads(state_path.read_text())
    db_path.unlink(missing_ok=True)
    sets = max(config.vote_counts)
    # A clock one second per stamp: closings are distinct and ordered, so --until can cut at N.
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ticks = iter(range(10**9))
    storage = Storage(db_path, now=lambda: start + timedelta(seconds=next(ticks)))
    rng = np.random.default_rng(config.seed)
    pipe, spec = _pipeline(None, cache_dir)
    prompts = [
        draw_example("covers", "train", k, seed=config.seed, size=64)[1]["text"]
        for k in range(sets)
    ]
    folder = config.out / "candidates"
    seeds = [
        [config.seed * 10**6 + k * config.candidates + j for j in range(config.candidates)]
        for k in range(sets)
    ]
    paths = [
        [folder / f"{k:04d}" / f"{j + 1}.png" for j in range(config.candidates)]
        for k in range(sets)
    ]
    started = time.perf_counter()
    flat = [(k, j) for k in range(sets) for j in range(config.candidates)]
    generate(
        pipe,
        spec,
        [prompts[k] for k, _ in flat],
        [seeds[k][j] for k, j in flat],
        [paths[k][j] for k, j in flat],
    )
    log(f"  candidates: {len(flat)} images in {time.perf_counter() - started:.0f} s")
    tastes = np.array([[_taste_of(p) for p in row] for row in paths])  # (sets, candidates)
    noise = 0.5 * float(tastes[: min(sets, 32)].std())
    closed_at, agree = [], 0
    for k in range(sets):
        request_id = storage.record_request(
            source="discord",
            user_id=f"requester-{k % 7}",
            playlist_id=f"mini{k:05d}",
            playlist_name=prompts[k].removesuffix(" playlist cover image"),
            model=spec.name,
            params=StoredParams(
                width=64,
                height=64,
                steps=spec.steps,
                guidance=spec.guidance,
                count=config.candidates,
            ),
            prompts=[Prompt(prompts[k], "", "seed", s) for s in seeds[k]],
            guild_id=GUILD,
            channel_id="miniature-channel",
        )
        storage.add_candidates(
            request_id,
            [
                CandidateRecord(
                    request_id, j + 1, prompts[k], "", seeds[k][j], str(paths[k][j]), None
                )
                for j in range(config.candidates)
            ],
        )
        storage.finish_request(request_id, status="done", timings={})
        message_id = f"{k + 1:06d}"
        storage.register_cover_message(
            message_id=message_id,
            channel_id="miniature-channel",
            request_id=request_id,
            candidate_count=config.candidates,
        )
        for voter in range(config.voters):
            storage.cast_vote(
                message_id=message_id,
                user_id=f"voter-{voter}",
                choice=choose(tastes[k], noise, rng) + 1,
            )
        winner = pick_winner(storage.tally(message_id))
        storage.close_vote(message_id, winner=winner, reason="requester")
        closed_at.append(storage.cover_message(message_id).closed_at)
        agree += winner == int(np.argmax(tastes[k])) + 1
    storage.close()
    state = {
        "sets": sets,
        "voters": config.voters,
        "noise": noise,
        "taste_mean": float(tastes.mean()),
        "taste_sd": float(tastes.std()),
        "winner_is_tastiest": agree / sets,
        "closed_at": closed_at,
        "prompts": prompts,
    }
    state_path.write_text(json.dumps(state, indent=1) + "\n")
    return state


def run(config: MiniatureConfig, log: Any = print) -> dict[str, Any]:
    from eval.features import describe, extract_features, load_inception
    from eval.metrics import bootstrap, kid_replicates
    from eval.prompt_following import histograms, prompt_hits
    from eval.study import difference
    from training.config import default_cache_dir
    from training.dpo import DPOConfig, train_dpo
    from training.export import export_pairs
    from training.synthetic import draw_example

    wall = time.perf_counter()
    config.out.mkdir(parents=True, exist_ok=True)
    cache_dir = default_cache_dir()
    inception = load_inception(config.inception)  # fails early, naming the install

    # 1. The community votes.
    log("1/5 the community votes")
    t = time.perf_counter()
    community = simulate_community(config, cache_dir, log)
    config.timings["community_s"] = time.perf_counter() - t

    # 2. Pairs of the first N votes (the date-range option); one LoRA per objective, N and
    #    training seed.
    log("2/5 pairs, DPO and KTO")
    t = time.perf_counter()
    loras: dict[str, Path] = {}
    pair_counts = {}

    def train(objective: str, data: Path, name: str, seed: int) -> Path:
        run_dir = config.out / name
        lora = run_dir / "lora" / "pytorch_lora_weights.safetensors"
        if not lora.is_file():
            train_dpo(
                DPOConfig(
                    data=str(data),
                    base="embedded",
                    out=str(run_dir),
                    objective=objective,
                    resolution=64,
                    train_batch_size=config.batch_pairs,
                    max_train_steps=config.steps,
                    beta=config.beta,
                    learning_rate=config.learning_rate,
                    lora_rank=config.lora_rank,
                    checkpointing_steps=0,
                    seed=seed,
                )
            )
        return lora

    for n in config.vote_counts:
        until = datetime.fromisoformat(community["closed_at"][n - 1]) + timedelta(milliseconds=1)
        pairs = export_pairs(config.out / "community.db", config.out / f"pairs-{n}", until=until)
        pair_counts[n] = {"pairs": pairs.pairs, "votes": pairs.votes, "skipped": pairs.skipped}
        for k in range(config.seeds):
            for objective in config.objectives:
                name = f"{objective}-{n}-s{k}"
                loras[name] = train(objective, config.out / f"pairs-{n}", name, config.seed + k)
        log(
            f"  {n} votes: {pairs.pairs} pairs → {', '.join(config.objectives)} × "
            f"{config.seeds} seeds"
        )
    # The control: the largest N's pairs with winner and loser swapped in a random half – a
    # community without a taste, trained by DPO with each seed. A model that "wins" merely by
    # being changed would win against the base here too.
    top_n = max(config.vote_counts)
    if not (config.out / "pairs-control").is_dir():
        write_control_pairs(
            config.out / f"pairs-{top_n}", config.out / "pairs-control", seed=config.seed
        )
    for k in range(config.seeds):
        name = f"control-s{k}"
        loras[name] = train("dpo", config.out / "pairs-control", name, config.seed + k)
    log(f"  control: {top_n} votes' pairs, half of them swapped → control × {config.seeds}")
    config.timings["training_s"] = time.perf_counter() - t

    # 3. Held-out prompts, same seeds, base and every DPO model (loaded as /cover loads --lora).
    log("3/5 held-out covers")
    t = time.perf_counter()
    held = [
        draw_example("covers", "test", i, seed=config.seed, size=64)[1]
        for i in range(config.held_out)
    ]
    prompts = [h["text"] for h in held]
    seeds = [HELD_OUT_SEED + i for i in range(config.held_out)]
    models: dict[str, Path | None] = {"base": None, **loras}
    images: dict[str, list[Path]] = {}
    for name, lora in models.items():
        pipe, spec = _pipeline(lora, cache_dir)
        images[name] = [
            config.out / "held-out" / name / f"{i:04d}.png" for i in range(config.held_out)
        ]
        generate(pipe, spec, prompts, seeds, images[name])
    tastes = {name: np.array([_taste_of(p) for p in paths]) for name, paths in images.items()}
    config.timings["held_out_s"] = time.perf_counter() - t

    # 4. Win rates (per N, over seeds), KID and prompt following (base vs the first
    #    objective's largest N, seed 0).
    log("4/5 measures")
    t = time.perf_counter()

    def wins(arm: str, against: str | None = None) -> np.ndarray:
        """(seeds, prompts): seed k of ``arm`` against seed k of ``against`` (or the base)."""
        return np.array(
            [
                win_shares(tastes[f"{arm}-s{k}"], tastes[f"{against}-s{k}" if against else "base"])
                for k in range(config.seeds)
            ]
        )

    def share(values: np.ndarray) -> dict[str, Any]:
        return seed_aware_share(values, resamples=config.resamples, seed=config.seed)

    control = {"win_rate": share(wins("control"))}
    curve = []
    for n in config.vote_counts:
        row: dict[str, Any] = {"votes": n, **pair_counts[n]}
        for objective in config.objectives:
            arm = f"{objective}-{n}"
            row[objective] = {
                "win_rate": share(wins(arm)),
                # Head to head with the control of the same seed, prompt by prompt: what the
                # taste added beyond changing the model at all (the headline).
                "win_rate_vs_control": share(wins(arm, "control")),
            }
        if {"dpo", "kto"} <= set(config.objectives):
            row["kto_vs_dpo"] = share(wins(f"kto-{n}", f"dpo-{n}"))
        curve.append(row)
    top = f"{config.objectives[0]}-{max(config.vote_counts)}-s0"
    real_dir = config.out / "real"
    real_paths, real_labels = [], []
    for i in range(config.real_covers):
        path = real_dir / f"{i:04d}.png"
        image, meta = draw_example("covers", "test", config.held_out + i, seed=config.seed, size=64)
        if not path.is_file():
            real_dir.mkdir(parents=True, exist_ok=True)
            image.save(path)
        real_paths.append(path)
        real_labels.append(meta["genre"])
    features = {
        "real": extract_features(real_paths, inception, description="real"),
        "base": extract_features(images["base"], inception, description="base"),
        top: extract_features(images[top], inception, description=top),
    }
    values, reps = kid_replicates(
        features["real"],
        [features["base"], features[top]],
        resamples=config.resamples,
        seed=config.seed,
    )
    from eval.metrics import interval_from_replicates

    kid = {
        "n_real": len(real_paths),
        "n_generated": config.held_out,
        "base": asdict(interval_from_replicates(values[0], reps[:, 0])),
        top: asdict(interval_from_replicates(values[1], reps[:, 1])),
        "difference": difference(values, reps, [0], [1]),
    }
    real_hist = histograms(real_paths)
    labels = [h["genre"] for h in held]
    hits = {
        name: prompt_hits(real_hist, real_labels, histograms(images[name]), labels)
        for name in ("base", top)
    }
    following = {
        "n": config.held_out,
        **{
            name: asdict(
                _share(
                    bootstrap(
                        lambda h: float(h.mean()),
                        (hits[name],),
                        resamples=config.resamples,
                        seed=config.seed,
                    )
                )
            )
            for name in hits
        },
        "difference": asdict(
            bootstrap(
                lambda d: float(d.mean()),
                (hits[top] - hits["base"],),
                resamples=config.resamples,
                seed=config.seed,
            )
        ),
    }
    config.timings["measures_s"] = time.perf_counter() - t

    # 5. Report, chart and sample sheet.
    log("5/5 report")
    results = {
        "taste": "top_light: mean luminance of the top half minus the bottom half (0-1 scale)",
        "community": {k: v for k, v in community.items() if k not in ("closed_at", "prompts")},
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
            if k not in ("out", "docs", "inception", "timings")
        },
        "inception": {k: v for k, v in describe(inception).items() if k != "path"},
        "held_out_taste": {name: float(v.mean()) for name, v in tastes.items()},
        "win_rate_by_votes": curve,
        "control_swapped_pairs": control,
        "kid": kid,
        "prompt_following": following,
        "timings_s": {k: round(v, 1) for k, v in config.timings.items()},
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    (config.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_chart(curve, config.out / "chart.png", control=control)
    write_samples(images["base"], images[top], prompts, config.out / "samples.png")
    (config.out / "report.md").write_text(report_markdown(results, top))
    if config.docs is not None:
        config.docs.mkdir(parents=True, exist_ok=True)
        for name in DOCS_FILES:
            source = config.out / name
            if name == "community.json":
                data = json.loads(source.read_text())
                data.pop("prompts", None)
                data.pop("closed_at", None)
                (config.docs / name).write_text(json.dumps(data, indent=2) + "\n")
            else:
                shutil.copyfile(source, config.docs / name)
    return results


# -- output (the report, chart and samples: training/dpo_miniature_report.py) ------------------------------------------------------------------------------------


def _share(estimate: Any) -> Any:
    """A share's interval stops at 0 and 1 (it still holds the estimate; eval/study.py
    ``pooled`` does the same)."""
    from eval.metrics import Estimate

    return Estimate(estimate.value, max(0.0, estimate.low), min(1.0, estimate.high))


def write_control_pairs(source: Path, out: Path, *, seed: int) -> int:
    """``source``'s pairs with winner and loser swapped in a random half (images shared)."""
    from training.export import PAIRS_FILE

    rng = np.random.default_rng([seed, 7])
    rows = [json.loads(line) for line in (source / PAIRS_FILE).read_text().splitlines() if line]
    out.mkdir(parents=True, exist_ok=True)
    swapped = 0
    for row in rows:
        for side in ("winner_file", "loser_file"):
            row[side] = f"../{source.name}/{row[side]}"
        if rng.random() < 0.5:
            row["winner_file"], row["loser_file"] = row["loser_file"], row["winner_file"]
            swapped += 1
    (out / PAIRS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return swapped


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training dpo-miniature",
        description="A simulated community with a hidden taste votes on the embedded model's "
        "covers through the bot's storage; DPO on its pairs; win rate, KID and prompt following "
        "on held-out prompts (docs/dpo.md). Reruns continue where the last one stopped.",
    )
    defaults = MiniatureConfig()
    parser.add_argument("--out", type=Path, default=defaults.out)
    parser.add_argument(
        "--votes",
        default=",".join(map(str, defaults.vote_counts)),
        help="closed-vote counts of the curve (default 40,80,160,320)",
    )
    parser.add_argument("--held-out", type=int, default=defaults.held_out)
    parser.add_argument("--real-covers", type=int, default=defaults.real_covers)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--beta", type=float, default=defaults.beta)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--resamples", type=int, default=defaults.resamples)
    parser.add_argument(
        "--seeds",
        type=int,
        default=defaults.seeds,
        help=f"training seeds of every trained arm (default {defaults.seeds})",
    )
    parser.add_argument(
        "--objectives",
        default=",".join(defaults.objectives),
        help="dpo, kto or both (default dpo,kto)",
    )
    parser.add_argument(
        "--inception", default=None, help="Inception TorchScript file (docs/eval.md)"
    )
    parser.add_argument(
        "--docs", type=Path, default=None, help="copy the results here, e.g. docs/dpo"
    )
    parser.add_argument("--fresh", action="store_true", help="start over (delete --out first)")
    args = parser.parse_args(argv)
    try:
        counts = tuple(sorted({int(v) for v in args.votes.split(",")}))
    except ValueError:
        parser.error(f"--votes must be comma-separated whole numbers, got {args.votes!r}")
    if not counts or counts[0] < 1:
        parser.error(f"--votes must be positive, got {args.votes!r}")
    for name in ("held_out", "real_covers", "steps"):
        if getattr(args, name) < 2:
            parser.error(
                f"--{name.replace('_', '-')} must be at least 2, got {getattr(args, name)}"
            )
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    if not objectives or set(objectives) - {"dpo", "kto"}:
        parser.error(f"--objectives must be dpo, kto or both, got {args.objectives!r}")
    if args.seeds < 2:
        parser.error(f"--seeds must be at least 2 (a spread needs two), got {args.seeds}")
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    config = MiniatureConfig(
        out=args.out,
        vote_counts=counts,
        held_out=args.held_out,
        real_covers=args.real_covers,
        steps=args.steps,
        beta=args.beta,
        learning_rate=args.learning_rate,
        resamples=args.resamples,
        inception=args.inception,
        docs=args.docs,
        seeds=args.seeds,
        objectives=objectives,
    )
    results = run(config)
    print((config.out / "report.md").read_text())
    return 0 if results else 1
