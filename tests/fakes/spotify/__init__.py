"""A small local Spotify Web API, for tests that run the real spotipy (or anything else) against it.

It serves what :mod:`bot.app.spotify` reads, shaped like Spotify's answers as of 2026 (see
``docs/facts.md``)::

    POST /api/token                   client credentials (HTTP Basic), 400 invalid_client otherwise;
                                      the app token expires after ``server.app_token_lifetime_s``
                                      (or at once with ``server.expire_app_tokens()``)
    GET  /v1/playlists/{id}           playlist metadata; its ``items`` page (the first items) only
                                      for a token that may read them, else no ``items`` field
    GET  /v1/playlists/{id}/items     paged items ``{"item": track or episode, ...}``, ``limit``
                                      1–50 (default 20), absolute ``next`` URLs; 403 to a token
                                      that may not read them
    GET  /v1/playlists/{id}/images    the playlist's ``images`` (its cover), [] for one without
    GET  /v1/artists/{id}             full artist objects, genres included
    GET  /v1/search?type=playlist     playlists whose name contains ``q`` (case-insensitive), paged
                                      with ``limit`` 1–10, default 5 (Spotify's figures since
                                      2026) and absolute ``next`` URLs; ``server.search_results[q]``
                                      (a list that may hold ``None``, as Spotify's does) overrides
                                      matching

Who may read a playlist's items is decided by the token, as in February 2026's development mode:
a user token of the owner or of one of ``server.collaborators[playlist_id]``. App tokens and
other people get metadata only – unless ``server.extended_quota`` is True (an app Spotify granted
extended quota: every token reads every playlist's items).
    GET  /images/{key}                image bytes stored with ``server.add_image`` (no token, like
                                      Spotify's image CDN), with the content type given there
                                      (so also text, or an image too large), optionally chunked

A person's own account (authorisation code with PKCE, as :mod:`bot.app.spotify` uses it)::

    GET  /authorize                   the login-and-consent page, played by ``server.account``:
                                      302 to the redirect URI with ``code`` and ``state`` (or
                                      ``error=access_denied`` when ``server.consent`` is False);
                                      400 for an unknown client or unregistered redirect URI
    POST /api/token                   ``authorization_code`` (checks the verifier against the
                                      challenge and the redirect URI; a code works once) and
                                      ``refresh_token`` (rotates: the old refresh token dies)
    GET  /v1/me                       the token's user (``account_id`` and ``id``); 403 with
                                      Spotify's development-mode message for a user who is not in
                                      ``server.registered_users`` (when that is not None), as is
                                      every other call with that user's token
    GET  /v1/playlists/{id}/items     also served to a user token of the owner or a collaborator
    PUT  /v1/playlists/{id}/images    base64 JPEG, 413 above ``COVER_PAYLOAD_CUTOFF`` (Spotify's
                                      "256 KB", read as the reported refusals allow; docs/facts.md),
                                      owner's token with ugc-image-upload and playlist-modify-*;
                                      kept in ``server.uploads``; 202

Every answer under ``/v1`` is checked against Spotify's API description
(:mod:`tests.fakes.spotify_schema`); what does not fit is kept in ``server.schema_problems`` and
fails the test when the server stops.

Every ``/v1`` call needs a bearer token that ``/api/token`` handed out (a user's expires after
``server.user_token_lifetime_s``, or at once with ``server.expire_user_tokens()``). Failures are scripted per
path: ``server.script("/v1/playlists/ID", [Reply(429, retry_after=1), 200])`` answers the next
request with a 429 and the one after normally (``200`` or ``PASS`` means "serve normally");
``server.script(path, Reply(500), forever=True)`` fails every request. ``server.requests`` logs
every request as ``(method, path, query)``.

The server runs on 127.0.0.1 at a random port, in a thread with its own event loop, so that both
synchronous clients (spotipy) and async tests can use it. Use the ``fake_spotify`` fixture (import
``fake_spotify_fixture`` into a test module or a conftest), or ``with FakeSpotify() as server:``.

The package's modules: models.py (figures, records, error bodies), server.py
(:class:`FakeSpotify`, its thread, the fixture), routes.py (its request handlers) and
builders.py (``make_*`` test data).
"""

from tests.fakes.spotify.builders import (
    fake_id,
    make_artist,
    make_episode_item,
    make_item,
    make_playlist,
    make_unavailable_item,
)
from tests.fakes.spotify.models import CLIENT_ID, CLIENT_SECRET, COVER_PAYLOAD_CUTOFF, Grant, Reply
from tests.fakes.spotify.server import FakeSpotify, fake_spotify_fixture

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "COVER_PAYLOAD_CUTOFF",
    "FakeSpotify",
    "Grant",
    "Reply",
    "fake_id",
    "fake_spotify_fixture",
    "make_artist",
    "make_episode_item",
    "make_item",
    "make_playlist",
    "make_unavailable_item",
]
