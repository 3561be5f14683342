"""Typed objects that cross the queue: what to generate, how, and what came out.

A :class:`GenerationJob` is one request (one user's ``/cover``: up to four candidates). Jobs whose
:class:`GenerationParams` are equal can share one pipeline call; the queue merges them and hands
the runner a flat list of :class:`ImageSpec`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ImageSpec:
    """One candidate image: its own prompt and seed (candidates may differ in both)."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    # Image-to-image: the encoded image (PNG bytes) to start from; then params.strength is set.
    init_image: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GenerationParams:
    """Everything a batch must agree on. Equal params → the images can share a pipeline call."""

    model: str  # registry name or a local diffusers folder
    width: int
    height: int
    steps: int
    guidance: float
    lora: str | None = None  # a LoRA .safetensors file applied on top of ``model``
    lora_scale: float = 1.0
    # Image-to-image when set: how far from each spec's init_image (0: unchanged, 1: all new).
    strength: float | None = None


@dataclass(frozen=True)
class GenerationJob:
    user_id: str
    params: GenerationParams
    images: tuple[ImageSpec, ...]
    priority: int = 0  # 0 = users' work; higher numbers wait until no lower-numbered job waits
    label: str = ""  # free text for logs, e.g. the playlist name


@dataclass(frozen=True)
class GeneratedImage:
    spec: ImageSpec
    image: Image.Image  # at the model's native size; post-processing upscales
    seed: int  # the seed that produced it (differs from spec.seed after a black-image retry)
    black_retries: int = 0
    sampler: str = ""  # the scheduler that made it, as files' parameters name it
    # Still black after every retry (a safety checker's verdict, or black pixels): never to be
    # handed to anyone as a cover; the cover service drops it and says so.
    blocked: bool = False


@dataclass(frozen=True)
class JobResult:
    job_id: str
    images: tuple[GeneratedImage, ...]
    wait_s: float  # from submit to the start of its first pipeline call
    run_s: float  # from that start to the end of its last pipeline call
    batch_sizes: tuple[int, ...] = field(default=())  # images per pipeline call it took part in
    workers: tuple[str, ...] = field(default=())  # the queue worker (device) of each of those calls


class RunInterrupted(Exception):
    """Raised inside a runner (from :meth:`RunControl.step`) when the queue wants it to stop."""


class OutOfMemory(Exception):
    """A runner raises this (or lets ``torch.cuda.OutOfMemoryError`` through) when a batch does
    not fit; the queue then splits the batch and tries the halves."""


class WorkerLost(Exception):
    """A runner raises this when the device or remote worker behind it is gone (a Ray actor
    that died, a node that left). The queue stops using that runner and hands the batch, with
    the images still missing, to another one: the jobs are not failed for it."""


class RunControl(Protocol):
    """What the queue gives a runner for one pipeline call."""

    def step(self, step: int, total: int) -> None:
        """Report progress after denoising step ``step`` of ``total``; raises
        :class:`RunInterrupted` when every job in the batch was cancelled or timed out."""

    def preview(self, step: int, images: Sequence[Image.Image]) -> None:
        """Rough pictures of the batch as it stands at ``step``, one per spec, in order."""


class NoControl:
    """A :class:`RunControl` for callers outside the queue (a study, a samples sheet): progress
    and previews are ignored, and nothing is ever cancelled."""

    def step(self, step: int, total: int) -> None:
        pass

    def preview(self, step: int, images: Sequence[Image.Image]) -> None:
        pass


class Runner(Protocol):
    """Generates ``specs`` with shared ``params``, blocking; the queue calls it in its worker
    thread. Returns one :class:`GeneratedImage` per spec, in order."""

    def __call__(
        self, params: GenerationParams, specs: Sequence[ImageSpec], control: RunControl
    ) -> list[GeneratedImage]: ...
