"""Linking a person's Spotify account: the scopes we ask for, PKCE (RFC 7636) and the token grant.

Pure: no I/O. PKCE rather than the secret-based code flow: the token requests carry the client
id and the verifier, never the client secret, so a leaked code is useless without the verifier
only the bot holds. The requests themselves are :class:`bot.app.spotify.SpotifyUserClient`'s.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from bot.app.settings import Settings

# What linking asks for, and why (docs/spotify.md, "Linking your own Spotify account"):
#   playlist-read-private, playlist-read-collaborative  – read the items of your own playlists
#   ugc-image-upload + playlist-modify-public/-private  – PUT /playlists/{id}/images needs all
SCOPES = (
    "playlist-read-private",
    "playlist-read-collaborative",
    "ugc-image-upload",
    "playlist-modify-public",
    "playlist-modify-private",
)
UPLOAD_SCOPES = frozenset({"ugc-image-upload", "playlist-modify-public", "playlist-modify-private"})
VERIFIER_BYTES = 64  # → 86 base64url characters; RFC 7636 allows 43-128
# -- PKCE (pure) -------------------------------------------------------------------------------


def new_verifier() -> str:
    """A fresh code verifier: 86 characters of [A-Za-z0-9_-], from 512 random bits."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def challenge_for(verifier: str) -> str:
    """The S256 code challenge: base64url(sha256(verifier)) without padding (RFC 7636 §4.2)."""
    if not 43 <= len(verifier) <= 128:
        raise ValueError(f"verifier must be 43 to 128 characters, got {len(verifier)}")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An unguessable OAuth ``state`` (256 bits)."""
    return secrets.token_urlsafe(32)


def authorize_url(settings: Settings, *, client_id: str, state: str, challenge: str) -> str:
    """Where to send the person's browser to ask for :data:`SCOPES`."""
    query = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": settings.spotify_redirect_uri,
        "scope": " ".join(SCOPES),
        "state": state,
        "code_challenge_method": "S256",
        "code_challenge": challenge,
    }
    return f"{settings.spotify_authorize_url}?{urlencode(query)}"


# -- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenGrant:
    """What the token endpoint answered. The tokens stay out of ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    scopes: frozenset[str]
