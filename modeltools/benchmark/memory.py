"""Peak memory over a measured stretch: CUDA's counter, else the sampled or lifetime RSS."""

from __future__ import annotations

import os
import sys
import threading

CUDA_MEMORY = "cuda max allocated"
SAMPLED_RSS = "process RSS peak (sampled)"
LIFETIME_RSS = "process RSS peak (lifetime, getrusage)"
NOT_MEASURED = "not measured"


class MemoryProbe:
    """Peak memory from now until :meth:`stop`, measured as well as this device allows:
    CUDA's allocator counter (tensors only, not the caching allocator's reserve), else the
    process's resident set size sampled every ``interval_s`` (peaks shorter than that can be
    missed), else the process's lifetime RSS peak from ``getrusage``."""

    def __init__(self, device: str, *, interval_s: float = 0.02) -> None:
        device = device.split(",")[0].strip()  # several devices: the first one's counter
        self._cuda = device.startswith("cuda")
        self._interval_s = interval_s
        self._peak: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if self._cuda:
            import torch  # lazily: only a CUDA device gets here, and its runner has loaded torch

            torch.cuda.reset_peak_memory_stats(device)
            self._device = device
        elif (rss := read_rss_bytes()) is not None:
            self._peak = rss
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stopping.wait(self._interval_s):
            rss = read_rss_bytes()
            if rss is not None and (self._peak is None or rss > self._peak):
                self._peak = rss

    def stop(self) -> tuple[int | None, str]:
        """The peak in bytes (None when nothing could measure it) and what kind of peak it is."""
        if self._cuda:
            import torch

            return int(torch.cuda.max_memory_allocated(self._device)), CUDA_MEMORY
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            rss = read_rss_bytes()
            peak = max(self._peak or 0, rss or 0)
            return peak, SAMPLED_RSS
        return _lifetime_rss_peak()


def read_rss_bytes() -> int | None:
    """This process's resident set size now, from ``/proc/self/statm`` (None off Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _lifetime_rss_peak() -> tuple[int | None, str]:
    try:
        import resource
    except ImportError:  # Windows
        return None, NOT_MEASURED
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux counts KiB, macOS bytes.
    return (peak if sys.platform == "darwin" else peak * 1024), LIFETIME_RSS
