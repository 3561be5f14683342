"""The queue's waiting jobs and how they are batched (models/queue.py runs them).

    a priority's :class:`Lane`: one FIFO per user; users take turns (round-robin)
        ─► :func:`companions`: the next job in fair order and the waiting jobs that can share
           its runner calls (same priority, params and pin; first fit up to ``max_batch``)
        ─► :class:`Work`: those jobs and their images in chunks of at most ``max_batch``

Everything here runs on the queue's event loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from models.handles import JobHandle, Queued

Slot = tuple[JobHandle, int]  # one image: its job and the index of its spec in the job


class Lane:
    """The waiting jobs of one priority: a FIFO per user; users take turns in dict order."""

    def __init__(self) -> None:
        self._users: OrderedDict[str, deque[JobHandle]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._users.values())

    def push(self, handle: JobHandle) -> None:
        # A user with nothing waiting joins at the back of the turn order.
        self._users.setdefault(handle.job.user_id, deque()).append(handle)

    def remove(self, handle: JobHandle, *, served: bool = False) -> None:
        """Take ``handle`` out; ``served`` sends its user to the back of the turn order."""
        user = handle.job.user_id
        jobs = self._users[user]
        jobs.remove(handle)
        if not jobs:
            del self._users[user]
        elif served:
            self._users.move_to_end(user)

    def fair_order(self) -> Iterator[JobHandle]:
        """Every waiting job, in the order they would run if nothing else arrived: each user's
        oldest, in turn order, then each user's second oldest, and so on."""
        queues = list(self._users.values())
        depth = max((len(jobs) for jobs in queues), default=0)
        for rank in range(depth):
            for jobs in queues:
                if rank < len(jobs):
                    yield jobs[rank]


def companions(order: Sequence[JobHandle], max_batch: int) -> list[JobHandle]:
    """The first job of ``order`` (waiting jobs in fair order) and the ones that can share its
    calls: the same priority (so a benchmark never rides along while users' jobs wait), equal
    params and the same pin, taken first fit while the images stay within ``max_batch``. A job
    larger than ``max_batch`` runs alone, in chunks."""
    head = order[0]
    unit, images = [head], len(head.job.images)
    for other in order[1:]:
        if images >= max_batch or other.job.priority != head.job.priority:
            break
        fits = images + len(other.job.images) <= max_batch
        same = other.job.params == head.job.params and other.job.worker == head.job.worker
        if fits and same:
            unit.append(other)
            images += len(other.job.images)
    return unit


class Waiting:
    """Every waiting job: a :class:`Lane` per priority, lower priorities first. Runs on the
    queue's event loop only."""

    def __init__(self) -> None:
        self._lanes: dict[int, Lane] = {}  # priority → waiting jobs

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def push(self, handle: JobHandle) -> None:
        self._lanes.setdefault(handle.job.priority, Lane()).push(handle)

    def remove(self, handle: JobHandle, *, served: bool = False) -> None:
        """Take ``handle`` out; ``served`` sends its user to the back of the turn order."""
        lane = self._lanes[handle.job.priority]
        lane.remove(handle, served=served)
        if not len(lane):
            del self._lanes[handle.job.priority]

    def in_order(self) -> Iterator[JobHandle]:
        """Every waiting job in the order they would run if nothing else arrived."""
        for priority in sorted(self._lanes):
            yield from self._lanes[priority].fair_order()

    def publish_positions(self) -> None:
        """Tell each waiting job whose place changed its new position (1 runs next)."""
        for position, handle in enumerate(self.in_order(), start=1):
            if handle._position != position:
                handle._position = position
                handle._publish(Queued(position))


@dataclass
class Work:
    """Jobs taken together and the runner calls they still need, first call first."""

    unit: list[JobHandle]
    chunks: deque[list[Slot]]

    @classmethod
    def of(cls, unit: list[JobHandle], max_batch: int) -> Work:
        """``unit``'s images in calls of at most ``max_batch``, in job order."""
        slots = [(handle, index) for handle in unit for index in range(len(handle.job.images))]
        return cls(unit, deque(slots[i : i + max_batch] for i in range(0, len(slots), max_batch)))
