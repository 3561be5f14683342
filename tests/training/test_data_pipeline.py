"""Seed 003's data pipeline: ``python -m training caption`` and ``clip-filter`` with the support
models' stand-ins (modeltools/standins/) in a Hugging Face cache, loaded as the real ones are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.properties import examples
from training.__main__ import main
from training.caption import (
    CAPTIONS,
    CaptionConfig,
    caption_folder,
    load_captioner,
    merge_text,
    read_rows,
)
from training.clip_filter import FilterConfig, at_the_cut, filter_pairs, histogram, read_pairs
from training.data import DatasetError, load_examples

pytestmark = pytest.mark.slow
COLOURS = ["red", "navy", "gold", "white", "green", "purple", "orange", "black"]


def image_folder(root: Path, *, titled: dict[str, str] | None = None) -> Path:
    """Eight small covers, flat colours with a stripe; ``titled`` writes a metadata.jsonl with
    titles for some of them (the rest are listed nowhere)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        image = Image.new("RGB", (48, 40), colour)
        image.paste((i * 30, 255 - i * 30, 128), (0, 15, 48, 25))
        image.save(root / f"{i:02d}-{colour}.png")
    if titled:
        lines = [json.dumps({"file_name": n, "text": t}) for n, t in titled.items()]
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def hub(support_hub: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(support_hub))
    return support_hub


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


# -- titles and captions -----------------------------------------------------------------------


def test_merge_text_modes() -> None:
    assert merge_text("Gym Hype", "a red poster", "merge") == "Gym Hype, a red poster"
    assert merge_text("Gym Hype", "a red poster", "keep") == "Gym Hype"
    assert merge_text("Gym Hype", "a red poster", "replace") == "a red poster"
    assert merge_text(None, "a red poster", "keep") == "a red poster"
    assert merge_text("  ", "a cat", "merge") == "a cat"
    assert merge_text("a red poster of a cat", "red poster", "merge") == "a red poster of a cat"


@given(st.text(max_size=40), st.text(max_size=40), st.sampled_from(["merge", "keep", "replace"]))
def test_merge_text_keeps_what_its_mode_promises(title: str, caption: str, mode: str) -> None:
    text = merge_text(title, caption, mode)
    if mode in ("merge", "keep") and title.strip():
        assert text.startswith(title.strip())
    if mode == "replace" or not title.strip():
        assert text == caption.strip()
    if mode == "merge" and title.strip() and caption.strip():
        assert caption.strip() in text


def test_read_rows_lists_titled_rows_first_then_the_unlisted_images(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "covers", titled={"03-white.png": "Winter Mix"})
    (folder / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(folder / ".hidden" / "x.png")
    found = read_rows(folder)
    assert [r["file_name"] for r in found][:2] == ["03-white.png", "00-red.png"]
    assert len(found) == 8 and found[0]["title"] == "Winter Mix" and found[1]["title"] is None


def test_read_rows_errors_name_the_line(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "c")
    (folder / "metadata.jsonl").write_text('{"file_name": "00-red.png"}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2: not a JSON object"):
        read_rows(folder)
    (folder / "metadata.jsonl").write_text('{"file_name": "gone.png", "text": "x"}\n')
    with pytest.raises(DatasetError, match=r"line 1: the image .*gone\.png is missing"):
        read_rows(folder)
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    (folder / "metadata.jsonl").write_text('{"file_name": "../outside.png", "text": "x"}\n')
    for read in (read_rows, read_pairs):
        with pytest.raises(DatasetError, match="leads outside the folder"):
            read(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        read_rows(tmp_path / "empty")


# -- captioning with the BLIP stand-in --------------------------------------------------------


def test_caption_a_folder_without_captions_merging_the_titles_it_has(
    hub: Path, tmp_path: Path
) -> None:
    folder = image_folder(tmp_path / "covers", titled={"01-navy.png": "Late Night Drive"})
    result = caption_folder(CaptionConfig(folder, batch_size=3, device="cpu"))
    assert (result.images, result.captioned, result.reused) == (8, 8, 0)
    assert result.images_per_second and result.images_per_second > 0
    written = rows(folder)
    assert written[0]["file_name"] == "01-navy.png"
    first = written[0]
    assert (
        first["title"] == "Late Night Drive"
        and first["text"] == f"Late Night Drive, {first['caption']}"
    )
    assert all(
        r["caption"] and r["caption_model"] == "Salesforce/blip-image-captioning-base"
        for r in written
    )
    assert all(r["text"] == r["caption"] for r in written[1:])
    # different images, different captions (the stand-in's image reaches its decoder)
    assert len({r["caption"] for r in written}) > 1
    # the folder's own metadata was kept, and training reads the result
    assert (
        json.loads((folder / "metadata.before-caption.jsonl").read_text())["text"]
        == "Late Night Drive"
    )
    assert len(load_examples(folder)) == 8


def test_caption_resumes_after_a_stop_and_other_modes_reuse_the_captions(
    hub: Path, tmp_path: Path
) -> None:
    reference = image_folder(tmp_path / "reference")
    caption_folder(CaptionConfig(reference, batch_size=3, device="cpu"))

    folder = image_folder(tmp_path / "covers")
    real = load_captioner(device="cpu")
    calls = []

    def stops_after_one_batch(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(images)

    with pytest.raises(KeyboardInterrupt):
        caption_folder(
            CaptionConfig(folder, batch_size=3, device="cpu"),
            captioner=lambda: stops_after_one_batch,
        )
    assert not (folder / "metadata.jsonl").exists()
    assert len((folder / CAPTIONS).read_text().splitlines()) == 3
    with (folder / CAPTIONS).open("a") as torn:
        torn.write('{"file_name": "07-bla')  # a line cut by the stop
    resumed = caption_folder(CaptionConfig(folder, batch_size=3, device="cpu"))
    assert (resumed.captioned, resumed.reused) == (5, 3)
    assert rows(folder) == rows(reference)  # same as a run that never stopped

    (folder / "metadata.jsonl").write_text(
        json.dumps({"file_name": "00-red.png", "text": "Red"}) + "\n"
    )
    never = lambda: pytest.fail("every caption is in captions.jsonl")  # noqa: E731
    kept = caption_folder(CaptionConfig(folder, titles="keep", device="cpu"), captioner=never)
    assert kept.captioned == 0 and rows(folder)[0]["text"] == "Red"
    replaced = caption_folder(
        CaptionConfig(folder, titles="replace", device="cpu"), captioner=never
    )
    first = rows(folder)[0]
    assert replaced.captioned == 0 and first["text"] == first["caption"] and first["title"] == "Red"


def test_caption_cli_and_its_one_line_errors(
    hub: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    folder = image_folder(tmp_path / "covers")
    assert main(["caption", str(folder), "--batch-size", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Captioned 8 image(s) at" in out and "images/s" in out
    assert main(["caption", str(tmp_path / "nowhere")]) == 1
    assert "error: The image folder" in capsys.readouterr().err
    assert main(["caption", str(folder), "--batch-size", "0"]) == 1
    assert "--batch-size must be at least 1, got 0" in capsys.readouterr().err
    (folder / CAPTIONS).unlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["caption", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "error: The captioning model Salesforce/blip-image-captioning-base is not in the local"
    )
    assert "`python -m bot models pull blip`" in err and "Traceback" not in err


# -- the CLIP filter ---------------------------------------------------------------------------


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=60), st.floats(-1, 1), st.integers(1, 12))
def test_histogram_counts_every_score_and_marks_the_cut(scores, threshold, bins) -> None:
    found = histogram(scores, bins=bins, threshold=threshold)
    assert sum(b["count"] for b in found) == len(scores) and len(found) == bins
    assert sum(b["side"] == "cut" for b in found) <= 1
    for b in found:
        assert (b["side"] == "below") == (b["high"] <= threshold)


@given(st.lists(st.floats(-1, 1), max_size=40), st.floats(-1, 1), st.integers(0, 6))
def test_at_the_cut_takes_the_nearest_pairs_on_each_side(scores, threshold, k) -> None:
    below, above = at_the_cut(scores, threshold, k)
    assert all(scores[i] < threshold for i in below) and all(scores[i] >= threshold for i in above)
    assert len(below) == min(k, sum(s < threshold for s in scores))
    assert len(above) == min(k, sum(s >= threshold for s in scores))
    dropped = [s for s in scores if s < threshold]
    if below:
        assert scores[below[0]] == max(dropped)
    assert [scores[i] for i in below] == sorted((scores[i] for i in below), reverse=True)


def captioned(tmp_path: Path) -> Path:
    folder = image_folder(tmp_path / "covers")
    lines = [
        json.dumps({"file_name": f"{i:02d}-{c}.png", "text": f"a {c} square cover", "genre": "x"})
        for i, c in enumerate(COLOURS)
    ]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_clip_filter_keeps_pairs_at_or_over_the_threshold_and_reports_the_cut(
    hub: Path, tmp_path: Path
) -> None:
    data = captioned(tmp_path)
    probe = filter_pairs(FilterConfig(data, tmp_path / "all", threshold=-1.0, device="cpu"))
    scores = [
        json.loads(line)["cosine"]
        for line in (tmp_path / "all" / "clip_scores.jsonl").read_text().splitlines()
    ]
    assert probe.kept == 8 and len(set(scores)) == 8
    cut = float(np.median(scores))
    result = filter_pairs(
        FilterConfig(data, tmp_path / "kept", threshold=cut, examples=2, device="cpu")
    )
    expected = {
        f"{i:02d}-{c}.png" for i, (c, s) in enumerate(zip(COLOURS, scores, strict=True)) if s >= cut
    }
    kept_rows = rows(tmp_path / "kept")
    assert {r["file_name"] for r in kept_rows} == expected and result.kept == len(expected) == 4
    assert all(r["genre"] == "x" for r in kept_rows)  # other fields travel with the pair
    assert {p.name for p in (tmp_path / "kept").glob("*.png")} == expected
    assert len(load_examples(tmp_path / "kept")) == 4
    report = json.loads((tmp_path / "kept" / "clip_filter_report.json").read_text())
    assert report["model"] == "openai/clip-vit-large-patch14" and report["threshold"] == cut
    assert len(report["dropped_at_the_cut"]) == 2 and len(report["kept_at_the_cut"]) == 2
    assert (
        max(scores[i] for i in range(8) if scores[i] < cut)
        == report["dropped_at_the_cut"][0]["cosine"]
    )
    markdown = (tmp_path / "kept" / "clip_filter_report.md").read_text()
    assert "Kept **4 of 8** pairs" in markdown and "← threshold" in markdown
    assert result.images_per_second and result.images_per_second > 0


def test_clip_filter_refusals_are_one_sentence(hub: Path, tmp_path: Path, capsys) -> None:
    data = captioned(tmp_path)
    assert (
        main(
            [
                "clip-filter",
                str(data),
                "--out",
                str(tmp_path / "o"),
                "--threshold",
                "0.99",
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "error: No pair reaches the threshold 0.99" in err and "lower --threshold" in err
    assert (tmp_path / "o" / "clip_filter_report.md").is_file()  # the histogram is there to look at
    assert main(["clip-filter", str(data), "--out", str(data / "inside")]) == 1
    assert "must lie outside the data folder" in capsys.readouterr().err
    assert main(["clip-filter", str(data), "--out", str(tmp_path / "x"), "--threshold", "2"]) == 1
    assert "cosine similarity in [-1, 1], got 2.0" in capsys.readouterr().err
    # the empty kept set of the refused run above is no dataset either
    assert main(["clip-filter", str(tmp_path / "o"), "--out", str(tmp_path / "y")]) == 1
    assert "lists no images" in capsys.readouterr().err
    bare = image_folder(tmp_path / "bare")
    assert main(["clip-filter", str(bare), "--out", str(tmp_path / "z")]) == 1
    assert "has no metadata.jsonl; caption it first" in capsys.readouterr().err


def test_pipeline_speed_times_the_cached_models(hub: Path, tmp_path: Path, capsys) -> None:
    from training.pipeline_speed import main as speed

    out = tmp_path / "speed.json"
    assert speed(["--images", "4", "--batch-size", "2", "--prompts", "2", "--out", str(out)]) == 0
    measured = json.loads(out.read_text())["standins"]
    assert measured["captioning"]["n"] == 4 and measured["captioning"]["per_second"] > 0
    assert measured["clip_filter"]["batch_size"] == 2 and measured["expansion"]["n"] == 2
    assert "real_size" not in json.loads(out.read_text())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
metadata_lines = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.builds(json.dumps, json_values),
        st.builds(
            lambda name, text: json.dumps({"file_name": name, "text": text}),
            st.sampled_from(["00-red.png", "01-navy.png", "gone.png", "", "../00-red.png"]),
            json_values,
        ),
    ),
    max_size=6,
)


@settings(max_examples=examples(60), deadline=None)
@given(metadata_lines)
def test_any_metadata_file_reads_or_fails_with_a_dataset_error(lines: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "covers"
        folder.mkdir()
        for name in ("00-red.png", "01-navy.png"):
            Image.new("RGB", (4, 4)).save(folder / name)
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for read in (read_rows, read_pairs):
            try:
                found = read(folder)
            except DatasetError as error:
                assert str(error).startswith(str(folder))
            else:
                assert all(isinstance(r["file_name"], str) for r in found)


@given(st.text(alphabet=st.sampled_from(list("ab./\\~:")), max_size=12))
def test_a_file_name_judged_inside_resolves_inside(name: str) -> None:
    from training.data import is_relative_inside

    folder = Path("/data/covers")
    if is_relative_inside(name):
        assert (folder / name).resolve().is_relative_to(folder)
    assert not is_relative_inside("../x.png") and not is_relative_inside("/etc/x.png")


def test_a_pair_exactly_at_the_threshold_is_kept(tmp_path: Path) -> None:
    """Seed 003 removed pairs 'lower than 0.2': 0.2 itself stays."""
    data = captioned(tmp_path)
    fixed = [0.2, 0.19999, 0.35, -0.1, 0.2000001, 0.0, 0.5, 0.1]

    class Fixed:
        name = "fixed cosines"

        def cosines(self, images, prompts):
            start = Fixed.seen
            Fixed.seen += len(images)
            return np.array(fixed[start : start + len(images)])

    Fixed.seen = 0
    result = filter_pairs(FilterConfig(data, tmp_path / "kept", batch_size=3), scorer=Fixed)
    kept = [r["file_name"] for r in rows(tmp_path / "kept")]
    assert kept == [f"{i:02d}-{COLOURS[i]}.png" for i in (0, 2, 4, 6)] and result.kept == 4
    report = json.loads((tmp_path / "kept" / "clip_filter_report.json").read_text())
    assert (
        report["model"] == "fixed cosines" and report["dropped_at_the_cut"][0]["cosine"] == 0.19999
    )
    assert report["kept_at_the_cut"][0]["cosine"] == 0.2
