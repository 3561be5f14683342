"""Seed 003 end to end: images without captions → caption → clip-filter → one model per style →
the style study, run as docs/training.md's commands with the support models' stand-ins and the
embedded base model; and the loop's and the study's parts on their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from training.__main__ import main
from training.data import DatasetError
from training.styles import (
    StyleLoopConfig,
    find_styles,
    in_test_split,
    matrix_markdown,
    split_style,
    style_matrix,
    train_styles,
)

pytestmark = pytest.mark.slow


def covers(folder: Path, colour: tuple[int, int, int], count: int) -> Path:
    """``count`` uncaptioned covers in one palette: a style's look."""
    folder.mkdir(parents=True)
    for i in range(count):
        image = Image.new("RGB", (64, 64), colour)
        image.paste(
            tuple(min(255, c + 40 * (i % 3)) for c in colour), (8 * i % 48, 8, 8 * i % 48 + 16, 56)
        )
        image.save(folder / f"cover-{i:02d}.png")
    return folder


def test_caption_filter_train_and_study_from_the_docs_commands(
    support_hub: Path, cache_dir: Path, tiny_inception: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(support_hub))
    raw, kept, runs = tmp_path / "raw", tmp_path / "kept", tmp_path / "runs"
    covers(raw / "ember", (200, 40, 20), 6)
    covers(raw / "tide", (20, 60, 200), 6)

    # 1. Captions for images that have none.
    for style in ("ember", "tide"):
        assert main(["caption", str(raw / style), "--batch-size", "4", "--device", "cpu"]) == 0
    # 2. The CLIP filter (the stand-in's random cosines are no basis for seed 003's 0.2: keep all
    #    here; tests/training/test_data_pipeline.py checks the cut itself).
    for style in ("ember", "tide"):
        code = main(
            [
                "clip-filter",
                str(raw / style),
                "--out",
                str(kept / style),
                "--threshold",
                "-1",
                "--device",
                "cpu",
            ]
        )
        assert code == 0
    assert len((kept / "ember" / "metadata.jsonl").read_text().splitlines()) == 6
    capsys.readouterr()

    # 3. One LoRA per style, the paper's preset with a CPU-sized run on top.
    train = [
        "styles",
        "--data",
        str(kept),
        "--out",
        str(runs),
        "--preset",
        "seed003",
        "--base",
        "embedded",
        "--method",
        "lora",
        "--resolution",
        "64",
        "--max-train-steps",
        "2",
        "--checkpointing-steps",
        "0",
        "--seed",
        "0",
        "--test-share",
        "0.34",
        "--cache-dir",
        str(cache_dir),
    ]
    assert main(train) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "[1/2] ember: training" in out and "[2/2] tide: training" in out
    summary = json.loads((runs / "styles.json").read_text())
    assert summary["preset"] == "seed003" and set(summary["styles"]) == {"ember", "tide"}
    for record in summary["styles"].values():
        assert Path(record["output"]).is_file() and record["steps"] == 2
        train_names = {
            json.loads(line)["file_name"]
            for line in Path(record["train"], "metadata.jsonl").read_text().splitlines()
        }
        test_names = {
            json.loads(line)["file_name"]
            for line in Path(record["test"], "metadata.jsonl").read_text().splitlines()
        }
        assert train_names and len(test_names) >= 2 and not train_names & test_names
        assert len(train_names | test_names) == 6
    report = json.loads((runs / "ember" / "run" / "training_report.json").read_text())
    assert report["resolution"] == 64 and report["method"] == "lora"
    # a rerun skips what is done
    assert main(train) == 0
    assert "ember: trained before" in capsys.readouterr().out

    # 4. The study: base and both style models on each style's held-out covers.
    study = [
        "style-study",
        "--runs",
        str(runs),
        "--size",
        "64",
        "--steps",
        "2",
        "--bootstrap",
        "5",
        "--fid-resamples",
        "5",
        "--inception",
        str(tiny_inception),
        "--device",
        "cpu",
        "--cache-dir",
        str(cache_dir),
    ]
    assert main(study) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "# One model per style" in printed
    matrix = json.loads((runs / "study" / "matrix.json").read_text())
    assert matrix["models"] == ["base embedded", "ember model", "tide model"]
    for metric in ("kid", "clip_score"):
        for label in matrix["models"]:
            assert all(
                isinstance(matrix["metrics"][metric][label][s], float) for s in ("ember", "tide")
            ), (metric, label)
    assert set(matrix["verdicts"]) == {"ember", "tide"}
    assert all(v["own_beats_base"] in (True, False) for v in matrix["verdicts"].values())
    for style in ("ember", "tide"):
        per_style = json.loads((runs / "study" / style / "results.json").read_text())
        assert [row["label"] for row in per_style["models"]] == matrix["models"]
        assert per_style["models"][0]["clip_score"]["model"] == "openai/clip-vit-large-patch14"


# -- the parts -----------------------------------------------------------------------------------


def test_find_styles_and_its_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        find_styles(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="has no style folders"):
        find_styles(tmp_path)
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metadata.jsonl").write_text("")
    (tmp_path / "c" / "train").mkdir(parents=True)
    (tmp_path / "c" / "train" / "metadata.jsonl").write_text("")
    (tmp_path / "uncaptioned").mkdir()
    assert find_styles(tmp_path) == ["a", "b", "c"]
    assert find_styles(tmp_path, ["c", "a"]) == ["a", "c"]
    with pytest.raises(DatasetError, match="No style folder zz"):
        find_styles(tmp_path, ["zz"])


def captioned_style(folder: Path, count: int) -> Path:
    covers(folder, (90, 90, 90), count)
    lines = [
        json.dumps({"file_name": f"cover-{i:02d}.png", "text": f"grey cover {i}"})
        for i in range(count)
    ]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_the_split_is_stable_and_never_leaves_a_side_empty(tmp_path: Path) -> None:
    source = captioned_style(tmp_path / "grey", 12)
    style = split_style(source, tmp_path / "out", share=0.25, seed=3)

    def read(folder: Path) -> set[str]:
        lines = (folder / "metadata.jsonl").read_text().splitlines()
        return {json.loads(line)["file_name"] for line in lines}

    test, train = read(style.test), read(style.train)
    assert (
        test
        == {f"cover-{i:02d}.png" for i in range(12) if in_test_split(f"cover-{i:02d}.png", 0.25, 3)}
        or len(test) == 2
    )
    assert not test & train and len(test | train) == 12
    assert all((style.test / name).is_file() for name in test)
    again = split_style(source, tmp_path / "again", share=0.25, seed=3)
    assert read(again.test) == test
    tiny = split_style(captioned_style(tmp_path / "tiny", 4), tmp_path / "t", share=0.01, seed=0)
    assert len(read(tiny.test)) == 2 and len(read(tiny.train)) == 2
    with pytest.raises(DatasetError, match="needs at least 4"):
        split_style(captioned_style(tmp_path / "three", 3), tmp_path / "x", share=0.5, seed=0)


def test_the_loop_checks_every_style_before_training_and_refuses_its_own_options(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    captioned_style(root / "a", 4)
    captioned_style(root / "b", 4)
    never = lambda config: pytest.fail("nothing may train")  # noqa: E731
    with pytest.raises(ValueError, match="--out is set per style"):
        train_styles(StyleLoopConfig(root, tmp_path / "o", train={"out": "x"}), train=never)
    with pytest.raises(ValueError, match="resolution must be a multiple of 8"):
        train_styles(StyleLoopConfig(root, tmp_path / "o", train={"resolution": 30}), train=never)
    with pytest.raises(ValueError, match="--test-share must be between 0 and 1"):
        train_styles(StyleLoopConfig(root, tmp_path / "o", test_share=1.0), train=never)
    assert main(["styles", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert (
        main(
            [
                "style-study",
                "--runs",
                str(tmp_path / "o"),
                "--inception",
                str(tmp_path / "missing.pt"),
            ]
        )
        == 1
    )


def test_style_matrix_reads_each_column_and_says_who_wins() -> None:
    def result(kids: dict[str, float]) -> dict:
        return {
            "models": [
                {"label": k, "kid": {"value": v}, "clip_score": {"skipped": "no"}}
                for k, v in kids.items()
            ]
        }

    labels = ["base embedded", "a model", "b model"]
    matrix = style_matrix(
        {
            "a": result({"base embedded": 0.5, "a model": 0.1, "b model": 0.3}),
            "b": result({"base embedded": 0.2, "a model": 0.4, "b model": 0.3}),
        },
        labels,
    )
    assert matrix["verdicts"]["a"] == {
        "own_kid": 0.1,
        "best_model": "a model",
        "own_beats_base": True,
    }
    assert matrix["verdicts"]["b"] == {
        "own_kid": 0.3,
        "best_model": "base embedded",
        "own_beats_base": False,
    }
    assert matrix["metrics"]["clip_score"]["a model"] == {"a": None, "b": None}
    text = matrix_markdown(matrix)
    assert "| a model | **100.00** | 400.00 |" in text
    assert "- b: its own model does not beat the base model on KID" in text
