"""The serving library's errors, and the root of the project's one exception tree.

Every error a user may be told about is a :class:`CoverError`, whose ``str()`` is a sentence
fit for them. Each layer keeps its leaves in one module and draws them there: these are
``models``'s; the application core's are in :mod:`bot.app.errors`.

    CoverError                anything a user can be told about in plain words
    ├── ModelUnavailable      a model name or path that cannot be loaded here
    ├── FileRefused           not a regular file, too large, not an image, a decompression bomb
    ├── QueueFull             the generation queue holds its maximum
    ├── PendingLimitReached   this user already has their maximum of jobs waiting
    ├── QueueClosed           the queue is shutting down
    ├── NoWorkers             no device or remote worker is left to generate on
    ├── JobCancelled          the job was cancelled before it finished
    ├── JobTimedOut           the job ran past its time limit
    ├── GenerationFailed      the pipeline raised (including out-of-memory at batch size 1)
    ├── ParametersUnreadable  an image without readable generation parameters (models/parameters.py)
    └── …                     the application core's leaves: bot/app/errors.py

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


class ParametersUnreadable(CoverError):
    """An image without our generation parameters, or with ones we cannot read."""
