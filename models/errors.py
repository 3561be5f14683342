"""The one exception tree of the project. Its leaves' ``str()`` is a sentence fit for a user.

    CoverError                      anything a user can be told about in plain words
    ├── MissingSetting              (bot.app.errors) a required environment variable is unset
    ├── InvalidOption               (bot.app.errors) a request option out of range (also a ValueError)
    ├── InvalidPlaylistLink         (bot.app.errors) not a Spotify playlist link, URI or id
    ├── CooldownActive              (bot.app.errors) this user's last request was too recent
    ├── SpotifyError                (bot.app.errors) Spotify said no or did not answer
    │   ├── PlaylistNotFound        404: missing, private, or deleted
    │   ├── EditorialPlaylist       Spotify-owned playlists are closed to third-party apps
    │   ├── SpotifyRateLimited      429 for longer than we wait; carries retry_after
    │   ├── SpotifyAuthError        the client credentials were refused
    │   ├── SpotifyUnavailable      5xx, timeouts, connection errors
    │   ├── LinkFailed              the OAuth callback refused: bad/used/expired state, declined…
    │   ├── NotLinked               no linked account, or its link no longer works (relink)
    │   └── UploadRefused           a cover upload refused: not the owner, missing scope, bad image
    ├── LinkingDisabled             (bot.app.errors) account linking is not set up on this bot
    ├── NotRequester                (bot.app.errors) only the requester may apply the winning cover
    ├── SnapshotError               (bot.app.errors) a playlist snapshot file is missing or malformed
    ├── OutputFailed                (bot.app.errors) images made, but not saved: disk, folder, database
    ├── FilesGone                   (bot.app.errors) a control on covers whose files are gone
    ├── NotAllowed                  (bot.app.errors) a control only the requester (or a manager) may use
    ├── ParametersUnreadable        (models.parameters) an image without readable generation parameters
    ├── FileRefused                 (models.safe_files) not a regular file, too large, not an image, a bomb
    ├── StorageUnavailable          (bot.app.errors) the database file can't be opened or migrated
    ├── ModelUnavailable            a model name or path that cannot be loaded here
    ├── QueueFull                   the generation queue holds its maximum
    ├── PendingLimitReached         this user already has their maximum of jobs waiting
    ├── QueueClosed                 the queue is shutting down
    ├── NoWorkers                   no device or remote worker is left to generate on
    ├── JobCancelled                the job was cancelled before it finished
    ├── JobTimedOut                 the job ran past its time limit
    ├── AllCandidatesBlocked        (bot.app.errors) every image came out black (safety checker)
    └── GenerationFailed            the pipeline raised (including out-of-memory at batch size 1)

Callers catch :class:`CoverError` at exactly one place (the CLI's ``main``, the bot's error
handler) and show ``str(error)``; anything else is a bug, logged with its traceback.
"""

from __future__ import annotations


class CoverError(Exception):
    """Base of every error whose message is meant for the person who asked."""


class ModelUnavailable(CoverError):
    pass


class FileRefused(CoverError):
    """A file a person or a stored row named that is not read: not a regular file, too large,
    not an image, or an image declaring more pixels than we decode (models/safe_files.py)."""


class QueueFull(CoverError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The generation queue is full ({limit} jobs waiting); try again in a few minutes."
        )
        self.limit = limit


class PendingLimitReached(CoverError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} cover job{'s' if limit != 1 else ''} waiting; "
            "wait for one to finish before asking for another."
        )
        self.limit = limit


class QueueClosed(CoverError):
    def __init__(self) -> None:
        super().__init__("The generator is shutting down; try again once it is back.")


class NoWorkers(CoverError):
    def __init__(self, detail: str = "every worker has stopped") -> None:
        super().__init__(
            f"No generator is available right now ({detail}); try again once the bot's "
            "operator has brought one back."
        )
        self.detail = detail


class JobCancelled(CoverError):
    def __init__(self) -> None:
        super().__init__("The cover job was cancelled.")


class JobTimedOut(CoverError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"The cover job took longer than {seconds:g} s and was stopped.")
        self.seconds = seconds


class GenerationFailed(CoverError):
    pass
