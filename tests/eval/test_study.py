"""The study end to end (eval/study.py, eval/report.py, eval/clip_score.py): two tiny diffusers
pipelines generate through models/, a small seeded feature network stands in for Inception and a
tiny random CLIP for the real one; then resuming, caching and the black-image policy."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from eval.study import (
    CHART_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    ModelEntry,
    StudyConfig,
    generation_params,
    parse_models,
    run_study,
)

PROMPTS = [
    "Late Night Drive playlist cover image",
    "Gym Hype playlist cover image",
    "Rainy Day Jazz playlist cover image",
    "Summer Hits playlist cover image",
    "Chill Lofi playlist cover image",
    "Road Trip playlist cover image",
    "Focus Flow playlist cover image",
    "Coffee House playlist cover image",
]


# -- the pieces the study is run with ------------------------------------------------------


class TinyFeatures:
    """A seeded two-layer conv net, 32 px in, 16 features out: Inception's role, in ms."""

    name = "tiny-test-features-v1"
    dim = 16
    input_size = 32

    def __init__(self) -> None:
        import torch

        generator = torch.Generator().manual_seed(0)
        self.w1 = torch.randn(8, 3, 3, 3, generator=generator) / 5
        self.w2 = torch.randn(16, 8, 3, 3, generator=generator) / 8
        self.images_seen = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        self.images_seen += len(images)
        x = torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0  # (B, 3, 32, 32)
        x = torch.relu(torch.nn.functional.conv2d(x, self.w1, stride=2))
        x = torch.relu(torch.nn.functional.conv2d(x, self.w2, stride=2))
        return x.mean(dim=(2, 3)).double().numpy()  # (B, 16)


class CountingRunner:
    """Wraps the real runner: counts the images it is asked for and blackens chosen ones (the
    safety checker's verdict, which a tiny random model never gives by itself)."""

    def __init__(self, inner: Any, black_prompts: Sequence[str] = ()) -> None:
        self.inner = inner
        self.black_prompts = set(black_prompts)
        self.images = 0

    def __call__(self, params: Any, specs: Sequence[Any], control: Any) -> list[Any]:
        from dataclasses import replace

        self.images += len(specs)
        made = self.inner(params, specs, control)
        return [
            replace(image, image=Image.new("RGB", image.image.size))
            if image.spec.prompt in self.black_prompts and "finetune" in params.model
            else image
            for image in made
        ]


@pytest.fixture(scope="module")
def test_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 'real' covers: coloured gradients with a disc, JPEG like scraped covers."""
    root = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    lines = []
    for i, prompt in enumerate(PROMPTS):
        ramp = np.linspace(0, 1, 96)[None, :, None]
        a, b = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
        pixels = (a * (1 - ramp) + b * ramp).repeat(96, axis=0).astype(np.uint8)
        pixels[30:60, 30:60] = rng.integers(0, 255, 3)
        Image.fromarray(pixels).save(root / f"{i:03d}.jpg", quality=90)
        lines.append(json.dumps({"file_name": f"{i:03d}.jpg", "text": prompt}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def finetune_dir(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny pipeline: the embedded one with its UNet weights perturbed, saved as a local
    diffusers folder (what `--models ./my-finetune` points to)."""
    from safetensors.torch import load_file, save_file

    target = tmp_path_factory.mktemp("models") / "my-finetune"
    shutil.copytree(embedded_model_dir, target)
    weights = target / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    import torch

    generator = torch.Generator().manual_seed(1)
    save_file(
        {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in tensors.items()},
        weights,
    )
    return target


@pytest.fixture(scope="module")
def tiny_clip_dir(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer CLIP (32 px images) with the embedded model's tokenizer, saved as a folder
    like a cached hub model."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(embedded_model_dir / "tokenizer")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={
            **small,
            "num_attention_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**small, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    target = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


# -- model names -------------------------------------------------------------------------------


def test_parse_models() -> None:
    entries = parse_models("embedded, ./my-finetune ,small-sd+lora=covers.safetensors,")
    assert entries == [
        ModelEntry("embedded"),
        ModelEntry("./my-finetune"),
        ModelEntry("small-sd", "covers.safetensors"),
    ]
    assert [e.label for e in entries] == ["embedded", "my-finetune", "small-sd + LoRA covers"]
    for bad, match in [
        ("", "at least one"),
        ("embedded+lora=", "MODEL\\+lora=FILE"),
        ("a,a", "twice"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_models(bad)


def test_generation_params_follow_the_model_unless_overridden(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    lora = tmp_path / "covers.safetensors"
    # Resolving reads the header only (a garbage file is refused before any work); the
    # weights are loaded in models/.
    save_file({"lora_A.weight": np.zeros((2, 2), np.float32)}, str(lora))
    config = StudyConfig(test_dir=tmp_path, models=(), out_dir=tmp_path, steps=3)
    params = generation_params(config, ModelEntry("sd15", str(lora)))
    assert (params.width, params.steps, params.guidance) == (512, 3, 7.5)
    assert params.lora == str(lora.resolve())
    sized = StudyConfig(test_dir=tmp_path, models=(), out_dir=tmp_path, size=64, guidance=0.0)
    params = generation_params(sized, ModelEntry("embedded"))
    assert (params.width, params.height, params.steps, params.guidance) == (64, 64, 20, 0.0)


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_study_end_to_end(
    test_split: Path,
    finetune_dir: Path,
    tiny_clip_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    from eval.clip_score import load_clip
    from models.runner import DiffusersRunner

    out = tmp_path / "study"
    config = StudyConfig(
        test_dir=test_split,
        models=(ModelEntry("embedded"), ModelEntry(str(finetune_dir))),
        out_dir=out,
        size=64,
        steps=2,
        batch_size=3,
        bootstrap=20,
        fid_resamples=5,
        cache_dir=tmp_path / "cache",  # features go to its eval/ folder
        device="cpu",
    )
    runner = CountingRunner(
        DiffusersRunner(device="cpu", cache_dir=cache_dir, black_retries=0),
        black_prompts=[PROMPTS[2]],
    )
    network = TinyFeatures()

    # 1. The first run generates 8 images per model and measures them.
    results = run_study(
        config,
        load_extractor=lambda: network,
        load_clip=lambda: load_clip(str(tiny_clip_dir)),
        runner=runner,
    )
    assert results is not None
    assert runner.images == 2 * len(PROMPTS)
    embedded, finetune = results["models"]
    # Features of the real images and of every kept image, none of a dropped one. At 2 steps a
    # sample can itself be near-black (models/postprocess.py is_black) and is dropped too.
    seen = network.images_seen
    assert seen == 8 + embedded["kept"] + finetune["kept"]
    assert (embedded["label"], finetune["label"]) == ("embedded", "my-finetune")
    for row in (embedded, finetune):
        assert row["kept"] + row["dropped_black"] == 8 and row["kept"] >= 2
    assert finetune["dropped_black"] >= 1  # the image blackened on purpose
    for row in results["models"]:
        fid, kid, clip = row["fid"], row["kid"], row["clip_score"]
        assert fid["value"] > 0
        assert fid["n_real"] == 8 and fid["n_generated"] == row["kept"]
        assert fid["reliable"] is False  # 8 images, 16 features
        assert kid["low"] <= kid["value"] <= kid["high"] and kid["n_generated"] == row["kept"]
        assert fid["low"] <= fid["value"] <= fid["high"]
        assert 0 <= clip["value"] <= 100 and clip["n"] == row["kept"]
        assert row["params"]["width"] == 64 and row["params"]["steps"] == 2
    assert embedded["fid"]["value"] != finetune["fid"]["value"]
    assert any("of 8 images were all black" in note for note in results["notes"])
    assert any("unreliable" in note for note in results["notes"])

    # 2. The three outputs.
    saved = json.loads((out / RESULTS_FILE).read_text())
    assert saved["models"][1]["dropped_black"] == finetune["dropped_black"]
    assert saved["feature_network"] == {"name": TinyFeatures.name, "dim": 16, "input_size": 32}
    report = (out / REPORT_FILE).read_text()
    assert report.startswith("**Paired differences**")
    (comparison,) = saved["comparisons"]
    assert (comparison["a"], comparison["b"]) == ("embedded", "my-finetune")
    kids = [r["kid"]["value"] for r in saved["models"]]
    assert comparison["kid"]["value"] == pytest.approx(kids[1] - kids[0])
    assert comparison["kid"]["low"] <= comparison["kid"]["value"] <= comparison["kid"]["high"]
    assert not any(str(tmp_path) in json.dumps(row) for row in saved["models"])
    assert "| embedded |" in report and "| my-finetune |" in report and "| 7 / 1 |" in report
    assert "Table 2. FID scores for evaluated models on the test set" in report
    with Image.open(out / CHART_FILE) as chart:
        assert chart.format == "PNG" and chart.width == 960 and chart.height > 200

    # 3. A second run generates nothing and reads every feature from the cache.
    again = run_study(
        config,
        load_extractor=lambda: network,
        load_clip=lambda: "not available in this test",
        runner=runner,
    )
    assert again is not None
    assert runner.images == 2 * len(PROMPTS)
    assert network.images_seen == seen
    assert [r["fid"]["value"] for r in again["models"]] == [
        r["fid"]["value"] for r in results["models"]
    ]
    assert again["models"][0]["clip_score"] == {"skipped": "not available in this test"}
    assert "CLIP score skipped: not available in this test." in (out / REPORT_FILE).read_text()

    # 4. A lost image is regenerated alone, the same picture as the first (fixed seeds; alone
    #    instead of in a batch of 8, float rounding may move a few pixel values by a level).
    lost = sorted((out / "images").glob("embedded-*/00003-seed3.png"))[0]
    before = np.asarray(Image.open(lost)).copy()
    lost.unlink()
    run_study(config, load_extractor=lambda: network, runner=runner, load_clip=None)
    assert runner.images == 2 * len(PROMPTS) + 1
    regenerated = np.asarray(Image.open(lost)).astype(np.int16)
    assert np.abs(regenerated - before).mean() < 1.0
