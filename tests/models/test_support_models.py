"""The support models (models/support.py: captioner, CLIP, prompt expander): their stand-ins in
the hub-cache layout (modeltools/standins/), what a pull of a transformers repository fetches,
the message when one is missing, and eval's CLIP score from the cached CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import ModelUnavailable
from models.hub import needed_transformers_files, repo_state
from models.presets import SUPPORT_MODELS
from models.support import is_available, model_folder
from modeltools.standins import SUPPORT_REPOS, repo_folder, revision_of
from tests.conftest import SUPPORT_MODELS as FIXTURE_NAMES
from tests.fakes.hub import FakeHub, run_in_thread

pytestmark = pytest.mark.slow


def test_every_support_model_has_a_stand_in() -> None:
    assert set(SUPPORT_MODELS) == set(SUPPORT_REPOS) == set(FIXTURE_NAMES)
    for name, model in SUPPORT_MODELS.items():
        assert SUPPORT_REPOS[name].repo_id == model.repo_id
        assert SUPPORT_REPOS[name].pipeline_class == model.model_class


def test_stand_ins_are_laid_out_as_downloads_with_the_real_classes(support_hub: Path) -> None:
    for name, model in SUPPORT_MODELS.items():
        folder = repo_folder(support_hub, model.repo_id)
        revision = (folder / "refs" / "main").read_text()
        assert revision == revision_of(model.repo_id)
        snapshot = folder / "snapshots" / revision
        config = json.loads((snapshot / "config.json").read_text())
        assert config["architectures"] == [model.model_class]
        files = {p.name for p in snapshot.iterdir()}
        assert all(p.is_symlink() for p in snapshot.iterdir())
        weights = "model.safetensors" if model.weights == "safetensors" else "pytorch_model.bin"
        assert weights in files, (name, files)
    snapshot = lambda repo: repo_folder(support_hub, repo) / "snapshots" / revision_of(repo)  # noqa: E731
    assert {"vocab.json", "merges.txt"} <= {
        p.name for p in snapshot(SUPPORT_MODELS["magicprompt"].repo_id).iterdir()
    }
    assert (snapshot(SUPPORT_MODELS["blip"].repo_id) / "vocab.txt").is_file()


def test_stand_ins_load_with_the_real_classes_and_tokenizer_kinds(
    support_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import (
        AutoProcessor,
        AutoTokenizer,
        BertTokenizer,
        BlipForConditionalGeneration,
        CLIPModel,
        CLIPTokenizer,
        GPT2LMHeadModel,
        GPT2Tokenizer,
    )

    monkeypatch.setenv("HF_HUB_CACHE", str(support_hub))
    blip = model_folder("blip", role="captioning")
    assert isinstance(
        BlipForConditionalGeneration.from_pretrained(blip), BlipForConditionalGeneration
    )
    processor = AutoProcessor.from_pretrained(blip)
    assert isinstance(processor.tokenizer, BertTokenizer)
    assert processor.tokenizer.bos_token == "[DEC]"  # BLIP's decoder start, as the real one
    clip = model_folder("openai/clip-vit-large-patch14", role="CLIP")
    assert CLIPModel.from_pretrained(clip).config.vision_config.image_size == 224
    tokenizer = AutoTokenizer.from_pretrained(clip)
    assert isinstance(tokenizer, CLIPTokenizer)
    # the real CLIP ids (models/clip_tokenizer.py)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    gpt = model_folder("magicprompt", role="prompt expansion")
    assert isinstance(GPT2LMHeadModel.from_pretrained(gpt), GPT2LMHeadModel)
    gpt_tokenizer = AutoTokenizer.from_pretrained(gpt)
    assert isinstance(gpt_tokenizer, GPT2Tokenizer) and gpt_tokenizer.eos_token == "<|endoftext|>"
    # byte-level: any text round-trips, emoji included
    text = "neon city ✨, 8k"
    assert gpt_tokenizer.decode(gpt_tokenizer(text).input_ids) == text


def test_a_missing_support_model_names_itself_and_the_command_that_fetches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailable) as caught:
        model_folder("magicprompt", role="prompt expansion")
    message = str(caught.value)
    assert "prompt expansion model Gustavosta/MagicPrompt-Stable-Diffusion" in message
    assert "`python -m bot models pull magicprompt`" in message
    assert not is_available("clip")
    with pytest.raises(ModelUnavailable, match=r"has no config\.json"):
        model_folder(str(tmp_path), role="captioning")
    with pytest.raises(ModelUnavailable, match="neither a folder nor"):
        model_folder("no-such-thing", role="captioning")


def test_transformers_repos_fetch_configs_tokenizer_and_one_weights_format() -> None:
    # The real repositories' top-level files (their pages on the hub), other frameworks included.
    clip = [
        "config.json",
        "flax_model.msgpack",
        "merges.txt",
        "model.safetensors",
        "preprocessor_config.json",
        "pytorch_model.bin",
        "special_tokens_map.json",
        "tf_model.h5",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "README.md",
        ".gitattributes",
    ]
    assert needed_transformers_files(clip) == [
        "config.json",
        "merges.txt",
        "preprocessor_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "model.safetensors",
    ]
    gpt = [
        "config.json",
        "merges.txt",
        "pytorch_model.bin",
        "training_args.bin",
        "vocab.json",
        "tokenizer_config.json",
    ]
    assert needed_transformers_files(gpt)[-1] == "pytorch_model.bin"
    assert "training_args.bin" not in needed_transformers_files(gpt)
    sharded = [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
    ]
    assert needed_transformers_files(sharded) == ["config.json", *sharded[1:4]]


def test_models_pull_fetches_a_support_model_that_then_counts_as_cached(
    support_hub: Path, tmp_path: Path
) -> None:
    from tests.models.test_hub import cli

    repo = SUPPORT_MODELS["magicprompt"].repo_id
    fake = FakeHub()
    fake.add(
        repo, repo_folder(support_hub, repo) / "snapshots" / revision_of(repo), revision_of(repo)
    )
    url, stop = run_in_thread(fake)
    fake.url = url  # type: ignore[attr-defined]
    try:
        before = cli(fake, tmp_path)
        assert before.returncode == 0, before.stderr
        rows = before.stdout.splitlines()
        assert next(r for r in rows if r.startswith("magicprompt")).split()[1] == "no"
        done = cli(fake, tmp_path, "pull", "magicprompt")
        assert done.returncode == 0, done.stderr
    finally:
        stop()
    assert "training_args.bin" not in fake.fetched(repo) and "README.md" not in fake.fetched(repo)
    assert "pytorch_model.bin" in fake.fetched(repo)
    after = cli(fake, tmp_path)  # listing needs no hub
    row = next(r for r in after.stdout.splitlines() if r.startswith("magicprompt"))
    assert row.split()[1] == "stand-in", row  # cached; the fake hub served a stand-in
    from models.registry import hf_cache_dir  # noqa: F401  (repo_state reads the env var)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        assert repo_state(repo).cached


# -- eval's CLIP score from the cached CLIP -----------------------------------------------------


def test_eval_scores_with_the_cached_clip_and_skips_with_a_reason_without(
    support_hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eval.clip_score import DEFAULT_CLIP_MODEL, ClipScorer, load_clip

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    reason = load_clip(DEFAULT_CLIP_MODEL)
    assert isinstance(reason, str) and "`python -m bot models pull clip`" in reason

    monkeypatch.setenv("HF_HUB_CACHE", str(support_hub))
    scorer = load_clip(DEFAULT_CLIP_MODEL)
    assert isinstance(scorer, ClipScorer), scorer
    images = [Image.new("RGB", (80, 60), colour) for colour in ("red", "navy", "white")]
    prompts = ["a red square", "a dark blue night sky", "white snow"]
    cosines = scorer.cosines(images, prompts)
    assert cosines.shape == (3,) and np.all(np.abs(cosines) <= 1.0)
    assert len(set(np.round(cosines, 6))) == 3  # the images and texts do reach the towers
    np.testing.assert_allclose(scorer(images, prompts), 100 * np.clip(cosines, 0, None))
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        scorer.cosines(images[:2], prompts)


def test_eval_study_computes_the_clip_score_when_clip_is_cached(
    support_hub: Path, cache_dir: Path, tiny_inception: Path, tmp_path: Path, monkeypatch
) -> None:
    """`python -m eval study` as a user runs it: no --clip-model, so the default CLIP from the
    cache; before this, the score was skipped wherever CLIP weights were missing."""
    from eval.__main__ import main as eval_main

    split = tmp_path / "split"
    split.mkdir()
    lines = []
    for i, colour in enumerate(("red", "navy", "gold")):
        Image.new("RGB", (64, 64), colour).save(split / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"a {colour} cover"}))
    (split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(support_hub))
    args = [
        "study",
        "--test",
        str(split),
        "--models",
        "embedded",
        "--size",
        "64",
        "--steps",
        "2",
        "--bootstrap",
        "5",
        "--fid-resamples",
        "3",
        "--inception",
        str(tiny_inception),
        "--device",
        "cpu",
        "--cache-dir",
        str(cache_dir),
    ]
    assert eval_main([*args, "--out", str(tmp_path / "with")]) == 0
    row = json.loads((tmp_path / "with" / "results.json").read_text())["models"][0]
    assert row["clip_score"]["model"] == "openai/clip-vit-large-patch14"
    assert 0 <= row["clip_score"]["value"] <= 100 and row["clip_score"]["n"] == 3

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert eval_main([*args, "--out", str(tmp_path / "without")]) == 0
    row = json.loads((tmp_path / "without" / "results.json").read_text())["models"][0]
    assert "`python -m bot models pull clip`" in row["clip_score"]["skipped"]
