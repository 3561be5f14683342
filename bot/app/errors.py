"""The application core's errors: the leaves of :class:`~models.errors.CoverError` that are
about requests, playlists, Spotify, storage and posting. Each ``str()`` is the sentence the
person is shown (the root and the serving library's leaves: :mod:`models.errors`).

    CoverError                  (models.errors)
    ├── MissingSetting          a required environment variable is unset
    ├── InvalidOption           a request option out of range (also a ValueError)
    ├── InvalidPlaylistLink     not a Spotify playlist link, URI or id
    ├── SnapshotError           a playlist snapshot file is missing or malformed
    ├── CooldownActive          this user's last request was too recent; carries retry_after
    ├── SpotifyError            Spotify said no or did not answer
    │   ├── PlaylistNotFound    404: missing, private, or deleted
    │   ├── EditorialPlaylist   Spotify-owned playlists are closed to third-party apps
    │   ├── SpotifyRateLimited  429 for longer than we wait; carries retry_after
    │   ├── SpotifyAuthError    the client credentials were refused
    │   ├── SpotifyUnavailable  5xx, timeouts, connection errors
    │   ├── LinkFailed          the OAuth callback refused: bad/used/expired state, declined…
    │   ├── NotLinked           no linked account, or its link no longer works (relink)
    │   └── UploadRefused       a cover upload refused: not the owner, missing scope, bad image
    │       └── AppInDevelopmentMode  403: the app's development mode does not list the person
    ├── StartImageRefused       look:current/attachment: no cover, too large, not an image
    ├── AllCandidatesBlocked    every image came out black (safety checker)
    ├── LinkingDisabled         account linking is not set up on this bot
    ├── NotRequester            only the requester may apply the winning cover
    ├── OutputFailed            images made, but not saved: disk, folder, database
    ├── FilesGone               a control on covers whose files are gone
    ├── NotAllowed              a control only the requester (or a manager) may use
    ├── StorageUnavailable      the database file can't be opened or used right now
    └── CannotPost              Discord refused the bot's post: permissions, channel gone
        └── TooLargeToPost      even the smallest files are over the server's upload limit
"""

from __future__ import annotations

from models.errors import CoverError


class MissingSetting(CoverError):
    def __init__(self, variable: str, purpose: str) -> None:
        super().__init__(
            f"{variable} is not set; it is needed {purpose} (environment or .env file)."
        )
        self.variable = variable


class InvalidOption(CoverError, ValueError):
    """A request option out of range; the message names the option and the value."""


class InvalidPlaylistLink(CoverError):
    """Raised with a message that says what was wrong with the text, e.g. an album link."""


class SnapshotError(CoverError):
    pass


class SpotifyError(CoverError):
    pass


class PlaylistNotFound(SpotifyError):
    def __init__(self, playlist_id: str) -> None:
        super().__init__(
            f"Spotify has no playlist {playlist_id} that this app may read: "
            "it is missing, deleted or private."
        )
        self.playlist_id = playlist_id


class EditorialPlaylist(SpotifyError):
    def __init__(self, playlist_id: str) -> None:
        super().__init__(
            f"Playlist {playlist_id} is made by Spotify; Spotify closed its own editorial and "
            "algorithmic playlists to third-party apps, so it can't be read."
        )
        self.playlist_id = playlist_id


class SpotifyRateLimited(SpotifyError):
    def __init__(self, retry_after: float) -> None:
        wait = max(1, round(retry_after))
        super().__init__(f"Spotify is rate-limiting this bot; try again in {wait} s.")
        self.retry_after = retry_after


class SpotifyAuthError(SpotifyError):
    pass


class SpotifyUnavailable(SpotifyError):
    pass


class AllCandidatesBlocked(CoverError):
    def __init__(self, count: int, retries: int) -> None:
        tries = (
            f", also after {retries} retr{'y' if retries == 1 else 'ies'} with new seeds"
            if retries
            else ""
        )
        super().__init__(
            f"The model's safety checker blacked out every candidate ({count}){tries}, so "
            "there is nothing to show; try another prompt style or model."
        )
        self.count = count


class CooldownActive(CoverError):
    def __init__(self, retry_after: float) -> None:
        wait = max(1, round(retry_after))
        super().__init__(f"You asked for covers a moment ago; try again in {wait} s.")
        self.retry_after = retry_after


# -- a person's own Spotify account (bot.app.accounts) ----------------------------------------------


class LinkingDisabled(CoverError):
    """The operator has not set up account linking (no encryption key, no client id), or the
    callback server could not start; the message says which."""


class LinkFailed(SpotifyError):
    """The OAuth callback could not link an account: a forged, used or expired ``state``, the
    person declined, Spotify refused the code, or fewer permissions were granted than needed."""


class NotLinked(SpotifyError):
    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message or "You have not linked a Spotify account; link one with /spotify link."
        )


class NotRequester(CoverError):
    def __init__(self) -> None:
        super().__init__(
            "Only the person who asked for these covers can apply the winner to Spotify."
        )


class UploadRefused(SpotifyError):
    """Spotify (or our own check before it) refused a cover upload; the message says why."""


class AppInDevelopmentMode(UploadRefused):
    """Spotify answered 403 "user not registered": the bot's Spotify app is in Development Mode
    and its owner has not listed this person (docs/spotify.md, "Development Mode")."""

    def __init__(self) -> None:
        super().__init__(
            "Spotify refused the upload because the bot's Spotify app is in Development Mode "
            "and your Spotify account is not one of the (at most 5) accounts its owner added."
        )


class StartImageRefused(CoverError):
    """The picture a cover should start from (the playlist's current cover, an attachment, a
    file) is missing, too large, or not an image; the message says which (bot/app/look.py)."""


class OutputFailed(CoverError):
    """The images were generated but could not be kept: a full disk, an output folder that
    can't be written, a storage error. The request is marked failed (never left queued)."""


class FilesGone(CoverError):
    """A control pressed on covers whose files the bot no longer has (cleaned up, moved)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"The files of these covers are gone from the bot ({name} is missing); ask for new "
            "ones with /cover."
        )


class NotAllowed(CoverError):
    """A control only the requester (or, for Delete, a server manager) may use."""


class StorageUnavailable(CoverError):
    """The database file can't be opened or migrated: corrupt, unwritable, not a database."""


class CannotPost(CoverError):
    """Discord refused the bot's post in a channel (permissions taken away, channel deleted);
    the covers were made and stay on the bot's disk."""

    def __init__(self, channel_id: int, why: str) -> None:
        super().__init__(
            f"The covers were made, but I can't post them in <#{channel_id}>: {why}. "
            "A server admin can give me View Channel, Send Messages, Attach Files, "
            "Add Reactions and Read Message History there."
        )
        self.channel_id = channel_id


class TooLargeToPost(CannotPost):
    """Discord refused even the smallest files the bot had as over the server's upload limit
    (413); the covers were made and stay on the bot's disk."""

    def __init__(self, channel_id: int) -> None:
        CoverError.__init__(
            self,
            f"The covers were made, but even their smallest files are over this server's "
            f"upload limit, so I can't post them in <#{channel_id}>. Boosting the server "
            "raises the limit.",
        )
        self.channel_id = channel_id
