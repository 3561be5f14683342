"""`models pull` against a broken or hostile hub (issue 31, point 3): the real huggingface_hub
against the local fake hub (tests/fakes/hub.py), taught each misbehaviour. Every case ends as one
bounded ``error:`` line in bounded time, with nothing written outside the cache and no partial
file left in it.

The served repository is a tiny diffusers-shaped folder under SD 1.5's id (a pull does not load
what it fetches), so each case costs one CLI start.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fakes.hub import FakeHub, run_in_thread
from tests.models.test_hub import SD15, cli

pytestmark = pytest.mark.slow
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
SHA = "a" * 40
INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "safety_checker": [None, None],
    "requires_safety_checker": True,
}


def tiny_repo(folder: Path, index: bytes | None = None) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_bytes(index or json.dumps(INDEX).encode())
    (folder / "unet" / "config.json").write_text('{"sample_size": 8}')
    (folder / WEIGHTS).write_bytes(bytes(range(256)) * 16)  # 4 KB
    (folder / "README.md").write_text("not needed")
    return folder


@pytest.fixture
def hub(tmp_path):
    fake = FakeHub()
    fake.add(SD15, tiny_repo(tmp_path / "served"), SHA)
    url, stop = run_in_thread(fake)
    fake.url = url  # type: ignore[attr-defined]
    yield fake
    stop()


def pull(hub, home: Path, *flags: str):
    started = time.monotonic()
    done = cli(hub, home, "pull", "sd15", "--device", "cpu", "--no-tiny-decoder", *flags)
    return done, time.monotonic() - started


def one_error_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("error: ") and len(lines[0]) <= 600, lines[0][:700]
    return lines[0]


def left_behind(home: Path) -> list[Path]:
    """Partial downloads in the cache (huggingface_hub's per-process ``*.incomplete`` files)."""
    return [p for p in home.rglob("*") if p.name.endswith(".incomplete")]


@pytest.mark.parametrize(
    "index, says",
    [
        (b"<html>not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**INDEX, "unet": []}).encode(), "'unet'"),
        (json.dumps({**INDEX, "unet": ["diffusers", 7]}).encode(), "'unet'"),
    ],
    ids=["not-json", "a-list", "component-empty", "component-garbage"],
)
def test_a_broken_model_index_is_one_error_line(tmp_path, index, says):
    fake = FakeHub()
    fake.add(SD15, tiny_repo(tmp_path / "served", index), SHA)
    url, stop = run_in_thread(fake)
    fake.url = url  # type: ignore[attr-defined]
    try:
        done, _ = pull(fake, tmp_path / "home")
    finally:
        stop()
    line = one_error_line(done)
    assert "model_index.json" in line and says in line, line
    assert WEIGHTS not in fake.fetched(SD15)


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b"[]",
        b'{"sha": 5, "siblings": "x"}',
        b'{"sha": "' + SHA.encode() + b'", "siblings": [{"rfilename": 7}]}',
        b'{"siblings": [{"rfilename": "model_index.json"}]}',
    ],
    ids=["not-json", "a-list", "wrong-types", "name-not-a-string", "no-sha"],
)
def test_garbage_model_info_is_one_error_line(hub, tmp_path, body):
    hub.info_body[SD15] = body
    line = one_error_line(pull(hub, tmp_path)[0])
    assert "model info" in line, line
    assert not hub.fetched(SD15)


@pytest.mark.parametrize(
    "name",
    [
        "../../escaped.json",
        "/tmp/escaped.json",
        "unet/../../escaped.json",
        "unet\\..\\x.json",
        "x" * 100_000,
        "unet/\x1b]0;title\x07.json",
    ],
    ids=["dotdot", "absolute", "dotdot-inside", "backslash", "100-KB", "control-chars"],
)
def test_unsafe_file_names_are_refused_before_any_download(hub, tmp_path, name):
    hub.extra_siblings[SD15] = [name]
    line = one_error_line(pull(hub, tmp_path / "home")[0])
    assert "unsafe file name" in line and "\x1b" not in line, line
    assert not hub.fetched(SD15)  # no file requested, model_index.json included
    assert not list(tmp_path.glob("**/escaped.json"))


def test_traversal_in_the_sha_is_refused(tmp_path):
    fake = FakeHub()
    fake.add(SD15, tiny_repo(tmp_path / "served"), "../../../../escaped")
    url, stop = run_in_thread(fake)
    fake.url = url  # type: ignore[attr-defined]
    try:
        done, _ = pull(fake, tmp_path / "home")
    finally:
        stop()
    line = one_error_line(done)
    assert "commit" in line, line
    assert not fake.fetched(SD15)
    assert not list(tmp_path.rglob("*escaped*"))


def test_a_file_streamed_far_past_its_listed_size_is_cut_off_and_removed(hub, tmp_path):
    # The hub lists (and HEAD says) 4 KB, then streams 16 MB: the pull stops at the listed size
    # and huggingface_hub removes the partial file; before the cap all 16 MB were written first.
    hub.oversize[WEIGHTS] = 16 << 20
    done, _ = pull(hub, tmp_path)
    line = one_error_line(done)
    assert "4096 bytes" in line and WEIGHTS in line, line
    assert not left_behind(tmp_path)
    assert hub.sent[WEIGHTS] < 8 << 20, hub.sent  # the client hung up early


def test_a_drip_ends_at_the_stall_timeout_or_the_deadline(hub, tmp_path):
    hub.drip[WEIGHTS] = 2.0  # one byte every 2 s: 4 KB would take over two hours
    done, took = pull(hub, tmp_path / "stall", "--stall-timeout", "1")
    assert "stalled" in one_error_line(done) and took < 30
    assert not left_behind(tmp_path)
    done, took = pull(hub, tmp_path / "deadline", "--stall-timeout", "60", "--deadline", "3")
    assert "3 s" in one_error_line(done) and took < 30
    assert not left_behind(tmp_path)


def test_a_100_kb_model_name_is_one_short_line_and_no_request(hub, tmp_path):
    done = cli(hub, tmp_path, "pull", "x" * 100_000)
    one_error_line(done)
    assert not hub.requests
