"""The one place the application is put together from its settings (python-discord's
``bot/__main__.py`` habit): storage → runners → queue → services. The Discord bot
(:func:`bot.client.build_bot`) and the command line (``python -m bot cover``) both start here,
so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.app.accounts import SpotifyAccounts
from bot.app.cover import CoverService
from bot.app.runners import build_runners
from bot.app.settings import Settings
from bot.app.storage import Storage
from bot.app.votes import VoteService
from models.jobs import Runner
from models.queue import GenerationQueue


@dataclass(frozen=True)
class App:
    """The application's parts, built once per process. The queue is not started yet (the bot
    starts it in its setup hook, the CLI with ``async with``); :meth:`close` releases the rest."""

    settings: Settings
    storage: Storage
    queue: GenerationQueue
    service: CoverService
    votes: VoteService
    accounts: SpotifyAccounts | None
    release: Callable[[], None]  # stops the runners' Ray actors, if any

    def close(self) -> None:
        """Release the runners and close the database (after the queue has closed)."""
        try:
            self.release()
        finally:
            self.storage.close()


def build_app(
    settings: Settings,
    *,
    runner: Runner | Sequence[Runner] | None = None,
    linked_accounts: bool = True,
) -> App:
    """Every part of the application, wired as ``settings`` say.

    1. storage: the SQLite file (``COVER_DB_PATH``) or PostgreSQL (``COVER_DB_URL``), migrated;
    2. runners: diffusers on every local device (``COVER_DEVICES``) and on Ray workers
       (``COVER_RAY_ADDRESS``) – or ``runner`` (tests pass their own);
    3. the queue that feeds them, with the settings' limits;
    4. services: people's linked Spotify accounts (``linked_accounts``: the bot; the command
       line has nobody to link), the cover service, the vote rules.
    """
    storage = Storage(settings.storage_target(), busy_timeout_s=settings.db_busy_timeout_s)
    try:
        if runner is None:
            runner, release = build_runners(settings)
        else:
            release = _nothing
        queue = GenerationQueue(
            runner,
            max_pending=settings.queue_max_pending,
            max_per_user=settings.queue_max_per_user,
            max_batch=settings.queue_max_batch,
            job_timeout_s=settings.job_timeout_s,
        )
    except BaseException:
        storage.close()
        raise
    accounts = SpotifyAccounts(settings, storage) if linked_accounts else None
    service = CoverService(settings, queue, storage, accounts=accounts)
    votes = VoteService(
        storage,
        close_after_s=settings.vote_close_after_s,
        accounts=accounts,
        shards=settings.shards(),
    )
    return App(settings, storage, queue, service, votes, accounts, release)


def _nothing() -> None:
    """What releasing runners the caller brought takes: nothing (they are the caller's)."""
