"""Property-based tests of link parsing: whatever a person pastes, the parser answers with a
playlist id or our own :class:`InvalidPlaylistLink`, never another exception.

Hosts are drawn on purpose from the forms that broke it: punycode labels (``xn--…``) that IDNA
refuses, Unicode hosts, empty labels and ports, next to Spotify's own hosts.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.app.errors import InvalidPlaylistLink
from bot.app.links import PLAYLIST_ID_LENGTH, is_short_link, parse_playlist_ref
from tests.properties import examples

BASE62 = string.ascii_letters + string.digits

ids = st.text(alphabet=BASE62, min_size=PLAYLIST_ID_LENGTH, max_size=PLAYLIST_ID_LENGTH)
labels = st.one_of(
    st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=0, max_size=12),
    st.text(alphabet=string.ascii_lowercase + string.digits + "-", max_size=8).map(
        lambda tail: "xn--" + tail
    ),
    st.text(min_size=1, max_size=6),  # any Unicode, IDNA may encode it or not
    st.sampled_from(["open", "spotify", "com", "www", "link", "app", "play"]),
)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["open.spotify.com", "spotify.link", "spotify.app.link", "play.spotify.com"]),
)
paths = st.lists(
    st.one_of(
        st.sampled_from(["playlist", "album", "user", "embed", "intl-de", "s", ""]),
        ids,
        st.text(max_size=10),
    ),
    max_size=5,
).map("/".join)
links = st.builds(
    lambda scheme, host, port, path, tail: f"{scheme}{host}{port}/{path}{tail}",
    st.sampled_from(["https://", "http://", "//", "", "ftp://", "spotify:"]),
    hosts,
    st.sampled_from(["", ":443", ":0", ":99999", ":x"]),
    paths,
    st.sampled_from(["", "?si=abc", "#x", "/", ".", ">"]),
)
anything = st.one_of(st.text(max_size=300), links, st.builds(lambda a, b: f"{a} {b}", links, links))


def _answer(text: str) -> str | InvalidPlaylistLink:
    try:
        return parse_playlist_ref(text)
    except InvalidPlaylistLink as error:
        return error


@settings(max_examples=examples(1500), deadline=None)
@given(text=anything)
@example("xn--a.com")
@example("https://xn--ls8h.la/playlist/x")
@example("https://open.xn--spotify-.com/playlist/x")
@example("https://xn--/x")
def test_parse_raises_only_our_error(text: str) -> None:
    answer = _answer(text)
    if isinstance(answer, str):
        assert len(answer) == PLAYLIST_ID_LENGTH and set(answer) <= set(BASE62)
        assert answer in text
    else:
        assert str(answer)  # a sentence for the person, never empty
        assert len(str(answer)) < 400  # huge input is quoted cut down


@settings(max_examples=examples(1500), deadline=None)
@given(text=anything)
@example("xn--a.com")
@example("https://xn--zz.com/s/abc")
def test_is_short_link_never_raises(text: str) -> None:
    assert is_short_link(text) in (True, False)
    assert is_short_link(text, allowed_hosts=frozenset({"xn--a.com", "127.0.0.1"})) in (
        True,
        False,
    )


@settings(max_examples=examples(500), deadline=None)
@given(
    ident=ids,
    form=st.sampled_from(
        [
            "https://open.spotify.com/playlist/{}",
            "open.spotify.com/playlist/{}?si=x",
            "<https://www.open.spotify.com/intl-pt-br/playlist/{}/>",
            "spotify:playlist:{}",
            "spotify:user:someone:playlist:{}",
            "my playlist: https://open.spotify.com/embed/playlist/{}.",
            "{}",
        ]
    ),
)
def test_every_accepted_form_gives_back_its_id(ident: str, form: str) -> None:
    assert parse_playlist_ref(form.format(ident)) == ident


@pytest.mark.parametrize(
    "text", ["xn--a.com", "https://xn--zz.com/playlist/x", "https://open.xn--spotify-.com/p"]
)
def test_idna_hosts_are_refused_by_name(text: str) -> None:
    with pytest.raises(InvalidPlaylistLink, match=r"is not a Spotify link: its host is \S*xn--"):
        parse_playlist_ref(text)
    assert is_short_link(text) is False
