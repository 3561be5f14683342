"""Diffusion-DPO (training/dpo.py) and its pairs (training/export.py): the loss against a hand
computation, the pair rule on a known vote table in a real SQLite file, a resumed run against an
uninterrupted one on the embedded tiny model, and the miniature's pure parts."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.app.records import CandidateRecord, StoredParams
from bot.app.storage import Storage
from training.__main__ import main

CAPTION = "jazz night playlist cover image"


# -- the loss ----------------------------------------------------------------------------------


def test_dpo_loss_matches_a_hand_computed_case():
    import torch

    from training.dpo import diffusion_dpo_loss

    # Pair 1: the model's winner error fell by 0.1 against the reference and its loser error
    # rose by 0.1: (−0.1) − (+0.1) = −0.2, inside = −β/2 · −0.2 = +1 with β = 10.
    # Pair 2: the other way round: inside = −1.
    #   −log σ(1) = log(1 + e⁻¹) = 0.3132617, −log σ(−1) = log(1 + e) = 1.3132617
    model_w = torch.tensor([0.2, 0.5], requires_grad=True)
    model_l = torch.tensor([0.4, 0.3])
    ref = torch.tensor([0.3, 0.4])
    loss, ranked = diffusion_dpo_loss(model_w, model_l, ref, ref, beta=10.0)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert ranked.item() == 0.5  # pair 1 already ranked right, pair 2 not
    # d/d model_w of −log σ(−β/2 · (w − …)) / 2 = β/2 · σ(−inside) / 2 > 0: the loss falls
    # when the winner's error falls.
    loss.backward()
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert model_w.grad.tolist() == pytest.approx(
        [5 * sigmoid(-1) / 2, 5 * sigmoid(1) / 2], abs=1e-6
    )


def test_dpo_loss_is_log_two_when_the_model_is_the_reference():
    import torch

    from training.dpo import diffusion_dpo_loss

    errors = torch.tensor([0.7, 0.1, 0.3])
    loss, _ = diffusion_dpo_loss(errors, errors.flip(0), errors, errors.flip(0), beta=5000.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_denoising_errors_are_per_sample_means():
    import torch

    from training.dpo import denoising_errors

    prediction = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    assert denoising_errors(prediction, target).tolist() == [1.0, 1.0]  # 4/4 and 4/4


# -- pairs from votes --------------------------------------------------------------------------


def _clock(start: datetime):
    ticks = iter(range(10**6))
    return lambda: start + timedelta(minutes=next(ticks))


PARAMS = StoredParams(width=64, height=64, steps=4, guidance=1.0)


def _cover(storage: Storage, folder: Path, name: str, prompts: list[str], guild: str = "g1") -> str:
    request_id = storage.record_request(
        source="discord",
        user_id="requester",
        playlist_id=f"pl-{name}",
        playlist_name=name,
        model="embedded",
        params=PARAMS,
        prompts=[],
        guild_id=guild,
    )
    candidates = []
    for index, prompt in enumerate(prompts, 1):
        png = folder / f"{name}-{index}.png"
        Image.new("RGB", (16, 16), (index * 50, 10, 0)).save(png)
        candidates.append(
            CandidateRecord(request_id, index, prompt, "", 100 + index, str(png), None)
        )
    storage.add_candidates(request_id, candidates)
    storage.register_cover_message(
        message_id=f"m-{name}", channel_id="c", request_id=request_id, candidate_count=len(prompts)
    )
    return f"m-{name}"


def _votes(storage: Storage, message_id: str, choices: list[int]) -> None:
    for user, choice in enumerate(choices):
        storage.cast_vote(message_id=message_id, user_id=f"u{user}", choice=choice)


@pytest.fixture
def vote_db(tmp_path) -> Path:
    """A known vote table (the bot's rule picks each winner: most votes, tie → lower number)."""
    db = tmp_path / "bot.db"
    with Storage(db, now=_clock(datetime(2026, 3, 1, tzinfo=UTC))) as storage:
        # tally 1:0, 2:3, 3:1, 4:3 → winner 2 (tie with 4 broken by the number)
        m = _cover(storage, tmp_path, "tied", [CAPTION] * 4)
        _votes(storage, m, [2, 2, 2, 4, 4, 4, 3])
        storage.close_vote(m, winner=2, reason="requester")
        # a single vote: 1:1, 2:0, 3:0
        m = _cover(storage, tmp_path, "single", ["single playlist cover image"] * 3)
        _votes(storage, m, [1])
        storage.close_vote(m, winner=1, reason="timer")
        # mix style: candidate 2 came from another prompt
        m = _cover(storage, tmp_path, "mix", [CAPTION, "other words", CAPTION])
        _votes(storage, m, [1, 1])
        storage.close_vote(m, winner=1, reason="requester")
        # no pairs: deleted, still open, closed with nobody voting, another server's
        m = _cover(storage, tmp_path, "deleted", [CAPTION] * 2)
        _votes(storage, m, [1])
        storage.close_vote(m, winner=None, reason="deleted")
        _votes(storage, _cover(storage, tmp_path, "open", [CAPTION] * 2), [1])
        storage.close_vote(_cover(storage, tmp_path, "empty", [CAPTION] * 2), winner=None)
        m = _cover(storage, tmp_path, "elsewhere", [CAPTION] * 2, guild="g2")
        _votes(storage, m, [2])
        storage.close_vote(m, winner=2, reason="requester")
    return db


def _pairs(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]


def test_pairs_follow_the_rule_on_a_known_vote_table(vote_db, tmp_path, capsys):
    out = tmp_path / "pairs"
    assert main(["export-pairs", "--db", str(vote_db), "--out", str(out), "--guild", "g1"]) == 0
    printed = capsys.readouterr().out
    assert "Exported 5 pairs from 3 votes" in printed and "1 prompt, 1 tie" in printed
    rows = _pairs(out)
    got = [
        (
            r["message_id"],
            r["winner_index"],
            r["loser_index"],
            r["winner_votes"],
            r["loser_votes"],
            r["margin"],
        )
        for r in rows
    ]
    assert got == [
        ("m-tied", 2, 1, 3, 0, 3),
        ("m-tied", 2, 3, 3, 1, 2),  # 4 tied with the winner: no pair
        ("m-single", 1, 2, 1, 0, 1),
        ("m-single", 1, 3, 1, 0, 1),
        ("m-mix", 1, 3, 2, 0, 2),  # 2 had another prompt: no pair
    ]
    assert {r["text"] for r in rows if r["message_id"] != "m-single"} == {CAPTION}
    assert rows[0]["winner_seed"] == 102 and rows[0]["loser_seed"] == 101
    with (
        Image.open(out / rows[0]["winner_file"]) as w,
        Image.open(out / rows[0]["loser_file"]) as loser,
    ):
        assert (w.getpixel((0, 0)), loser.getpixel((0, 0))) == ((100, 10, 0), (50, 10, 0))


def test_min_margin_and_the_date_range_select_votes(vote_db, tmp_path):
    from training.export import export_pairs

    strict = export_pairs(vote_db, tmp_path / "strict", min_margin=2, guild_id="g1")
    assert [(r["message_id"], r["loser_index"]) for r in _pairs(tmp_path / "strict")] == [
        ("m-tied", 1),
        ("m-tied", 3),
        ("m-mix", 3),
    ]
    assert strict.skipped == {"tie": 1, "margin": 2, "prompt": 1}
    # The clock moves a minute per stamp; find the closing times and cut between them.
    with Storage(vote_db) as storage:
        closed = {
            v.message.message_id: datetime.fromisoformat(v.message.closed_at)
            for v in storage.closed_votes()[0]
        }
    assert set(closed) == {"m-tied", "m-single", "m-mix", "m-elsewhere"}  # deleted: never
    window = export_pairs(
        vote_db, tmp_path / "window", since=closed["m-single"], until=closed["m-mix"]
    )
    assert {r["message_id"] for r in _pairs(tmp_path / "window")} == {"m-single"}
    assert window.votes == 1


def test_export_pairs_bad_input_is_one_line(vote_db, tmp_path, capsys):
    assert main(["export-pairs", "--db", str(tmp_path / "no.db"), "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: There is no database")
    argv = ["export-pairs", "--db", str(vote_db), "--out", str(tmp_path / "x")]
    assert main([*argv, "--since", "2026-03-02", "--until", "2026-03-01"]) == 1
    assert "since (2026-03-02T00:00:00+00:00) must be before until" in capsys.readouterr().err
    assert main([*argv, "--min-margin", "0"]) == 1
    assert "min_margin must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--since", "yesterday"])
    assert "not an ISO date" in capsys.readouterr().err


# -- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    """Six pairs: bright winners, dark losers, noisy so no two images are alike."""
    out = tmp_path_factory.mktemp("pairs")
    (out / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        for side, level in (("w", 200), ("l", 40)):
            pixels = np.clip(level + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(out / "images" / f"{i}{side}.png")
        rows.append(
            {
                "text": f"jazz mix {i} playlist cover image",
                "winner_file": f"images/{i}w.png",
                "loser_file": f"images/{i}l.png",
                "margin": 1 + i % 2,
            }
        )
    (out / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def dpo_config(data: Path, out: Path, cache_dir: Path, **overrides):
    from training.dpo import DPOConfig

    values = dict(
        data=str(data),
        out=str(out),
        cache_dir=str(cache_dir),
        resolution=32,
        train_batch_size=2,
        max_train_steps=4,
        checkpointing_steps=2,
        seed=7,
        beta=500.0,
        learning_rate=1e-2,
        lora_rank=2,
    )
    return DPOConfig(**(values | overrides))


def test_resumed_dpo_run_matches_an_uninterrupted_one(
    pairs_dir, tmp_path, cache_dir, embedded_model_dir
):
    """Stopped after 2 of 4 steps (mid-epoch: 3 batches of 2 pairs), resumed from the
    checkpoint: the same LoRA weights as a run that never stopped, bit for bit."""
    from safetensors.torch import load_file

    from training.dpo import train_dpo

    whole = train_dpo(dpo_config(pairs_dir, tmp_path / "whole", cache_dir))
    train_dpo(dpo_config(pairs_dir, tmp_path / "parts", cache_dir, max_train_steps=2))
    resumed = train_dpo(dpo_config(pairs_dir, tmp_path / "parts", cache_dir, resume="latest"))
    assert resumed.report["steps"] == 4 and resumed.report["steps_this_run"] == 2
    a, b = load_file(whole.output), load_file(resumed.output)
    assert a.keys() == b.keys() and a
    assert all((a[k] == b[k]).all() for k in a)
    # ...and training moved the adapters (B starts at zero): the check above can fail.
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k or "lora.up" in k)
    assert whole.report["objective"] == "diffusion-dpo" and whole.report["pairs"] == 6
    assert whole.report["history"][0]["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_dpo_lora_loads_as_cover_loads_it_and_learns_the_preference(
    pairs_dir, tmp_path, cache_dir, embedded_model_dir
):
    """After some steps the model ranks most training pairs right (loss below log 2), and the
    file goes through the registry's --lora path and changes the image."""
    import torch

    from models.registry import load_pipeline, resolve_model
    from training.dpo import train_dpo

    result = train_dpo(
        dpo_config(
            pairs_dir,
            tmp_path / "run",
            cache_dir,
            max_train_steps=12,
            checkpointing_steps=0,
            validation_prompts=[CAPTION],
            validation_inference_steps=2,
        )
    )
    losses = [h["loss"] for h in result.report["history"]]
    assert np.mean(losses[-4:]) < math.log(2) - 0.01, losses
    assert (tmp_path / "run" / "samples" / "step-000012" / "1.png").is_file()

    def image(lora):
        pipe = load_pipeline(
            resolve_model("embedded", lora=lora), device="cpu", cache_dir=cache_dir
        )
        out = pipe(
            CAPTION,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        )
        return out.images[0]

    assert np.abs(image(str(result.output)) - image(None)).max() > 1e-4


def test_full_dpo_writes_a_model_folder(pairs_dir, tmp_path, cache_dir, embedded_model_dir):
    from training.dpo import train_dpo

    result = train_dpo(
        dpo_config(
            pairs_dir,
            tmp_path / "full",
            cache_dir,
            method="full",
            max_train_steps=2,
            checkpointing_steps=0,
            learning_rate=1e-4,
        )
    )
    assert (result.output / "model_index.json").is_file()
    assert result.report["method"] == "full"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--beta", "0"], "--beta must be positive, got 0.0"),
        (["--resolution", "30"], "--resolution must be a multiple of 8, got 30"),
        (["--min-margin", "3"], "has no pair with a margin of at least 3"),
        (["--max-train-steps", "0"], "--max-train-steps must be at least 1, got 0"),
    ],
)
def test_bad_dpo_options_are_named(argv, message, pairs_dir, tmp_path, capsys):
    assert main(["dpo", "--data", str(pairs_dir), "--out", str(tmp_path), *argv]) == 1
    assert message in capsys.readouterr().err


def test_a_folder_without_pairs_is_one_line(tmp_path, capsys):
    assert main(["dpo", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "has no pairs.jsonl; write one with 'python -m training export-pairs'" in (
        capsys.readouterr().err
    )


# -- the miniature's pure parts ----------------------------------------------------------------


def test_top_light_is_the_top_halfs_luminance_minus_the_bottoms():
    from training.dpo_taste import top_light

    pixels = np.zeros((4, 2, 3), dtype=np.uint8)
    pixels[:2] = 255  # white above, black below
    assert top_light(pixels) == pytest.approx(1.0)
    assert top_light(pixels[::-1]) == pytest.approx(-1.0)
    pixels[:2] = (255, 0, 0)  # red above: luminance 0.299
    assert top_light(pixels) == pytest.approx(0.299)
    with pytest.raises(ValueError, match="pixels must be an"):
        top_light(np.zeros((4, 4)))


def test_voters_mostly_pick_the_tastiest_and_the_bot_rule_breaks_ties():
    from bot.app.votes import pick_winner
    from training.dpo_taste import choose, win_shares

    rng = np.random.default_rng(0)
    picks = [choose(np.array([0.0, 0.3, 0.1]), 0.1, rng) for _ in range(2000)]
    shares = np.bincount(picks, minlength=3) / len(picks)
    # P ∝ exp(0, 3, 1): 0.0420, 0.8438, 0.1142
    assert shares == pytest.approx([0.042, 0.844, 0.114], abs=0.03)
    assert pick_winner({1: 2, 2: 3, 3: 3}) == 2 and pick_winner({1: 0, 2: 0}) is None
    assert win_shares(np.array([1.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.5])).tolist() == [
        1.0,
        0.0,
        0.5,
    ]


def test_the_control_swaps_about_half_the_pairs_and_still_loads(pairs_dir, tmp_path):
    from training.dpo_miniature import write_control_pairs
    from training.preferences import load_pairs

    source = tmp_path / "pairs-6"
    shutil.copytree(pairs_dir, source)
    swapped = write_control_pairs(source, tmp_path / "pairs-control", seed=0)
    original, control = load_pairs(source), load_pairs(tmp_path / "pairs-control")
    flipped = [
        c.winner.resolve() == o.loser.resolve() for o, c in zip(original, control, strict=True)
    ]
    kept = [
        c.winner.resolve() == o.winner.resolve() for o, c in zip(original, control, strict=True)
    ]
    assert sum(flipped) == swapped and all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 0 < swapped < len(original)


# -- Diffusion-KTO: single images, liked or disliked ----------------------------------------------


def test_kto_loss_matches_a_hand_computed_case():
    import torch

    from training.dpo import diffusion_kto_loss

    # β = 10: image 0 (liked) has error 0.1 below the reference → reward +0.5; image 1
    # (disliked) 0.1 above → reward −0.5. The reference point max(0, mean reward) = 0.
    #   liked: 1 − σ(0.5 − 0); disliked, weight 2: 2 · (1 − σ(0 − (−0.5))) → mean of the two.
    model = torch.tensor([0.2, 0.5], requires_grad=True)
    ref = torch.tensor([0.3, 0.4])
    liked = torch.tensor([True, False])
    loss, ranked = diffusion_kto_loss(model, ref, liked, beta=10.0, undesirable_weight=2.0)
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert loss.item() == pytest.approx(((1 - sigmoid(0.5)) + 2 * (1 - sigmoid(0.5))) / 2)
    assert ranked.item() == 1.0  # both already on their side of the reference point
    loss.backward()
    # Lowering a liked image's error (and raising a disliked one's) lowers the loss.
    assert model.grad[0] > 0 and model.grad[1] < 0
    # The model as its own reference: every term 1 − σ(0) = ½.
    same, _ = diffusion_kto_loss(ref, ref, liked, beta=10.0, undesirable_weight=1.0)
    assert same.item() == pytest.approx(0.5)


def test_kto_reads_each_voted_candidate_once_liked_and_each_unvoted_one_disliked(tmp_path):
    from training.preferences import load_labelled

    (tmp_path / "i").mkdir()
    for name in ("w", "a", "b", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / "i" / f"{name}.png")
    rows = [  # one vote: w 3 votes, a 1, b and c none
        {
            "text": "t",
            "winner_file": "i/w.png",
            "loser_file": f"i/{x}.png",
            "margin": 3 - v,
            "winner_votes": 3,
            "loser_votes": v,
        }
        for x, v in (("a", 1), ("b", 0), ("c", 0))
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = {item.image.name: item.liked for item in load_labelled(tmp_path)}
    assert items == {"w.png": True, "a.png": True, "b.png": False, "c.png": False}


def test_kto_trains_from_the_same_export_and_says_what_it_learnt_from(
    pairs_dir, tmp_path, cache_dir, embedded_model_dir, capsys
):
    argv = [
        "kto",
        "--data",
        str(pairs_dir),
        "--out",
        str(tmp_path / "kto"),
        "--cache-dir",
        str(cache_dir),
        "--resolution",
        "32",
        "--train-batch-size",
        "4",
        "--max-train-steps",
        "8",
        "--checkpointing-steps",
        "0",
        "--seed",
        "7",
        "--beta",
        "500",
        "--learning-rate",
        "1e-2",
        "--lora-rank",
        "2",
    ]
    assert main(argv) == 0
    assert "KTO: 8 steps on 6 liked and 6 disliked images" in capsys.readouterr().out
    report = json.loads((tmp_path / "kto" / "training_report.json").read_text())
    assert report["objective"] == "diffusion-kto" and report["undesirable_weight"] == 1.0
    losses = [h["loss"] for h in report["history"]]
    assert losses[0] == pytest.approx(0.5, abs=1e-4)  # the adapters start at zero: ½
    assert np.mean(losses[-3:]) < 0.5 - 0.005, losses


def test_kto_without_both_kinds_of_image_is_one_line(tmp_path, capsys):
    (tmp_path / "i").mkdir()
    for name in ("w", "l"):
        Image.new("RGB", (8, 8)).save(tmp_path / "i" / f"{name}.png")
    row = {
        "text": "t",
        "winner_file": "i/w.png",
        "loser_file": "i/l.png",
        "margin": 1,
        "winner_votes": 2,
        "loser_votes": 1,
    }
    (tmp_path / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    assert main(["kto", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "KTO needs liked and disliked images" in capsys.readouterr().err


def test_a_seed_aware_share_counts_the_spread_over_seeds():
    from training.dpo_taste import seed_aware_share

    # Three seeds that disagree (0.9, 0.5, 0.7 of 10 prompts each): the seed-aware interval is
    # wider than the prompts-only view of the pooled 30 answers would be.
    wins = np.array([[1] * 9 + [0], [1] * 5 + [0] * 5, [1] * 7 + [0] * 3], dtype=float)
    got = seed_aware_share(wins, resamples=300, seed=0)
    assert got["value"] == pytest.approx(0.7) and got["n"] == 30 and got["seeds"] == 3
    assert got["per_seed"] == pytest.approx([0.9, 0.5, 0.7])
    assert 0.0 <= got["low"] <= 0.7 <= got["high"] <= 1.0
    naive = 1.96 * math.sqrt(0.7 * 0.3 / 30)
    assert got["high"] - got["value"] > naive or got["high"] == 1.0


@pytest.mark.slow
def test_the_miniature_trains_dpo_kto_and_the_control_over_seeds(
    tmp_path, cache_dir, embedded_model_dir, tiny_inception, monkeypatch
):
    """The whole loop at smoke size: two vote counts, two training seeds, both objectives."""
    from training.dpo_miniature import MiniatureConfig, run

    monkeypatch.setenv("COVER_CACHE_DIR", str(cache_dir))
    config = MiniatureConfig(
        out=tmp_path / "mini",
        vote_counts=(3, 6),
        held_out=4,
        real_covers=6,
        steps=2,
        batch_pairs=2,
        seeds=2,
        resamples=50,
        inception=str(tiny_inception),
    )
    results = run(config, log=lambda *_: None)
    row = results["win_rate_by_votes"][-1]
    for objective in ("dpo", "kto"):
        arm = row[objective]["win_rate_vs_control"]
        assert arm["seeds"] == 2 and arm["n"] == 8 and len(arm["per_seed"]) == 2
        assert arm["low"] <= arm["value"] <= arm["high"]
    assert "kto_vs_dpo" in row
    for k in range(2):
        assert (tmp_path / "mini" / f"kto-6-s{k}" / "training_report.json").is_file()
        assert (tmp_path / "mini" / f"control-s{k}" / "lora").is_dir()
    report = (tmp_path / "mini" / "report.md").read_text()
    assert "KTO vs control" in report and "KTO vs DPO" in report
