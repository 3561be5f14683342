"""``python -m bot cover --variations-of`` with files nobody should trust (issue 31): whatever a
PNG's parameters say and whatever the path is, the answer is one ``error:`` line in bounded
time, or covers made within the flags' limits – never a folder loaded because a file named it,
a traceback, a hang or a screen rewritten by escape sequences."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.e2e.test_cli import EXAMPLES, _run
from tests.hostile import declared_png, ztxt_bomb

SETTINGS = "Steps: 2, Sampler: x, CFG scale: 5, Seed: 1, Size: 64x64, Model: embedded"
GOOD = "violet city playlist cover image\n" + SETTINGS


def _candidate(folder: Path, parameters: str, name: str = "candidate-1.png") -> Path:
    info = PngInfo()
    info.add_itxt("parameters", parameters)
    path = folder / name
    Image.new("RGB", (64, 64), (90, 40, 160)).save(path, pnginfo=info)
    return path


def _one_error(code: int, out: str, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _variations(path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    argv = ["cover", "--variations-of", str(path), "--count", "1", "--seed", "3", *extra]
    return _run(argv, capsys)


@pytest.mark.parametrize("model", ["/etc", "~", "/no/such/folder", "EMBEDDED_FOLDER"])
def test_a_model_folder_named_by_the_file_is_never_loaded(
    cli_env, capsys, embedded_model_dir, model
):
    """Whether the folder exists, is a home directory or is a working pipeline, the sentence is
    the same: the file may not choose what gets loaded, and may not probe the disk."""
    model = str(embedded_model_dir) if model == "EMBEDDED_FOLDER" else model
    path = _candidate(cli_env, GOOD.replace("Model: embedded", f"Model: {model}"))
    line = _one_error(*_variations(path, capsys))
    assert line == (
        "error: candidate-1.png was made with a model that is not a preset (a local folder or "
        "another tool's); name the model with --model."
    )


def test_a_folder_the_person_names_is_used(cli_env, capsys, embedded_model_dir):
    path = _candidate(cli_env, GOOD.replace("Model: embedded", "Model: /etc"))
    code, _, err = _variations(path, capsys, "--model", str(embedded_model_dir))
    assert code == 0, err


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (("Steps: 2", "Steps: 1000000"), "Steps must be between 1 and 200, got 1e+06"),
        (("Steps: 2", "Steps: 0"), "Steps must be between 1 and 200, got 0"),
        (("Steps: 2", "Steps: -5"), "Steps must be between 1 and 200, got -5"),
        (("CFG scale: 5", "CFG scale: nan"), "CFG scale must be between 0 and 30, got nan"),
        (("CFG scale: 5", "CFG scale: 1e308"), "CFG scale must be between 0 and 30"),
        (("Size: 64x64", "Size: 0x0"), "Size must be between 64 and 1024, got 0"),
        (("Size: 64x64", "Size: 2048x2048"), "Size must be between 64 and 1024, got 2048"),
        (("Size: 64x64", "Size: 100000x100000"), "Size must be between 64 and 1024"),
        (("Size: 64x64", "Size: 100x100"), "Size must be a multiple of 8, got 100"),
        (("Seed: 1", "Seed: 1, Denoising strength: 7"), "Denoising strength must be between"),
    ],
)
def test_the_files_settings_meet_the_flags_limits(cli_env, capsys, change, names):
    path = _candidate(cli_env, GOOD.replace(*change))
    line = _one_error(*_variations(path, capsys))
    assert line == f"error: The image's {names}." or names in line, line


def test_an_overlong_prompt_in_the_file_is_refused(cli_env, capsys):
    path = _candidate(cli_env, "a" * 5000 + "\n" + SETTINGS)
    assert "prompt is 5000 characters long" in _one_error(*_variations(path, capsys))


def test_megabytes_of_garbage_parameters_make_a_short_error_line(cli_env, capsys):
    path = _candidate(cli_env, "a cat\n" + "Steps: 1, " + "x" * 10_000_000)
    line = _one_error(*_variations(path, capsys))
    assert len(line) < 300 and "characters long" in line


def test_the_prompt_is_printed_without_terminal_control_sequences(cli_env, capsys):
    evil = "neon \x1b]0;owned\x07city \x1b[2J\u202eesrever"
    path = _candidate(cli_env, f"{evil}\n{SETTINGS}")
    code, _, err = _variations(path, capsys)
    assert code == 0, err
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "neon ?]0;owned?city ?[2J?esrever" in err


def test_a_missing_file_is_named_in_the_clis_words(cli_env, capsys):
    line = _one_error(*_variations(cli_env / "gone.png", capsys))
    assert line == "error: There is no file gone.png."


# -- point 2: the file is checked before it is read -------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("fifo", "error: fifo.png is not a regular file."),
        ("folder", "error: folder.png is not a regular file."),
        ("dev-zero", "error: zero is not a regular file."),
        ("huge header", "error: huge.png declares more pixels than this reads."),
        ("ztxt bomb", "error: ztxt.png is not a readable image"),
        ("not an image", "error: text.png is not a readable image"),
    ],
)
def test_a_file_that_is_not_a_sane_image_is_one_line_at_once(cli_env, capsys, kind, expected):
    if kind == "fifo":
        path = cli_env / "fifo.png"
        os.mkfifo(path)
    elif kind == "folder":
        path = cli_env / "folder.png"
        path.mkdir()
    elif kind == "dev-zero":
        path = Path("/dev/zero")
    elif kind == "huge header":
        path = cli_env / "huge.png"
        path.write_bytes(declared_png(30_000, 30_000))
    elif kind == "ztxt bomb":
        path = cli_env / "ztxt.png"
        path.write_bytes(ztxt_bomb())
    else:
        path = cli_env / "text.png"
        path.write_text("not an image", encoding="utf-8")
    answer: list = []
    # A FIFO with no writer blocked the reader for ever: run it where the test can give up.
    worker = threading.Thread(target=lambda: answer.append(_variations(path, capsys)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), f"--variations-of {kind} did not return"
    line = _one_error(*answer[0])
    assert line.startswith(expected), line


# -- point 8: the CLI's wording ---------------------------------------------------------------


def test_a_mistyped_snapshot_path_lists_the_examples(cli_env, capsys):
    line = _one_error(*_run(["cover", "examples/playlists/gym-hyp.json"], capsys))
    assert "No playlist snapshot at examples/playlists/gym-hyp.json." in line
    assert "gym-hype.json" in line and "late-night-drive.json" in line


def test_cuda_without_a_gpu_says_what_to_use_instead(cli_env, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    line = _one_error(*_run(["cover", str(EXAMPLES[0]), "--device", "cuda"], capsys))
    assert "no CUDA GPU here; use --device cpu, or auto" in line


def test_an_uncached_hub_model_is_one_line_not_a_warning_and_the_line(cli_env):
    # A subprocess: the log line goes to stderr only where the CLI's own logging setup runs
    # (under pytest, records go to its capture instead).
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])  # this checkout's bot, not an installed one
    env = {**os.environ, "HF_HOME": str(cli_env / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": root}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot", "cover", str(EXAMPLES[0]), "--model", "sd15"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said, _, err = done.stderr.partition("\n")  # the first line says what is being made
    assert said.startswith("Playlist: "), done.stderr
    line = _one_error(done.returncode, "", err)
    assert "not in the local Hugging Face cache" in line and "models pull sd15" in line
