"""Limits on what a hub may hand ``models pull`` (models/hub.py): a per-file size cap from the
listed size, a stall timeout, an overall deadline, and the commit and ETag headers checked before
huggingface_hub builds cache paths from them.

huggingface_hub has no hook for any of these: ``http_get`` writes every byte a server sends and
compares the size only at the end (a file listed at 4 KB and streamed at 300 MB puts 300 MB on
disk first), its read timeout restarts with every byte (a drip of one byte a second never times
out), and it joins the ``X-Repo-Commit`` and ``ETag`` headers into paths. What it does offer is
``set_client_factory``, the httpx client it speaks through; :func:`install` gives it one whose
transport enforces the limits of the pull in progress (:func:`guarded`) and passes everything
else through untouched. huggingface_hub deletes its temporary file when a download raises, so a
cut-off file leaves nothing behind.
"""

from __future__ import annotations

import contextvars
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx2 as httpx  # huggingface_hub 2.4 speaks HTTP through httpx2

from models.errors import ModelUnavailable

DEADLINE_S = 6 * 3600.0  # a whole pull: IF's two stages are ~30 GB in full precision
STALL_S = 60.0
# A download "stalls" when less than this arrives in STALL_S seconds (curl's --speed-limit idea):
# a drip of a byte every few seconds keeps a plain read timeout from ever firing.
STALL_BYTES = 1024
MAX_ANSWER = 16 << 20  # an API answer or an error body; model info of a big repo is ~100 KB
COMMIT = re.compile(r"[0-9a-f]{40}")
# The hub's ETags: a git blob sha1 or an LFS sha256, maybe weak, maybe quoted.
_ETAG = re.compile(r'(W/)?"?([0-9a-f]{40}|[0-9a-f]{64})"?')


class HubMisbehaved(ModelUnavailable):
    """The hub answered something a pull cannot use; ``str()`` is the user's sentence."""


@dataclass
class Guard:
    """The limits of one pull: its deadline and stall timeout, the commit every answer must
    name once the listing gave it, and the file being fetched with its listed size."""

    deadline_s: float = DEADLINE_S
    stall_s: float = STALL_S
    commit: str | None = None
    file: str | None = None  # the repository path being downloaded
    size: int | None = None  # its listed size in bytes
    started: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        left = self.deadline_s - (time.monotonic() - self.started)
        if left <= 0:
            raise HubMisbehaved(
                f"The pull did not finish within its deadline of {self.deadline_s:g} s "
                "(--deadline); pull again to continue, with a longer deadline on a slow link."
            )
        return left

    def stalled(self) -> HubMisbehaved:
        what = f" while fetching {self.file}" if self.file else ""
        return HubMisbehaved(
            f"The download stalled{what}: less than {STALL_BYTES} bytes in "
            f"{self.stall_s:g} s (--stall-timeout); check the network and pull again."
        )

    def cap(self, request: httpx.Request, response: httpx.Response) -> tuple[int, bool]:
        """How many body bytes ``response`` may have, and whether that is a file's listed size."""
        if self.size is None or request.method != "GET" or not 200 <= response.status_code < 300:
            return MAX_ANSWER, False
        first = 0
        ranged = request.headers.get("Range", "")
        if response.status_code == 206 and ranged.startswith("bytes="):
            first = int(ranged[6:].split("-")[0] or 0)  # a resumed download: the rest
        return max(self.size - first, 0), True

    def too_large(self) -> HubMisbehaved:
        return HubMisbehaved(
            f"The hub sent more than the {self.size} bytes it listed for {self.file}; the "
            "download was stopped and the partial file removed."
        )

    def check_headers(self, response: httpx.Response) -> None:
        commit = response.headers.get("X-Repo-Commit")
        if commit is not None and (
            not COMMIT.fullmatch(commit) or (self.commit and commit != self.commit)
        ):
            raise HubMisbehaved(
                f"The hub answered with commit {shown(commit)} where the listing said "
                f"{self.commit}; pull again (a repository that changed mid-pull does this)."
            )
        for header in ("ETag", "X-Linked-Etag"):
            etag = response.headers.get(header)
            if etag is not None and self.file and not _ETAG.fullmatch(etag):
                raise HubMisbehaved(
                    f"The hub sent an unusable {header} {shown(etag)} for {self.file}."
                )


def shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error line: control characters escaped, cut to ``limit``."""
    quoted = repr(text[: limit + 1])
    return quoted if len(text) <= limit else quoted[:limit] + "…'"


_ACTIVE: contextvars.ContextVar[Guard | None] = contextvars.ContextVar("hub_guard", default=None)


class _GuardedStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, guard: Guard, cap: int, listed: bool) -> None:
        self.inner, self.guard, self.cap, self.listed = inner, guard, cap, listed

    def __iter__(self) -> Iterator[bytes]:
        guard, received = self.guard, 0
        window_start, window = time.monotonic(), 0
        try:
            for chunk in self.inner:
                received += len(chunk)
                if received > self.cap:  # before huggingface_hub writes it
                    if self.listed:
                        raise guard.too_large()
                    raise HubMisbehaved(f"The hub's answer is larger than {MAX_ANSWER} bytes.")
                guard.remaining()
                window += len(chunk)
                now = time.monotonic()
                if now - window_start >= guard.stall_s:
                    if window < STALL_BYTES:
                        raise guard.stalled()
                    window_start, window = now, 0
                yield chunk
        except httpx.TimeoutException as error:  # silence: the read timeout is the stall timeout
            guard.remaining()
            raise guard.stalled() from error

    def close(self) -> None:
        self.inner.close()


class _GuardedTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        guard = _ACTIVE.get()
        if guard is None:  # not a pull (e.g. a library's own hub call): as huggingface_hub does
            return self.inner.handle_request(request)
        # No single wait may outlast the stall timeout or the time left before the deadline.
        limit = min(guard.stall_s, guard.remaining())
        timeouts = dict(request.extensions.get("timeout") or {})
        for phase in ("connect", "read", "write", "pool"):
            timeouts[phase] = min(timeouts.get(phase) or limit, limit)
        request.extensions["timeout"] = timeouts
        try:
            response = self.inner.handle_request(request)
        except httpx.TimeoutException as error:
            guard.remaining()
            raise guard.stalled() from error
        try:
            guard.check_headers(response)
        except HubMisbehaved:
            response.close()
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _GuardedStream(response.stream, guard, *guard.cap(request, response))
        return response

    def close(self) -> None:
        self.inner.close()


_INSTALLED = threading.Lock()
_installed = False


def install() -> None:
    """Give huggingface_hub a client whose transport applies the active pull's limits; the
    client is otherwise the one it builds itself (its event hooks, redirects, no timeout)."""
    global _installed
    from huggingface_hub import get_session, set_client_factory

    with _INSTALLED:
        if _installed:
            return
        hooks = get_session().event_hooks  # huggingface_hub's own: offline check, request id

        def factory() -> httpx.Client:
            return httpx.Client(
                transport=_GuardedTransport(httpx.HTTPTransport()),
                event_hooks=hooks,
                follow_redirects=True,
                timeout=None,
            )

        set_client_factory(factory)
        _installed = True


@contextmanager
def guarded(guard: Guard) -> Iterator[Guard]:
    """Apply ``guard`` to every request huggingface_hub makes in this context."""
    install()
    token = _ACTIVE.set(guard)
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)
