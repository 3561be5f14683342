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
    # Run on this queue worker only (a name from GenerationQueue.worker_names): a warm-up must
    # compile on every device, not on whichever is free. None: any worker.
    worker: str | None = None


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


# CUDA reports some allocation failures as a plain RuntimeError (torch.AcceleratorError)
# rather than torch.cuda.OutOfMemoryError: a failed cudaMalloc inside a kernel launch, cuBLAS
# or cuDNN failing to allocate their workspace. Smaller batches fit, as for the named error.
_OUT_OF_MEMORY_TEXTS = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")
# Errors after which the process's CUDA context is unusable: every later call on it fails the
# same way ("sticky" errors, CUDA programming guide), so only a new process can use the GPU.
_BROKEN_DEVICE_TEXTS = (
    "illegal memory access",
    "illegal address",
    "illegal instruction",
    "misaligned address",
    "device-side assert",
    "unspecified launch failure",
    "uncorrectable ecc error",
    "cublas_status_execution_failed",
)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says a batch did not fit: :class:`OutOfMemory`, torch's
    ``OutOfMemoryError`` (matched by name, so the queue never imports torch), or a
    ``RuntimeError`` with CUDA's allocation-failure wording."""
    if isinstance(error, OutOfMemory):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(t in text for t in _OUT_OF_MEMORY_TEXTS)


def is_broken_device(error: BaseException) -> bool:
    """Whether ``error`` is a sticky CUDA error (illegal address, device-side assert, ...):
    the device cannot be used again from this process (see :class:`DeviceBroken`)."""
    if isinstance(error, DeviceBroken):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(t in text for t in _BROKEN_DEVICE_TEXTS)


class WorkerLost(Exception):
    """A runner raises this when the device or remote worker behind it is gone (a Ray actor
    that died, a node that left). The queue stops using that runner and hands the batch, with
    the images still missing, to another one: the jobs are not failed for it."""


class DeviceBroken(WorkerLost):
    """The runner's device failed with a sticky CUDA error: its process cannot use the GPU
    again. The queue asks the runner to ``restart()`` (a Ray actor is replaced by a new
    process); a runner that cannot is lost, as for :class:`WorkerLost`."""


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
