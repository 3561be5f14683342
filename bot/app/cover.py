"""The main job, shared by the CLI and the Discord bot: playlist in, candidate covers out.

    playlist text → PlaylistFacts → prompts → GenerationJob → queue → images → files + rows

:class:`CoverService` owns none of the heavy parts; it is handed the queue, the storage and the
settings, so the CLI (one job, then exit) and the bot (a long-lived queue shared by everyone)
drive it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot.app.community import community_model
from bot.app.cover_jobs import generation_job, generation_params
from bot.app.errors import (
    AllCandidatesBlocked,
    CooldownActive,
    FilesGone,
    InvalidOption,
    OutputFailed,
)
from bot.app.files import CoverResult, manifest_label, slugify, write_candidates, write_manifest
from bot.app.links import resolve_playlist_ref
from bot.app.look import read_start, start_picture
from bot.app.playlist import PlaylistFacts, load_snapshot
from bot.app.prompts import Prompt, build_prompts
from bot.app.records import CandidateRecord, RequestRecord, StoredParams
from bot.app.remix import written_prompts
from bot.app.request import CoverRequest, people_model
from bot.app.server_rules import admit, keeps_flagged
from bot.app.settings import Settings
from bot.app.storage import Storage
from models.errors import CoverError, FileRefused, QueueClosed
from models.jobs import GeneratedImage, GenerationJob, ImageSpec, JobResult
from models.parameters import read_png_parameters
from models.queue import GenerationQueue, JobHandle, QueueEvent
from models.registry import ModelSpec, list_models, resolve_model
from models.safe_files import read_bytes

if TYPE_CHECKING:
    from bot.app.accounts import SpotifyAccounts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Plan:
    """What one cover is made of once every check passed: the facts, the model, the prompts and
    the queue job. :meth:`CoverService.start` builds it from a request, :meth:`CoverService.resume`
    from a stored row; from there both take the same path."""

    request: CoverRequest
    facts: PlaylistFacts
    model: ModelSpec
    prompts: tuple[Prompt, ...]
    job: GenerationJob
    read_s: float


@dataclass(frozen=True)
class Resumption:
    """A request a restart interrupted, as :meth:`CoverService.resume_unfinished` left it:
    queued again (``job``), or recorded as failed with the reason (``error``; ``gave_up``:
    restarts kept interrupting it)."""

    record: RequestRecord
    job: CoverJob | None = None
    error: str | None = None
    gave_up: bool = False


class CoverJob:
    """One accepted cover request, queued. ``events()`` follows it through the queue (the
    queue's :class:`~models.queue.QueueEvent`); ``result()`` waits for it, writes the files and
    rows and returns the :class:`CoverResult` – once, however often it is awaited."""

    def __init__(
        self, service: CoverService, plan: _Plan, request_id: str, handle: JobHandle
    ) -> None:
        self._service = service
        self._plan = plan
        self._handle = handle
        self._result: asyncio.Task[CoverResult] | None = None
        self.request_id = request_id

    @property
    def request(self) -> CoverRequest:
        return self._plan.request

    @property
    def facts(self) -> PlaylistFacts:
        return self._plan.facts

    @property
    def model(self) -> ModelSpec:
        return self._plan.model

    @property
    def prompts(self) -> tuple[Prompt, ...]:
        return self._plan.prompts

    @property
    def id(self) -> str:
        """The queue job's id (log lines use its first characters)."""
        return self._handle.id

    def events(self) -> AsyncIterator[QueueEvent]:
        return self._handle.events()

    async def result(self, out_root: Path | None = None) -> CoverResult:
        """The kept covers. Raises what generation raised (the request is then recorded as
        failed), :class:`AllCandidatesBlocked`, :class:`OutputFailed`, or ``QueueClosed`` when
        the bot is shutting down (the request stays queued; the next start resumes it)."""
        if self._result is None:
            self._result = asyncio.ensure_future(
                self._service._finish(self._plan, self.request_id, self._handle, out_root)
            )
        return await asyncio.shield(self._result)


def looks_like_snapshot(text: str) -> bool:
    """A path to a JSON file, rather than a Spotify link/URI/id."""
    text = text.strip()
    return text.lower().endswith(".json") or Path(text).is_file()


class CoverService:
    """Runs cover requests through the shared queue and keeps their results.

    ``spotify`` is a factory so that snapshot files work with no Spotify credentials at all:
    the reader (and its credential check) is only built when a link is given. ``accounts``
    (the bot's linked Spotify accounts) lets a person's own playlists be read in full.
    """

    def __init__(
        self,
        settings: Settings,
        queue: GenerationQueue,
        storage: Storage,
        *,
        spotify: Callable[[], object] | None = None,
        accounts: SpotifyAccounts | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.storage = storage
        self.accounts = accounts
        self._spotify_factory = spotify
        self._spotify = None
        self._starting: set[tuple[str, str]] = set()  # (source, user) inside start() now

    # 1. playlist text → facts
    async def read_playlist(
        self, text: str, *, allow_files: bool = True, user_id: str | None = None
    ) -> PlaylistFacts:
        """``allow_files=False`` for people on Discord: their text must never name a file on
        the bot's machine, so it is parsed as a Spotify link whatever it looks like.

        Since 2026 the app reads only the metadata of most playlists. When ``user_id`` has a
        linked Spotify account that owns the playlist, its items are read with that account
        and their artists' genres added, so prompts can use them.
        """
        if allow_files and looks_like_snapshot(text):
            return await asyncio.to_thread(load_snapshot, text.strip())
        playlist_id = await resolve_playlist_ref(text)
        reader = self._spotify_reader()
        facts = await reader.aread_playlist(playlist_id)
        if not facts.items_readable and user_id is not None and self.accounts is not None:
            items = await self.accounts.read_items(user_id, facts.raw)
            if items is not None:
                facts = await asyncio.to_thread(reader.add_items, facts.raw, items)
        if facts.raw:
            self.storage.save_snapshot(dict(facts.raw))
        return facts

    def _spotify_reader(self):
        if self._spotify is None:
            if self._spotify_factory is None:
                from bot.app.spotify import SpotifyReader

                self._spotify = SpotifyReader(self.settings)
            else:
                self._spotify = self._spotify_factory()
        return self._spotify

    # -- the one call -------------------------------------------------------------------------

    async def start(self, request: CoverRequest) -> CoverJob:
        """Check ``request``, read its playlist, write its prompts, queue it and record it.

        Every refusal is raised here, before anything is recorded: bad options, the cooldown, a
        bad link or private playlist, Spotify's limits, a full queue or the person's own
        pending limit (``QueueFull`` / ``PendingLimitReached``).
        """
        request.check()
        with self._claim(request):
            if request.variations_of is not None:
                plan = await asyncio.to_thread(self._variations_plan, request)
                return self._submit(plan)
            model, lora = request.model or self.settings.default_model, request.lora
            if request.community:
                model, lora = community_model(self.storage, request.guild_id)
            elif request.source != "cli":
                model = people_model(request.model, self.settings)
            spec = resolve_model(model, lora=lora)
            started = time.perf_counter()
            facts = await self.read_playlist(
                request.playlist, allow_files=request.source == "cli", user_id=request.user_id
            )
            read_s = time.perf_counter() - started
            seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
            if request.prompts:  # the person's own words (Remix, --prompt), cleaned as any
                prompts = written_prompts(
                    request.prompts, request.negative, count=request.count, seed=seed
                )
            else:  # in a thread: the expand/auto styles run a language model
                prompts = await asyncio.to_thread(
                    build_prompts, facts, count=request.count, style=request.style, seed=seed
                )
            steps = request.steps or spec.steps
            guidance = spec.guidance if request.guidance is None else request.guidance
            params = generation_params(spec, spec.native_size, steps, guidance)
            init = None
            if request.look is not None:  # from a picture: bot/app/look.py
                init, saved = await start_picture(
                    request, facts.id, spec.native_size, self._spotify_reader, self.settings
                )
                request = dataclasses.replace(request, start_image=saved, image=None)
                params = dataclasses.replace(params, strength=request.strength)
            job = generation_job(request, params, prompts, facts.name, init_image=init)
            plan = _Plan(request, facts, spec, tuple(prompts), job, read_s)
            return self._submit(plan)

    def _submit(self, plan: _Plan) -> CoverJob:
        """Queue the plan's job, then record the request (a refused job records nothing)."""
        request, params = plan.request, plan.job.params
        # The server's rules (bot/app/server_rules.py), with nothing awaited before the row.
        texts = (plan.facts.name, plan.facts.description, *request.prompts)
        admit(self.storage, request, (*texts, *(p.text for p in plan.prompts)))
        handle = self.queue.submit(plan.job)
        stored = StoredParams(
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance=params.guidance,
            lora=params.lora,
            style=request.style,
            count=request.count,
            title_overlay=request.title_overlay,
            community=request.community,
            variations_of=request.variations_of,
            strength=params.strength,  # None unless image-to-image
            look=request.look,
            start_image=request.start_image,
        )
        request_id = self.storage.record_request(
            source=request.source,
            user_id=request.user_id,
            playlist_id=plan.facts.id,
            playlist_name=plan.facts.name,
            model=plan.model.name,
            params=stored,
            prompts=plan.prompts,
            guild_id=request.guild_id,
            channel_id=request.channel_id,
        )
        return CoverJob(self, plan, request_id, handle)

    def _variations_plan(self, request: CoverRequest) -> _Plan:
        """Variations of a candidate: its own prompt and settings (from its parameters chunk),
        new seeds, image-to-image from it. Blocking (reads the file).

        The file is untrusted (anyone can write any parameters into a PNG): it is read through
        the safe reader, its values are held to the flags' limits, and the model it names is
        used only when it is a preset – a folder is loaded only when the person names it
        (``--model``, or for people on Discord one of the operator's folders), never because
        a file says so.
        """
        source = Path(request.variations_of or "")
        try:
            init = read_bytes(source)
        except FileRefused:
            if request.source == "cli":
                raise
            raise FilesGone(source.name) from None  # on Discord: a pressed button's files
        found = read_png_parameters(init, name=source.name)
        found.check()
        if request.model is not None:
            model = request.model
            if request.source != "cli":
                model = people_model(request.model, self.settings)
        elif found.model.strip().lower() in list_models():
            model = found.model
        else:
            raise InvalidOption(
                f"{source.name} was made with a model that is not a preset (a local folder or "
                "another tool's); name the model with --model."
            )
        spec = resolve_model(model, lora=request.lora)
        label = manifest_label(source) or PlaylistFacts(
            id=request.playlist, name=source.parent.name, description=""
        )
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        prompts = tuple(
            Prompt(found.prompt, found.negative_prompt, "variation", seed + i)
            for i in range(request.count)
        )
        steps = request.steps or found.steps
        guidance = found.cfg_scale if request.guidance is None else request.guidance
        params = generation_params(spec, found.width, steps, guidance, strength=request.strength)
        job = generation_job(request, params, prompts, label.name, init_image=init)
        return _Plan(request, label, spec, prompts, job, 0.0)

    def resume_unfinished(self, source: str) -> list[Resumption]:
        """Queue again what a restart interrupted (requests from ``source`` still queued),
        oldest first. One that restarts keep interrupting – more than
        ``settings.resume_max_tries`` times – is given up, and one that can no longer run (its
        model is gone, the queue is full) fails: both are recorded as failed with the reason,
        so nothing is dropped silently and nothing is remade forever. Only the requests of the
        servers on this process's shards (``settings.shards()``) are this process's."""
        resumptions = []
        # Only this process's servers (bot/app/shards.py); the claim lets one process through
        # where two would take the same row.
        for record in self.storage.unfinished_requests(source, self.settings.shards()):
            tries = self.storage.note_resume(record.id, seen=record.resumes)
            if tries is None:
                continue  # another process claimed it first
            if tries > self.settings.resume_max_tries:
                # Something in this request (or the machine) keeps stopping the bot before it
                # ends: give up instead of regenerating it on every start.
                reason = f"it was interrupted by {tries - 1} restarts already"
                self.storage.finish_request(record.id, status="failed", timings={}, error=reason)
                log.warning("Gave up on request %s: %s", record.id[:8], reason)
                resumptions.append(Resumption(record, error=reason, gave_up=True))
                continue
            try:
                job = self.resume(record)
            except CoverError as exc:
                self.storage.finish_request(record.id, status="failed", timings={}, error=str(exc))
                resumptions.append(Resumption(record, error=str(exc)))
                continue
            log.info("Resumed request %s for user %s", record.id[:8], record.user_id)
            resumptions.append(Resumption(record, job))
        return resumptions

    def resume(self, record: RequestRecord) -> CoverJob:
        """Queue a stored request again after a restart, with the prompts and seeds it had.

        The playlist is not read again: the covers are made from what was accepted. Raises
        what :meth:`GenerationQueue.submit` raises (queue full, closed) and a
        :class:`~models.errors.CoverError` for a model that is gone.
        """
        stored, prompts = record.params, record.prompts
        spec = resolve_model(record.model, lora=stored.lora)
        request = CoverRequest(
            playlist=record.playlist_id,
            user_id=record.user_id,
            source=record.source,
            model=record.model,
            lora=stored.lora,
            count=len(prompts),
            style=stored.style,
            title_overlay=stored.title_overlay,
            community=stored.community,
            guild_id=record.guild_id,
            channel_id=record.channel_id,
        )
        params = generation_params(spec, stored.width, stored.steps, stored.guidance)
        init = None
        if stored.variations_of:
            source = Path(stored.variations_of)
            request = dataclasses.replace(
                request, variations_of=str(source), strength=stored.strength
            )
            params = dataclasses.replace(params, strength=stored.strength)
            try:
                init = read_bytes(source)
            except FileRefused:
                raise FilesGone(source.name) from None
        elif stored.start_image:  # covers that kept the playlist's look: the same picture
            request = dataclasses.replace(
                request, look=stored.look, start_image=stored.start_image, strength=stored.strength
            )
            params = dataclasses.replace(params, strength=stored.strength)
            init = read_start(stored.start_image)
        facts = PlaylistFacts(id=record.playlist_id, name=record.playlist_name, description="")
        job = generation_job(request, params, prompts, facts.name, init_image=init)
        plan = _Plan(request, facts, spec, prompts, job, 0.0)
        return CoverJob(self, plan, record.id, self.queue.submit(plan.job))

    @contextlib.contextmanager
    def _claim(self, request: CoverRequest) -> Iterator[None]:
        """People (not the CLI) wait ``cooldown_s`` between accepted requests, and have one
        request at a time in :meth:`start`: checked once, up front, so a refused request costs
        no Spotify call, and two sent at once cannot both get through while the first reads
        its playlist (its row, recorded before the claim ends, carries the cooldown on) – not
        even to two shard processes: the database's claim (Storage.claim) decides between
        them, and the cooldown is read once it is held."""
        cooldown = self.settings.cooldown_s
        if request.source == "cli" or cooldown <= 0:
            yield
            return
        key = (request.source, request.user_id)
        if key in self._starting:
            raise CooldownActive(cooldown)
        with self.storage.claim("cover-start", f"{request.source}:{request.user_id}") as free:
            if not free:  # another process is starting one of this person's requests now
                raise CooldownActive(cooldown)
            last = self.storage.last_request_at(request.user_id, request.source)
            if last is not None:
                waited = (datetime.now(UTC) - last).total_seconds()
                if waited < cooldown:
                    raise CooldownActive(cooldown - waited)
            self._starting.add(key)
            try:
                yield
            finally:
                self._starting.discard(key)

    async def warm_up(self, priority: int) -> None:
        """With a compiled UNet, compile each batch bucket of the default model now on every
        worker (device), at ``priority`` (behind everyone's jobs), rather than during
        someone's first /cover. Each worker's jobs are pinned to it: a free worker taking
        another's warm-up would leave that device to compile inside a user's job."""
        from models.optimize import Optimizations

        # The runners were built from these settings (bot/app/runners.py), so they say it.
        optimizations = Optimizations().replace(self.settings.optimizations)
        if not optimizations.compile:
            return
        spec = resolve_model(self.settings.default_model)
        params = generation_params(spec, spec.native_size, spec.steps, spec.guidance)
        sizes = optimizations.warm_up_sizes(self.queue.max_batch)

        async def warm(worker: str) -> None:
            for size in sizes:
                images = tuple(ImageSpec("warm-up", "", seed) for seed in range(size))
                job = GenerationJob(
                    f"warm-up {worker}", params, images, priority=priority, worker=worker
                )
                try:
                    await self.queue.submit(job).result()
                except (CoverError, ValueError) as error:  # ValueError: the worker was lost
                    log.warning("Warm-up of batch size %d on %s failed: %s", size, worker, error)
                    return
                log.info("Warmed up batch size %d on %s", size, worker)

        await asyncio.gather(*(warm(worker) for worker in self.queue.worker_names))

    # -- images → files + rows ------------------------------------------------------------

    async def _finish(
        self, plan: _Plan, request_id: str, handle: JobHandle, out_root: Path | None
    ) -> CoverResult:
        try:
            result = await handle.result()
        except QueueClosed:
            raise  # shutting down: the row stays "queued" and the next start resumes it
        except Exception as exc:
            self.storage.finish_request(
                request_id, status="failed", timings={"read_s": plan.read_s}, error=str(exc)
            )
            raise
        # A black image is never a candidate (the paper dropped them too, docs/miniature.md):
        # keep the others, in order, or fail the request when none is left. A server may ask
        # for flagged ones behind a spoiler in its NSFW channels (bot/app/server_rules.py).
        spoil = keeps_flagged(self.storage, plan.request)
        kept = [
            (prompt, image)
            for prompt, image in zip(plan.prompts, result.images, strict=True)
            if spoil or not image.blocked
        ]
        blocked = len(result.images) - len(kept)
        if not kept:
            error = AllCandidatesBlocked(blocked, self.settings.black_retries)
            self.storage.finish_request(
                request_id, status="failed", timings={"read_s": plan.read_s}, error=str(error)
            )
            raise error
        try:
            return await self._keep(plan, request_id, result, kept, out_root)
        except Exception as exc:
            # Generated but not kept: the request must still end, as failed, with the reason,
            # or it stays "queued" and every restart regenerates it (tests/e2e/test_cli.py).
            reason = _output_reason(exc)
            # A full disk or a folder taken away is expected, and the reason says it all; a
            # traceback is for anything else.
            expected = isinstance(exc, OSError | sqlite3.Error | CoverError)
            log.error(
                "Request %s: the covers could not be kept: %s",
                request_id[:8],
                reason,
                exc_info=None if expected else exc,
            )
            try:
                self.storage.finish_request(
                    request_id, status="failed", timings={"read_s": plan.read_s}, error=reason
                )
            except Exception:
                log.exception("Request %s: could not record its failure either", request_id[:8])
            raise OutputFailed(f"The covers were made but could not be saved: {reason}.") from exc

    async def _keep(
        self,
        plan: _Plan,
        request_id: str,
        result: JobResult,
        kept: list[tuple[Prompt, GeneratedImage]],
        out_root: Path | None,
    ) -> CoverResult:
        """Write the files, the candidates' rows and the manifest; mark the request done."""
        started = time.perf_counter()
        out_dir = Path(out_root or self.settings.output_dir) / (
            f"{slugify(plan.facts.name)}-{request_id[:8]}"
        )
        candidates, sheet = await asyncio.to_thread(
            write_candidates,
            plan.facts.name,
            kept,
            out_dir,
            plan.request.title_overlay,
            plan.job.params,
            plan.model.name,
        )
        timings = {
            "read_s": round(plan.read_s, 3),
            "wait_s": round(result.wait_s, 3),
            "generate_s": round(result.run_s, 3),
            "postprocess_s": round(time.perf_counter() - started, 3),
        }
        self.storage.add_candidates(
            request_id,
            [
                CandidateRecord(
                    request_id,
                    c.index,
                    c.prompt.text,
                    c.prompt.negative,
                    c.seed,
                    str(c.png_path),
                    str(c.jpeg_path),
                    c.black_retries,
                )
                for c in candidates
            ],
        )
        self.storage.finish_request(request_id, status="done", timings=timings)
        cover = CoverResult(
            request_id,
            plan.facts,
            plan.model,
            tuple(candidates),
            sheet,
            out_dir,
            timings,
            blocked=len(result.images) - len(kept),
            flagged=tuple(n for n, (_, image) in enumerate(kept, 1) if image.blocked),
        )
        write_manifest(cover)
        return cover


def _output_reason(exc: BaseException) -> str:
    """A short cause without the bot's paths (people on Discord read it)."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        return f"the database refused the result ({exc})"
    return type(exc).__name__
