"""``python -m models.device_check COMMAND...``: the Docker image's start-up check, then COMMAND.

The image is built for a GPU. Its torch carries its own CUDA runtime, which needs a host driver
at least as new and a container started with ``--gpus all``; without either,
``torch.cuda.is_available()`` is simply False and ``auto`` runs every cover on the CPU, hundreds
of times slower, with nothing in the log but slowness. So the image refuses to start instead,
saying why, unless it was told to run on the CPU (``COVER_DEVICE=cpu``, ``COVER_DEVICES=cpu``
or ``none``, or ``COVER_EXPECT_GPU=0``). It also refuses a ``/data`` it cannot write: a host
folder mounted there keeps its host owner, and the image runs as uid 10001.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

IMAGE_USER = 10001  # the Dockerfile's ``cover`` user


def told_cpu(env: Mapping[str, str]) -> bool:
    """Whether the settings say this container runs without a GPU."""
    if env.get("COVER_EXPECT_GPU", "1").strip().lower() in {"0", "false", "no", "off"}:
        return True
    device = env.get("COVER_DEVICE", "auto").strip().lower()
    devices = [d.strip() for d in env.get("COVER_DEVICES", "auto").lower().split(",") if d.strip()]
    if devices and devices != ["auto"]:
        return all(d in {"cpu", "none"} for d in devices)
    return device == "cpu"


def problems(
    env: Mapping[str, str], *, cuda_available: bool, torch_cuda: str | None, data_dir: Path
) -> list[str]:
    """What stops this container from working as configured, one sentence each."""
    found = []
    if not cuda_available and not told_cpu(env):
        found.append(
            f"This GPU image sees no CUDA GPU (its torch is built for CUDA {torch_cuda or '?'}). "
            "Start it with `--gpus all`, and check that the host's NVIDIA driver supports that "
            "CUDA version (`nvidia-smi` on the host shows the newest it supports). To run on "
            "the CPU on purpose, set COVER_DEVICE=cpu (or COVER_EXPECT_GPU=0)."
        )
    if data_dir.is_dir() and not _writable(data_dir):
        found.append(
            f"{data_dir} is not writable by this container's user (uid {os.getuid()}). For a "
            f"host folder mounted there: `sudo chown -R {IMAGE_USER}:{IMAGE_USER} <folder>` on "
            "the host, or use a named volume (`-v playlist-cover-data:/data`)."
        )
    return found


def _writable(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Check, then replace this process with the command (exit status 1 and the reasons on
    stderr when a check fails; 2 without a command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if not argv:
        print("usage: python -m models.device_check COMMAND [ARG...]", file=sys.stderr)
        return 2
    import torch

    found = problems(
        env,
        cuda_available=torch.cuda.is_available(),
        torch_cuda=torch.version.cuda,
        data_dir=Path(env.get("COVER_DATA_DIR", "/data")),
    )
    for problem in found:
        print(f"playlist-cover: cannot start: {problem}", file=sys.stderr)
    if found:
        return 1
    os.execvp(argv[0], argv)  # the command takes this process's place (and its signals)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
