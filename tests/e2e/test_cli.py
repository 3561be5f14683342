"""``python -m bot cover`` end to end: real snapshot files, the real embedded diffusers pipeline,
the real queue, post-processing and a real SQLite file. Only the model build is shared (fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.__main__ import main
from bot.app.prompts import clean_title
from bot.app.storage import Storage
from models.postprocess import SPOTIFY_JPEG_LIMIT

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "playlists").glob("*.json"))


def test_examples_exist():
    assert len(EXAMPLES) >= 4, "the README promises a handful of example playlists"


def test_cover_command_as_a_new_user(cli_env):
    """The README's command in a subprocess: files, sizes, manifest and database rows."""
    example = EXAMPLES[0]
    done = subprocess.run(
        [sys.executable, "-m", "bot", "cover", str(example), "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        cwd=cli_env,
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.split()]
    pngs = [p for p in paths if p.name.startswith("candidate-") and p.suffix == ".png"]
    jpegs = [p for p in paths if p.suffix == ".jpg"]
    sheets = [p for p in paths if p.name == "sheet.png"]
    assert len(pngs) == 4 and len(jpegs) == 4 and len(sheets) == 1

    for png in pngs:
        with Image.open(png) as image:
            assert image.size == (512, 512) and image.mode == "RGB"
    for jpeg in jpegs:
        assert 0 < jpeg.stat().st_size < SPOTIFY_JPEG_LIMIT
        with Image.open(jpeg) as image:
            assert image.format == "JPEG" and image.size == (512, 512)
    with Image.open(sheets[0]) as sheet:
        assert sheet.width > 2 * 512 and sheet.height > 2 * 512

    manifest = json.loads((pngs[0].parent / "cover.json").read_text())
    assert [c["seed"] for c in manifest["candidates"]] == [7, 8, 9, 10]
    title = clean_title(json.loads(example.read_text())["name"])
    assert all(c["prompt"] == f"{title} playlist cover image" for c in manifest["candidates"])

    storage = Storage(cli_env / "data" / "covers.db")
    try:
        request = storage.request(manifest["request_id"])
        assert request.status == "done" and request.source == "cli"
        assert len(storage.candidates(manifest["request_id"])) == 4
    finally:
        storage.close()


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_same_seed_same_covers_and_options(cli_env, capsys):
    example = str(EXAMPLES[1])
    args = ["cover", example, "--seed", "123", "--count", "2", "--prompt-style", "mix"]
    code, out_a, err = _run([*args, "--out", "a"], capsys)
    assert code == 0, err
    code, out_b, err = _run([*args, "--out", "b"], capsys)
    assert code == 0, err
    files_a = [Path(p) for p in out_a.split() if p.endswith(".png")]
    files_b = [Path(p) for p in out_b.split() if p.endswith(".png")]
    assert len(files_a) == len(files_b) == 3  # two candidates and the sheet
    for a, b in zip(files_a, files_b, strict=True):
        assert np.array_equal(_pixels(a), _pixels(b))
    # Two candidates with different seeds must not be the same picture.
    assert not np.array_equal(_pixels(files_a[0]), _pixels(files_a[1]))
    manifest = json.loads((files_a[0].parent / "cover.json").read_text())
    assert len({c["style"] for c in manifest["candidates"]}) == 2


def test_a_prompt_of_ones_own(cli_env, capsys):
    """``--prompt``: every candidate painted with the given words, cleaned as every prompt is,
    kept in the manifest, the database and each PNG's parameters."""
    args = ["cover", str(EXAMPLES[0]), "--seed", "3", "--count", "2", "--out", "w"]
    code, out, err = _run([*args, "--prompt", "neon 🌃 city\tat night"], capsys)
    assert code == 0, err
    pngs = [Path(p) for p in out.split() if Path(p).name.startswith("candidate-")]
    manifest = json.loads((pngs[0].parent / "cover.json").read_text())
    assert [(c["prompt"], c["style"]) for c in manifest["candidates"]] == [
        ("neon city at night", "written")
    ] * 2
    with Image.open(pngs[0]) as image:
        assert image.text["parameters"].startswith("neon city at night\nNegative prompt: blurry")
    storage = Storage(cli_env / "data" / "covers.db")
    try:
        stored = storage.request(manifest["request_id"])
        assert [p.text for p in stored.prompts] == ["neon city at night"] * 2
    finally:
        storage.close()


def test_title_overlay_option(cli_env, capsys):
    example = str(EXAMPLES[0])
    code, plain, err = _run(["cover", example, "--seed", "5", "--count", "1", "--out", "p"], capsys)
    assert code == 0, err
    code, titled, err = _run(
        ["cover", example, "--seed", "5", "--count", "1", "--out", "t", "--title"], capsys
    )
    assert code == 0, err
    first = lambda out: Path(out.split()[0])  # noqa: E731
    difference = np.abs(_pixels(first(plain)).astype(int) - _pixels(first(titled)).astype(int))
    changed = (difference.max(axis=2) > 40).mean()
    assert 0.005 < changed < 0.5, "the title should cover part of the image, not none or all of it"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["cover", "https://open.spotify.com/album/4aawyAB9vmqN3uQ7FjRGTy"], "album"),
        (["cover", "missing-playlist.json"], "No playlist snapshot"),
        (
            ["cover", "https://open.spotify.com/playlist/37i9dQZF1DXcBWIGoYBM5M"],
            "SPOTIFY_CLIENT_ID",
        ),
        (["cover", "EXAMPLE", "--count", "5"], "count"),
        (["cover", "EXAMPLE", "--model", "no-such-model"], "embedded"),
        (["cover", "EXAMPLE", "--lora", "nowhere.safetensors"], "nowhere.safetensors"),
        (["cover", "EXAMPLE", "--steps", "0"], "steps"),
        (["cover", "EXAMPLE", "--prompt", "🎵 🎵"], "The prompt has no words left"),
        (["cover", "EXAMPLE", "--prompt", "x" * 4001], "at most 4,000 characters"),
    ],
)
def test_bad_input_is_one_clear_line(cli_env, capsys, argv, expected):
    argv = [str(EXAMPLES[0]) if a == "EXAMPLE" else a for a in argv]
    code, out, err = _run(argv, capsys)
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]


def test_broken_snapshot_file(cli_env, capsys):
    broken = cli_env / "broken.json"
    broken.write_text('{"id": "x", "name": ')
    code, _, err = _run(["cover", str(broken)], capsys)
    assert code == 1 and "not valid JSON" in err


def test_models_command_lists_presets(capsys):
    code, out, _ = _run(["models"], capsys)
    assert code == 0
    for name in ("embedded", "small-sd", "sd15", "sd-turbo", "deepfloyd-if"):
        assert name in out


def test_cover_from_a_spotify_link(cli_env, capsys, fake_spotify, monkeypatch):
    """A link goes through the link parser, spotipy and the fake Spotify server; the playlist is
    metadata-only (items refused, as for most playlists since 2026) and still gets its prompt."""
    playlist = fake_spotify.add_snapshot(
        ROOT / "examples" / "playlists" / "rainy-day-lofi-study.json"
    )
    playlist_id = playlist.meta["id"]
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", fake_spotify.client_id)
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", fake_spotify.client_secret)
    monkeypatch.setenv("SPOTIFY_API_BASE", fake_spotify.api_base)
    monkeypatch.setenv("SPOTIFY_TOKEN_URL", fake_spotify.token_url)

    link = f"<https://open.spotify.com/intl-de/playlist/{playlist_id}?si=abc>"
    code, out, err = _run(["cover", link, "--seed", "1", "--count", "1"], capsys)
    assert code == 0, err
    assert "metadata only" in err
    assert fake_spotify.client_secret not in err + out
    manifest = json.loads((Path(out.split()[0]).parent / "cover.json").read_text())
    assert manifest["playlist"]["id"] == playlist_id
    assert (
        manifest["candidates"][0]["prompt"]
        == f"{clean_title(playlist.meta['name'])} playlist cover image"
    )

    storage = Storage(cli_env / "data" / "covers.db")
    try:
        assert storage.latest_snapshot(playlist_id)["name"] == playlist.meta["name"]
    finally:
        storage.close()

    fake_spotify.script(f"/v1/playlists/{playlist_id}", 404, forever=True)
    code, _, err = _run(["cover", playlist_id], capsys)
    assert code == 1 and "missing, deleted or private" in err


def test_cover_with_a_lora_file(cli_env, capsys, embedded_model_dir):
    """--lora goes through the registry, the queue (as a batch key) and into the records."""
    from tests.models.test_pipeline import make_lora

    lora = make_lora(embedded_model_dir, cli_env / "lora")
    example = str(EXAMPLES[0])
    code, base, err = _run(["cover", example, "--seed", "9", "--count", "1", "--out", "b"], capsys)
    assert code == 0, err
    code, tuned, err = _run(
        ["cover", example, "--seed", "9", "--count", "1", "--out", "l", "--lora", str(lora)], capsys
    )
    assert code == 0, err
    first = Path(tuned.split()[0])
    assert not np.array_equal(_pixels(Path(base.split()[0])), _pixels(first))
    manifest = json.loads((first.parent / "cover.json").read_text())
    assert manifest["lora"] == str(lora.resolve())
    storage = Storage(cli_env / "data" / "covers.db")
    try:
        assert storage.request(manifest["request_id"]).params.lora == str(lora.resolve())
    finally:
        storage.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"owner": "someone"}, "'owner' must be an object, not a string"),
        ({"images": 5}, "'images' must be a list, not a number"),
        ({"items": {"items": ["a", "b"]}}, "'items.items.0' must be an object"),
        ({"name": ["x"]}, "'name' must be a string, not a list"),
        ({"artists": [{"id": "a", "genres": "rock"}]}, "'artists.0.genres' must be a list"),
    ],
)
def test_a_snapshot_with_a_wrong_type_is_one_line_naming_the_field(cli_env, capsys, change, field):
    snapshot = json.loads(EXAMPLES[0].read_text(encoding="utf-8")) | change
    path = cli_env / "wrong.json"
    path.write_text(json.dumps(snapshot), encoding="utf-8")
    code, out, err = _run(["cover", str(path)], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], err


def test_deeply_nested_snapshot_json_is_one_line(cli_env, capsys):
    path = cli_env / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    code, _, err = _run(["cover", str(path)], capsys)
    assert code == 1 and err.strip().splitlines() == [
        f"error: {path} nests its JSON too deeply to be a playlist."
    ]


@pytest.mark.parametrize("where", ["below a file", "in /proc"])
def test_an_unwritable_out_folder_is_one_line_before_any_work(cli_env, capsys, where):
    """A folder below a regular file (which even root cannot write into) or on /proc: found
    before the model loads and the covers are made, not after (issue 31): one error line, no
    traceback, and no request recorded."""
    blocker = cli_env / "not-a-folder"
    blocker.write_text("a file", encoding="utf-8")
    out = blocker / "x" if where == "below a file" else Path("/proc/covers")
    argv = ["cover", str(EXAMPLES[0]), "--count", "1", "--seed", "1", "--out", str(out)]
    code, stdout, err = _run(argv, capsys)
    assert code == 1 and stdout == "" and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"error: The output folder {out} can't be written "
        f"({'Not a directory' if where == 'below a file' else 'No such file or directory'})."
    ], err
    assert not (cli_env / "data" / "covers.db").exists() or not Storage(
        cli_env / "data" / "covers.db"
    )._rows("SELECT id FROM requests")


def test_a_garbage_lora_file_is_one_line_before_any_work(cli_env, capsys):
    lora = cli_env / "garbage.safetensors"
    lora.write_bytes(bytes(range(256)) * 20)
    argv = ["cover", str(EXAMPLES[0]), "--count", "1", "--lora", str(lora)]
    code, out, err = _run(argv, capsys)
    assert code == 1 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: The LoRA file {str(lora)!r} is not a readable safetensors file"
    ), err


@pytest.mark.parametrize("problem", ["corrupt", "below a file"])
def test_an_unusable_database_is_one_line(cli_env, capsys, monkeypatch, problem):
    if problem == "corrupt":
        db = cli_env / "data" / "covers.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        db.write_bytes(b"this is not an SQLite file" * 100)
    else:
        (cli_env / "plain-file").write_text("x", encoding="utf-8")
        db = cli_env / "plain-file" / "covers.db"
    monkeypatch.setenv("COVER_DB_PATH", str(db))
    code, out, err = _run(["cover", str(EXAMPLES[0]), "--count", "1"], capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and out == "" and "Traceback" not in err
    assert len(errors) == 1 and errors[0].startswith(f"error: The database {db} can't be used")


def test_a_locked_database_is_one_line_and_keeps_nothing_half_written(cli_env, capsys, monkeypatch):
    """Another program (a backup, an sqlite3 shell in a transaction) holds the write lock for
    longer than the busy timeout: the request fails with one sentence, and once the lock is
    released the database holds nothing of it."""
    import sqlite3

    db = cli_env / "data" / "covers.db"
    Storage(db).close()
    monkeypatch.setenv("COVER_DB_BUSY_TIMEOUT_S", "0.3")
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, out, err = _run(["cover", str(EXAMPLES[0]), "--count", "1"], capsys)
    finally:
        holder.rollback()
        holder.close()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and out == "" and "Traceback" not in err
    assert errors == [
        "error: The bot's database can't be used right now: another program has held its "
        "lock for over 0.3 s; try again when it is done."
    ]
    with Storage(db) as storage:
        assert storage._rows("SELECT id FROM requests") == []


@pytest.mark.parametrize(
    "damage", ["unet config is not JSON", "model_index names a missing part", "no weights"]
)
def test_a_local_model_folder_with_broken_configs_is_one_line(cli_env, embedded_model_dir, damage):
    import shutil

    folder = cli_env / "my-model"
    shutil.copytree(embedded_model_dir, folder)
    if damage == "unet config is not JSON":
        (folder / "unet" / "config.json").write_text("{ not json", encoding="utf-8")
    elif damage == "model_index names a missing part":
        shutil.rmtree(folder / "vae")
    else:
        for weights in folder.glob("*/*.safetensors"):
            weights.unlink()
    # A process of its own: diffusers' log handler keeps the stderr it first saw, which in a
    # long test session is an earlier test's closed capture.
    done = subprocess.run(
        [sys.executable, "-m", "bot", "cover", str(EXAMPLES[0]), "--count", "1", "--model", folder],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        cwd=cli_env,
    )
    code, out, err = done.returncode, done.stdout, done.stderr
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert len(errors) == 1, err
    expected = {
        "unet config is not JSON": "unet/config.json in the folder",
        "model_index names a missing part": "has no vae/config.json",
        "no weights": "The model folder 'my-model' is not a complete diffusers pipeline",
    }[damage]
    assert expected in errors[0] and "my-model" in errors[0], errors[0]
    if damage == "no weights":  # found while loading: by name only (Discord may show it)
        assert str(cli_env) not in errors[0]


def test_a_reader_that_goes_away_is_not_an_incident(tmp_path):
    """`python -m bot models | head -1`: the pipe closes while we still print. That is the
    reader's choice, so no traceback and no incident id, only the shell's SIGPIPE status."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    listing = subprocess.Popen(
        [sys.executable, "-m", "bot", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    listing.stdout.close()  # before its first line: the interpreter takes longer to start
    stderr = listing.stderr.read().decode()
    assert listing.wait(timeout=120) == 141, stderr
    assert "Traceback" not in stderr and "incident" not in stderr, stderr
