"""Playlist links: a table of what people paste, and short links against a local redirect server.

The short-link tests run the real aiohttp client against a real aiohttp server on 127.0.0.1
(random port) that plays spotify.link: every hop it serves is recorded, so a test can also show
what was *not* fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app.errors import InvalidPlaylistLink
from bot.app.links import (
    PLAYLIST_ID_LENGTH,
    SPOTIFY_HOSTS,
    is_short_link,
    parse_playlist_ref,
    resolve_playlist_ref,
    resolve_short_link,
)
from models.errors import CoverError

PID = "3cEYpjA9oz9GiPac4AsH4n"
OTHER = "37i9dQZF1DXcBWIGoYBM5M"
LOCAL = frozenset({"127.0.0.1"})

# --------------------------------------------------------------------------------------------
# Parsing table
# --------------------------------------------------------------------------------------------

GOOD = [
    PID,
    f"  {PID}\n",
    f"https://open.spotify.com/playlist/{PID}",
    f"http://open.spotify.com/playlist/{PID}",
    f"open.spotify.com/playlist/{PID}",
    f"https://www.open.spotify.com/playlist/{PID}",
    f"www.open.spotify.com/playlist/{PID}",
    f"https://play.spotify.com/playlist/{PID}",
    f"https://open.spotify.com/intl-de/playlist/{PID}",
    f"https://open.spotify.com/intl-pt-br/playlist/{PID}?si=abc",
    f"https://open.spotify.com/embed/playlist/{PID}",
    f"https://open.spotify.com/embed/playlist/{PID}?utm_source=generator&theme=0",
    f"https://open.spotify.com/playlist/{PID}?si=4f3c2b1a0e9d8c7b&pt=9f8e7d6c",
    f"https://open.spotify.com/playlist/{PID}#tracks",
    f"https://open.spotify.com/playlist/{PID}/",
    f"https://open.spotify.com:443/playlist/{PID}",
    f"https://open.spotify.com./playlist/{PID}",
    f"<https://open.spotify.com/playlist/{PID}?si=x>",
    f"\n <https://open.spotify.com/playlist/{PID}>\n ",
    f"spotify:playlist:{PID}",
    f"spotify:user:someone:playlist:{PID}",
    f"https://open.spotify.com/user/someone/playlist/{PID}",
    f"HTTPS://OPEN.SPOTIFY.COM/PLAYLIST/{PID}",
    f"my summer mix: https://open.spotify.com/playlist/{PID}?si=1 enjoy!",
    f"https://open.spotify.com/playlist/{PID}.",
    f"`spotify:playlist:{PID}`",
]

BAD = [
    ("", "No playlist given"),
    ("   \n\t ", "No playlist given"),
    (f"https://open.spotify.com/album/{PID}", "album link, not a playlist"),
    (f"https://open.spotify.com/track/{PID}?si=x", "track (song) link"),
    (f"https://open.spotify.com/artist/{PID}", "artist link"),
    (f"https://open.spotify.com/episode/{PID}", "podcast episode link"),
    (f"https://open.spotify.com/show/{PID}", "podcast show link"),
    ("https://open.spotify.com/user/someone", "user profile link"),
    (f"spotify:album:{PID}", "album link"),
    (f"spotify:track:{PID}", "track (song) link"),
    (f"https://open.spotify.com.evil.io/playlist/{PID}", "host is open.spotify.com.evil.io"),
    (f"https://spotify.com.fake/playlist/{PID}", "host is spotify.com.fake"),
    (f"https://openspotify.com/playlist/{PID}", "host is openspotify.com"),
    (f"https://open.spotify.com@evil.io/playlist/{PID}", "host is evil.io"),
    ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "not a Spotify link"),
    (f"https://www.spotify.com/playlist/{PID}", "playlists are on open.spotify.com"),
    (PID[:-1], "this one has 21"),
    (PID + "x", "this one has 23"),
    ("xxxxx", f"{PLAYLIST_ID_LENGTH} letters and digits"),
    (PID[:10] + "-" + PID[11:], "without '-'"),
    ("https://open.spotify.com/playlist/short123", "this one has 8"),
    ("spotify:playlist:" + "é" * 22, "without 'é'"),
    ("https://open.spotify.com/playlist/", "no playlist id"),
    ("https://open.spotify.com/", "does not point to a Spotify playlist"),
    (f"https://open.spotify.com/playlist/{PID}/extra", "does not point to a Spotify playlist"),
    ("spotify.link/abc123XYZ", "short link"),
    (f"open.spotify.com/playlist/{PID} open.spotify.com/playlist/{OTHER}", "holds 2 links"),
    ("hello there friend", "not a Spotify playlist link, URI or id"),
    (f"ftp://open.spotify.com/playlist/{PID}", "not a Spotify playlist link, URI or id"),
    ("x" * 5000, "too long (5000 characters)"),
]


def test_the_table_is_big_enough():
    assert len(PID) == len(OTHER) == PLAYLIST_ID_LENGTH
    assert len(GOOD) >= 20 and len(BAD) >= 20


@pytest.mark.parametrize("text", GOOD)
def test_accepts(text):
    assert parse_playlist_ref(text) == PID


@pytest.mark.parametrize(("text", "key"), BAD)
def test_refuses_with_a_specific_message(text, key):
    with pytest.raises(InvalidPlaylistLink) as caught:
        parse_playlist_ref(text)
    message = str(caught.value)
    assert key in message
    assert isinstance(caught.value, CoverError)
    assert "\n" not in message and len(message) < 200, "messages are one short line"


def test_message_quotes_a_cut_down_copy_of_the_input():
    text = "https://open.spotify.com/album/" + "A" * 1500
    with pytest.raises(InvalidPlaylistLink) as caught:
        parse_playlist_ref(text)
    message = str(caught.value)
    assert message.startswith('"https://open.spotify.com/album/AAA')
    assert "…" in message and "A" * 100 not in message


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("spotify.link/abc123XYZ", True),
        ("https://spotify.link/abc123XYZ", True),
        ("https://spotify.app.link/abc123XYZ?_p=c11", True),
        ("<https://spotify.link/abc123XYZ>", True),
        ("https://open.spotify.com/s/2czejYu", True),
        (f"https://open.spotify.com/playlist/{PID}", False),
        (PID, False),
        ("https://spotify.link.evil.io/abc", False),
        ("https://evil.io/spotify.link/abc", False),
        ("", False),
        ("xxxxx", False),
    ],
)
def test_is_short_link(text, short):
    assert is_short_link(text) is short


def test_production_hosts_hold_no_loopback():
    for host in SPOTIFY_HOSTS:
        assert host != "localhost"
        with pytest.raises(ValueError):  # not an IP address at all, loopback or otherwise
            ipaddress.ip_address(host)


# --------------------------------------------------------------------------------------------
# A local spotify.link
# --------------------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeLinkService:
    """Serves a few fixed short links; ``hits`` lists every path requested, in order."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.release = asyncio.Event()  # lets the hanging hop end when the test is over
        self.server: TestServer | None = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        assert self.server is not None
        return f"http://{host}:{self.server.port}{path}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path)
        return await self._routes().get(request.path, self._not_found)(request)

    def _routes(self) -> dict[str, Handler]:
        def redirect(location: str, status: int = 302) -> Handler:
            async def handler(request: web.Request) -> web.StreamResponse:
                return web.Response(status=status, headers={"Location": location})

            return handler

        def page(body: str) -> Handler:
            async def handler(request: web.Request) -> web.StreamResponse:
                return web.Response(text=body, content_type="text/html")

            return handler

        async def hang(request: web.Request) -> web.StreamResponse:
            # Bounded, so a resolver without a deadline fails the test instead of hanging it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), timeout=5)
            return web.Response(text="too late")

        async def unavailable(request: web.Request) -> web.StreamResponse:
            return web.Response(status=503)

        chain = {f"/chain/{n}": redirect(f"/chain/{n + 1}") for n in range(20)}
        return {
            # relative, then absolute, then the playlist on open.spotify.com (never fetched)
            "/multi/1": redirect("/multi/2", 301),
            "/multi/2": redirect(self.url("/multi/3"), 307),
            "/permanent": redirect(f"https://open.spotify.com/playlist/{PID}", 308),
            "/unknown-kind": redirect(f"https://open.spotify.com/concert/{PID}"),
            "/via-localhost": redirect(self.url("/multi/3", host="localhost")),
            "/multi/3": redirect(
                f"https://open.spotify.com/intl-de/playlist/{PID}?si=abc&utm_source=copy-link"
            ),
            "/to-uri": redirect(f"spotify:playlist:{PID}"),
            "/foreign": redirect(self.url("/trap", host="localhost")),
            "/lookalike": redirect(f"https://open.spotify.com.evil.io/playlist/{PID}"),
            "/insecure": redirect("http://spotify.link/abc123XYZ"),
            "/loop/a": redirect("/loop/b"),
            "/loop/b": redirect("/loop/a"),
            **chain,
            "/hang": hang,
            "/dead": self._not_found,
            "/gone": redirect("/dead"),
            "/album": redirect(f"https://open.spotify.com/album/{PID}?si=x"),
            "/home": redirect("https://open.spotify.com/"),
            "/no-location": redirect(""),
            "/malformed": redirect("https://[not-an-address]/s/abc"),  # yarl refuses the host
            "/broken": unavailable,
            "/script-page": page(
                "<html><head><meta property='al:ios:url' content='spotify:playlist:"
                f"{PID}'></head><body><script>window.location = "
                f'"https:\\/\\/open.spotify.com\\/playlist\\/{PID}?si=1";</script></body></html>'
            ),
            "/empty-page": page("<html><body>Nothing to see.</body></html>"),
            # The item named where the page's first 64 KiB end, then just past them.
            "/long-page-inside": page(_padded(f"open.spotify.com/playlist/{PID}", end=PAGE_CAP)),
            "/long-page-past": page(_padded(f"open.spotify.com/playlist/{PID}", end=PAGE_CAP + 1)),
            "/busy-page": page(
                f"open.spotify.com/playlist/{PID} and open.spotify.com/playlist/{OTHER}"
            ),
            # The first 64 KiB end inside a four-byte character.
            "/cut-mid-character": page(_cut_mid_character(f"open.spotify.com/playlist/{PID}")),
        }

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="no such link")


PAGE_CAP = 64 * 1024  # how much of a short link's page the resolver reads (bot/app/links.py)


def _padded(text: str, *, end: int) -> str:
    """An ASCII page in which ``text`` ends at byte ``end``, then more padding."""
    return "x" * (end - len(text) - 1) + " " + text + " " + "y" * 100_000


def _cut_mid_character(text: str) -> str:
    """A page that names ``text`` first and whose byte ``PAGE_CAP`` falls inside a character."""
    head = text + " " + "x" * (PAGE_CAP - 2 - len(text) - 1)  # ASCII: PAGE_CAP − 2 bytes
    return head + "\N{MUSICAL NOTE}" + "y" * 1000  # the note's 4 bytes straddle PAGE_CAP


@pytest.fixture
async def links() -> AsyncIterator[FakeLinkService]:
    service = FakeLinkService()
    server = TestServer(service.app(), host="127.0.0.1")
    service.server = server
    await server.start_server()
    yield service
    service.release.set()
    await server.close()


async def resolve_error(url: str, **kwargs) -> str:
    kwargs.setdefault("allowed_hosts", LOCAL)
    with pytest.raises(InvalidPlaylistLink) as caught:
        await resolve_short_link(url, **kwargs)
    return str(caught.value)


async def test_multi_hop_redirect_ends_at_the_playlist(links):
    assert await resolve_short_link(links.url("/multi/1"), allowed_hosts=LOCAL) == PID
    assert links.hits == ["/multi/1", "/multi/2", "/multi/3"]  # open.spotify.com never fetched


async def test_a_given_session_is_used_and_left_open(links):
    async with aiohttp.ClientSession() as session:
        found = await resolve_short_link(links.url("/to-uri"), session=session, allowed_hosts=LOCAL)
        assert found == PID
        assert not session.closed


async def test_redirect_to_a_foreign_host_is_refused_unfetched(links):
    message = await resolve_error(links.url("/foreign"))
    assert "off Spotify's hosts (to localhost)" in message
    assert links.hits == ["/foreign"]


async def test_redirect_to_a_look_alike_host_is_refused(links):
    message = await resolve_error(links.url("/lookalike"))
    assert "off Spotify's hosts (to open.spotify.com.evil.io)" in message


async def test_plain_http_is_refused_on_non_loopback_hosts(links):
    message = await resolve_error(links.url("/insecure"), allowed_hosts=LOCAL | {"spotify.link"})
    assert "not plain HTTPS" in message and "http://spotify.link/abc123XYZ" in message


async def test_default_hosts_refuse_loopback(links):
    message = await resolve_error(links.url("/multi/1"), allowed_hosts=SPOTIFY_HOSTS)
    assert "not a Spotify short link: its host is 127.0.0.1" in message
    assert links.hits == []


async def test_redirect_loop_is_refused(links):
    message = await resolve_error(links.url("/loop/a"))
    assert "loop" in message
    assert links.hits == ["/loop/a", "/loop/b"]


async def test_too_many_hops_are_refused(links):
    message = await resolve_error(links.url("/chain/0"), max_hops=3)
    assert "more than 3 redirects" in message
    assert links.hits == ["/chain/0", "/chain/1", "/chain/2"]


async def test_a_hanging_hop_times_out(links):
    message = await resolve_error(links.url("/hang"), timeout_s=0.2)
    assert "did not answer within 0.2 s" in message


@pytest.mark.parametrize("path", ["/dead", "/gone"])
async def test_dead_link(links, path):
    assert "is dead (Spotify answered 404)" in await resolve_error(links.url(path))


async def test_short_link_to_an_album_is_refused(links):
    message = await resolve_error(links.url("/album"))
    assert "leads to a Spotify album, not a playlist" in message


async def test_short_link_to_spotifys_home_page_is_refused_unfetched(links):
    message = await resolve_error(links.url("/home"))
    assert "not to a Spotify playlist" in message


async def test_redirect_without_location(links):
    assert "without saying where" in await resolve_error(links.url("/no-location"))


async def test_server_error_is_named(links):
    assert "answered HTTP 503" in await resolve_error(links.url("/broken"))


async def test_unreachable_hop_is_a_link_error():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = await resolve_error(f"http://127.0.0.1:{port}/x")
    assert "could not be followed" in message


async def test_a_permanent_redirect_308_is_followed(links):
    assert await resolve_short_link(links.url("/permanent"), allowed_hosts=LOCAL) == PID


async def test_only_the_first_64_kib_of_a_page_are_read(links):
    assert await resolve_short_link(links.url("/long-page-inside"), allowed_hosts=LOCAL) == PID
    message = await resolve_error(links.url("/long-page-past"))
    assert "does not lead to a Spotify playlist" in message


async def test_script_redirect_page_names_the_playlist(links):
    assert await resolve_short_link(links.url("/script-page"), allowed_hosts=LOCAL) == PID


@pytest.mark.parametrize(
    ("path", "key"),
    [("/empty-page", "does not lead to a Spotify playlist"), ("/busy-page", "naming 2")],
)
async def test_pages_without_one_clear_item_are_refused(links, path, key):
    assert key in await resolve_error(links.url(path))


async def test_resolve_playlist_ref_follows_short_links(links):
    assert await resolve_playlist_ref(links.url("/multi/1"), allowed_hosts=LOCAL) == PID
    assert links.hits[0] == "/multi/1"


async def test_resolve_playlist_ref_parses_full_links_offline(links):
    assert await resolve_playlist_ref(f"<https://open.spotify.com/playlist/{PID}>") == PID
    # with the production hosts, a loopback URL is just a foreign link: refused, never fetched
    with pytest.raises(InvalidPlaylistLink, match="not a Spotify link"):
        await resolve_playlist_ref(links.url("/multi/1"))
    assert links.hits == []


# -- what a mutation run found untested (issue 15) -------------------------------------------

QUOTE_CHARS = 60  # messages quote at most this much of the input (bot/app/links.py)


class _Unreachable(aiohttp.abc.AbstractResolver):
    """A resolver that finds nothing: requests to real hosts fail at once, offline."""

    async def resolve(self, host, port=0, family=socket.AF_INET):
        raise OSError(f"{host} is not reachable from the tests")

    async def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def recording_session() -> AsyncIterator[tuple[aiohttp.ClientSession, list[str]]]:
    """A session that records each URL it is asked for and reaches no real host."""
    asked: list[str] = []

    async def on_start(session, context, params) -> None:
        asked.append(str(params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    connector = aiohttp.TCPConnector(resolver=_Unreachable())
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        yield session, asked


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/loop/a", "redirects in a loop"),
        ("/chain/0", "took more than 5 redirects"),  # the default max_hops
        ("/foreign", "redirects off Spotify's hosts (to localhost)"),
        ("/insecure", "redirects off Spotify's hosts (to spotify.link)"),
        ("/dead", "is dead (Spotify answered 404)"),
        ("/album", "leads to a Spotify album, not a playlist"),
        ("/no-location", "redirects without saying where"),
        ("/malformed", 'redirects to a malformed address "https://[not-an-address]/s/abc"'),
        ("/broken", "answered HTTP 503"),
        ("/empty-page", "does not lead to a Spotify playlist"),
        ("/busy-page", "naming 2 Spotify items"),
    ],
)
async def test_every_refusal_quotes_the_link_it_was_given(links, path, key):
    message = await resolve_error(links.url(path))
    assert message.startswith(f'The short link "{links.url(path)}" ') and key in message


async def test_a_link_to_an_unknown_kind_of_page_names_where_it_led(links):
    message = await resolve_error(links.url("/unknown-kind"))
    assert f'leads to "https://open.spotify.com/concert/{PID}"' in message


async def test_the_last_allowed_hop_may_still_name_the_playlist(links):
    # /multi/1 → /multi/2 → /multi/3 → the playlist: three requests, and the third's Location
    # is the answer, checked after the walk has used up its hops.
    assert await resolve_short_link(links.url("/multi/1"), allowed_hosts=LOCAL, max_hops=3) == PID
    assert links.hits == ["/multi/1", "/multi/2", "/multi/3"]


async def test_localhost_counts_as_loopback_when_listed(links):
    allowed = frozenset({"127.0.0.1", "localhost"})
    assert await resolve_short_link(links.url("/via-localhost"), allowed_hosts=allowed) == PID


async def test_listed_hosts_are_compared_without_a_trailing_dot(links):
    allowed = frozenset({"127.0.0.1."})
    assert await resolve_short_link(links.url("/multi/1"), allowed_hosts=allowed) == PID


async def test_resolve_playlist_ref_uses_the_given_session(links):
    async with recording_session() as (session, asked):
        found = await resolve_playlist_ref(
            links.url("/multi/1"), session=session, allowed_hosts=LOCAL
        )
    assert found == PID and asked[0] == links.url("/multi/1")


async def test_a_typed_http_short_link_is_fetched_over_https():
    async with recording_session() as (session, asked):
        message = await resolve_error(
            "http://spotify.link/abc123", session=session, allowed_hosts=SPOTIFY_HOSTS
        )
    assert asked == ["https://spotify.link/abc123"]
    assert "could not be followed" in message


async def test_an_https_short_link_on_its_default_port_is_fetched():
    async with recording_session() as (session, asked):
        message = await resolve_error(
            "https://spotify.link/abc123", session=session, allowed_hosts=SPOTIFY_HOSTS
        )
    assert asked == ["https://spotify.link/abc123"] and "could not be followed" in message


async def test_a_short_link_without_a_host_is_not_a_link():
    assert (await resolve_error("https:///abc")).endswith("is not a link.")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("my link http://example.com please", "its host is example.com"),  # "://" alone
        ("go to www.example.com now", "its host is www.example.com"),  # "www." alone
        ("https://www.example.com/playlist/" + PID, "its host is www.example.com"),
        ("https:///playlist/" + PID, "is not a Spotify playlist link, URI or id"),
    ],
)
def test_what_makes_a_token_a_link(text, key):
    with pytest.raises(InvalidPlaylistLink, match=re.escape(key)):
        parse_playlist_ref(text)


def test_wrappers_and_punctuation_come_off_in_either_order():
    assert parse_playlist_ref(f"<https://open.spotify.com/playlist/{PID}>.") == PID
    assert parse_playlist_ref(f"`https://open.spotify.com/playlist/{PID}.`") == PID


def test_input_up_to_the_length_limit_is_read():
    assert parse_playlist_ref(" " * (2000 - len(PID)) + PID) == PID
    with pytest.raises(InvalidPlaylistLink, match="is too long \\(2001 characters\\)"):
        parse_playlist_ref(" " * (2001 - len(PID)) + PID)


def test_messages_quote_at_most_sixty_characters():
    exact = "a" * QUOTE_CHARS
    with pytest.raises(InvalidPlaylistLink) as caught:
        parse_playlist_ref(exact)
    assert str(caught.value).startswith(f'"{exact}" is not a playlist id')
    with pytest.raises(InvalidPlaylistLink) as caught:
        parse_playlist_ref(exact + "a")
    assert str(caught.value).startswith(f'"{"a" * (QUOTE_CHARS - 1)}…" is not a playlist id')


async def test_a_page_cut_inside_a_character_is_still_read(links):
    """The 64 KiB cut can split a UTF-8 character; the broken end is replaced, not fatal. Kills
    ``decode("utf-8", errors="replace")`` → ``decode("utf-8")`` (a UnicodeDecodeError escaped
    as something other than a link error)."""
    with pytest.raises(UnicodeDecodeError):  # the page's first PAGE_CAP bytes do cut one
        _cut_mid_character("x").encode()[:PAGE_CAP].decode()
    assert await resolve_short_link(links.url("/cut-mid-character"), allowed_hosts=LOCAL) == PID


async def test_the_last_allowed_hop_to_another_page_names_the_link_and_where_it_led(links):
    """One hop allowed, and its Location is a page that is not a playlist: the message quotes
    both the link given and that page. Kills the URL and the quoted link set to None in the
    check after the walk."""
    message = await resolve_error(links.url("/unknown-kind"), max_hops=1)
    assert message == (
        f'The short link "{links.url("/unknown-kind")}" leads to '
        f'"https://open.spotify.com/concert/{PID}", not to a Spotify playlist.'
    )
    assert links.hits == ["/unknown-kind"]
