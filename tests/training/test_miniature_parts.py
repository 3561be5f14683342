"""The miniature study's parts that need no training: the synthetic dataset, CLIP's tokenizer,
the palette test of prompt following, and what ``auto`` resolves to."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.prompt_following import colour_histogram, leave_one_out_accuracy, prompt_following
from models.registry import AUTO_PREFERENCE, PRESETS, auto_choice, resolve_auto, resolve_model
from training.synthetic import (
    CAPTION_SUFFIX,
    GENRES,
    DatasetSizes,
    draw_example,
    write_dataset,
)

# -- the synthetic dataset ---------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_images() -> None:
    first, meta = draw_example("covers", "train", 7, seed=0, size=64)
    again, meta_again = draw_example("covers", "train", 7, seed=0, size=64)
    other, _ = draw_example("covers", "train", 7, seed=1, size=64)
    assert first.size == (64, 64) and first.mode == "RGB"
    assert first.tobytes() == again.tobytes() and meta == meta_again
    assert first.tobytes() != other.tobytes()


def test_every_cover_title_names_its_genre_and_ends_like_the_bot_prompt() -> None:
    words = {g.name: g.words for g in GENRES}
    for index in range(200):
        _, meta = draw_example("covers", "test", index, seed=3, size=32)
        assert meta["text"] == f"{meta['title']} {CAPTION_SUFFIX}"
        assert any(word in meta["title"] for word in words[meta["genre"]]), meta


def test_genre_sets_the_palette() -> None:
    """The rule the prompt-following test relies on: the same title in two genres gives
    clearly different colours, the same genre twice gives close ones."""
    by_genre: dict[str, list[np.ndarray]] = {}
    for index in range(300):
        image, meta = draw_example("covers", "train", index, seed=0, size=32)
        by_genre.setdefault(meta["genre"], []).append(colour_histogram(np.asarray(image)))
    features = np.concatenate([np.stack(v) for v in by_genre.values()])
    labels = [g for g, v in by_genre.items() for _ in v]
    assert leave_one_out_accuracy(features, labels) > 0.5  # chance: 1/12


def test_generic_captions_never_use_cover_words() -> None:
    cover_words = {w for g in GENRES for w in g.words}
    for index in range(100):
        _, meta = draw_example("generic", "train", index, seed=0, size=32)
        assert not any(f" {w} " in f" {meta['text']} " for w in cover_words), meta["text"]
        assert meta["text"].endswith("background")


def test_write_dataset_layout_and_rerun(tmp_path: Path) -> None:
    sizes = DatasetSizes(covers=(5, 2, 3), generic=(4, 1, 1))
    summary = write_dataset(tmp_path, sizes=sizes, seed=0, size=32, log=lambda _: None)
    assert summary["written"] == 16
    rows = [json.loads(line) for line in (tmp_path / "covers/test/metadata.jsonl").open()]
    assert [r["file_name"] for r in rows] == ["00000.png", "00001.png", "00002.png"]
    assert {"text", "genre", "activity", "mood", "era"} <= set(rows[0])
    with Image.open(tmp_path / "covers/test" / rows[0]["file_name"]) as image:
        assert image.size == (32, 32)
    again = write_dataset(tmp_path, sizes=sizes, seed=0, size=32, log=lambda _: None)
    assert again["written"] == 0  # complete splits are kept
    with pytest.raises(ValueError, match="multiple of 8"):
        write_dataset(tmp_path / "x", sizes=sizes, size=30, log=lambda _: None)


# -- CLIP's tokenizer --------------------------------------------------------------------------


def test_clip_tokenizer_has_openai_ids() -> None:
    from models.clip_tokenizer import VOCAB_SIZE, clip_tokenizer

    tokenizer = clip_tokenizer()
    assert len(tokenizer) == VOCAB_SIZE == 49408
    # The example from CLIP's own documentation.
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("late night drive", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 49407  # padded with <|endoftext|>
    # Lower-cased, and emoji are real tokens (CLIP's unknown token is <|endoftext|>).
    assert tokenizer("JAZZ").input_ids == tokenizer("jazz").input_ids
    moon = tokenizer("🌙 ☔").input_ids
    assert len(moon) > 3 and 49407 not in moon[1:-1]


# -- prompt following --------------------------------------------------------------------------


def _solid(colour: tuple[int, int, int], noise: float, rng: np.random.Generator) -> np.ndarray:
    pixels = np.full((16, 16, 3), colour, dtype=np.float64) + rng.normal(0, noise, (16, 16, 3))
    return colour_histogram(np.clip(pixels, 0, 255).astype(np.uint8))


def test_histogram_is_a_unit_vector_of_64_cells() -> None:
    rng = np.random.default_rng(0)
    histogram = colour_histogram(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert histogram.shape == (64,)
    assert np.isclose((histogram**2).sum(), 1.0)  # square roots of shares summing to 1


def test_prompt_following_scores_right_wrong_and_chance() -> None:
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    labels = [name for name in colours for _ in range(10)]
    real = np.stack([_solid(colours[name], 10, rng) for name in labels])
    right = np.stack([_solid(colours[name], 10, rng) for name in labels])
    # Every image painted in the *next* label's colour: always wrong.
    shifted = {"red": "blue", "blue": "green", "green": "red"}
    wrong = np.stack([_solid(colours[shifted[name]], 10, rng) for name in labels])

    good = prompt_following(real, labels, right, labels, resamples=50)
    bad = prompt_following(real, labels, wrong, labels, resamples=50)
    assert good.accuracy.value == 1.0 and bad.accuracy.value == 0.0
    assert good.chance == pytest.approx(1 / 3)
    assert good.real_ceiling == 1.0
    assert good.per_label == {"blue": 1.0, "green": 1.0, "red": 1.0}
    assert bad.accuracy.low <= bad.accuracy.value <= bad.accuracy.high
    assert good.p_value < 0.01 and bad.p_value == 1.0 and good.null_high < 0.6
    with pytest.raises(ValueError, match="purple"):
        prompt_following(real, labels, right[:1], ["purple"])


def test_the_permutation_null_knows_unbalanced_labels() -> None:
    """A prompt-blind model that always paints the commonest label scores that label's share;
    the null's mean is exactly that share and the model does not beat it."""
    from eval.prompt_following import null_mean, permutation_null

    labels = ["metal"] * 53 + ["jazz"] * 29 + ["pop"] * 18
    always_metal = ["metal"] * 100
    assert null_mean(always_metal, labels) == pytest.approx(0.53)
    null = permutation_null(always_metal, labels, permutations=50)
    assert np.all(null == 0.53)  # shuffling cannot change a constant prediction's score
    honest = labels[:]  # a perfect model is far above every shuffle
    assert permutation_null(honest, labels, permutations=200).max() < 0.6


# -- auto --------------------------------------------------------------------------------------


def _cache_snapshot(hub: Path, repo_id: str) -> None:
    snapshot = hub / ("models--" + repo_id.replace("/", "--")) / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")


def test_auto_is_the_embedded_model_without_a_gpu_or_a_cached_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert resolve_auto(gpu=False) == "embedded"
    assert resolve_auto(gpu=True) == "embedded"  # a GPU, but nothing cached
    # A download that stopped after model_index.json is not a cached model (complete caches:
    # tests/models/test_hub_presets.py).
    _cache_snapshot(tmp_path, PRESETS["sd-turbo"].repo_id)
    assert resolve_auto(gpu=False) == resolve_auto(gpu=True) == "embedded"
    assert "models pull sd-turbo" in auto_choice(gpu=False)[1]


def test_auto_resolves_to_a_real_spec_here() -> None:
    spec = resolve_model("auto")  # this machine: no GPU in CI
    assert spec.name in {"embedded", *AUTO_PREFERENCE}
    assert resolve_model("AUTO").name == spec.name


def test_read_split_reads_labels_and_names_a_missing_one(tmp_path: Path) -> None:
    from eval.images import read_split

    sizes = DatasetSizes(covers=(0, 0, 3), generic=(0, 0, 2))
    write_dataset(tmp_path, sizes=sizes, seed=0, size=16, log=lambda _: None)
    covers = read_split(tmp_path / "covers/test", label="genre")
    assert len(covers.labels) == 3 and set(covers.labels) <= {g.name for g in GENRES}
    assert read_split(tmp_path / "covers/test").labels == ()
    with pytest.raises(ValueError, match="'genre'"):
        read_split(tmp_path / "generic/test", label="genre")


def test_the_command_refuses_to_ship_a_smoke_test(tmp_path: Path, capsys) -> None:
    from training.__main__ import main

    assert main(["miniature", "--quick", "--ship", "--out", str(tmp_path / "run")]) == 1
    assert "--ship with --quick" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything ran


# -- the embedded model's noise schedule -------------------------------------------------------


def test_the_last_training_step_hides_the_image_completely() -> None:
    """Sampling starts from pure noise, so training's noisiest step must be pure noise too:
    otherwise the network learns to read the image's colours from its input (SD's own schedule
    leaves 7% of it there) and never from the prompt – the miniature study's first failure."""
    import torch
    from diffusers import DDPMScheduler

    from models.embedded import embedded_scheduler

    config = embedded_scheduler().config
    assert config.prediction_type == "v_prediction"  # ε is the input itself at SNR 0
    last = torch.tensor([config.num_train_timesteps - 1])
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    red, blue = torch.full_like(noise, 2.0), torch.full_like(noise, -2.0)
    for scheduler, leaks in (
        (DDPMScheduler.from_config(config), False),
        (DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), True),
    ):
        gap = scheduler.add_noise(red, noise, last) - scheduler.add_noise(blue, noise, last)
        assert (gap.abs().max() > 0.1) == leaks
