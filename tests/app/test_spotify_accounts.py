"""bot.app.accounts and bot.app.spotify (a person's token): linking and using a person's own Spotify account, against
the local fake Spotify (real HTTP) with a real SQLite file. No Discord here: the end-to-end
tests through the bot and its callback server are in test_spotify_link.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from cryptography.fernet import Fernet
from PIL import Image

from bot.app.accounts import SpotifyAccounts, TokenVault
from bot.app.errors import LinkFailed, LinkingDisabled, NotLinked, UploadRefused
from bot.app.settings import Settings
from bot.app.spotify import SpotifyUserClient
from bot.app.spotify_oauth import SCOPES, authorize_url, challenge_for, new_state, new_verifier
from bot.app.storage import Storage
from models.postprocess import SPOTIFY_JPEG_MAX_BYTES
from tests.fakes.spotify import (
    CLIENT_ID,
    CLIENT_SECRET,
    COVER_PAYLOAD_CUTOFF,
    FakeSpotify,
    make_artist,
    make_item,
    make_playlist,
)

REDIRECT = "http://127.0.0.1:8888/spotify/callback"  # nothing listens: the tests read Location


class Clock:
    """A settable UTC clock for the accounts (state and token expiry)."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment


def settings_for(server: FakeSpotify, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "spotify_client_id": CLIENT_ID,
        "spotify_client_secret": CLIENT_SECRET,
        "spotify_api_base": server.api_base,
        "spotify_token_url": server.token_url,
        "spotify_authorize_url": server.base_url + "/authorize",
        "spotify_redirect_uri": REDIRECT,
        "token_key": Fernet.generate_key().decode(),
        "db_path": tmp_path / "bot.db",
        "spotify_max_wait_s": 2.0,
    }
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
def spotify(fake_spotify: FakeSpotify) -> FakeSpotify:
    fake_spotify.register_redirect_uri(REDIRECT)
    return fake_spotify


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def accounts(spotify: FakeSpotify, tmp_path: Path, clock: Clock):
    settings = settings_for(spotify, tmp_path)
    with Storage(settings.db_path) as storage:
        service = SpotifyAccounts(settings, storage, now=clock)
        yield service
        await service.close()


async def consent(url: str) -> dict[str, str]:
    """Play the person's browser on Spotify's page: the query it is redirected back with."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, allow_redirects=False) as response,
    ):
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def link(accounts: SpotifyAccounts, user: str = "1001"):
    url, _ = accounts.start_link(user)
    back = await consent(url)
    return await accounts.complete_link(
        state=back.get("state"), code=back.get("code"), error=back.get("error")
    )


def add_owned_playlist(server: FakeSpotify, owner: str = "fakeowner") -> dict:
    artist = make_artist("Lumen Harbor", ["dream pop"])
    server.add_artist(artist)
    playlist = make_playlist("mine", owner=owner)
    items = [make_item("Song A", artist), make_item("Song B", artist)]
    server.add_playlist(playlist, items)  # the app alone gets metadata only (development mode)
    return playlist


def user_grants(server: FakeSpotify, grant_type: str) -> list[dict[str, str]]:
    return [r for r in server.token_requests if r["grant_type"] == grant_type]


# -- PKCE ------------------------------------------------------------------------------------


def test_challenge_is_rfc7636s_s256_example() -> None:
    # RFC 7636, Appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert challenge_for(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    with pytest.raises(ValueError, match="43 to 128"):
        challenge_for("too-short")


def test_verifiers_and_states_are_long_random_and_url_safe() -> None:
    verifiers = {new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for verifier in verifiers:
        assert 43 <= len(verifier) <= 128
        assert set(verifier) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    assert len(new_state()) >= 43 and new_state() != new_state()


def test_authorize_url_asks_for_exactly_the_scopes(spotify: FakeSpotify, tmp_path: Path) -> None:
    settings = settings_for(spotify, tmp_path)
    url = authorize_url(settings, client_id=CLIENT_ID, state="s", challenge="c" * 43)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": " ".join(SCOPES),
        "state": "s",
        "code_challenge_method": "S256",
        "code_challenge": "c" * 43,
    }
    assert set(SCOPES) == {
        "playlist-read-private",
        "playlist-read-collaborative",
        "ugc-image-upload",
        "playlist-modify-public",
        "playlist-modify-private",
    }


# -- linking ---------------------------------------------------------------------------------


async def test_link_exchanges_the_code_with_the_verifier_not_the_secret(accounts, spotify):
    account = await link(accounts, "1001")
    assert (account.discord_user_id, account.spotify_user_id) == ("1001", "fakeowner")
    assert account.display_name == "Fake Owner" and account.can_upload
    [exchange] = user_grants(spotify, "authorization_code")
    # The fake checked sha256(verifier) against the challenge of the /authorize request.
    [asked] = spotify.authorizations
    assert challenge_for(exchange["code_verifier"]) == asked["code_challenge"]
    assert exchange["redirect_uri"] == REDIRECT and exchange["client_id"] == CLIENT_ID
    assert CLIENT_SECRET not in str(exchange)
    assert accounts.account("1001") == account


async def test_a_state_works_once_and_only_for_its_user(accounts, spotify):
    url, _ = accounts.start_link("1001")
    back = await consent(url)
    await accounts.complete_link(state=back["state"], code=back["code"], error=None)
    with pytest.raises(LinkFailed, match="not valid or was already used"):
        await accounts.complete_link(state=back["state"], code=back["code"], error=None)
    with pytest.raises(LinkFailed, match="not valid or was already used"):
        await accounts.complete_link(state=new_state(), code=back["code"], error=None)
    with pytest.raises(LinkFailed, match="only works as Spotify's redirect"):
        await accounts.complete_link(state=None, code=back["code"], error=None)
    assert len(user_grants(spotify, "authorization_code")) == 1  # the refusals cost no request


async def test_a_newer_link_replaces_the_pending_one(accounts):
    first, _ = accounts.start_link("1001")
    second, _ = accounts.start_link("1001")
    old = await consent(first)
    with pytest.raises(LinkFailed, match="not valid or was already used"):
        await accounts.complete_link(state=old["state"], code=old["code"], error=None)
    new = await consent(second)
    await accounts.complete_link(state=new["state"], code=new["code"], error=None)


async def test_an_expired_state_is_refused(accounts, spotify, clock):
    url, expires_at = accounts.start_link("1001")
    assert expires_at == clock.moment + timedelta(minutes=10)
    back = await consent(url)
    clock.moment += timedelta(minutes=10, seconds=1)
    with pytest.raises(LinkFailed, match="expired"):
        await accounts.complete_link(state=back["state"], code=back["code"], error=None)
    assert user_grants(spotify, "authorization_code") == []
    assert accounts.account("1001") is None


async def test_declining_on_spotify_links_nothing(accounts, spotify):
    spotify.consent = False
    url, _ = accounts.start_link("1001")
    back = await consent(url)
    assert back["error"] == "access_denied"
    with pytest.raises(LinkFailed, match=r"not allowed \(access_denied\)"):
        await accounts.complete_link(state=back["state"], code=None, error=back["error"])
    assert accounts.account("1001") is None


async def test_a_code_spotify_refuses(accounts, spotify):
    url, _ = accounts.start_link("1001")
    back = await consent(url)
    with pytest.raises(LinkFailed, match=r"refused the authorisation \(invalid_grant\)"):
        await accounts.complete_link(state=back["state"], code="forged-code", error=None)


async def test_fewer_scopes_than_needed(accounts, spotify):
    spotify.granted_scopes = {"playlist-read-private", "playlist-read-collaborative"}
    with pytest.raises(LinkFailed, match="missing playlist-modify-private, playlist-modify-public"):
        await link(accounts)
    assert accounts.account("1001") is None


async def test_linking_is_off_without_a_key(spotify, tmp_path):
    settings = settings_for(spotify, tmp_path, token_key=None)
    with Storage(settings.db_path) as storage:
        accounts = SpotifyAccounts(settings, storage)
        assert not accounts.enabled
        with pytest.raises(LinkingDisabled, match="COVER_TOKEN_KEY") as caught:
            accounts.start_link("1001")
        assert "Fernet.generate_key()" in str(caught.value)
        await accounts.close()


def test_a_malformed_key_is_named_but_never_shown(spotify, tmp_path):
    key = "this-is-not-a-fernet-key-but-a-secret"
    settings = settings_for(spotify, tmp_path, token_key=key)
    with Storage(settings.db_path) as storage:
        accounts = SpotifyAccounts(settings, storage)
    assert not accounts.enabled
    assert "COVER_TOKEN_KEY is not a Fernet key" in accounts.disabled_reason
    assert key not in accounts.disabled_reason
    assert key not in repr(settings)
    vault = TokenVault(settings_for(spotify, tmp_path).token_key)
    assert repr(vault) == "TokenVault(…)"


# -- tokens at rest and their refresh --------------------------------------------------------


async def test_tokens_and_verifiers_are_encrypted_at_rest(accounts, spotify, tmp_path):
    url, _ = accounts.start_link("1002")  # one pending link stays in the file
    await link(accounts, "1001")
    verifiers = [r["code_verifier"] for r in user_grants(spotify, "authorization_code")]
    secrets = [*spotify.user_tokens(), *verifiers]
    state = parse_qs(urlsplit(url).query)["state"][0]
    files = [p for p in tmp_path.iterdir() if p.name.startswith("bot.db")]
    raw = b"".join(p.read_bytes() for p in files)
    assert raw and len(secrets) == 3
    for secret in [*secrets, state]:
        assert secret.encode() not in raw
    # They are there, encrypted: the key opens them.
    row = accounts.storage.spotify_account("1001")
    opened = Fernet(accounts.settings.token_key.get_secret_value()).decrypt(row.tokens)
    assert spotify.user_tokens()[0].encode() in opened


async def test_an_expired_access_token_is_refreshed_before_use(accounts, spotify, clock):
    playlist = add_owned_playlist(spotify)
    await link(accounts)
    clock.moment += timedelta(hours=1)  # past the token's hour
    items = await accounts.read_items("1001", playlist)
    assert [it["item"]["name"] for it in items] == ["Song A", "Song B"]
    [refresh] = user_grants(spotify, "refresh_token")
    assert refresh["client_id"] == CLIENT_ID and CLIENT_SECRET not in str(refresh)
    # Spotify rotated the refresh token; the new one was stored, so a second refresh works.
    clock.moment += timedelta(hours=1)
    assert await accounts.read_items("1001", playlist) is not None
    assert len(user_grants(spotify, "refresh_token")) == 2
    assert accounts.storage.spotify_account("1001").refreshed_at is not None


async def test_a_rejected_access_token_is_refreshed_once(accounts, spotify):
    playlist = add_owned_playlist(spotify)
    await link(accounts)
    spotify.expire_user_tokens()  # Spotify says expired although our clock says not yet
    assert await accounts.read_items("1001", playlist) is not None
    assert len(user_grants(spotify, "refresh_token")) == 1
    item_calls = spotify.requests_to(f"/v1/playlists/{playlist['id']}/items")
    assert len(item_calls) == 2  # the 401, then the retry with the new token


async def test_concurrent_uses_share_one_refresh(accounts, spotify, clock):
    playlist = add_owned_playlist(spotify)
    await link(accounts)
    clock.moment += timedelta(hours=2)
    results = await asyncio.gather(*(accounts.read_items("1001", playlist) for _ in range(4)))
    assert all(r is not None for r in results)
    # A second refresh with the spent (rotated) token would have failed and dropped the link.
    assert len(user_grants(spotify, "refresh_token")) == 1


async def test_a_revoked_link_is_dropped_and_the_person_asked_to_link_again(
    accounts, spotify, clock, caplog
):
    playlist = add_owned_playlist(spotify)
    await link(accounts)
    spotify.revoke_user_tokens()
    clock.moment += timedelta(hours=2)
    with caplog.at_level(logging.WARNING):
        assert await accounts.read_items("1001", playlist) is None  # a bonus: /cover goes on
    assert "link it again with /spotify link" in caplog.text
    assert accounts.account("1001") is None


async def test_a_new_key_makes_old_links_unreadable(accounts, spotify, tmp_path):
    await link(accounts)
    other = SpotifyAccounts(
        settings_for(spotify, tmp_path, token_key=Fernet.generate_key().decode()),
        accounts.storage,
    )
    with pytest.raises(NotLinked, match="encryption key changed"):
        await other._fresh_token("1001")
    assert accounts.account("1001") is None
    await other.close()


# -- reading and uploading with the person's token ---------------------------------------------


async def test_items_only_for_a_playlist_the_person_owns(accounts, spotify):
    await link(accounts)
    someone_elses = add_owned_playlist(spotify, owner="someone-else")
    assert await accounts.read_items("1001", someone_elses) is None
    assert spotify.requests_to(f"/v1/playlists/{someone_elses['id']}/items") == []
    assert await accounts.read_items("9999", add_owned_playlist(spotify)) is None  # not linked


def jpeg_bytes(size: int = 64) -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 90)).save(data, format="JPEG")
    return data.getvalue()


async def test_upload_checks_the_image_before_sending(spotify, tmp_path):
    client = SpotifyUserClient(settings_for(spotify, tmp_path))
    with pytest.raises(UploadRefused, match="not a JPEG"):
        await client.upload_cover("token", "pl", b"\x89PNG\r\n")
    too_big = jpeg_bytes() + bytes(200 * 1024)  # base64 of this exceeds 256 KB
    with pytest.raises(UploadRefused, match="at most 250,000"):
        await client.upload_cover("token", "pl", too_big)
    assert spotify.requests == []
    await client.close()


async def test_upload_sends_base64_jpeg(accounts, spotify):
    playlist = add_owned_playlist(spotify)
    await link(accounts)
    token = await accounts._fresh_token("1001")
    jpeg = jpeg_bytes()
    await accounts.client.upload_cover(token, playlist["id"], jpeg)
    [upload] = spotify.uploads
    assert upload.jpeg == jpeg and upload.content_type == "image/jpeg"
    assert upload.payload_bytes == len(base64.b64encode(jpeg))
    with pytest.raises(UploadRefused, match="HTTP 403"):
        await accounts.client.upload_cover(token, add_owned_playlist(spotify, "x")["id"], jpeg)


async def test_the_largest_cover_we_make_is_accepted(accounts, spotify):
    """Issue 38: our JPEGs were sized to 256 KiB of base64, above what Spotify was seen to
    refuse (a 191 KB JPEG, spotipy #633); the fake now refuses at Spotify's figure."""
    playlist = add_owned_playlist(spotify)
    await link(accounts)
    token = await accounts._fresh_token("1001")
    small = jpeg_bytes()
    # The biggest JPEG encode_jpeg_under may make: padding after the image's end is ignored.
    largest = small + bytes(SPOTIFY_JPEG_MAX_BYTES - len(small))
    await accounts.client.upload_cover(token, playlist["id"], largest)
    [upload] = spotify.uploads
    assert upload.payload_bytes <= COVER_PAYLOAD_CUTOFF


async def test_an_unregistered_user_is_told_what_the_operator_can_do(accounts, spotify):
    """Issue 38: /me answers 403 to a user a development-mode app does not list; linking again
    will not help, so the message must not say to."""
    spotify.registered_users = {"the-app-owner"}
    with pytest.raises(LinkFailed) as refused:
        await link(accounts)
    message = str(refused.value)
    assert "development mode" in message and "User Management" in message
    assert "will not help" in message and "operator" in message
    assert accounts.account("1001") is None


async def test_the_link_keeps_spotifys_account_id(accounts, spotify):
    """Issue 38: Spotify's description says to link by `account_id` (immutable), not `id`; a row
    linked before we stored it falls back to the user id."""
    account = await link(accounts)
    assert account.account_id == spotify.account.account_id != spotify.account.id
    assert account.spotify_user_id == spotify.account.id  # what playlist owners are compared with
    with accounts.storage._transaction() as db:
        db.execute("UPDATE spotify_accounts SET spotify_account_id = NULL")
    assert accounts.account("1001").account_id == spotify.account.id
