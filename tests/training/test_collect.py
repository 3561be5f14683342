"""``python -m training collect`` against the local fake Spotify: filters, de-duplication, resume,
rate limits, the split, and the refusal without the terms acknowledgement."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fakes.spotify import (
    CLIENT_ID,
    CLIENT_SECRET,
    FakeSpotify,
    Reply,
    fake_id,
    make_playlist,
)
from training.__main__ import main
from training.collect import (
    ACK_FLAG,
    SPLITS,
    CollectConfig,
    CollectError,
    Collector,
    dhash,
    iter_records,
    nearest_distance,
    query_plan,
    split_of,
)


def jpeg(seed: int, quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    blocks = (rng.random((6, 6, 3)) * 255).astype("uint8")
    image = Image.fromarray(blocks).resize((96, 96), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def add(server: FakeSpotify, name: str, image: bytes | None, **kwargs) -> dict:
    """A playlist whose single cover is served by the fake server."""
    playlist = make_playlist(name, **kwargs)
    playlist["images"] = []  # never make_playlist's real i.scdn.co URL: no network in tests
    if image is not None:
        url = server.add_image(playlist["id"], image)
        playlist["images"] = [{"url": url, "height": None, "width": None}]
    server.add_playlist(playlist)
    return playlist


@pytest.fixture
def store(fake_spotify: FakeSpotify) -> dict[str, list[str]]:
    """12 good covers under "rock"/"jazz" plus one of each thing the collector must skip."""
    good = [add(fake_spotify, f"rock mix {i}", jpeg(i))["id"] for i in range(7)]
    good += [add(fake_spotify, f"late jazz {i}", jpeg(100 + i))["id"] for i in range(5)]
    mosaic = make_playlist("rock mosaic")
    mosaic["images"] = [
        {"url": f"https://mosaic.scdn.co/{size}/abc", "height": size, "width": size}
        for size in (640, 300, 60)
    ]
    fake_spotify.add_playlist(mosaic)
    template = make_playlist("rock template")
    template["images"] = [
        {
            "url": fake_spotify.add_image("seed-mix-image-rock", jpeg(200)),
            "height": None,
            "width": None,
        }
    ]
    fake_spotify.add_playlist(template)
    spotify_owned = add(fake_spotify, "rock classics", jpeg(201), owner="spotify")
    same_image = add(fake_spotify, "jazz again", jpeg(100))  # the bytes of "late jazz 0"
    recoded = add(fake_spotify, "jazz recoded", jpeg(101, quality=40))  # ~ "late jazz 1"
    add(fake_spotify, "rock no cover", None)
    return {
        "good": good,
        "skipped": [mosaic, template, spotify_owned, same_image, recoded],
    }


def collector(server: FakeSpotify, out: Path, sleeps: list[float] | None = None, **options):
    values = {
        "queries": 2,
        "keyword_share": 1.0,
        "keywords": ("rock", "jazz"),
        "pages_per_query": 5,
    }
    config = CollectConfig(out=out, **{**values, **options})
    return Collector(
        config,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        api_base=server.api_base,
        token_url=server.token_url,
        sleep=(sleeps.append if sleeps is not None else _no_sleep),
    )


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep of {seconds} s")


def kept_ids(out: Path) -> list[str]:
    return sorted(r["playlist_id"] for s in SPLITS for r in iter_records(out, s))


def test_filters_dedup_prompts_and_split(fake_spotify, store, tmp_path):
    fake_spotify.search_results["jazz"] = [
        None,
        *(fake_spotify.playlists[i].meta for i in store["good"][7:]),
    ]
    fake_spotify.search_results["jazz"] += store["skipped"][3:]  # same image as good ones
    stats = collector(fake_spotify, tmp_path / "ds").run()

    assert stats.finished and kept_ids(tmp_path / "ds") == sorted(store["good"])
    assert stats.skipped == {
        "mosaic": 1,
        "template": 1,
        "spotify_owned": 1,
        "no_image": 1,
        "empty": 1,
        "duplicate_image": 2,
    }
    for split in SPLITS:
        for row in iter_records(tmp_path / "ds", split):
            assert split_of(row["playlist_id"]) == split
            assert row["text"] == f"{row['title']} playlist cover image"
            assert (tmp_path / "ds" / split / row["file_name"]).read_bytes()[:2] == b"\xff\xd8"
    searches = fake_spotify.requests_to("/v1/search")
    assert all(int(r.query["limit"]) <= 10 for r in searches)
    assert {r.query["q"] for r in searches} == {"rock", "jazz"}
    assert any(r.query["offset"] == "10" for r in searches), "rock has two pages"

    # The folder is a training dataset as it is.
    from training.data import load_examples

    assert len(load_examples(tmp_path / "ds")) == len(list(iter_records(tmp_path / "ds", "train")))


def test_interrupted_collection_resumes_to_the_same_result(fake_spotify, store, tmp_path):
    collector(fake_spotify, tmp_path / "whole").run()
    first = collector(fake_spotify, tmp_path / "parts", max_playlists=3).run()
    assert not first.finished and first.kept == 3
    # A crash while appending leaves half a line behind; the next run must cope.
    split = next(s for s in SPLITS if (tmp_path / "parts" / s / "metadata.jsonl").is_file())
    with (tmp_path / "parts" / split / "metadata.jsonl").open("a") as metadata:
        metadata.write('{"file_name": "cut-sh')
    pages_before = len(fake_spotify.requests_to("/v1/search"))
    second = collector(fake_spotify, tmp_path / "parts").run()
    assert second.finished
    assert kept_ids(tmp_path / "parts") == kept_ids(tmp_path / "whole")
    assert second.pages < pages_before, "the resumed run must not start the plan again"
    with pytest.raises(CollectError, match="--seed 0"):
        collector(fake_spotify, tmp_path / "parts", seed=1).run()


def test_rate_limits_are_waited_out_or_stop_resumably(fake_spotify, store, tmp_path):
    sleeps: list[float] = []
    fake_spotify.script("/v1/search", [Reply(429, retry_after=3), 200])
    collector(fake_spotify, tmp_path / "a", sleeps).run()
    assert sleeps == [3.0]

    fake_spotify.script("/v1/search", [200, Reply(429, retry_after=3600)])
    with pytest.raises(CollectError, match=r"3600 s.*again later"):
        collector(fake_spotify, tmp_path / "b", []).run()
    assert 0 < len(kept_ids(tmp_path / "b")) < len(store["good"])
    collector(fake_spotify, tmp_path / "b").run()
    assert kept_ids(tmp_path / "b") == sorted(store["good"])


def test_refuses_without_the_acknowledgement(fake_spotify, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("SPOTIFY_API_BASE", fake_spotify.api_base)
    monkeypatch.setenv("SPOTIFY_TOKEN_URL", fake_spotify.token_url)
    assert main(["collect", "--out", str(tmp_path / "ds"), "--queries", "1"]) == 2
    err = capsys.readouterr().err
    assert "forbid" in err and ACK_FLAG in err
    assert not (tmp_path / "ds").exists() and not fake_spotify.requests

    add(fake_spotify, "abc", jpeg(1))
    argv = ["collect", "--out", str(tmp_path / "ds"), "--queries", "1", "--keyword-share", "0"]
    assert main([*argv, ACK_FLAG]) == 0
    assert "forbid" in capsys.readouterr().err  # said again, on every run
    assert (tmp_path / "ds" / "collect_state.json").is_file()


def test_split_is_deterministic_and_80_10_10():
    ids = [fake_id("sp") for _ in range(5000)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    shares = {s: splits.count(s) / len(ids) for s in SPLITS}
    assert abs(shares["train"] - 0.8) < 0.03 and abs(shares["test"] - 0.1) < 0.02
    assert split_of("0123456789abcdefghijkl") == split_of("0123456789abcdefghijkl")


def test_query_plan_mixes_keywords_and_prefixes():
    plan = query_plan(seed=0, count=500)
    assert plan == query_plan(seed=0, count=500) and plan != query_plan(seed=1, count=500)
    prefixes = [q for q in plan if len(q) == 3 and q.isalpha() and q.islower()]
    assert 0.5 < len(prefixes) / len(plan) < 0.7


def test_dhash_sees_re_encodings_as_near_and_others_as_far():
    def open_(data: bytes) -> Image.Image:
        return Image.open(io.BytesIO(data))

    a, a_low, b = dhash(open_(jpeg(5))), dhash(open_(jpeg(5, quality=30))), dhash(open_(jpeg(6)))
    hashes = np.array([a], dtype=np.uint64)
    assert nearest_distance(hashes, a_low) <= 4 < nearest_distance(hashes, b)
    assert nearest_distance(np.zeros(0, dtype=np.uint64), a) == 65
    assert json.dumps(f"{a:016x}")  # stored as 16 hex digits
