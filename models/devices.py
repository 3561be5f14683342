"""The torch devices of this machine: which one to run on, the ones the queue feeds, and the
dtype a model gets there. torch is imported only when asked (the ``gen`` extra)."""

from __future__ import annotations

from typing import Any

from models.errors import ModelUnavailable
from models.presets import ModelSpec

INSTALL_HINT = "pip install -e '.[gen]' in the project's checkout"
_DTYPES = ("float16", "bfloat16")


def import_torch() -> Any:
    """torch, or a :class:`ModelUnavailable` that says which extra brings it."""
    try:
        import torch
    except ImportError as error:
        raise ModelUnavailable(f"Generating images needs torch; run {INSTALL_HINT}.") from error
    return torch


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA GPU (False without torch, never an error)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pick_device(requested: str = "auto") -> str:
    """The torch device to run on: ``auto`` picks cuda, then mps, then cpu.

    Explicit values ("cpu", "cuda", "cuda:N", "mps") are checked against this machine.
    """
    torch = import_torch()
    value = requested.strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available(torch):
            return "mps"
        return "cpu"
    if value == "cpu":
        return "cpu"
    if value == "mps":
        if not _mps_available(torch):
            raise ModelUnavailable("The device 'mps' was asked for but this machine has no MPS.")
        return "mps"
    if value == "cuda" or value.startswith("cuda:"):
        index = value.partition(":")[2]
        if index and not index.isdigit():
            raise ModelUnavailable(f"The device {requested!r} is not valid; write cuda or cuda:N.")
        if not torch.cuda.is_available():
            raise ModelUnavailable(
                f"The device {requested!r} was asked for but torch sees no CUDA GPU here; "
                "use --device cpu, or auto to take a GPU only when there is one."
            )
        if index and int(index) >= torch.cuda.device_count():
            raise ModelUnavailable(
                f"The device {requested!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
        return value
    raise ModelUnavailable(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps.")


def local_devices(requested: str = "auto", *, cuda_only: bool = False) -> list[str]:
    """The devices of this machine the queue feeds, one worker each (``COVER_DEVICES``).

    ``auto``: every CUDA device (``cuda:0``, ``cuda:1``, …), else the one device
    :func:`pick_device` picks – or none with ``cuda_only`` (remote Ray workers carry the load,
    and a CPU would only take batches a GPU does many times faster). ``none``: no local device.
    Otherwise a comma-separated list, each checked by :func:`pick_device`; repeats are refused
    (two workers on one device would only fight over its memory).
    """
    value = requested.strip().lower()
    if value == "none":
        return []
    if value == "auto":
        torch = import_torch()
        if torch.cuda.is_available():
            return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
        return [] if cuda_only else [pick_device("auto")]
    devices = [pick_device(item) for item in value.split(",") if item.strip()]
    devices = ["cuda:0" if device == "cuda" else device for device in devices]
    if not devices:
        raise ModelUnavailable(f"No device in {requested!r}; use auto, none or e.g. cuda:0,cuda:1.")
    if len(set(devices)) != len(devices):
        raise ModelUnavailable(f"A device appears twice in {requested!r}; name each once.")
    return devices


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def torch_dtype(spec: ModelSpec, device: str, *, half_precision: bool = True) -> Any:
    """Half precision on CUDA as the preset says, float32 elsewhere (never autocast: it makes
    black images and runs slower than loading the weights in half precision)."""
    torch = import_torch()
    if half_precision and device.startswith("cuda") and spec.dtype_cuda in _DTYPES:
        return getattr(torch, spec.dtype_cuda)
    return torch.float32
