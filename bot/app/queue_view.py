"""What ``/queue`` shows one person: their own requests first, everyone else's only as counts.

It is built from a :class:`~models.snapshot.QueueSnapshot` (a read-only copy of the queue,
:meth:`models.queue.GenerationQueue.snapshot`), so it cannot change the queue, and it keeps
other people's requests private: no one sees whose they are, which model or how many
candidates, only how many wait and run.

The estimate of when a request is ready comes from measured times, never from guesses: a
preset's time is the median run time of its last :data:`ESTIMATE_FROM` finished people's jobs
(the queue remembers recent ones; the median, so one slow first run that loaded the model does
not skew it). With ``W`` workers, a running job ``r`` (running for ``e_r``) and the jobs
``w_1 … w_k`` ahead of a waiting job ``w``::

    remaining(r) = max(t(r) - e_r, 0)
    ready(w)     = (Σ_r remaining(r) + Σ_{i<k} t(w_i)) / W + t(w)
    ready(r)     = remaining(r)

It is an upper estimate: jobs that share a pipeline call (same preset and settings) finish
together. Where a job it needs has no measured preset time, there is no estimate yet.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from models.snapshot import JobSnapshot, JobTiming, QueueSnapshot

ESTIMATE_FROM = 5  # finished jobs of a preset whose median run time is its estimate
PEOPLE = 0  # the priority of people's jobs; the bot's own (benchmark, warm-up) are higher


def preset_seconds(recent: Sequence[JobTiming], model: str) -> float | None:
    """The median run time of the last :data:`ESTIMATE_FROM` people's jobs of ``model`` that
    finished (``recent`` oldest first), or None if none did."""
    times = [t.run_s for t in recent if t.model == model and t.priority == PEOPLE]
    return statistics.median(times[-ESTIMATE_FROM:]) if times else None


def ready_in(snapshot: QueueSnapshot) -> dict[str, float | None]:
    """Seconds until each waiting or running job should be ready (by job id), by the formula
    in the module's docstring; None where a preset it depends on has no measured time."""
    per_model: dict[str, float | None] = {}

    def seconds(job: JobSnapshot) -> float | None:
        if job.model not in per_model:
            per_model[job.model] = preset_seconds(snapshot.recent, job.model)
        return per_model[job.model]

    ready: dict[str, float | None] = {}
    ahead: float | None = 0.0  # work before the next waiting job, all workers together
    for job in snapshot.running:
        t = seconds(job)
        started = job.started_at if job.started_at is not None else snapshot.taken_at
        remaining = None if t is None else max(t - (snapshot.taken_at - started), 0.0)
        ready[job.job_id] = remaining
        ahead = None if ahead is None or remaining is None else ahead + remaining
    workers = max(snapshot.workers, 1)
    for job in snapshot.waiting:
        t = seconds(job)
        ready[job.job_id] = None if ahead is None or t is None else ahead / workers + t
        ahead = None if ahead is None or t is None else ahead + t
    return ready


@dataclass(frozen=True)
class OwnRequest:
    """One of the person's own jobs."""

    model: str
    images: int
    position: int | None  # 1 runs next; None: running
    for_s: float  # waiting or running this long
    ready_in_s: float | None  # None: no estimate yet


@dataclass(frozen=True)
class QueueView:
    own: tuple[OwnRequest, ...]  # running ones first, then the waiting ones in line order
    others_waiting: int  # other people's requests
    others_running: int
    upkeep: int  # the bot's own jobs (benchmark, warm-up), waiting or running

    def text(self) -> str:
        """The private answer to ``/queue``."""
        if not self.own and not (self.others_waiting or self.others_running or self.upkeep):
            return "Nothing is waiting or running: a new `/cover` starts at once."
        lines = ["**Your requests**"] if self.own else ["You have no covers waiting or running."]
        for request in self.own:
            where = (
                f"running for {_duration(request.for_s)}"
                if request.position is None
                else f"#{request.position} in line, waiting {_duration(request.for_s)}"
            )
            ready = (
                "no estimate yet"
                if request.ready_in_s is None
                else f"ready in about {_duration(request.ready_in_s)}"
            )
            model = request.model.replace("`", "'")
            lines.append(f"• {where} – `{model}`, {_candidates(request.images)}; {ready}")
        others = f"**Everyone else:** {self.others_waiting} waiting, {self.others_running} running"
        if self.upkeep:
            others += f", and {self.upkeep} of the bot's own jobs (benchmark, warm-up)"
        lines.append(others + ".")
        return "\n".join(lines)


def queue_view(snapshot: QueueSnapshot, user_id: str) -> QueueView:
    """What ``user_id`` may see of ``snapshot``: their own jobs in full, the rest as counts."""
    ready = ready_in(snapshot)
    now = snapshot.taken_at
    own = [
        OwnRequest(
            job.model,
            job.images,
            job.position,
            now - (job.started_at if job.started_at is not None else job.submitted_at),
            ready[job.job_id],
        )
        for job in (*snapshot.running, *snapshot.waiting)
        if job.user_id == user_id
    ]

    def others(jobs: Sequence[JobSnapshot]) -> int:
        return sum(j.user_id != user_id and j.priority == PEOPLE for j in jobs)

    upkeep = sum(
        j.user_id != user_id and j.priority != PEOPLE
        for j in (*snapshot.running, *snapshot.waiting)
    )
    return QueueView(tuple(own), others(snapshot.waiting), others(snapshot.running), upkeep)


def _duration(seconds: float) -> str:
    """``7 s``, ``3 min``, ``1 h 5 min``: rounded up, for a person (never ``0 s``)."""
    whole = max(1, int(-(-seconds // 1)))
    if whole < 60:
        return f"{whole} s"
    minutes = -(-whole // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min" if minutes % 60 else f"{minutes // 60} h"


def _candidates(images: int) -> str:
    return f"{images} candidate{'s' if images != 1 else ''}"
