"""bot.app.spotify: the real spotipy against the local fake Spotify (tests/fakes/spotify/).

Waits are recorded through the injected ``sleep``, so no test sleeps for a Retry-After.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app.errors import (
    EditorialPlaylist,
    InvalidPlaylistLink,
    MissingSetting,
    PlaylistNotFound,
    SpotifyAuthError,
    SpotifyRateLimited,
    SpotifyUnavailable,
)
from bot.app.playlist import facts_from_spotify, load_snapshot
from bot.app.settings import Settings
from bot.app.spotify import SpotifyReader
from bot.app.spotify_retry import (
    Failure,
    RetryPolicy,
    TameSpotipyLogs,
    parse_retry_after,
    retry_delay,
)
from tests.fakes.spotify import (
    CLIENT_ID,
    CLIENT_SECRET,
    FakeSpotify,
    Reply,
    fake_id,
    fake_spotify_fixture,  # noqa: F401  (provides the `fake_spotify` fixture)
    make_artist,
    make_episode_item,
    make_item,
    make_playlist,
    make_unavailable_item,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "playlists"


def make_settings(server: FakeSpotify, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "spotify_client_id": CLIENT_ID,
        "spotify_client_secret": CLIENT_SECRET,
        "spotify_api_base": server.api_base,
        "spotify_token_url": server.token_url,
        "spotify_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_reader(server: FakeSpotify, sleeps: list[float] | None = None, **overrides: object):
    sleep: Callable[[float], None] = sleeps.append if sleeps is not None else _no_sleep
    return SpotifyReader(make_settings(server, **overrides), sleep=sleep)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep of {seconds} s")


def add_small_playlist(server: FakeSpotify, **kwargs: object) -> str:
    """Two items the app may read: it has extended quota (development-mode apps may not)."""
    server.extended_quota = True
    artist = make_artist("Test Artist", ["test genre"])
    server.add_artist(artist)
    playlist = make_playlist("small one", "just &amp; only a test", **kwargs)
    server.add_playlist(playlist, [make_item("Song A", artist), make_item("Song B", artist)])
    return playlist["id"]


# -- reading --------------------------------------------------------------------------------


def test_reads_two_pages_of_items_and_counts_genres(fake_spotify: FakeSpotify) -> None:
    dreamy = make_artist("Lumen Harbor", ["dream pop", "shoegaze"])
    smooth = make_artist("Cass Orchard", ["neo soul"])
    for artist in (dreamy, smooth):
        fake_spotify.add_artist(artist)
    items = [make_item(f"Dream {i}", dreamy) for i in range(40)]
    items += [make_item(f"Soul {i}", smooth) for i in range(20)]
    items.append(make_item("Duet", dreamy, smooth))
    playlist = make_playlist("night swim", "waves &amp; reverb <a href='https://x.example'>me</a>")
    fake_spotify.add_playlist(playlist, items)
    fake_spotify.extended_quota = True  # an app with extended quota reads any playlist's items
    pid = playlist["id"]

    facts = make_reader(fake_spotify).read_playlist(pid)

    assert [r.path for r in fake_spotify.requests_to("/api/token")] == ["/api/token"]
    pages = fake_spotify.requests_to(f"/v1/playlists/{pid}/items")
    assert [r.query.get("offset", "0") for r in pages] == ["0", "50"]  # both pages, by `next`
    assert facts.items_readable
    assert len(facts.tracks) == 61 and facts.total_items == 61
    assert facts.tracks[-1].artists == ("Lumen Harbor", "Cass Orchard")
    assert facts.top_artists == ("Lumen Harbor", "Cass Orchard")
    # 41 dreamy tracks count both of its genres, 21 smooth ones count neo soul
    assert facts.top_genres[2] == "neo soul" and set(facts.top_genres[:2]) == {
        "dream pop",
        "shoegaze",
    }
    assert facts.name == "night swim" and facts.description == "waves & reverb me"
    assert facts.raw["artists"][0]["id"] == dreamy["id"]  # the snapshot keeps the artists
    assert len(fake_spotify.requests_to(f"/v1/artists/{dreamy['id']}")) == 1


def test_stops_paging_at_max_items(fake_spotify: FakeSpotify) -> None:
    artist = make_artist("Paging Person")
    fake_spotify.add_artist(artist)
    playlist = make_playlist("long one")
    fake_spotify.add_playlist(playlist, [make_item(f"T{i}", artist) for i in range(120)])
    fake_spotify.extended_quota = True

    facts = make_reader(fake_spotify, spotify_max_items=60).read_playlist(playlist["id"])

    assert len(facts.tracks) == 60 and facts.total_items == 120
    assert len(fake_spotify.requests_to(f"/v1/playlists/{playlist['id']}/items")) == 2


def test_refused_items_give_metadata_only(fake_spotify: FakeSpotify) -> None:
    playlist = make_playlist("rainy lo-fi", "beats &amp; rain")
    fake_spotify.add_playlist(playlist, [make_item("hidden", make_artist("X"))])

    facts = make_reader(fake_spotify).read_playlist(playlist["id"])

    assert not facts.items_readable
    assert facts.tracks == () and facts.top_genres == ()
    assert facts.name == "rainy lo-fi" and facts.description == "beats & rain"
    assert facts.total_items is None  # the playlist object has no `items` then: no total
    assert "items" not in facts.raw["items"]
    assert not [r for r in fake_spotify.requests if r.path.startswith("/v1/artists/")]


def test_episodes_and_unavailable_items_stay_out_of_the_facts(fake_spotify: FakeSpotify) -> None:
    """Issue 38: an episode became a "track" with no artists; now it is left out, as is an
    item whose track went away (``item: null``)."""
    artist = make_artist("Lumen Harbor", ["dream pop"])
    fake_spotify.add_artist(artist)
    playlist = make_playlist("songs and talk")
    items = [make_item("Song", artist), make_episode_item("Episode 12"), make_unavailable_item()]
    fake_spotify.add_playlist(playlist, items)
    fake_spotify.extended_quota = True

    facts = make_reader(fake_spotify).read_playlist(playlist["id"])

    assert [t.name for t in facts.tracks] == ["Song"] and facts.total_items == 3
    assert facts.top_artists == ("Lumen Harbor",) and facts.top_genres == ("dream pop",)


def test_local_files_and_tracks_without_artists_keep_their_names() -> None:
    local = {
        "is_local": True,
        "item": {
            "type": "track",
            "id": None,
            "name": "demo take 3",
            "artists": [{"id": None, "name": "Me"}],
        },
    }
    bare = {
        "is_local": False,
        "item": {"type": "track", "id": "x", "name": "Untitled", "artists": []},
    }
    facts = facts_from_spotify({"id": fake_id("pl"), "name": "mine"}, [local, bare])
    assert [(t.name, t.artists, t.artist_ids) for t in facts.tracks] == [
        ("demo take 3", ("Me",), ()),
        ("Untitled", (), ()),
    ]


def test_expired_app_token_is_renewed_once(fake_spotify: FakeSpotify) -> None:
    """Issue 38: a 401 on an app-token call read as "playlist not found"; spotipy trusts the
    token's `expires_in`, so a token Spotify drops early was never replaced."""
    pid = add_small_playlist(fake_spotify)
    reader = make_reader(fake_spotify)
    reader.read_playlist(pid)
    fake_spotify.expire_app_tokens()

    facts = reader.read_playlist(pid)

    assert facts.name == "small one" and len(facts.tracks) == 2
    assert len(fake_spotify.requests_to("/api/token")) == 2


def test_app_token_refused_twice_is_an_auth_error(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}", 401, forever=True)

    with pytest.raises(SpotifyAuthError, match="HTTP 401"):
        make_reader(fake_spotify).read_playlist(pid)
    assert len(fake_spotify.requests_to("/api/token")) == 2  # one new token, not a loop


def test_artist_lookup_failure_only_skips_genres(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.artists.clear()  # every /artists/{id} now answers 404

    facts = make_reader(fake_spotify).read_playlist(pid)

    assert len(facts.tracks) == 2 and facts.top_genres == ()


def test_missing_playlist(fake_spotify: FakeSpotify) -> None:
    pid = fake_id("nope")
    with pytest.raises(PlaylistNotFound) as caught:
        make_reader(fake_spotify).read_playlist(pid)
    assert caught.value.playlist_id == pid and pid in str(caught.value)


def test_private_playlist_reads_as_not_found(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}", 403)
    with pytest.raises(PlaylistNotFound):
        make_reader(fake_spotify).read_playlist(pid)


def test_editorial_playlist(fake_spotify: FakeSpotify) -> None:
    pid = "37i9dQZF1DXcBWIGoYBM5M"  # the shape of Spotify's own playlist ids
    with pytest.raises(EditorialPlaylist) as caught:
        make_reader(fake_spotify).read_playlist(f"https://open.spotify.com/playlist/{pid}")
    assert caught.value.playlist_id == pid


def test_bad_id_is_refused_before_any_request(fake_spotify: FakeSpotify) -> None:
    with pytest.raises(InvalidPlaylistLink):
        make_reader(fake_spotify).read_playlist("xxxxx")
    assert fake_spotify.requests == []


async def test_aread_playlist_from_async_code(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    facts = await make_reader(fake_spotify).aread_playlist(pid)
    assert [t.name for t in facts.tracks] == ["Song A", "Song B"]
    assert facts.top_genres == ("test genre",)


def test_snapshot_round_trips_through_load_snapshot(
    fake_spotify: FakeSpotify, tmp_path: Path
) -> None:
    pid = add_small_playlist(fake_spotify)
    reader = make_reader(fake_spotify)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(reader.snapshot(pid)), encoding="utf-8")

    loaded, read = load_snapshot(path), reader.read_playlist(pid)

    assert (loaded.name, loaded.description, loaded.tracks, loaded.top_genres) == (
        read.name,
        read.description,
        read.tracks,
        read.top_genres,
    )


# -- rate limits, outages and retries -------------------------------------------------------


def test_429_waits_retry_after_then_succeeds(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}", [Reply(429, retry_after=3), 200])
    sleeps: list[float] = []

    facts = make_reader(fake_spotify, sleeps).read_playlist(pid)

    assert facts.name == "small one"
    assert sleeps == [3.0]
    assert len(fake_spotify.requests_to(f"/v1/playlists/{pid}")) == 2


def test_429_forever_gives_up_with_retry_after(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}", Reply(429, retry_after=2), forever=True)
    sleeps: list[float] = []

    with pytest.raises(SpotifyRateLimited) as caught:
        make_reader(fake_spotify, sleeps, spotify_max_tries=3).read_playlist(pid)

    assert caught.value.retry_after == 2.0
    assert sleeps == [2.0, 2.0]
    assert len(fake_spotify.requests_to(f"/v1/playlists/{pid}")) == 3


def test_long_retry_after_gives_up_at_once(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}", Reply(429, retry_after=3600), forever=True)

    with pytest.raises(SpotifyRateLimited) as caught:
        make_reader(fake_spotify, spotify_max_wait_s=20).read_playlist(pid)  # sleeping fails

    assert caught.value.retry_after == 3600
    assert "3600 s" in str(caught.value)
    assert len(fake_spotify.requests_to(f"/v1/playlists/{pid}")) == 1


def test_quota_exceeded_is_not_retried(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    body = {"error": {"status": 429, "message": "Quota exceeded", "reason": "QUOTA_EXCEEDED"}}
    fake_spotify.script(f"/v1/playlists/{pid}", Reply(429, retry_after=5, body=body))

    with pytest.raises(SpotifyRateLimited):
        make_reader(fake_spotify).read_playlist(pid)
    assert len(fake_spotify.requests_to(f"/v1/playlists/{pid}")) == 1


def test_500_then_success_backs_off(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}/items", [500, 502, 200])
    sleeps: list[float] = []

    facts = make_reader(fake_spotify, sleeps).read_playlist(pid)

    assert len(facts.tracks) == 2
    assert sleeps == [0.5, 1.0]


def test_outage_becomes_unavailable(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}", 503, forever=True)
    sleeps: list[float] = []

    with pytest.raises(SpotifyUnavailable, match=r"HTTP 503.*4 tries"):
        make_reader(fake_spotify, sleeps, spotify_max_tries=4).read_playlist(pid)
    assert sleeps == [0.5, 1.0, 2.0]


def test_timeouts_become_unavailable(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script(f"/v1/playlists/{pid}", Reply(200, delay_s=1.0), forever=True)
    sleeps: list[float] = []
    reader = make_reader(fake_spotify, sleeps, spotify_max_tries=2, spotify_timeout_s=0.2)

    with pytest.raises(SpotifyUnavailable, match="timeout"):
        reader.read_playlist(pid)
    assert sleeps == [0.5]


def test_connection_refused_becomes_unavailable() -> None:
    with FakeSpotify() as server:
        settings = make_settings(server, spotify_max_tries=2)
    sleeps: list[float] = []  # the server is gone: nothing listens on its port any more

    with pytest.raises(SpotifyUnavailable, match="connection failed"):
        SpotifyReader(settings, sleep=sleeps.append).read_playlist(fake_id())
    assert sleeps == [0.5]


# -- credentials ----------------------------------------------------------------------------


def test_wrong_secret_is_an_auth_error_without_the_secret(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    secret = "sup3r-s3cret-value"
    reader = make_reader(fake_spotify, spotify_client_secret=secret)

    with pytest.raises(SpotifyAuthError) as caught:
        reader.read_playlist(pid)

    message = str(caught.value)
    assert "SPOTIFY_CLIENT_SECRET" in message and "SPOTIFY_CLIENT_ID" in message
    assert secret not in message and secret not in repr(caught.value)
    assert fake_spotify.requests_to(f"/v1/playlists/{pid}") == []


def test_token_endpoint_401_is_an_auth_error(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script("/api/token", 401)
    with pytest.raises(SpotifyAuthError, match="invalid_client"):
        make_reader(fake_spotify).read_playlist(pid)


def test_token_endpoint_outage_is_retried(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    fake_spotify.script("/api/token", [503, 200])
    sleeps: list[float] = []

    facts = make_reader(fake_spotify, sleeps).read_playlist(pid)

    assert facts.name == "small one" and sleeps == [0.5]


def test_debug_logs_hold_no_credentials(
    fake_spotify: FakeSpotify, caplog: pytest.LogCaptureFixture
) -> None:
    pid = add_small_playlist(fake_spotify)
    caplog.set_level(logging.DEBUG)
    dropped = TameSpotipyLogs.dropped

    make_reader(fake_spotify).read_playlist(pid)

    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert TameSpotipyLogs.dropped > dropped  # spotipy did log its requests, and was stopped
    for secret in (CLIENT_SECRET, basic, *fake_spotify.tokens_issued):
        assert secret not in caplog.text


def test_refused_items_are_not_logged_as_errors(
    fake_spotify: FakeSpotify, caplog: pytest.LogCaptureFixture
) -> None:
    playlist = make_playlist("not mine")
    fake_spotify.add_playlist(playlist)
    caplog.set_level(logging.DEBUG)

    make_reader(fake_spotify).read_playlist(playlist["id"])

    assert "HTTP Error for" in caplog.text  # spotipy's line is still there, at DEBUG
    # asyncio's own "Task was destroyed" notices come from other tests' servers being collected
    # at random moments; they say nothing about how a refusal is logged.
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name != "asyncio"]
    assert [r.getMessage() for r in loud] == []


@pytest.mark.parametrize("missing", ["SPOTIFY_CLIENT_ID", "SPOTIFY_CLIENT_SECRET"])
def test_missing_credentials(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPOTIFY_CLIENT_ID", "SPOTIFY_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("COVER_" + name, raising=False)
    values = {"spotify_client_id": CLIENT_ID, "spotify_client_secret": CLIENT_SECRET}
    values[missing.lower()] = None

    with pytest.raises(MissingSetting) as caught:
        SpotifyReader(Settings(_env_file=None, **values))
    assert caught.value.variable == missing and missing in str(caught.value)


def test_fake_server_checks_the_bearer_token(fake_spotify: FakeSpotify) -> None:
    pid = add_small_playlist(fake_spotify)
    url = f"{fake_spotify.api_base}/playlists/{pid}"
    for headers in ({}, {"Authorization": "Bearer made-up"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
        assert refused.value.code == 401


# -- the pure retry policy ------------------------------------------------------------------


POLICY = RetryPolicy(max_tries=3, max_wait_s=10, backoff_s=0.5)


def test_retry_delay_rate_limited() -> None:
    limited = Failure("rate_limited", "HTTP 429", retry_after=4)
    assert retry_delay(limited, 1, POLICY) == 4
    assert retry_delay(limited, 2, POLICY) == 4
    with pytest.raises(SpotifyRateLimited):
        retry_delay(limited, 3, POLICY)  # tries spent
    with pytest.raises(SpotifyRateLimited):
        retry_delay(Failure("rate_limited", "HTTP 429", retry_after=11), 1, POLICY)
    assert retry_delay(Failure("rate_limited", "HTTP 429"), 2, POLICY) == 1.0  # no header


def test_retry_delay_unavailable() -> None:
    down = Failure("unavailable", "HTTP 502")
    assert [retry_delay(down, n, POLICY) for n in (1, 2)] == [0.5, 1.0]
    with pytest.raises(SpotifyUnavailable, match="HTTP 502"):
        retry_delay(down, 3, POLICY)


def test_parse_retry_after() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sun, 01 Mar 2026 11:00:00 GMT", now=now) == 0.0  # past
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


# -- the example snapshots ------------------------------------------------------------------


def test_examples_load() -> None:
    paths = sorted(EXAMPLES.glob("*.json"))
    assert len(paths) >= 5
    facts = [load_snapshot(path) for path in paths]
    for fact in facts:
        assert len(fact.id) == 22 and fact.id.isalnum()
        assert fact.name and fact.description and "&amp;" not in fact.description
        assert "<" not in fact.description
        assert fact.items_readable == bool(fact.tracks)
    assert any(not f.items_readable and f.total_items for f in facts)  # metadata only
    assert any(f.top_genres for f in facts)
    assert any(f.tracks and not f.top_genres for f in facts)  # items without artist objects
    assert max(len(f.name) for f in facts) > 100 and max(len(f.description) for f in facts) > 300


def test_examples_read_back_through_the_fake_server(fake_spotify: FakeSpotify) -> None:
    reader = make_reader(fake_spotify)
    for path in sorted(EXAMPLES.glob("*.json")):
        fake_spotify.add_snapshot(path)
        expected = load_snapshot(path)
        fake_spotify.extended_quota = expected.items_readable
        read = reader.read_playlist(expected.id)
        assert (read.name, read.description, read.tracks, read.top_artists) == (
            expected.name,
            expected.description,
            expected.tracks,
            expected.top_artists,
        ), path.name
        assert read.items_readable == expected.items_readable
        assert set(read.top_genres) <= set(expected.top_genres)  # genres of the top artists only
